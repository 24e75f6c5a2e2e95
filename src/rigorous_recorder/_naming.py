"""Column names of the flat views: one distinct SQL name per key, and the way back.

SQL engines (DuckDB, Spark) compare names without regard to case, so ``Loss`` and ``loss``
cannot both be columns under their own names. The rule, applied to the keys of a view:

* a key is its own column name, except that each ``~`` in it is doubled (``a~b`` is
  column ``a~~b``);
* keys that differ only in case (and a key spelled like a column the view reserves, such
  as ``run_id`` or ``status``) are *twins*: the reserved column, else the all-lowercase
  key, else the first in code point order keeps the name; the others get ``~2``, ``~3``,
  ... in code point order (``Loss`` beside ``loss`` is ``Loss~2``);
* the companion column that holds a key's values of another type, as JSON text, is the
  key's column name followed by ``~json`` (``loss~json``);
* the view's internal columns start with a single ``~`` (``~source``, ``~recorder``).

A single ``~`` thus never comes from a key: every name reads back to its key and part
(:func:`parse`), and no key, however spelled, can take a reserved or internal name.

>>> view_names(["loss", "Loss", "a~b", "status"], reserved=["run_id", "status"])
{'loss': 'loss', 'Loss': 'Loss~2', 'a~b': 'a~~b', 'status': 'status~2'}
>>> parse("Loss~2~json")
('Loss', 'json')
"""

from __future__ import annotations

from collections.abc import Iterable

MARK = "~"
#: The tag of a companion column: the values of a key that do not fit its typed column.
JSON_TAG = "json"
#: Join keys of the records view's parts: no key can take these names.
SOURCE_COLUMN = MARK + "source"
RECORDER_COLUMN = MARK + "recorder"


def escape(key: str) -> str:
    """``key`` with each ``~`` doubled: the name of a key that has no twin."""
    return key.replace(MARK, MARK + MARK)


def view_names(keys: Iterable[str], reserved: Iterable[str] = ()) -> dict[str, str]:
    """The column name of each key, distinct without regard to case (see the module docstring)."""
    reserved = list(reserved)
    groups: dict[str, list[str]] = {}
    for key in dict.fromkeys(keys):
        groups.setdefault(key.casefold(), []).append(key)
    taken = {name.casefold() for name in reserved}
    names = {}
    for folded, twins in groups.items():
        twins.sort(key=lambda key: (key != key.lower(), key))
        first = 1 if folded in taken else 0
        for index, key in enumerate(twins, start=first + 1):
            names[key] = escape(key) if index == 1 else f"{escape(key)}{MARK}{index}"
    return names


def companion(name: str) -> str:
    """The name of the companion (JSON text) column of the column ``name``."""
    return f"{name}{MARK}{JSON_TAG}"


def parse(name: str) -> tuple[str, str | None]:
    """The key a column name stands for, and its part: None for the typed column, ``"json"``
    for the companion column, or the internal column's name for ``~source``/``~recorder``.

    >>> parse("a~~b"), parse("~source")
    (('a~b', None), ('', 'source'))
    """
    key, tags, index = [], [], 0
    while index < len(name):
        if name.startswith(MARK + MARK, index):
            key.append(MARK)
            index += 2
        elif name[index] == MARK:
            tags = name[index + 1:].split(MARK)
            break
        else:
            key.append(name[index])
            index += 1
    part = next((tag for tag in tags if not tag.isdigit()), None)
    return "".join(key), part
