"""Pausing Python's cyclic garbage collector while reading thousands of runs."""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator


@contextlib.contextmanager
def paused() -> Iterator[None]:
    """Run the block with the cyclic garbage collector off (restored after, as it was).

    Reading a collection makes tens of thousands of small dicts, lists and tuples that live on;
    every full collection meanwhile walks all of them again (a tenth to a fifth of a first query
    over 10,000 runs). Reference counting still frees what the block drops.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
