"""The analysis job of ``peers.py``: record a study with each tool, then ask it one question.

The study: ``RUNS`` runs (learning rate and seed from the run number) x two models
(``MODELS``) x ``steps`` training steps, one loss per model and step.  The question:
"average loss over the first ``FIRST_STEPS`` steps per model and learning rate, across
all runs".  Each tool records through its own everyday API and answers through its own
reader; the losses come from ``losses()``, so the parent checks every answer against
``expected_answer()``.

Each tool has three functions here: ``record_<tool>(root, steps)`` writes the study under
``root`` and returns its recording seconds; ``open_<tool>(root)`` returns what a user
holds open in a session (ours: the collection; a file-based tool: its files read into a
pandas frame; MLflow: a client; Aim: the repo); ``query_<tool>(opened)`` answers the
question from that.

Run as a script, ``python -I peers_analysis.py TOOL ROOT REPEATS`` is the fresh process
whose wall time the parent measures: it prints the answer and its own CPU seconds so far
as one JSON line as soon as it has them, then times ``REPEATS`` more in-process queries
on what it opened and prints their wall and CPU seconds as a second JSON line.  Module level imports the standard library only, so a
fresh process pays for nothing but the tool it asks.
"""

from __future__ import annotations

import json
import os
import random
import struct
import subprocess
import sys
from collections import defaultdict
from pathlib import Path
from time import perf_counter, process_time, time

RUNS = 20
MODELS = ("mlp", "cnn")
LEARNING_RATES = (0.1, 0.03, 0.01, 0.003)
FIRST_STEPS = 500
MLFLOW_BATCH = 100
METRIC = "loss"
# W&B offline run files (.wandb) are a LevelDB-style log: a 7-byte file header, then
# 32 KiB blocks of records, each with a 7-byte header (crc32, length, kind).
WANDB_FILE_HEADER = 7
WANDB_BLOCK = 32 * 1024
WANDB_RECORD_HEADER = 7
WANDB_FULL, WANDB_FIRST, WANDB_MIDDLE, WANDB_LAST = 1, 2, 3, 4


# --------------------------------------------------------------------------
# the study and its answer
# --------------------------------------------------------------------------

