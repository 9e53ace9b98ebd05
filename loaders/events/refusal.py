"""Why a line of an import file is not an event the edge can be sent."""

from __future__ import annotations


class LineRefused(Exception):
    """A line refused before it is sent: `code` (machine-readable), a message, the field at fault."""

    def __init__(self, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = field
