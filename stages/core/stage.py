"""Running a stage module: ``python -m stages.<name> [--help]``.

Every stage module ends with ``stage.run(main, __doc__, PARAMS, SCHEMA)``. ``--help`` prints the module's docstring
(what the stage reads, what it writes, which params it uses) and exits 0 before anything is read or written. An unknown
argument, a bad params.yaml or any other problem the user can fix is one ``error:`` line and a non-zero exit.
"""

from __future__ import annotations

import argparse
import atexit
import os
import sys
import threading
from collections.abc import Callable, Sequence

from stages.core import cpu
from stages.core import params as params_file
from stages.core.errors import UserError
from stages.core.schema import CORE, Schema

USAGE_EXIT = 2  # argparse's convention for a bad command line
INTERRUPTED_EXIT = 130  # the shell's for a process ended by SIGINT (128 + 2)


class _OneLineParser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse prints a usage block; one line is enough here
        print(f"error: {self.prog}: {message} (see --help)", file=sys.stderr)
        sys.exit(USAGE_EXIT)


def parser(doc: str, params: Sequence[str], *, prog: str, choices: dict[str, Sequence[str]] | None = None):
    keys = ", ".join(params) if params else "none"
    p = _OneLineParser(
        prog=prog,
        description=doc,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=f"params.yaml keys: {keys}",
    )
    for name, allowed in (choices or {}).items():
        p.add_argument(name, choices=list(allowed))
    return p


def guarded(main: Callable[[], None]) -> None:
    """Run ``main``; a ``UserError`` or an error about a named path becomes one line on stderr and exit 1, Ctrl-C
    one line and exit 130 (outputs are written to temporaries and renamed, so the last good ones stay)."""
    try:
        main()
    except KeyboardInterrupt:
        print("interrupted; committed results untouched", file=sys.stderr)
        sys.exit(INTERRUPTED_EXIT)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
    except OSError as exc:
        if exc.filename is None:
            raise  # not about a path we were given: a bug, so keep the traceback
        # A read-only data/, a full disk, a file where a folder belongs: say which path and why.
        print(f"error: cannot write or read {exc.filename}: {exc.strerror or exc}", file=sys.stderr)
        sys.exit(1)


def run(
    main: Callable[..., None],
    doc: str,
    params: Sequence[str],
    schema: Schema,
    choices: dict[str, Sequence[str]] | None = None,
    argv: Sequence[str] | None = None,
    distributed: bool = False,
    whole: bool = False,
) -> None:
    """Parse the command line, load and validate the params blocks the stage reads (``whole``: all of params.yaml),
    then call ``main(p, **arguments)``.

    ``params`` are dotted keys; a ``{name}`` in one is filled from the positional argument of that name
    (``mnist_models.{model}``). ``schema`` has the blocks they are in, beside ``source`` and ``compute``, which
    every stage knows (``check_params``, which runs first in ``dvc repro``, checks the whole file). Output is
    line-buffered so each progress line reaches a log as it is printed.
    Only a stage that says it is ``distributed`` runs under torchrun with several processes: any other would
    write its outputs from every one of them at once.
    """
    module = sys.modules.get("__main__")
    prog = f"python -m {module.__spec__.name}" if module and module.__spec__ else sys.argv[0]
    args = vars(parser(doc, params, prog=prog, choices=choices).parse_args(argv))
    sys.stdout.reconfigure(line_buffering=True)
    if not distributed and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        print(
            f"error: {prog} runs in one process; torchrun is for train_pets and train_mnist resnet18", file=sys.stderr
        )
        sys.exit(1)

    def body() -> None:
        keys = [key.format(**args) for key in params]
        p = params_file.load(keys, schema=CORE | schema, whole=whole)
        numerics = p["compute"]["numerics"] if "compute" in p else p.get("compute.numerics")
        if numerics is not None:  # a stage that computes: its kernels are chosen before numpy and torch load in main
            cpu.use_numerics(numerics)
        main(p, **args)

    guarded(body)
    if argv is None and main.__globals__ is vars(sys.modules["__main__"]):
        _exit_now()  # the stage is the program, not run by a test, cProfile or another caller that goes on


def _exit_now() -> None:
    """Exit 0 as the interpreter would, less its teardown of every loaded module (with torch, sklearn and matplotlib
    loaded, about a second a stage: docs/design-notes.md). Every output is written and closed by now. The exit
    handlers still run (they stop DataLoader workers and remove temporary files); a live non-daemon thread, which
    the interpreter would wait for, gets the usual exit. ``atexit._run_exitfuncs`` is private: a test of this
    function fails if it stops running the handlers."""
    if any(not thread.daemon for thread in threading.enumerate() if thread is not threading.main_thread()):
        return
    atexit._run_exitfuncs()  # the handlers the interpreter runs before its teardown; private, in CPython since 3.0
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
