"""What the Lightning and Keras adapters share: key naming rules, the row commit, a null recorder.

Name clashes never lose a value. The adapters own some keys (``model``, ``stage``, ``step``,
``epoch``, ``batch_idx``, ``level``, ...); a key of yours that meets one of them is kept
under a prefixed name:

* experiment info, ``add()``-ed values and logged metrics: ``user/<key>``;
* hyperparameters: ``hparams/<key>``, also when the key is experiment info of another value
  (the info given to the logger keeps its name; the value the fit used is ``hparams/<key>``).
"""

from __future__ import annotations

import warnings
from argparse import Namespace
from collections.abc import Mapping
from typing import Any

from rigorous_recorder import Recorder
from rigorous_recorder.errors import UnsupportedValueError
from rigorous_recorder.store.layout import BOOKKEEPING_KEYS

#: The prefix of a user key (info, added value, metric) that meets an adapter key.
USER_PREFIX = "user/"
#: The prefix of a hyperparameter that meets an adapter key or an experiment info key.
HPARAMS_PREFIX = "hparams/"
#: ``level`` of a record: one optimizer step, one evaluation or predict batch, one epoch's end.
STEP, BATCH, EPOCH = "step", "batch", "epoch"
#: Keys the adapters set on records (``wall_time``: ``time.time()`` when the record was made).
RECORD_KEYS = frozenset({"step", "epoch", "batch_idx", "dataloader_idx", "level", "wall_time"})


def renamed(data: Mapping[str, Any], taken: frozenset[str] | set[str], prefix: str, what: str,
            clash: str = "also the adapter's") -> dict[str, Any]:
    """``data`` with each key found in ``taken`` moved to ``prefix + key``, with a warning saying why (``clash``)."""
    clashes = sorted(taken.intersection(data))
    if not clashes:
        return dict(data)
    warnings.warn(f"rigorous_recorder: {what} {', '.join(map(repr, clashes))} "
                  f"{'is' if len(clashes) == 1 else 'are'} {clash}: kept as "
                  f"{', '.join(repr(prefix + key) for key in clashes)}", stacklevel=4)
    return {(prefix + key if key in taken else key): value for key, value in data.items()}


def stored_info(info: Mapping[str, Any], adapter_keys: frozenset[str]) -> dict[str, Any]:
    """The experiment info as stored: keys the adapter uses on the records become ``user/<key>``."""
    return renamed(info, adapter_keys | RECORD_KEYS | set(BOOKKEEPING_KEYS), USER_PREFIX, "experiment info")


def hyperparameters(hparams: Mapping[str, Any], adapter_keys: frozenset[str], info: Mapping[str, Any]) -> dict[str, Any]:
    """Hyperparameters as stored: adapter keys, and info keys of another value, become ``hparams/<key>``.

    A hyperparameter equal to the experiment info of its name is stored as it is.
    """
    differ = {key for key in hparams if key in info and info[key] != hparams[key]}
    adapters = adapter_keys | RECORD_KEYS | set(BOOKKEEPING_KEYS)
    stored = renamed(hparams, adapters, HPARAMS_PREFIX, "hyperparameter")
    return renamed(stored, differ - adapters, HPARAMS_PREFIX, "hyperparameter", "also experiment info of another value")


def flattened(params: Mapping[str, Any] | Namespace, prefix: str = "") -> dict[str, Any]:
    """Nested hyperparameters or configs as ``a/b`` keys, stored as a recorder stores them (a value that
    cannot be stored becomes its ``str()``, as Lightning's CSV and TensorBoard loggers write it).

    >>> from pathlib import PurePosixPath
    >>> flattened({"optimizer": {"lr": 0.1, "betas": (0.9, 0.99)}, "loss": len, "data": PurePosixPath("/data")})
    {'optimizer/lr': 0.1, 'optimizer/betas': [0.9, 0.99], 'loss': '<built-in function len>', 'data': '/data'}
    """
    flat: dict[str, Any] = {}
    for key, value in (vars(params) if isinstance(params, Namespace) else params).items():
        name = f"{prefix}{key}"
        if isinstance(value, Namespace):
            value = vars(value)
        if isinstance(value, Mapping) and value:
            flat.update(flattened(value, name + "/"))
            continue
        try:
            flat.update(Recorder({name: value}).local_data)  # stored as the recorder would store it
        except (TypeError, ValueError):
            flat[name] = str(value)
    return flat


def add_logged(recorder: Recorder, logged: Mapping[str, Any], stringified: set[str], framework: str) -> Recorder:
    """``recorder.add(logged)``; a logged value a record cannot store (a complex number) is added as its text,
    as ``framework``'s CSVLogger writes it, with one warning per key (``stringified``: the keys warned of)."""
    try:
        return recorder.add(logged)
    except UnsupportedValueError:  # raised before anything was staged
        return recorder.add(storable_logs(logged, stringified, framework))


def storable_logs(logged: Mapping[str, Any], stringified: set[str], framework: str) -> dict[str, Any]:
    """``logged`` with each value a record cannot store replaced by its text (a scalar tensor's or array's as
    its ``tolist()`` prints); warns once per key not yet in ``stringified``, and adds it there."""
    stored = dict(logged)
    for key, value in logged.items():
        try:
            Recorder({key: value})
        except UnsupportedValueError:
            plain = value.tolist() if callable(getattr(value, "tolist", None)) else value
            stored[key] = str(plain)
            if key not in stringified:
                stringified.add(key)
                warnings.warn(f"rigorous_recorder: metric {key!r} holds a {type(plain).__name__}, which a record "
                              f"cannot store: kept as its text ({stored[key]!r}), as {framework}'s CSVLogger "
                              "writes it", stacklevel=4)
    return stored


def commit_row(recorder: Recorder, adapter_values: Mapping[str, Any]) -> None:
    """Commit the staged values with the adapter's; a staged user value that differs is kept as ``user/<key>``."""
    staged = recorder.staged
    if staged and (moved := {USER_PREFIX + key: staged[key] for key in staged.keys() & adapter_values.keys()
                             if staged[key] != adapter_values[key]}):
        recorder.add(moved)
    recorder.push(adapter_values)


class NullRecorder(Recorder):
    """A recorder that records nothing: what the adapters hand out when no run is recording."""

    __slots__ = ()

    def add(self, data: Mapping[str, Any] | None = None, /, **values: Any) -> NullRecorder:
        """Accept the values and drop them."""
        return self

    def push(self, data: Mapping[str, Any] | None = None, /, **values: Any) -> NullRecorder:
        """Accept the values and drop them."""
        return self

    def commit(self) -> None:  # type: ignore[override]
        """Record nothing."""

    def update(self, data: Mapping[str, Any] | None = None, /, **values: Any) -> None:
        """Accept the values and drop them."""

    def __repr__(self) -> str:
        return "NullRecorder()"
