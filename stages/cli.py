"""Entry-point wrapper: a user-facing error becomes one line on stderr and exit status 1."""

from __future__ import annotations

import sys
from typing import Callable


class UserError(Exception):
    """A problem the user can fix (bad params, unreachable download, corrupt input): no traceback."""


def run(main: Callable[[], None]) -> None:
    try:
        main()
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
    except OSError as exc:
        if exc.filename is None:
            raise  # not about a path we were given: a bug, so keep the traceback
        # A read-only data/, a full disk, a file where a folder belongs: say which path and why.
        print(f"error: cannot write or read {exc.filename}: {exc.strerror or exc}", file=sys.stderr)
        sys.exit(1)
