"""Errors raised by the serving tier.

Each carries the HTTP status and OpenAI error `type`/`code` it maps to, and also inherits the builtin a
caller would expect (an invalid request is a ValueError, an unknown session a KeyError). The one mapping to
the OpenAI error schema is `serving.api.serving.create_error_response`.
"""

from __future__ import annotations


class ServingError(Exception):
    """Root of every serving-tier error. `param` names the offending request field, when there is one."""

    status_code: int = 500
    error_type: str = "internal_server_error"
    code: str | None = None
    retry_after_s: int | None = None
    """Seconds a client should wait before retrying (the `Retry-After` header); None when retrying won't help."""

    def __init__(self, message: str, *, param: str | None = None):
        super().__init__(message)
        self.message = message
        self.param = param

    def __str__(self) -> str:
        return self.message


class InvalidRequestError(ServingError, ValueError):
    """The request is malformed or asks for something unsupported; the message says what to change."""

    status_code = 400
    error_type = "invalid_request_error"
    code = "invalid_request"


class PromptTooLongError(InvalidRequestError):
    """The prompt plus `max_tokens` does not fit the model's context window."""

    code = "context_length_exceeded"


class RequestTooLargeError(InvalidRequestError):
    """The request body is larger than the server accepts."""

    status_code = 413
    code = "request_too_large"


class AuthenticationError(ServingError, PermissionError):
    """A missing or wrong API key."""

    status_code = 401
    error_type = "authentication_error"
    code = "invalid_api_key"


class UnknownSessionError(ServingError, KeyError):
    """A session id the store does not hold (never created, or expired)."""

    status_code = 404
    error_type = "invalid_request_error"
    code = "session_not_found"


class UnknownModelError(ServingError, LookupError):
    """A model name this server does not serve."""

    status_code = 404
    error_type = "invalid_request_error"
    code = "model_not_found"


class EngineUnavailableError(ServingError, RuntimeError):
    """The LLM engine is closed or cannot serve right now."""

    status_code = 503
    error_type = "service_unavailable"
    code = "engine_unavailable"
    retry_after_s = 5


class EngineBusyError(ServingError, RuntimeError):
    """The LLM engine did not start this reply within the queue timeout: it is busy with others."""

    status_code = 503
    error_type = "service_unavailable"
    code = "engine_busy"
    retry_after_s = 5


class EngineTimeoutError(ServingError, TimeoutError):
    """The LLM engine did not produce the reply within the generation timeout."""

    status_code = 504
    error_type = "timeout"
    code = "engine_timeout"
    retry_after_s = 5


class SessionStoreUnavailableError(ServingError, ConnectionError):
    """The session store (e.g. Redis) cannot be reached right now."""

    status_code = 503
    error_type = "service_unavailable"
    code = "session_store_unavailable"
    retry_after_s = 2


class SessionConflictError(ServingError, RuntimeError):
    """Too many concurrent turns kept changing one session while this turn tried to save it."""

    status_code = 409
    error_type = "invalid_request_error"
    code = "session_busy"
    retry_after_s = 1


class CorruptSessionError(ServingError, ValueError):
    """A stored session record is unreadable: not JSON, another schema version, or not written by ilmrec."""

    code = "session_corrupt"


class ConfigurationError(ServingError, ValueError):
    """The served artefacts do not fit together (e.g. soft-token width != the LLM's hidden size)."""
