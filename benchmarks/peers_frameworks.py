"""Framework workloads of ``peers.py``: one Lightning fit or one Keras fit with one logger.

Each function runs in a fresh process (``_harness.run_workload``), fits a tiny model once
briefly (imports and first calls are not measured), then times a second fit with a new
logger of the same kind, the logger's own end of run included.  It returns wall seconds
and CPU seconds per step; CPU is that of the whole process tree (W&B logs from a helper
process), so other work on the machine counts less than in wall time.

A contender whose package is installed but cannot run here (a Keras callback that needs
TensorFlow) comes back as ``{"skipped": reason}``.
"""

from __future__ import annotations

import os
import time

LIGHTNING_FEATURES = 32
WARMUP_STEPS = 50
KERAS_FEATURES = 8
KERAS_WARMUP_BATCHES = 2


def process_tree_cpu_s() -> float:
    """CPU seconds of this process (all its threads), its reaped children and its live descendants."""
    import psutil

    reaped = os.times()
    total = time.process_time() + reaped.children_user + reaped.children_system
    for child in psutil.Process().children(recursive=True):
        try:
            child_times = child.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += child_times.user + child_times.system
    return total


def _quiet_offline_environment(folder: str) -> None:
    """No network, no prompts, no repository lookups for any peer; work inside ``folder``."""
    os.environ.update(WANDB_MODE="offline", WANDB_SILENT="true", MLFLOW_ALLOW_FILE_STORE="true",
                      KERAS_BACKEND="torch", OMP_NUM_THREADS="1")
    os.chdir(folder)


# --------------------------------------------------------------------------
# Lightning
# --------------------------------------------------------------------------

def _lightning_logger(contender: str, folder: str, tag: str):
    """A fresh logger of kind ``contender`` writing under ``folder``; False for none."""
    if contender == "no logger":
        return False
    if contender == "ours":
        from rigorous_recorder.integrations.lightning import RigorousLogger
        return RigorousLogger(f"{folder}/{tag}")
    if contender == "CSVLogger":
        from pytorch_lightning.loggers import CSVLogger
        return CSVLogger(folder, name=tag)
    if contender == "TensorBoard":
        from pytorch_lightning.loggers import TensorBoardLogger
        return TensorBoardLogger(folder, name=tag)
    if contender == "MLflow":
        from pytorch_lightning.loggers import MLFlowLogger
        return MLFlowLogger(experiment_name=tag, tracking_uri=f"file:{folder}/mlruns")
    if contender == "W&B":
        from pytorch_lightning.loggers import WandbLogger
        return WandbLogger(name=tag, save_dir=folder, offline=True)
    if contender == "DVCLive":
        from dvclive.lightning import DVCLiveLogger
        return DVCLiveLogger(dir=f"{folder}/{tag}", save_dvc_exp=False, dvcyaml=None)
    if contender == "Aim":
        from aim.pytorch_lightning import AimLogger
        return AimLogger(repo=folder, experiment=tag)
    raise ValueError(f"unknown Lightning contender {contender!r}")


def _end_lightning_logger(contender: str, logger) -> None:
    """What a user calls after ``fit`` so that the logger has written everything."""
    if contender == "ours":
        logger.finish()
    elif contender == "W&B":
        import wandb
        wandb.finish()


def lightning_fit(contender: str, steps: int, folder: str) -> dict:
    """Per-step wall and CPU seconds of a Linear(32, 1) fit, batch size 1, logging every step."""
    _quiet_offline_environment(folder)
    import pytorch_lightning as pl
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    torch.set_num_threads(1)

    class Tiny(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = torch.nn.Linear(LIGHTNING_FEATURES, 1)

        def training_step(self, batch, batch_idx):
            x, y = batch
            loss = torch.nn.functional.mse_loss(self.net(x), y)
            self.log("train_loss", loss)
            return loss

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.01)

    def fit(n: int, tag: str) -> tuple[float, float]:
        data = DataLoader(TensorDataset(torch.randn(n, LIGHTNING_FEATURES), torch.randn(n, 1)), batch_size=1)
        logger = _lightning_logger(contender, folder, tag)
        trainer = pl.Trainer(logger=logger, max_epochs=1, accelerator="cpu", log_every_n_steps=1,
                             default_root_dir=folder, enable_progress_bar=False,
                             enable_model_summary=False, enable_checkpointing=False)
        cpu, wall = process_tree_cpu_s(), time.perf_counter()
        trainer.fit(Tiny(), data)
        _end_lightning_logger(contender, logger)
        return (time.perf_counter() - wall) / n, (process_tree_cpu_s() - cpu) / n

    fit(WARMUP_STEPS, "warmup")
    wall, cpu = fit(steps, "measured")
    return {"wall_s": wall, "cpu_s": cpu}


