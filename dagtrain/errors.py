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
