"""Errors raised on purpose by rigorous_recorder.

Every error subclasses :class:`RecorderError` and the built-in exception a caller would
already catch::

    RecorderError(Exception)
    ├── UnsupportedValueError(TypeError)     a value cannot be stored in a record
    ├── InvalidKeyError(TypeError)           a key is not a non-empty string
    ├── RecorderTreeError(ValueError)        a parent link would make a cycle
    └── CollectionError(ValueError)          a folder is not a collection, or a run is unknown
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
