"""Tests of live_write_to: a YAML file that grows by one record per commit and always parses."""

import datetime
import enum
import math

import pytest
import yaml

from rigorous_recorder import Recorder

from .conftest import plains


def _read(path):
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def test_live_write_to_returns_the_recorder(tmp_path):
    """live_write_to() returns self, as in the seed's one-liner."""
    recorder = Recorder()
    assert recorder.live_write_to(tmp_path / "live.yaml", as_yaml=True) is recorder


def test_the_file_parses_before_any_record(tmp_path):
    """Right after live_write_to the file is valid YAML with the parent data and no records."""
    path = tmp_path / "live.yaml"
    Recorder(run=1).live_write_to(path)
    assert _read(path) == {"parent_data": {"run": 1}, "records": None}


def test_the_file_parses_between_pushes_and_grows_by_one_record_each(root, tmp_path):
    """Read between pushes, the file is valid YAML holding exactly the records so far."""
    path = tmp_path / "live.yaml"
    recorder = Recorder().set_parent(root).live_write_to(path)
    seen = []
    for index in range(3):
        recorder.push(index=index, loss=1 / (index + 1))
        seen.append(_read(path)["records"])
    assert seen == [
        [{"index": 0, "loss": 1.0}],
        [{"index": 0, "loss": 1.0}, {"index": 1, "loss": 0.5}],
        [{"index": 0, "loss": 1.0}, {"index": 1, "loss": 0.5}, {"index": 2, "loss": 1 / 3}],
    ]


def test_the_file_holds_the_lineage_data_as_parent_data(tmp_path):
    """parent_data is the recorder's local data merged with its ancestors' (nearest wins)."""
    path = tmp_path / "live.yaml"
    experiment = Recorder(experiment=1, name="experiment")
    episode = Recorder(episode=2, name="episode").set_parent(experiment).live_write_to(path)
    episode.push(x=1)
    assert _read(path) == {"parent_data": {"episode": 2, "name": "episode", "experiment": 1}, "records": [{"x": 1}]}


def test_records_committed_with_add_and_commit_are_written(root, tmp_path):
    """add() alone writes nothing; the commit() writes the record."""
    path = tmp_path / "live.yaml"
    recorder = Recorder().set_parent(root).live_write_to(path)
    recorder.add(index=0)
    before = _read(path)["records"]
    recorder.add(loss=0.5).commit()
    assert (before, _read(path)["records"]) == (None, [{"index": 0, "loss": 0.5}])


def test_a_record_without_a_key_omits_it_in_the_file(tmp_path):
    """Records with different keys are written with only their own keys."""
    path = tmp_path / "live.yaml"
    Recorder().live_write_to(path).push(x=1).push(y=2).push(x=None, y=3)
    assert _read(path)["records"] == [{"x": 1}, {"y": 2}, {"y": 3}]


def test_the_parent_directories_are_created(tmp_path):
    """A path in folders that do not exist yet works."""
    path = tmp_path / "where" / "ever" / "live.yaml"
    Recorder().live_write_to(path).push(x=1)
    assert _read(path)["records"] == [{"x": 1}]


def test_a_string_path_works(tmp_path):
    """live_write_to accepts a str as well as a Path."""
    path = tmp_path / "live.yaml"
    Recorder().live_write_to(str(path)).push(x=1)
    assert _read(path)["records"] == [{"x": 1}]


def test_a_relative_path_keeps_pointing_at_the_same_file_after_a_chdir(tmp_path, monkeypatch):
    """Records go to the file opened at live_write_to, even when the process changes directory."""
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path)
    recorder = Recorder().live_write_to("live.yaml").push(x=1)
    monkeypatch.chdir(tmp_path / "elsewhere")
    recorder.push(x=2)
    assert (_read(tmp_path / "live.yaml")["records"], (tmp_path / "elsewhere" / "live.yaml").exists()) == (
        [{"x": 1}, {"x": 2}],
        False,
    )


def test_values_of_every_kind_parse_back(tmp_path):
    """bytes, datetimes, NaN, inf, big ints, nested lists and dicts come back from safe_load."""
    path = tmp_path / "live.yaml"
    values = {
        "b": b"\x00\xff",
        "t": datetime.datetime(2024, 1, 2, 3, 4, 5),
        "d": datetime.date(2024, 1, 2),
        "big": 2**70,
        "inf": float("-inf"),
        "nested": [[1, 2], ["a"]],
        "config": {"lr": 0.1, "tags": ["x"]},
        "text": "null",
        "number_like": "1.5",
        "multiline": "a\nb: c",
        "flag": True,
    }
    Recorder().live_write_to(path).push(values, nan=float("nan"))
    (record,) = _read(path)["records"]
    assert math.isnan(record.pop("nan"))
    assert record == values


