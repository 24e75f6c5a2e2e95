"""The two per-value loops of the hot path: compiled when possible, Python otherwise.

``append_plain_row`` runs in every ``push()``; ``pack_numbers`` once per column each time
pending rows become an Arrow batch. Both are written twice with one contract: in C
(``_speedups.c``, an optional extension built at install time when a compiler is there)
and in Python below. The C pair is used when it was built, unless the environment sets
``RIGOROUS_RECORDER_PURE_PYTHON=1``. ``COMPILED`` tells which pair is in use.
"""

from __future__ import annotations

import os
from array import array
from typing import Any

_ROW_TYPES = frozenset({float, int, str, bool, type(None)})
_NUMERIC_TYPECODES = {float: "d", int: "q"}


def append_plain_row_python(pending: dict[str, list[Any]], values: dict[str, Any]) -> int:
    """Append each value to ``pending[key]`` and return the new row count, or return 0.

    Appends only when every key is a ``str`` naming a column of ``pending``, both dicts
    have as many keys (at least one), and every value is an exact float, int, str, bool
    or None; otherwise nothing changes.
    """
    if not values or len(values) != len(pending):
        return 0
    column: list[Any] = []
    try:
        for key, value in values.items():
            if type(value) not in _ROW_TYPES or type(key) is not str:
                break
            column = pending[key]
            column.append(value)
        else:
            return len(column)
    except KeyError:
        pass
    rows = min(map(len, pending.values()))  # undo the appends of a row that stopped halfway
    for column in pending.values():
        del column[rows:]
    return 0


def pack_numbers_python(values: list[Any]) -> tuple[str, Any, Any, int] | None:
    """The buffers of an Arrow array for a list of exact floats and ints (None: missing).

    Returns ``(typecode, data, validity, null_count)``: typecode ``"d"`` (float64; ints
    among floats widen) or ``"q"`` (int64), ``data`` 8 bytes a value, ``validity`` an
    LSB-first bitmap of the values that are not None (None when none is missing).
    Returns None when the list holds anything else, no number at all, or an int that
    does not fit the type.
    """
    kinds = set(map(type, values))
    missing = type(None) in kinds
    kinds.discard(type(None))
    typecode = "d" if kinds == {int, float} else _NUMERIC_TYPECODES.get(kinds.pop()) if len(kinds) == 1 else None
    if typecode is None:
        return None
    try:
        data = array(typecode, [0 if value is None else value for value in values] if missing else values)
    except OverflowError:
        return None
    if not missing:
        return typecode, data, None, 0
    bits = "".join("0" if value is None else "1" for value in reversed(values))
    return typecode, data, int(bits, 2).to_bytes((len(values) + 7) // 8, "little"), bits.count("0")


try:
    if os.environ.get("RIGOROUS_RECORDER_PURE_PYTHON") == "1":
        raise ImportError("RIGOROUS_RECORDER_PURE_PYTHON=1")
    from ._speedups import append_plain_row, pack_numbers
except ImportError:
    append_plain_row, pack_numbers = append_plain_row_python, pack_numbers_python
    COMPILED = False
else:
    COMPILED = True
