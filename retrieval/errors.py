"""Errors raised by the retrieval tier. Each also inherits the builtin a caller would expect."""


class RetrievalError(Exception):
    """Root of every retrieval-tier error."""


class DataError(RetrievalError, ValueError):
    """A data file is missing or malformed; the message names the file and the fix."""


class UnknownItemError(RetrievalError, KeyError):
    """A catalogue id that the catalogue does not hold."""

    def __str__(self) -> str:  # KeyError would otherwise repr() the message
        return str(self.args[0]) if self.args else "unknown item"


class ModelFitError(RetrievalError, RuntimeError):
    """Training diverged (a non-finite loss or embedding); lower the learning rate."""


class ArtifactMismatchError(RetrievalError, ValueError):
    """A saved recommender does not fit the catalogue or files it is loaded with; the message names the mismatch."""


class CheckpointError(RetrievalError, ValueError):
    """A training checkpoint is unreadable, truncated, or from another run; the message names the file and why."""