def test_an_aware_datetime_keeps_its_offset(tmp_path):
    """A datetime with a UTC offset reads back as the same instant with that offset."""
    path = tmp_path / "live.yaml"
    when = datetime.datetime(2024, 1, 2, 3, 4, tzinfo=datetime.timezone(datetime.timedelta(hours=2)))
    Recorder().live_write_to(path).push(when=when)
    back = _read(path)["records"][0]["when"]
    assert (back, back.utcoffset()) == (when, datetime.timedelta(hours=2))


def test_a_string_with_a_lone_surrogate_is_written_and_parses_back(tmp_path):
    """A str that UTF-8 cannot hold is written escaped, and reads back as the same str."""
    path = tmp_path / "live.yaml"
    recorder = Recorder(source="dir\udcff").live_write_to(path)
    recorder.push(path="bad\udcffé").push(path="fine é")
    assert _read(path) == {"parent_data": {"source": "dir\udcff"}, "records": [{"path": "bad\udcffé"}, {"path": "fine é"}]}


class Phase(enum.IntEnum):
    WARMUP = 0


def test_an_enum_value_is_written_as_its_plain_value(tmp_path):
    """An IntEnum member is stored as its int, so the YAML writer can represent it."""
    path = tmp_path / "live.yaml"
    Recorder().live_write_to(path).push(phase=Phase.WARMUP)
    assert _read(path)["records"] == [{"phase": 0}]


@pytest.mark.slow  # importing torch takes seconds
def test_numpy_and_torch_values_are_written_as_plain_values(tmp_path):
    """numpy scalars, arrays and 0-d tensors reach the file as plain numbers and lists."""
    numpy = pytest.importorskip("numpy")
    torch = pytest.importorskip("torch")
    path = tmp_path / "live.yaml"
    Recorder().live_write_to(path).push(a=numpy.float32(0.5), b=numpy.arange(2), c=torch.tensor(3))
    assert _read(path)["records"] == [{"a": 0.5, "b": [0, 1], "c": 3}]


def test_records_past_the_batch_boundary_are_all_written(root, tmp_path):
    """Sealing rows into a batch does not skip or repeat any record in the file."""
    from rigorous_recorder.recorder import BATCH_ROWS

    path = tmp_path / "live.yaml"
    recorder = Recorder().set_parent(root).live_write_to(path)
    for index in range(BATCH_ROWS + 2):
        recorder.push(index=index)
    assert [record["index"] for record in _read(path)["records"]] == list(range(BATCH_ROWS + 2))


def test_the_recorder_still_holds_the_records_it_writes(root, tmp_path):
    """Writing live does not take the records away from the recorder."""
    recorder = Recorder(run=1).set_parent(root).live_write_to(tmp_path / "live.yaml")
    recorder.push(x=1).push(x=2)
    assert plains(recorder) == [{"x": 1, "run": 1}, {"x": 2, "run": 1}]


def test_two_recorders_write_two_files(tmp_path):
    """Each recorder writes its own records to its own file."""
    root = Recorder(run=1)
    train = Recorder(split="train").set_parent(root).live_write_to(tmp_path / "train.yaml")
    test = Recorder(split="test").set_parent(root).live_write_to(tmp_path / "test.yaml")
    train.push(x=1)
    test.push(x=2)
    assert (_read(tmp_path / "train.yaml"), _read(tmp_path / "test.yaml")) == (
        {"parent_data": {"split": "train", "run": 1}, "records": [{"x": 1}]},
        {"parent_data": {"split": "test", "run": 1}, "records": [{"x": 2}]},
    )


def test_as_yaml_false_is_refused(tmp_path):
    """Only YAML is written; asking for anything else raises ValueError and creates no file."""
    with pytest.raises(ValueError, match="as_yaml=True"):
        Recorder().live_write_to(tmp_path / "live.json", as_yaml=False)
    assert not (tmp_path / "live.json").exists()


def test_a_refused_push_writes_nothing(root, tmp_path):
    """A push refused for an unsupported value leaves the file as it was."""
    path = tmp_path / "live.yaml"
    recorder = Recorder().set_parent(root).live_write_to(path).push(x=1)
    before = path.read_text(encoding="utf-8")
    with pytest.raises(TypeError):
        recorder.push(x=object())
    assert path.read_text(encoding="utf-8") == before
