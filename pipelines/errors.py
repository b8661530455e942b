"""Errors the user can act on: the CLI prints their message, without a traceback."""


class UserFacingError(Exception):
    """Base class: the message says what went wrong and where (file, line, column)."""


class IngestError(UserFacingError):
    """An export that cannot be loaded (missing required file or column, unreadable file)."""


class ContractError(UserFacingError):
    """A data contract (Great Expectations suite) failed; the message summarises which."""


class ModelError(UserFacingError):
    """A SQL model could not be built."""
