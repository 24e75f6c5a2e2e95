"""Record a small Keras model's fit, evaluate and predict into data/keras_study, then query it.

Run with a Keras backend chosen, e.g. ``KERAS_BACKEND=torch python examples/keras_example.py``
(torch is the default here). It takes a few seconds on a CPU.
"""

import os

os.environ.setdefault("KERAS_BACKEND", "torch")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from rigorous_recorder.integrations.keras import RigorousCallback  # noqa: E402


def make_data(samples: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Points in [0, 1]^8, labelled 1 when their coordinates sum to more than 4."""
    x = np.random.default_rng(seed).random((samples, 8), dtype=np.float32)
    return x, (x.sum(axis=1) > 4).astype(np.float32)


def main() -> None:
    keras.utils.set_random_seed(0)
    x, y = make_data(1024, seed=0)
    x_test, y_test = make_data(256, seed=1)
    model = keras.Sequential(
        [keras.Input((8,)), keras.layers.Dense(16, activation="relu"), keras.layers.Dense(1, activation="sigmoid")],
        name="tiny_mlp",
    )
    schedule = keras.optimizers.schedules.ExponentialDecay(0.01, decay_steps=25, decay_rate=0.9)
    model.compile(optimizer=keras.optimizers.Adam(schedule), loss="binary_crossentropy", metrics=["accuracy"])

    with RigorousCallback("data/keras_study", batch_size=32, note="keras example") as cb:
        model.fit(x, y, validation_split=0.2, epochs=3, batch_size=32, callbacks=[cb], verbose=0)
        model.evaluate(x_test, y_test, batch_size=32, callbacks=[cb], verbose=0)
        model.predict(x_test, batch_size=64, callbacks=[cb], verbose=0)

    print(cb.collection.sql(  # one row per epoch: the epoch-level records of train and validate, side by side
        "SELECT experiment_number, epoch, step, any_value(learning_rate) AS learning_rate, "
        "round(max(loss), 4) AS loss, round(max(val_loss), 4) AS val_loss, round(max(val_accuracy), 3) AS val_accuracy "
        "FROM records WHERE level = 'epoch' GROUP BY ALL ORDER BY experiment_number, epoch"
    ))
    print(cb.collection.sql(
        "SELECT experiment_number, stage, level, count(*) AS records FROM records "
        "GROUP BY ALL ORDER BY experiment_number, stage, level"
    ))


if __name__ == "__main__":
    main()