# --------------------------------------------------------------------------
# Keras
# --------------------------------------------------------------------------

def _keras_callbacks(contender: str, folder: str, tag: str) -> list:
    """Fresh callbacks of kind ``contender`` writing under ``folder``."""
    import keras

    if contender == "no callback":
        return []
    if contender == "ours":
        from rigorous_recorder.integrations.keras import RigorousCallback
        return [RigorousCallback(f"{folder}/{tag}")]
    if contender == "CSVLogger":
        return [keras.callbacks.CSVLogger(f"{folder}/{tag}.csv")]
    if contender == "TensorBoard":
        return [keras.callbacks.TensorBoard(f"{folder}/{tag}", update_freq="batch")]
    if contender == "MLflow":
        from mlflow.keras import MlflowCallback
        return [MlflowCallback(log_every_epoch=False, log_every_n_steps=1)]
    if contender == "W&B":
        from wandb.integration.keras import WandbMetricsLogger
        return [WandbMetricsLogger(log_freq="batch")]
    if contender == "DVCLive":
        from dvclive.keras import DVCLiveCallback
        return [DVCLiveCallback(dir=f"{folder}/{tag}", save_dvc_exp=False, dvcyaml=None)]
    if contender == "Aim":
        from aim.keras import AimCallback
        return [AimCallback(repo=folder, experiment=tag)]
    raise ValueError(f"unknown Keras contender {contender!r}")


def _end_keras_callbacks(contender: str, callbacks: list) -> None:
    """What a user calls after ``fit`` so that the callback has written everything."""
    if contender == "ours":
        callbacks[0].finish()
    elif contender == "Aim":
        callbacks[0].close()


class _RunAround:
    """The run each peer needs open around ``fit`` (MLflow, W&B), ended afterwards like a user would."""

    def __init__(self, contender: str, folder: str) -> None:
        self.contender, self.folder = contender, folder

    def __enter__(self) -> None:
        if self.contender == "MLflow":
            import mlflow
            mlflow.set_tracking_uri(f"file:{self.folder}/mlruns")
            mlflow.start_run()
        elif self.contender == "W&B":
            import wandb
            wandb.init(dir=self.folder, mode="offline")

    def __exit__(self, *exc_info) -> None:
        if self.contender == "MLflow":
            import mlflow
            mlflow.end_run()
        elif self.contender == "W&B":
            import wandb
            wandb.finish()


def keras_fit(contender: str, epochs: int, batches: int, batch_size: int, folder: str) -> dict:
    """Per-batch wall and CPU seconds of a tiny Dense model's fit (torch backend, CPU)."""
    _quiet_offline_environment(folder)
    import keras
    import numpy as np
    import torch

    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    x = rng.random((batches * batch_size, KERAS_FEATURES), dtype=np.float32)
    y = x.sum(axis=1, keepdims=True)
    model = keras.Sequential([keras.Input((KERAS_FEATURES,)), keras.layers.Dense(16, activation="relu"),
                              keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse")

    def fit(rows: int, fit_epochs: int, tag: str) -> tuple[float, float]:
        cpu, wall = process_tree_cpu_s(), time.perf_counter()
        with _RunAround(contender, folder):
            callbacks = _keras_callbacks(contender, folder, tag)
            model.fit(x[:rows], y[:rows], batch_size=batch_size, epochs=fit_epochs, callbacks=callbacks, verbose=0)
            _end_keras_callbacks(contender, callbacks)
        steps = fit_epochs * -(-rows // batch_size)
        return (time.perf_counter() - wall) / steps, (process_tree_cpu_s() - cpu) / steps

    try:
        fit(KERAS_WARMUP_BATCHES * batch_size, 1, "warmup")
    except ImportError as error:  # a callback built on TensorFlow, which Keras on torch does not need
        return {"skipped": f"{type(error).__name__}: {error}"}
    wall, cpu = fit(len(x), epochs, "measured")
    return {"wall_s": wall, "cpu_s": cpu}
