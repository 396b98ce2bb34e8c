"""Which exceptions are the user's to fix (shown as one line) rather than bugs (shown with a traceback)."""

from __future__ import annotations

from pydantic import ValidationError

from ilm_model.errors import ILMError
from retrieval.errors import RetrievalError
from serving.errors import ServingError

class SettingsError(ValueError):
    """A settings file that cannot be read (e.g. malformed YAML)."""


USER_ERRORS: tuple[type[BaseException], ...] = (
    SettingsError,
    RetrievalError,
    ILMError,
    ServingError,
    ValidationError,
    FileNotFoundError,
    PermissionError,
)


def is_user_error(exc: BaseException) -> bool:
    return isinstance(exc, USER_ERRORS)


def describe_user_error(exc: BaseException) -> str:
    """One line for the user: pydantic's errors as `field.path: message`, everything else as its text."""
    if isinstance(exc, ValidationError):
        return "; ".join(
            f"{'.'.join(str(part) for part in error['loc']) or 'input'}: {error['msg']}" for error in exc.errors()
        )
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
