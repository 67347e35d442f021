"""User-facing errors: the CLI prints their message and exits with code 2, without a traceback."""


class UserError(Exception):
    """Bad input from the user (config, names, values, files). The message says what to do."""


class CellFailed(Exception):
    """A cell could not produce a result (e.g. diverging training); recorded as a failed row."""


def first_line(exc: BaseException, limit: int = 300) -> str:
    """The first line of an exception's message, at most ``limit`` characters; empty without one."""
    said = str(exc).strip()
    return said.splitlines()[0][:limit] if said else ""
