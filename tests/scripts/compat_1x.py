"""The API rigorous-recorder 1.4.4 documents, exercised; prints what it recorded as JSON.

Run by tests/test_compat_1x.py under 1.4.4 and under this package: the two outputs must match.
Usage: python compat_1x.py FOLDER
"""

import json
import sys

from rigorous_recorder import ExperimentCollection, RecordKeeper, Recorder

folder = sys.argv[1]
out = {}

# the seed's Recorder example
recorder = Recorder()
experiment_recorder = Recorder(experiment=1).set_parent(recorder)
episode_recorder = Recorder(episode=1).set_parent(experiment_recorder)
episode_recorder.push(x=1, y=1)
episode_recorder.push({"x": 2, "y": 2})
episode_recorder.add(x=3)
episode_recorder.add({"y": 3})
episode_recorder.commit()
# (1.4.4's Recorder loses the grandparent's data: record["experiment"] is None there, against the seed's
# own description; here it is 1. tests/test_seed_examples.py checks ours.)
out["all_records"] = [[record[key] for key in ("x", "y", "episode")] for record in recorder.all_records]
out["len"] = len(episode_recorder)
out["missing_key"] = episode_recorder[0].get("missing", "default")

# RecordKeeper, whose 1.x API is wider
keeper = RecordKeeper(run=1)
episode_keeper = RecordKeeper({"episode": 1}).set_parent(keeper)
episode_keeper.add(x=4)
episode_keeper.commit(additional_info={"y": 4})
episode_keeper.push(x=5, y=5)
out["keeper_records"] = [[record[key] for key in ("x", "y", "episode", "run")] for record in keeper.all_records]
out["number_of_records"] = episode_keeper.number_of_records
episode_keeper.local_data["note"] = "late"
out["late_local_data"] = dict(episode_keeper.local_data)
out["record_sees_late_data"] = episode_keeper[0]["note"]
keeper = RecordKeeper({"a": 1})
sub = keeper.SubRecordKeeper(b=2)
sub.push(c=3)
out["sub_record"] = dict(list(keeper.all_records)[0])
other = RecordKeeper(a=10)
sub.swap_out(keeper, other)
sub.push(c=4)  # 1.x: records committed before swap_out keep the old lineage; 2.x: every record sees the new one
out["after_swap_out"] = dict(list(sub.all_records)[-1])
out["keys"] = sorted(keeper.keys())
out["items"] = sorted(keeper.items())
out["get"] = [keeper.get("a"), keeper.get("zzz", 5)]

# the seed's collection example, small
collection = ExperimentCollection(folder + "/study", True, None, ".collection")
with collection.new_experiment(lr=0.1) as experiment:
    model = RecordKeeper(model="m1").set_parent(experiment)
    train = RecordKeeper(training=True).set_parent(model)
    for index in range(3):
        train.push(index=index, loss=1 / (index + 1))
    train.add(index=3)
    train.add({"loss": 0.2})
    train.commit()
bookkeeping_times = {"experiment_start_time", "experiment_end_time", "experiment_duration"}
out["collection_records"] = [{key: value for key, value in dict(record).items() if key not in bookkeeping_times}
                             for record in collection.records]
out["experiment_numbers"] = list(collection.experiment_numbers)
out["len_collection"] = len(collection)
out["last_experiment"] = len(collection[-1])
print(json.dumps(out, sort_keys=True))
