"""Errors raised on purpose by rigorous_recorder.

Every error subclasses :class:`RecorderError` and the built-in exception a caller would
already catch::

    RecorderError(Exception)
    ├── UnsupportedValueError(TypeError)     a value cannot be stored in a record
    ├── InvalidKeyError(TypeError)           a key is not a non-empty string
    ├── RecorderTreeError(ValueError)        a parent link would make a cycle
    ├── CollectionError(ValueError)          a folder is not a collection, or a run is unknown
    │   └── DamagedFileError                 a file of a collection cannot be read
    ├── QueryError(ValueError)               a query or plot names what the records do not hold
    └── StorageError(OSError)                writing to the collection failed (a full disk)
"""

from __future__ import annotations


class RecorderError(Exception):
    """Base class of every error this package raises on purpose."""


class UnsupportedValueError(RecorderError, TypeError):
    """A value cannot be stored in a record or in a recorder's local data."""


class InvalidKeyError(RecorderError, TypeError):
    """A key is not a non-empty string."""


class RecorderTreeError(RecorderError, ValueError):
    """A change to the recorder tree would break it (a recorder would become its own ancestor)."""


class CollectionError(RecorderError, ValueError):
    """A path is not a collection, or an experiment asked for does not exist."""


class QueryError(RecorderError, ValueError):
    """A query or a plot names a column the records do not have, or asks for what they cannot give."""


class DamagedFileError(CollectionError):
    """A file of a collection cannot be read: damaged, foreign, or pointing outside its run."""

    def __init__(self, path: object, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem


class StorageError(RecorderError, OSError):
    """Writing a run to disk failed (a full disk, an I/O error); records committed before
    the failure are kept and written once writing works again."""
