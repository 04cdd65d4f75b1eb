"""Exceptions of the explorer; each message names the fix."""


class ExplorerError(Exception):
    """Base class for explorer errors."""


class ApiError(ExplorerError):
    """A request the JSON API refuses; carries the HTTP status to answer with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class BadRequest(ApiError):
    """Malformed input (bad address, bad sha256, bad round number): HTTP 400."""

    def __init__(self, message: str) -> None:
        super().__init__(400, message)


class NotFound(ApiError):
    """Well-formed input naming something the chain does not have: HTTP 404."""

    def __init__(self, message: str) -> None:
        super().__init__(404, message)


class IndexMismatch(ExplorerError):
    """The SQLite index belongs to another chain or coordinator."""
