"""Record ``data/study``, the collection whose real output docs/cli.md and README's command line show.

Three good runs (63 records: three epochs of 20 training steps and one validation record), one
run that fails on its first step, and one run whose process dies (``os._exit``) after flushing 7
records. Run it in the folder that should hold ``data/``: ``python readme_study.py``. The losses
are a deterministic decay, ``best + (start - best) * DECAY ** step``, rounded to 4 digits.
"""

from __future__ import annotations

import os

from rigorous_recorder import ExperimentCollection

PATH = "data/study"
DECAY = 0.6802
EPOCHS = 3
STEPS_PER_EPOCH = 20
#: model, lr, first loss, the loss it decays towards, validation accuracy of the last epoch
GOOD_RUNS = [("mlp", 0.1, 1.5, 0.1482, 0.8), ("mlp", 0.01, 1.05, 0.09, 0.8), ("cnn", 0.01, 0.63, 0.035, 0.9)]
CRASHED_RUN_RECORDS = 7


def loss(step: int, start: float, best: float) -> float:
    """The training loss at ``step``."""
    return round(best + (start - best) * DECAY**step, 4)


def record_good_runs(collection: ExperimentCollection) -> None:
    for model, lr, start, best, accuracy in GOOD_RUNS:
        with collection.new_experiment(model=model, lr=lr) as experiment:
            for epoch in range(EPOCHS):
                train = experiment.sub_recorder(epoch=epoch)
                steps = range(epoch * STEPS_PER_EPOCH, (epoch + 1) * STEPS_PER_EPOCH)
                for step in steps:
                    train.push(step=step, loss=loss(step, start, best))
                valid = experiment.sub_recorder(epoch=epoch, split="valid")
                valid.push(step=steps[-1], accuracy=round(accuracy - 0.1 * (EPOCHS - 1 - epoch), 1))


def record_failed_run(collection: ExperimentCollection) -> None:
    try:
        with collection.new_experiment(model="rnn", lr=0.5) as experiment:
            experiment.sub_recorder(epoch=0).push(step=0, loss=3.2)
            raise FloatingPointError("loss is nan")
    except FloatingPointError:
        pass


def record_crashed_run(collection: ExperimentCollection) -> None:
    """Flush 7 records, then end the process without finishing the run."""
    experiment = collection.new_experiment(model="rnn", lr=0.05)
    train = experiment.recorder.sub_recorder(epoch=0)
    for step in range(CRASHED_RUN_RECORDS):
        train.push(step=step, loss=loss(step, 1.0, 0.0486))
    collection.flush()
    os._exit(0)


if __name__ == "__main__":
    study = ExperimentCollection(PATH, quiet=True)
    record_good_runs(study)
    record_failed_run(study)
    record_crashed_run(study)
