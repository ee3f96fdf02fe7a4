"""The one error type for user mistakes.

Entry points turn a :class:`UserError` into a single line on stderr and exit code 2 (no traceback).
"""

from __future__ import annotations


class UserError(Exception):
    """A mistake the user can fix: a missing path, a corrupt file, a wrong shape, an unknown option."""


def one_line(exc: BaseException) -> str:
    """The exception's message on one line (its type name when it has none)."""
    return " ".join(str(exc).split()) or type(exc).__name__


def report(exc: BaseException, code: int = 2) -> int:
    """Write ``error: <message on one line>`` to stderr and return ``code``: the tail of an argparse CLI's
    ``except UserError`` (``return report(exc)``)."""
    import sys

    sys.stderr.write(f"error: {one_line(exc)}\n")
    sys.stderr.flush()
    return code


def require(condition: bool, message: str) -> None:
    """Raise :class:`UserError` with ``message`` unless ``condition`` holds."""
    if not condition:
        raise UserError(message)


class TrainingDiverged(RuntimeError):
    """Training produced a non-finite loss; entry points report it in one line and exit with code 3."""
