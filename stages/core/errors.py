"""The one error type a user sees as one line: a problem they can fix (bad params, unreachable download, corrupt
input). ``stages.core.stage`` prints it as ``error: ...`` and exits 1, with no traceback."""


class UserError(Exception):
    """A problem the user can fix; its message names the file or key and what to do."""
