"""What a record may hold, and how values are made storable.

Plain ``int``, ``float``, ``str`` and ``bool`` are stored as they are (the recorder's hot
path checks only their exact type). Everything else goes through :func:`normalize`, which
turns numpy and torch scalars into Python scalars, arrays and tensors into lists, tuples
into lists, and refuses what cannot be stored with an :class:`UnsupportedValueError` that
names the key. Neither numpy nor torch is ever imported here: a value can only be one of
theirs if the user already imported the library.
"""

from __future__ import annotations

import base64
import datetime
import json
import sys
from collections.abc import Mapping
from typing import Any

from .errors import InvalidKeyError, UnsupportedValueError
from .store.layout import RECORDER_COLUMN

#: The ints an int64 column holds; larger ones are stored as JSON text.
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
#: Ints up to this magnitude are exactly a float64.
EXACT_FLOAT_INT = 2**53

#: Exact types that are stored without any conversion.
PLAIN_TYPES = frozenset({float, int, str, bool})

_SCALAR_TYPES = (str, bool, int, float, bytes, datetime.date)

_WHAT_IS_STORABLE = (
    "use a number, string, bool, None, bytes, datetime, a list of those, a dict with "
    "string keys, or a numpy/torch scalar or array"
)


#: Keys a record may not use: saved files keep the recorder id in a column of this name.
RESERVED_KEYS = frozenset({RECORDER_COLUMN})


def check_key(key: Any) -> str:
    """Return ``key`` if it is a non-empty string, else raise :class:`InvalidKeyError`."""
    if type(key) is not str or not key:
        raise InvalidKeyError(f"cannot record key {key!r}: keys must be non-empty strings")
    if not key.isascii() and not _encodes(key):
        raise InvalidKeyError(f"cannot record key {key!r}: it holds a lone surrogate, which no file can store")
    if key in RESERVED_KEYS:
        raise InvalidKeyError(f"cannot record key {key!r}: the name is reserved for saved files; use another")
    return key


def normalize(key: str, value: Any) -> Any:
    """Return ``value`` in a storable form, or raise :class:`UnsupportedValueError`.

    >>> normalize("loss", (1, 2.5))
    [1, 2.5]
    """
    kind = type(value)
    if kind in PLAIN_TYPES or value is None:
        return value
    converted = _from_array_library(value)
    if converted is not _NOT_ARRAY:
        return normalize(key, converted)
    if isinstance(value, _SCALAR_TYPES):
        value = value if kind in _EXACT_SCALAR_TYPES else _plain_scalar(value)
        if isinstance(value, datetime.datetime) and value.utcoffset():
            _check_instant(key, value)
        return value
    if isinstance(value, bytearray):
        return bytes(value)
    if isinstance(value, (list, tuple)):
        return [normalize(f"{key}[{index}]", item) for index, item in enumerate(value)]
    if isinstance(value, Mapping):
        for inner_key in value:
            if type(inner_key) is not str:
                raise UnsupportedValueError(
                    f"cannot record key {key!r}: dict keys must be strings, got {inner_key!r}"
                )
        return {inner_key: normalize(f"{key}.{inner_key}", inner) for inner_key, inner in value.items()}
    raise UnsupportedValueError(
        f"cannot record key {key!r}: {kind.__module__}.{kind.__qualname__} is not storable; "
        + _WHAT_IS_STORABLE
    )


_NOT_ARRAY = object()


def _check_instant(key: str, value: datetime.datetime) -> None:
    """Refuse an aware datetime whose instant has no UTC datetime (before year 1 or after 9999
    in UTC): it is stored as that instant, and could never be read back into Python."""
    try:
        value.astimezone(datetime.timezone.utc)
    except OverflowError:
        raise UnsupportedValueError(
            f"cannot record key {key!r}: {value.isoformat()} is out of range: in UTC it falls before "
            "year 1 or after year 9999"
        ) from None

_EXACT_SCALAR_TYPES = frozenset({bytes, datetime.datetime, datetime.date})


def _plain_scalar(value: Any) -> Any:
    """The built-in value behind an instance of a subclass (an IntEnum, a pandas Timestamp)."""
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, int):
        return int.__int__(value)
    if isinstance(value, float):
        return float.__float__(value)
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, bytes):
        return bytes(value)
    if isinstance(value, datetime.datetime):
        return datetime.datetime(
            value.year, value.month, value.day, value.hour, value.minute, value.second,
            value.microsecond, value.tzinfo, fold=value.fold,
        )
    return datetime.date(value.year, value.month, value.day)


