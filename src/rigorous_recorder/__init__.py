"""rigorous_recorder: save everything an experiment produces, in a filterable way.

A tree of recorders; each record sees its ancestors' data without copying it:

>>> from rigorous_recorder import Recorder
>>> experiment = Recorder(experiment=1)
>>> episode = Recorder(episode=2).set_parent(experiment)
>>> episode.push(x=1.0, y=0.5)
Recorder(episode=2, records=1, children=0)
>>> episode.add(x=2.0)
Recorder(episode=2, records=1, children=0)
>>> episode.add({"y": 0.25}).commit()
{'x': 2.0, 'y': 0.25, 'episode': 2, 'experiment': 1}
>>> [record["x"] for record in experiment.all_records if record["episode"] == 2]
[1.0, 2.0]
>>> episode[0]["missing"] is None
True
"""

from .collection import ExperimentCollection
from .errors import (
    CollectionError,
    DamagedFileError,
    InvalidKeyError,
    QueryError,
    RecorderError,
    RecorderTreeError,
    StorageError,
    UnsupportedValueError,
)
from .experiment import Experiment
from .record import Record, RecordSequence
from .recorder import RecordKeeper, Recorder

__version__ = "2.0.0.dev0"

__all__ = [
    "CollectionError",
    "DamagedFileError",
    "Experiment",
    "ExperimentCollection",
    "InvalidKeyError",
    "QueryError",
    "Record",
    "RecordKeeper",
    "RecordSequence",
    "Recorder",
    "RecorderError",
    "RecorderTreeError",
    "StorageError",
    "UnsupportedValueError",
]