def run_settings(run: int) -> dict:
    """The hyperparameters of run number ``run``."""
    return {"lr": LEARNING_RATES[run % len(LEARNING_RATES)], "seed": run // len(LEARNING_RATES)}


def losses(run: int, model: str, steps: int) -> list[float]:
    """The loss curve of ``model`` in run ``run``: decaying with the learning rate, plus noise."""
    rng = random.Random(f"{run}/{model}")
    scale = 1.0 if model == MODELS[0] else 2.0
    lr = run_settings(run)["lr"]
    return [scale / (1.0 + lr * step) + 0.05 * rng.random() for step in range(steps)]


def study(steps: int) -> dict[tuple[int, str], list[float]]:
    """Every loss curve of the study, keyed by (run, model)."""
    return {(run, model): losses(run, model, steps) for run in range(RUNS) for model in MODELS}


def expected_answer(steps: int) -> list[list]:
    """The question's answer computed from ``losses()``: sorted [model, lr, mean] rows."""
    totals: dict[tuple[str, float], list[float]] = defaultdict(list)
    for (run, model), curve in study(steps).items():
        totals[model, run_settings(run)["lr"]].extend(curve[:FIRST_STEPS])
    return sorted([model, lr, sum(values) / len(values)] for (model, lr), values in totals.items())


def canonical(rows) -> list[list]:
    """Any tool's (model, lr, mean) rows as sorted [str, float, float] lists."""
    return sorted([str(model), float(lr), float(mean)] for model, lr, mean in rows)


def means_from_series(series) -> list[list]:
    """Answer from (model, lr, steps, values) tuples of whole loss curves."""
    sums: dict[tuple[str, float], list[float]] = defaultdict(lambda: [0.0, 0])
    for model, lr, steps, values in series:
        total = sums[model, float(lr)]
        for step, value in zip(steps, values):
            if step < FIRST_STEPS:
                total[0] += value
                total[1] += 1
    return canonical((model, lr, total / count) for (model, lr), (total, count) in sums.items())


def query_wide_frame(frame) -> list[list]:
    """Answer from a pandas frame with columns step, lr and one ``<model>/loss`` per model."""
    first = frame[frame["step"] < FIRST_STEPS]
    means = first.groupby("lr")[[f"{model}/{METRIC}" for model in MODELS]].mean()
    return canonical((model, lr, means.at[lr, f"{model}/{METRIC}"]) for lr in means.index for model in MODELS)


def query_long_frame(frame) -> list[list]:
    """Answer from a pandas frame with columns model, lr, step, loss."""
    first = frame[frame["step"] < FIRST_STEPS]
    return canonical((model, lr, mean) for (model, lr), mean in first.groupby(["model", "lr"])[METRIC].mean().items())


# --------------------------------------------------------------------------
# ours
# --------------------------------------------------------------------------

def _ours_path(root: str) -> str:
    return f"{root}/study"


def record_ours(root: str, steps: int) -> float:
    """One experiment per run, one recorder per model, ``push(step, loss)`` per step."""
    from rigorous_recorder import ExperimentCollection, RecordKeeper

    curves = study(steps)
    start = perf_counter()
    collection = ExperimentCollection(_ours_path(root), quiet=True)
    for run in range(RUNS):
        with collection.new_experiment(**run_settings(run)) as experiment:
            recorders = [(RecordKeeper(model=model).set_parent(experiment), curves[run, model]) for model in MODELS]
            for step in range(steps):
                for recorder, curve in recorders:
                    recorder.push(step=step, loss=curve[step])
    return perf_counter() - start


def open_ours(root: str):
    from rigorous_recorder import ExperimentCollection

    return ExperimentCollection(_ours_path(root), quiet=True)


def query_ours(collection) -> list[list]:
    return canonical(collection.sql(
        f"SELECT model, lr, avg({METRIC}) FROM records WHERE step < {FIRST_STEPS} GROUP BY model, lr").fetchall())


# --------------------------------------------------------------------------
# CSV: Lightning's CSVLogger, read back with pandas
# --------------------------------------------------------------------------

def record_csv(root: str, steps: int) -> float:
    """One CSVLogger version per run: hyperparameters, then one row of both losses per step."""
    from pytorch_lightning.loggers import CSVLogger

    curves = study(steps)
    start = perf_counter()
    for run in range(RUNS):
        logger = CSVLogger(root, name="csv", version=run)
        logger.log_hyperparams(run_settings(run))
        model_curves = [(f"{model}/{METRIC}", curves[run, model]) for model in MODELS]
        for step in range(steps):
            logger.log_metrics({key: curve[step] for key, curve in model_curves}, step=step)
        logger.finalize("success")
    return perf_counter() - start


def open_csv(root: str):
    import pandas as pd
    import yaml

    frames = []
    for folder in sorted(Path(root, "csv").glob("version_*")):
        frame = pd.read_csv(folder / "metrics.csv")
        frame["lr"] = yaml.safe_load((folder / "hparams.yaml").read_text())["lr"]
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


query_csv = query_wide_frame


# --------------------------------------------------------------------------
# TensorBoard: torch's SummaryWriter, read back with TensorBoard's EventAccumulator
# --------------------------------------------------------------------------

def record_tensorboard(root: str, steps: int) -> float:
    """One log dir per run, named by its hyperparameters; ``add_scalar`` per model and step."""
    from torch.utils.tensorboard import SummaryWriter

    curves = study(steps)
    start = perf_counter()
    for run in range(RUNS):
        settings = run_settings(run)
        writer = SummaryWriter(f"{root}/tensorboard/lr={settings['lr']},seed={settings['seed']}")
        model_curves = [(f"{model}/{METRIC}", curves[run, model]) for model in MODELS]
        for step in range(steps):
            for tag, curve in model_curves:
                writer.add_scalar(tag, curve[step], step)
        writer.close()
    return perf_counter() - start


def open_tensorboard(root: str):
    import pandas as pd
    from tensorboard.backend.event_processing.event_accumulator import SCALARS, EventAccumulator

    columns = defaultdict(list)
    for folder in sorted(Path(root, "tensorboard").iterdir()):
        lr = float(folder.name.split(",")[0].removeprefix("lr="))
        events = EventAccumulator(str(folder), size_guidance={SCALARS: 0})
        events.Reload()
        for model in MODELS:
            for event in events.Scalars(f"{model}/{METRIC}"):
                columns["model"].append(model)
                columns["lr"].append(lr)
                columns["step"].append(event.step)
                columns[METRIC].append(event.value)
    return pd.DataFrame(columns)


query_tensorboard = query_long_frame


# --------------------------------------------------------------------------
# MLflow: file store, read back through MlflowClient
# --------------------------------------------------------------------------

def _mlflow_uri(root: str) -> str:
    os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"  # MLflow 3.10+ refuses the file store without it
    return f"file:{root}/mlruns"


def record_mlflow(root: str, steps: int) -> float:
    """One MLflow run per run: ``log_params``, then both losses in one ``log_batch`` per ``MLFLOW_BATCH`` steps.

    Batched, as Lightning's CSVLogger buffers: with the file store every ``log_metrics``
    call costs milliseconds (it re-reads the run's meta.yaml), so one call per step would
    take this study 5 to 20 minutes; the Lightning table of ``peers.py`` shows that cost.
    """
    import mlflow
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    curves = study(steps)
    start = perf_counter()
    client = MlflowClient(tracking_uri=_mlflow_uri(root))
    experiment_id = client.create_experiment("study")
    for run in range(RUNS):
        run_id = client.create_run(experiment_id).info.run_id
        client.log_batch(run_id, params=[mlflow.entities.Param(key, str(value))
                                         for key, value in run_settings(run).items()])
        model_curves = [(f"{model}/{METRIC}", curves[run, model]) for model in MODELS]
        for first in range(0, steps, MLFLOW_BATCH):
            timestamp = int(time() * 1000)
            client.log_batch(run_id, metrics=[Metric(key, curve[step], timestamp, step)
                                              for step in range(first, min(first + MLFLOW_BATCH, steps))
                                              for key, curve in model_curves])
        client.set_terminated(run_id)
    return perf_counter() - start


def open_mlflow(root: str):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=_mlflow_uri(root))
    return client, client.get_experiment_by_name("study").experiment_id