def _from_array_library(value: Any) -> Any:
    """Turn a numpy or torch scalar/array into Python values; ``_NOT_ARRAY`` for other values."""
    numpy = sys.modules.get("numpy")
    if numpy is not None and isinstance(value, (numpy.generic, numpy.ndarray)):
        kind = value.dtype.kind
        if kind in "mM":  # in nanoseconds, .item() and .tolist() give ints, not datetimes
            value = value.astype("datetime64[us]" if kind == "M" else "timedelta64[us]")
        return value.tolist() if isinstance(value, numpy.ndarray) else value.item()
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(value, torch.Tensor):
        return value.detach().cpu().tolist()
    return _NOT_ARRAY


def normalize_mapping(data: Mapping[str, Any] | None, values: Mapping[str, Any]) -> dict[str, Any]:
    """Check keys and normalize values of ``data`` merged with ``values`` (the latter wins)."""
    merged: dict[str, Any] = {}
    if data is not None:
        if type(data) is not dict and not isinstance(data, Mapping):
            raise UnsupportedValueError(
                f"expected a dict of values, got {type(data).__name__}: {data!r}"
            )
        _normalize_into(merged, data)
    if values:
        _normalize_into(merged, values)  # ** can pass any string, "" too
    return merged


def _normalize_into(merged: dict[str, Any], data: Mapping[str, Any]) -> None:
    for key, value in data.items():
        if type(value) in PLAIN_TYPES and type(key) is str and key.isascii() and key and key not in RESERVED_KEYS:
            merged[key] = value  # the common case, without the two calls below
        else:
            merged[check_key(key)] = normalize(key, value)


# -- tagged JSON: exact round trip of every storable value ---------------------------------


def _encode_special(value: Any) -> Any:
    if isinstance(value, bytes):
        return {"$bytes": base64.b64encode(value).decode("ascii")}
    if isinstance(value, datetime.datetime):
        return {"$datetime": value.isoformat()}
    if isinstance(value, datetime.date):
        return {"$date": value.isoformat()}
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


_DECODERS = {
    "$bytes": lambda text: base64.b64decode(text),
    "$datetime": datetime.datetime.fromisoformat,
    "$date": datetime.date.fromisoformat,
    "$dict": dict,  # a user dict of one "$" key, as [[key, value]]
}


def _decode_special(obj: dict[str, Any]) -> Any:
    if len(obj) == 1:
        ((tag, payload),) = obj.items()
        decoder = _DECODERS.get(tag)
        if decoder is not None:
            return decoder(payload)
    return obj


def _escape_tags(value: Any) -> Any:
    """Wrap each dict that could read as a tag (one key, starting with "$") in a ``$dict`` tag."""
    kind = type(value)
    if kind is list:
        return [_escape_tags(item) for item in value]
    if kind is dict:
        escaped = {key: _escape_tags(item) for key, item in value.items()}
        if len(escaped) == 1 and next(iter(escaped)).startswith("$"):
            return {"$dict": [list(pair) for pair in escaped.items()]}
        return escaped
    return value


def to_json(value: Any, **options: Any) -> str:
    """Encode a storable value as JSON text; bytes and dates become tagged objects.

    >>> to_json({"$bytes": "not bytes"})
    '{"$dict": [["$bytes", "not bytes"]]}'
    >>> from_json(to_json({"$bytes": "not bytes"}))
    {'$bytes': 'not bytes'}
    """
    value = _escape_tags(value)
    text = json.dumps(value, default=_encode_special, ensure_ascii=False, **options)
    if not text.isascii() and not _encodes(text):  # a lone surrogate: keep it as a \u escape
        text = json.dumps(value, default=_encode_special, ensure_ascii=True, **options)
    return text


def _encodes(text: str) -> bool:
    """True when ``text`` can be written as UTF-8 (a lone surrogate cannot)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def from_json(text: str | None) -> Any:
    """Decode what :func:`to_json` wrote (``None`` stays ``None``)."""
    if text is None:
        return None
    if '"$' not in text:  # no tagged object: the decoder need not look at every object
        return json.loads(text)
    return json.loads(text, object_hook=_decode_special)
