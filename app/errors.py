"""Which exceptions are the user's to fix (shown as one line) rather than bugs (shown with a traceback)."""

from __future__ import annotations

from pydantic import ValidationError

from ilm_model.errors import ILMError
from retrieval.errors import RetrievalError
from serving.errors import ServingError

USER_ERRORS: tuple[type[BaseException], ...] = (
    RetrievalError,
    ILMError,
    ServingError,
    ValidationError,
    FileNotFoundError,
    PermissionError,
)


def is_user_error(exc: BaseException) -> bool:
    return isinstance(exc, USER_ERRORS)
