"""The one line of an exception that goes into an error message or a log line.

Database drivers, MLflow and ONNX Runtime put pages of detail (SQL, stack dumps, URLs) after
the first line of their messages; a user mistake must end in one readable line. Standard
library only: the serving process imports it.
"""

from __future__ import annotations


def first_line(exc: BaseException) -> str:
    """The first line of ``exc``'s message, or its type name when the message is empty."""
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def typed_first_line(exc: BaseException) -> str:
    """``TypeName: first line`` (for messages where the type says what failed)."""
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"
