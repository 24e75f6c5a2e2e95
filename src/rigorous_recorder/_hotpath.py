"""The per-value loops of the hot path: compiled when possible, Python otherwise.

``append_plain_row`` runs in every ``push()``; ``stage_plain_values`` in every ``add()``
and ``commit_staged_row`` in every ``commit()``, for plain values (compiled, ``add`` and
``commit`` themselves become C methods: see ``compile_methods``). ``pack_column`` runs
once per column each time pending rows become an Arrow batch; it packs float, int, bool
and str columns, the usual ones, without ``pa.array`` (whose first call imports pandas
when it is installed). ``seen_logs`` copies the logs of every Keras batch, each float32
value (Keras hands them as floats) as ``float32_seen`` shows it: the shortest decimal that
gives it back.

Each is written twice with one contract: in C (``_speedups.c``, an optional extension
built at install time when a compiler is there) and in Python below. The C pair is used
when it was built, unless the environment sets ``RIGOROUS_RECORDER_PURE_PYTHON=1``.
``COMPILED`` tells which pair is in use.
"""

from __future__ import annotations

import os
import struct
from array import array
from collections.abc import Mapping
from itertools import accumulate
from typing import Any

from ._values import PLAIN_TYPES, RESERVED_KEYS

_ROW_TYPES = PLAIN_TYPES | {type(None)}


def append_plain_row_python(pending: Any, values: dict[str, Any]) -> int:
    """Append each value to ``pending[key]`` and return the new row count, or return 0.

    ``pending`` is a dict of lists, or an object whose ``_pending`` attribute is one (the
    compiled twin reads it and appends in one step no other thread can split; this one
    cannot promise that). Appends only when every key is a ``str`` naming a column of ``pending``, both dicts
    have as many keys (at least one), and every value is an exact float, int, str, bool
    or None; otherwise nothing changes.
    """
    if type(pending) is not dict:
        pending = pending._pending
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


def stage_plain_values_python(holder: Any, data: dict[str, Any] | None, values: dict[str, Any]) -> bool:
    """Stage ``data`` then ``values`` into ``holder._staged`` and return True, or return False.

    Stages only when every key is a non-empty ASCII ``str`` that is not reserved, every
    value is an exact float, int, str, bool or None, and ``holder._store.failure`` is None;
    otherwise nothing changes. ``_staged`` None becomes a new dict (``values`` itself when
    ``data`` is None: pass a dict nobody else holds, as ``**values`` is) and ``holder._fast``
    becomes False; a dict is updated.
    """
    if (data is not None and type(data) is not dict) or holder._store.failure is not None:
        return False
    for mapping in (values,) if data is None else (data, values):
        for key, value in mapping.items():
            if type(value) not in _ROW_TYPES or type(key) is not str or not key or not key.isascii() \
                    or key in RESERVED_KEYS:
                return False
    staged = holder._staged
    if staged is None:
        holder._staged = values if data is None else {**data, **values}
        holder._fast = False
    elif type(staged) is dict:
        if data is not None:
            staged.update(data)
        staged.update(values)
    else:
        return False
    return True


def commit_staged_row_python(holder: Any, record_class: Any) -> Any:
    """Append the staged values as one row and return ``record_class(columns, index, holder)``, or None.

    Appends when ``holder._direct`` is True and ``holder._staged`` is a dict that
    ``append_plain_row(holder, staged)`` appends; then ``_staged`` becomes None and ``_fast``
    True. (The compiled twin reads ``holder._pending`` and appends in one step no other thread
    can split; this one cannot promise that.) Otherwise nothing changes.
    """
    staged, pending = holder._staged, holder._pending
    if holder._direct is not True or type(staged) is not dict or type(pending) is not dict:
        return None
    rows = append_plain_row_python(pending, staged)
    if not rows:
        return None
    holder._staged, holder._fast = None, True
    return record_class(pending, rows - 1, holder)


def compile_methods_python(recorder_class: type, record_class: type, batch_rows: int) -> dict[str, Any]:
    """Leave the Python ``add`` and ``commit`` of ``recorder_class`` in place, and return them by name.

    The compiled twin replaces them by C methods that stage plain values and commit a staged
    row (under ``batch_rows`` unsealed rows, as ``record_class``) in place, without the frame
    and the keyword dict of a Python call, and hand every other call to the methods it returns.
    """
    return {"add": recorder_class.add, "commit": recorder_class.commit}