def query_mlflow(opened) -> list[list]:
    client, experiment_id = opened
    series = []
    for run in client.search_runs([experiment_id]):
        lr = float(run.data.params["lr"])
        for model in MODELS:
            history = client.get_metric_history(run.info.run_id, f"{model}/{METRIC}")
            series.append((model, lr, [point.step for point in history], [point.value for point in history]))
    return means_from_series(series)


# --------------------------------------------------------------------------
# W&B offline: its .wandb run files, read with W&B's own protobuf records
# --------------------------------------------------------------------------

def record_wandb(root: str, steps: int) -> float:
    """One offline run per run: config, then ``wandb.log`` of both losses per step."""
    os.environ.update(WANDB_MODE="offline", WANDB_SILENT="true")
    import wandb

    curves = study(steps)
    start = perf_counter()
    for run in range(RUNS):
        wandb_run = wandb.init(dir=f"{root}/wandb", config=run_settings(run), mode="offline")
        model_curves = [(f"{model}/{METRIC}", curves[run, model]) for model in MODELS]
        for step in range(steps):
            wandb_run.log({key: curve[step] for key, curve in model_curves}, step=step)
        wandb_run.finish()
    return perf_counter() - start


def _wandb_payloads(data: bytes):
    """The record payloads of one .wandb file."""
    position, pending = WANDB_FILE_HEADER, b""
    while position + WANDB_RECORD_HEADER <= len(data):
        left_in_block = WANDB_BLOCK - position % WANDB_BLOCK
        if left_in_block < WANDB_RECORD_HEADER:
            position += left_in_block
            continue
        _, length, kind = struct.unpack_from("<IHB", data, position)
        if kind == 0:  # zero padding up to the end of the block
            position += left_in_block
            continue
        payload = data[position + WANDB_RECORD_HEADER:position + WANDB_RECORD_HEADER + length]
        position += WANDB_RECORD_HEADER + length
        if kind == WANDB_FULL:
            yield payload
        elif kind == WANDB_FIRST:
            pending = payload
        elif kind == WANDB_MIDDLE:
            pending += payload
        elif kind == WANDB_LAST:
            yield pending + payload


def open_wandb(root: str):
    import pandas as pd
    from wandb.proto import wandb_internal_pb2

    columns = defaultdict(list)
    wanted = {f"{model}/{METRIC}" for model in MODELS} | {"_step"}
    for path in sorted(Path(root, "wandb", "wandb").glob("offline-run-*/run-*.wandb")):
        lr, rows = None, []
        for payload in _wandb_payloads(path.read_bytes()):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(payload)
            kind = record.WhichOneof("record_type")
            if kind == "run":
                config = {item.key: json.loads(item.value_json) for item in record.run.config.update}
                lr = config["lr"]
            elif kind == "history":
                rows.append({"/".join(item.nested_key) or item.key: json.loads(item.value_json)
                             for item in record.history.item if ("/".join(item.nested_key) or item.key) in wanted})
        for row in rows:
            columns["step"].append(row["_step"])
            columns["lr"].append(lr)
            for model in MODELS:
                columns[f"{model}/{METRIC}"].append(row[f"{model}/{METRIC}"])
    return pd.DataFrame(columns)


