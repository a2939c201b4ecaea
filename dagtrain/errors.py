"""The exceptions dagtrain raises.

Every error says what was wrong, where, and how to fix it. They all derive from
:class:`DagtrainError`, so ``except dt.DagtrainError`` catches anything the library
raises on purpose; each also derives from the builtin a Python user would expect
(``ValueError`` for a bad argument, ``FileNotFoundError`` for a missing store).
"""

from __future__ import annotations


class DagtrainError(Exception):
    """Base class of every error dagtrain raises on purpose."""


class ConfigError(DagtrainError, ValueError):
    """A bad argument: a value out of range, an unknown name, inconsistent sizes."""


class DataError(DagtrainError, ValueError):
    """Training data that is malformed: wrong shape or dtype, NaN, labels out of range."""


class StoreNotFoundError(DagtrainError, FileNotFoundError):
    """A zarr store, dataset file or directory that does not exist."""


class CorruptStoreError(DagtrainError, OSError):
    """A store or file that exists but cannot be read as what it claims to be."""


class GraphError(DagtrainError, ValueError):
    """A task graph that breaks one of the validator's rules (see ``graph.validate``)."""


class DivergenceError(DagtrainError, FloatingPointError):
    """Training diverged: NaN or inf in the weights or the loss.

    ``step`` is where it was caught, ``chain`` and ``layer`` whose weights went bad (None
    when unknown or when the schedule has one chain), ``checkpoint`` the last good
    checkpoint (None when the run wrote none).
    """

    def __init__(self, message: str, *, step: int | None = None, chain: int | None = None,
                 layer: int | None = None, checkpoint: str | None = None) -> None:
        super().__init__(message)
        self.step, self.chain, self.layer, self.checkpoint = step, chain, layer, checkpoint

    def __reduce__(self) -> tuple[object, ...]:
        # Keyword-only fields: pickle (process and cluster workers send errors back) needs them spelled out.
        return (_divergence_error, (self.args[0], self.step, self.chain, self.layer, self.checkpoint))


def _divergence_error(message: str, step: int | None, chain: int | None, layer: int | None,
                      checkpoint: str | None) -> DivergenceError:
    return DivergenceError(message, step=step, chain=chain, layer=layer, checkpoint=checkpoint)


class PerformanceWarning(UserWarning):
    """A setting that makes a run much slower than it need be, with the fix (the run still goes on)."""