def pack_column_python(values: list[Any]) -> tuple[str, tuple[Any, ...], Any, int] | None:
    """The buffers of an Arrow array for a list of one kind of plain value (None: missing).

    Returns ``(kind, buffers, validity, null_count)``. ``kind`` ``"d"``: float64 (ints among
    floats widen), buffers ``(data,)``; ``"q"``: int64, ``(data,)``; ``"b"``: bool,
    ``(bits,)``; ``"s"``: utf8 string, ``(int32 offsets, data)``. ``validity`` is an
    LSB-first bitmap of the values that are not None, None when none is missing. Returns
    None when the list mixes kinds (other than ints with floats), holds anything else,
    holds no value at all, or a value does not fit (an int beyond the type, a str that is
    not valid UTF-8, over 2 GiB of text).
    """
    kinds = set(map(type, values))
    missing = type(None) in kinds
    kinds.discard(type(None))
    try:
        packed = _pack_python(kinds, values, missing)
    except (OverflowError, UnicodeEncodeError):  # an int beyond the type, a lone surrogate, > 2 GiB
        return None
    if packed is None:
        return None
    validity = _bitmap([value is not None for value in values]) if missing else None
    return *packed, validity, values.count(None) if missing else 0


def _pack_python(kinds: set[type], values: list[Any], missing: bool) -> tuple[str, tuple[Any, ...]] | None:
    if kinds and kinds <= {int, float}:
        typecode = "q" if kinds == {int} else "d"
        if typecode == "d" and int in kinds and not all(
                -(1 << 63) <= value < 1 << 63 for value in values if type(value) is int):
            raise OverflowError("an int beyond int64 among floats")  # as the compiled twin: it does not fit
        return typecode, (array(typecode, [0 if value is None else value for value in values] if missing else values),)
    if kinds == {bool}:
        return "b", (_bitmap([value is True for value in values]),)
    if kinds == {str}:
        encoded = [b"" if value is None else value.encode() for value in values]
        return "s", (array("i", accumulate(map(len, encoded), initial=0)), b"".join(encoded))
    return None


def _bitmap(bits: list[bool]) -> bytes:
    """The LSB-first bitmap of ``bits``."""
    digits = "".join("1" if bit else "0" for bit in reversed(bits))
    return int(digits, 2).to_bytes((len(bits) + 7) // 8, "little")


_FLOAT32 = struct.Struct("f")


def float32_seen_python(value: float) -> float:
    """A float that is a float32 value, as the shortest decimal that gives that float32 back.

    The decimal is Python's ``"%.7g"``, or ``"%.6g"`` when that gives the float32 back too, else
    ``"%.8g"`` when that does, else ``"%.9g"``, parsed by ``float()``. Any other float (NaN, one
    between two float32 values, one past float32's range) is returned as it is; TypeError when
    ``value`` is not a float.

    >>> float32_seen_python(0.004999999888241291), float32_seen_python(0.1)
    (0.005, 0.1)
    >>> float32_seen_python(0.1 + 1e-12) == 0.1 + 1e-12  # not a float32 value: kept
    True
    """
    if not isinstance(value, float):
        raise TypeError(f"float32_seen() takes a float, not {type(value).__name__}")
    pack = _FLOAT32.pack
    try:
        packed = pack(value)
    except OverflowError:
        return value
    if _FLOAT32.unpack(packed)[0] != value:
        return value  # not a float32 value (or NaN): kept as it is
    # Two tries for nearly every value (9 digits always give a float32 back; fewer than 6 digits
    # that do are what 6 digits round to). 7 first: a quarter of float32 values take 6 or 7 digits.
    # When 7 digits do not give it back, 6 do not either: the 7-digit decimal is the nearer one.
    # (At a power of two the float32 below is nearer than the one above, so a 6-digit decimal
    # above could give it back where a 7-digit one below does not; for none of the 508 float32
    # powers of two does it happen.)
    seven = float("%.7g" % value)
    if pack(seven) == packed:
        six = float("%.6g" % value)
        return six if pack(six) == packed else seven
    eight = float("%.8g" % value)
    return eight if pack(eight) == packed else float("%.9g" % value)


def seen_logs_python(logs: Mapping[str, Any] | None, prefix: str = "") -> dict[str, Any]:
    """``logs`` (None: none) as a new dict, each float32 value as ``float32_seen`` shows it.

    Each key gets ``prefix`` before it (kept as it is when ``prefix`` is empty); each exact
    float goes through ``float32_seen``; other values are kept.

    >>> seen_logs_python({"loss": 0.004999999888241291, "size": 32}, "val_")
    {'val_loss': 0.005, 'val_size': 32}
    """
    return {(prefix + key if prefix else key): float32_seen_python(value) if type(value) is float else value
            for key, value in (logs or {}).items()}


try:
    if os.environ.get("RIGOROUS_RECORDER_PURE_PYTHON") == "1":
        raise ImportError("RIGOROUS_RECORDER_PURE_PYTHON=1")
    from ._speedups import (
        append_plain_row,
        commit_staged_row,
        compile_methods,
        float32_seen,
        pack_column,
        seen_logs,
        stage_plain_values,
    )
except ImportError:
    append_plain_row, pack_column = append_plain_row_python, pack_column_python
    float32_seen, seen_logs = float32_seen_python, seen_logs_python
    stage_plain_values, commit_staged_row = stage_plain_values_python, commit_staged_row_python
    compile_methods = compile_methods_python
    COMPILED = False
else:
    COMPILED = True
