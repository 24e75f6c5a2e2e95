"""The rigorous-recorder 1.2.0 README examples that need no collection, run verbatim."""

import yaml

from rigorous_recorder import Recorder as LoadedRecorder


def run_the_seed_recorder_example() -> None:
    """The README's Recorder example, verbatim ("How does Rigorous Recorder Fix This?")."""
    from rigorous_recorder import Recorder
    recorder = Recorder()

    # parent data
    experiment_recorder = Recorder(experiment=1).set_parent(recorder)
    episode_recorder    = Recorder(episode=1).set_parent(experiment_recorder)

    episode_recorder.push(x=1, y=1) # timestep1
    episode_recorder.push(x=2, y=2) # timestep2
    episode_recorder.push(x=3, y=3) # timestep3

    recorder.save_to("where/ever/you_want.pickle")


def test_the_seed_recorder_example_runs_and_saves_the_tree(tmp_path, monkeypatch):
    """The README's Recorder example runs as written and its pickle path loads back as the tree."""
    monkeypatch.chdir(tmp_path)
    run_the_seed_recorder_example()

    loaded = LoadedRecorder.load_from(tmp_path / "where" / "ever" / "you_want.pickle")
    assert [dict(record) for record in loaded.all_records] == [
        {"x": 1, "y": 1, "episode": 1, "experiment": 1},
        {"x": 2, "y": 2, "episode": 1, "experiment": 1},
        {"x": 3, "y": 3, "episode": 1, "experiment": 1},
    ]


def test_the_seed_recorder_example_keeps_the_hierarchy(tmp_path, monkeypatch):
    """The saved example loads as root -> experiment -> episode, records on the episode only."""
    monkeypatch.chdir(tmp_path)
    run_the_seed_recorder_example()

    loaded = LoadedRecorder.load_from("where/ever/you_want.pickle")
    (experiment,) = loaded.children
    (episode,) = experiment.children
    assert (len(loaded), len(experiment), len(episode), experiment["experiment"], episode["episode"]) == (0, 0, 3, 1, 1)


def test_the_seed_super_simple_usage_example_writes_live_yaml(tmp_path, monkeypatch):
    """The README's "Super simple usage" runs as written and leaves a parseable YAML file."""
    monkeypatch.chdir(tmp_path)

    # -- verbatim from the seed README ("Super simple usage") --
    from rigorous_recorder import RecordKeeper
    record_keeper = RecordKeeper().live_write_to("where/ever/you_want.yaml", as_yaml=True)
    record_keeper.push(x=1, y=1)
    # -- end of the seed's code --

    written = yaml.safe_load((tmp_path / "where" / "ever" / "you_want.yaml").read_text(encoding="utf-8"))
    assert written == {"parent_data": {}, "records": [{"x": 1, "y": 1}]}