query_wandb = query_wide_frame


# --------------------------------------------------------------------------
# DVCLive: its per-metric TSV files and params.yaml, read back with pandas
# --------------------------------------------------------------------------

def record_dvclive(root: str, steps: int) -> float:
    """One Live dir per run: ``log_params``, then per step ``live.step = step`` and ``log_metric`` per model.

    Not ``next_step()``: in DVCLive 3.49 every ``next_step`` re-reads every metric file
    (for DVC Studio, even with none configured), so a 5,000-step run takes minutes; the
    Lightning table of ``peers.py`` shows that cost, as ``DVCLiveLogger`` calls it.
    """
    from dvclive import Live

    curves = study(steps)
    start = perf_counter()
    for run in range(RUNS):
        with Live(dir=f"{root}/dvclive/run{run}", save_dvc_exp=False, dvcyaml=None) as live:
            live.log_params(run_settings(run))
            model_curves = [(f"{model}/{METRIC}", curves[run, model]) for model in MODELS]
            for step in range(steps):
                live.step = step
                for name, curve in model_curves:
                    live.log_metric(name, curve[step])
    return perf_counter() - start


def open_dvclive(root: str):
    import pandas as pd
    import yaml

    frames = []
    for folder in sorted(Path(root, "dvclive").glob("run*")):
        lr = yaml.safe_load((folder / "params.yaml").read_text())["lr"]
        for model in MODELS:
            frame = pd.read_csv(folder / "plots" / "metrics" / model / f"{METRIC}.tsv", sep="\t")
            frames.append(frame[["step", METRIC]].assign(model=model, lr=lr))
    return pd.concat(frames, ignore_index=True)


query_dvclive = query_long_frame


# --------------------------------------------------------------------------
# Aim: a local repo, read back through aim.Repo
# --------------------------------------------------------------------------

def record_aim(root: str, steps: int) -> float:
    """One Aim run per run: hparams, then ``track`` per model (as context) and step.

    Aim's SDK queries only runs that its index holds, and only ``aim up`` (the UI) or
    ``aim storage reindex`` index them, so the recording ends with that command.
    """
    from aim import Run

    curves = study(steps)
    start = perf_counter()
    for run in range(RUNS):
        aim_run = Run(repo=f"{root}/aim", experiment="study")
        aim_run["hparams"] = run_settings(run)
        model_curves = [({"model": model}, curves[run, model]) for model in MODELS]
        for step in range(steps):
            for context, curve in model_curves:
                aim_run.track(curve[step], name=METRIC, step=step, context=context)
        aim_run.close()
    subprocess.run([str(Path(sys.executable).parent / "aim"), "storage", "--repo", f"{root}/aim", "reindex", "-y"],
                   check=True, capture_output=True)
    return perf_counter() - start


def open_aim(root: str):
    from aim import Repo

    return Repo(f"{root}/aim")


def query_aim(repo) -> list[list]:
    from aim.storage.context import Context

    series = []
    for run in repo.iter_runs():
        lr = run["hparams"]["lr"]
        for model in MODELS:
            steps, (values, *_) = run.get_metric(METRIC, Context({"model": model})).data.numpy()
            series.append((model, lr, steps.tolist(), values.tolist()))
    return means_from_series(series)


# --------------------------------------------------------------------------
# entry points
# --------------------------------------------------------------------------

TOOLS = ("ours", "csv", "tensorboard", "mlflow", "wandb", "dvclive", "aim")


def record(tool: str, root: str, steps: int) -> dict:
    """Workload for ``_harness.run_workload``: record the study with ``tool`` under ``root``."""
    os.chdir(root)  # tools that look for a git or DVC repo find none
    return {"record_s": globals()[f"record_{tool}"](root, steps)}


def main(tool: str, root: str, repeats: int) -> None:
    """The fresh query process: answer once, report it, then time ``repeats`` in-process queries."""
    os.chdir(root)
    opened = globals()[f"open_{tool}"](root)
    query = globals()[f"query_{tool}"]
    print(json.dumps({"answer": query(opened), "cpu_s": process_time()}), flush=True)
    seconds, cpu_seconds = [], []
    for _ in range(repeats):
        start, start_cpu = perf_counter(), process_time()
        query(opened)
        seconds.append(perf_counter() - start)
        cpu_seconds.append(process_time() - start_cpu)
    print(json.dumps({"wall_s": seconds, "cpu_s": cpu_seconds}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
