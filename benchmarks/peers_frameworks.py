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

import argparse
import os
import statistics
import sys
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


def tiny_lightning_module():
    """The benchmarks' LightningModule: Linear(32, 1), MSE loss, SGD, ``self.log("train_loss")`` every step."""
    import pytorch_lightning as pl
    import torch

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

    return Tiny()


class CodeTimer:
    """CPU time of this thread inside the functions it wraps (nested calls counted once), in :attr:`ns`.

    The benchmarks wrap the framework's logging path with it, the loggers' own code included:
    with no logger that path still runs, for less, so the difference is what a logger costs,
    measured over a few microseconds of code per step instead of a whole fit.
    """

    def __init__(self) -> None:
        self.ns = 0
        self._depth = 0

    def timed(self, function):
        """``function``, adding the CPU time of each of its outermost calls to :attr:`ns`."""
        def timed(*args, **kwargs):
            self._depth += 1
            start = time.thread_time_ns()
            try:
                return function(*args, **kwargs)
            finally:
                self._depth -= 1
                if not self._depth:
                    self.ns += time.thread_time_ns() - start
        return timed

    def wrap(self, owner, *names: str) -> None:
        """Replace each attribute ``names`` of ``owner`` (a module or a class) by its :meth:`timed` self."""
        for name in names:
            setattr(owner, name, self.timed(getattr(owner, name)))


def lightning_logging_timer() -> CodeTimer:
    """A CodeTimer of Lightning's logging path: the logger connector's ``log_metrics`` (it converts
    the metrics, then calls every logger's ``log_metrics`` and ``save``) and the callback hook
    dispatch (where a logger's companion callback runs)."""
    from pytorch_lightning.trainer import call
    from pytorch_lightning.trainer.connectors.logger_connector.logger_connector import _LoggerConnector

    timer = CodeTimer()
    timer.wrap(call, "_call_callback_hooks")
    timer.wrap(_LoggerConnector, "log_metrics")
    return timer


def lightning_fit(contender: str, steps: int, folder: str, logging_code: bool = False) -> dict:
    """Per-step wall and CPU seconds of a Linear(32, 1) fit, batch size 1, logging every step.

    With ``logging_code``, also ``logging_cpu_s``: the CPU seconds per step inside Lightning's
    logging path (:func:`lightning_logging_timer`) and the logger's end of run, plus those of
    the process's other threads (a logger's background writer).
    """
    fit = _lightning_session(folder, logging_code, steps)
    fit(contender, "warmup", warmup=True)
    return fit(contender, "measured")


def _lightning_session(folder: str, logging_code: bool, steps: int):
    """``fit(contender, tag, warmup=False)``: one measured Lightning fit in this process (see
    :func:`lightning_fit`); a warm-up fit is ``WARMUP_STEPS`` steps."""
    _quiet_offline_environment(folder)
    import pytorch_lightning as pl
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    torch.set_num_threads(1)
    timer = lightning_logging_timer() if logging_code else None

    def fit(contender: str, tag: str, warmup: bool = False) -> dict:
        n = WARMUP_STEPS if warmup else steps
        data = DataLoader(TensorDataset(torch.randn(n, LIGHTNING_FEATURES), torch.randn(n, 1)), batch_size=1)
        logger = _lightning_logger(contender, folder, tag)
        trainer = pl.Trainer(logger=logger, max_epochs=1, accelerator="cpu", log_every_n_steps=1,
                             default_root_dir=folder, enable_progress_bar=False,
                             enable_model_summary=False, enable_checkpointing=False)
        end = _end_lightning_logger
        if timer is not None:
            timer.ns, end = 0, timer.timed(end)
            if logger:
                logger.finalize = timer.timed(logger.finalize)  # Lightning calls it at the end of fit
        cpu, wall, thread = process_tree_cpu_s(), time.perf_counter(), time.thread_time()
        trainer.fit(tiny_lightning_module(), data)
        end(contender, logger)
        cpu, thread = process_tree_cpu_s() - cpu, time.thread_time() - thread
        result = {"wall_s": (time.perf_counter() - wall) / n, "cpu_s": cpu / n}
        if timer is not None:
            result["logging_cpu_s"] = (timer.ns / 1e9 + cpu - thread) / n
        return result

    return fit


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
    if contender == "CSVLogger per batch":
        return [_per_batch_csv_logger(f"{folder}/{tag}.csv")]
    if contender == "no-op batch hook":
        return [_batch_hook()]
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


def _per_batch_csv_logger(path: str):
    """Keras's CSVLogger that also writes a row of each training batch's logs: its own row writer
    (one ``csv.DictWriter`` row, then a flush) called at every batch end, its first column counting
    the batches; what logs the same values per batch as ours, with Keras's own code."""
    import keras

    class PerBatchCSVLogger(keras.callbacks.CSVLogger):
        batches = 0

        def on_train_batch_end(self, batch, logs=None):
            self.on_epoch_end(self.batches, logs)
            self.batches += 1

    return PerBatchCSVLogger(path)


def _batch_hook():
    """A callback whose batch-end hook does nothing, not marked ``async_safe``: Keras then calls every
    batch end on the training thread, as with ours, instead of handing it to its thread pool."""
    import keras

    class BatchHook(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            pass

    return BatchHook()


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


def keras_fit(contender: str, epochs: int, batches: int, batch_size: int, folder: str,
              logging_code: bool = False) -> dict:
    """Per-batch wall and CPU seconds of a tiny Dense model's fit (torch backend, CPU).

    With ``logging_code``, also ``logging_cpu_s``: the CPU seconds per batch inside Keras's
    CallbackList hooks (where the callbacks run, or are handed to Keras's thread pool) and the
    callbacks' end of run, plus those of the process's other threads (that thread pool, a
    callback's background writer).
    """
    fit = _keras_session(folder, logging_code, epochs, batches, batch_size)
    try:
        fit(contender, "warmup", warmup=True)
    except ImportError as error:  # a callback built on TensorFlow, which Keras on torch does not need
        return {"skipped": f"{type(error).__name__}: {error}"}
    return fit(contender, "measured")


def _keras_session(folder: str, logging_code: bool, epochs: int, batches: int, batch_size: int):
    """``fit(contender, tag, warmup=False)``: one measured Keras fit in this process (see :func:`keras_fit`).

    Each fit trains the same model on; a warm-up fit is 2 batches.
    """
    _quiet_offline_environment(folder)
    import keras
    import numpy as np
    import torch

    torch.set_num_threads(1)
    timer = None
    if logging_code:
        timer = CodeTimer()
        timer.wrap(keras.callbacks.CallbackList,
                   *[name for name in vars(keras.callbacks.CallbackList) if name.startswith("on_")])
    rng = np.random.default_rng(0)
    x = rng.random((batches * batch_size, KERAS_FEATURES), dtype=np.float32)
    y = x.sum(axis=1, keepdims=True)
    model = keras.Sequential([keras.Input((KERAS_FEATURES,)), keras.layers.Dense(16, activation="relu"),
                              keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse")

    def fit(contender: str, tag: str, warmup: bool = False) -> dict:
        rows, fit_epochs = (KERAS_WARMUP_BATCHES * batch_size, 1) if warmup else (len(x), epochs)
        end = _end_keras_callbacks
        if timer is not None:
            timer.ns, end = 0, timer.timed(end)
        cpu, wall, thread = process_tree_cpu_s(), time.perf_counter(), time.thread_time()
        with _RunAround(contender, folder):
            callbacks = _keras_callbacks(contender, folder, tag)
            model.fit(x[:rows], y[:rows], batch_size=batch_size, epochs=fit_epochs, callbacks=callbacks, verbose=0)
            end(contender, callbacks)
        cpu, thread = process_tree_cpu_s() - cpu, time.thread_time() - thread
        steps = fit_epochs * -(-rows // batch_size)
        result = {"wall_s": (time.perf_counter() - wall) / steps, "cpu_s": cpu / steps}
        if timer is not None:
            result["logging_cpu_s"] = (timer.ns / 1e9 + cpu - thread) / steps
        return result

    return fit


# --------------------------------------------------------------------------
# lightning_overhead.py and keras_overhead.py: ours against CSVLogger, closely
# --------------------------------------------------------------------------

#: Issue #13's target: ours' overhead per step at most this times CSVLogger's.
OVERHEAD_TARGET = 0.5


def overhead_cycles(framework: str, contenders: list[str], cycles: int, folder: str, **sizes) -> dict:
    """In this one process: warm every contender up, then ``cycles`` cycles that fit each contender once,
    the order rotating from cycle to cycle; each contender's measurements, one per cycle.

    Fits of one process share its imports, memory layout and CPU, so the differences between
    contenders of one cycle hold far less noise than differences between fresh processes.
    """
    fit = {"lightning": _lightning_session, "keras": _keras_session}[framework](folder, True, **sizes)
    for name in contenders:
        fit(name, f"warmup-{name}", warmup=True)
    results: dict[str, list[dict]] = {name: [] for name in contenders}
    for cycle in range(cycles):
        turn = cycle % len(contenders)
        for name in contenders[turn:] + contenders[:turn]:
            results[name].append(fit(name, f"{cycle}-{name}"))
    return results


def _quartiles(values: list[float]) -> tuple[float, float, float]:
    """(first quartile, median, third quartile)."""
    first, median, third = statistics.quantiles(values, n=4, method="inclusive")
    return first, median, third


def overhead_options(doc: str, quick: str) -> argparse.Namespace:
    """The command-line options of an overhead benchmark (its module docstring, what --quick runs)."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--processes", type=int, default=3, help="fresh processes, one after the other (default 3)")
    parser.add_argument("--cycles", type=int, default=6,
                        help="cycles per process (default 6: each contender fits first, second and third equally often)")
    parser.add_argument("--quick", action="store_true", help=f"{quick}: a smoke test")
    return parser.parse_args()


def _print_over(per_cycle: dict, reference: str, ours: str, peers: list[str], unit: str) -> None:
    """A table of ours' and ``peers``' logging-code overhead over ``reference``'s, cycle by cycle, with
    ours' ratio to each peer whose overhead is clearly above zero (its first quartile)."""
    import _harness as H

    def over(name: str) -> list[float]:
        return [mine - theirs for mine, theirs in
                zip(per_cycle[name]["logging_cpu_s"], per_cycle[reference]["logging_cpu_s"])]

    ours_median = _quartiles(over(ours))[1]
    rows = []
    for name in (ours, *peers):
        first, median, third = _quartiles(over(name))
        ratio = "" if name == ours else f"{ours_median / median:.2f}" if first > 0 else "none (noise)"
        rows.append([name, f"{median:+,.1f} ({first:+,.1f} to {third:+,.1f})", ratio])
    print(H.markdown_table(["contender", f"overhead per {unit}: median (quartiles)", "ours / its overhead"], rows))


def overhead_benchmark(framework: str, contenders: list[str], unit: str, title: str, processes: int,
                       cycles: int, same_dispatch: str | None = None, **sizes) -> int:
    """Ours against CSVLogger and the baseline (no logger): print the table and the verdict; the exit status.

    ``contenders`` are the baseline, CSVLogger, ours, then any others to show beside them. With
    ``same_dispatch`` (one of the others: a logger that does nothing, called by the framework
    as ours is), a second table gives ours' and the others' overhead over it, in the same
    cycles, and ours' ratio to each of them, for information: the target is CSVLogger's.

    Runs :func:`overhead_cycles` in ``processes`` fresh processes, one after the other. Each
    contender's overhead in a cycle is its CPU time per step minus the baseline's in the same
    cycle; the table gives the median and quartiles over every cycle of every process, of the
    whole fit and of the framework's logging code, on which the target is judged. When
    CSVLogger's overhead is not clearly above zero (its first quartile at or below zero), the
    ratio is noise over noise and the verdict says so instead of giving a number.
    """
    import resource
    import tempfile

    import _harness as H

    baseline, csv, ours, *others = contenders
    loads, per_cycle = [os.getloadavg()[0]], {name: {"cpu_s": [], "logging_cpu_s": []} for name in contenders}
    for process in range(processes):
        with tempfile.TemporaryDirectory(prefix="rr-overhead-") as folder:
            result = H.run_workload(sys.executable, __file__, "overhead_cycles", framework=framework,
                                    contenders=contenders, cycles=cycles, folder=folder, **sizes)
        if "error" in result:
            H.print_errors({f"process {process + 1}": result})
            return 1
        for key in ("cpu_s", "logging_cpu_s"):
            for cycle in range(cycles):
                base = result[baseline][cycle][key]
                for name in contenders:
                    per_cycle[name][key].append((result[name][cycle][key] - base) * 1e6)
        loads.append(os.getloadavg()[0])
        print(f"process {process + 1}/{processes} done, load average {loads[-1]:.1f}", file=sys.stderr, flush=True)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    print(f"{title}; {processes} fresh processes x {cycles} cycles, each cycle fitting every contender once in "
          f"turn; load average {min(loads):.1f}-{max(loads):.1f} (1-minute, sampled between processes); "
          f"the processes used {(children.ru_utime + children.ru_stime) / 60:.1f} CPU minutes\n")

    def spread(name: str, key: str) -> str:
        first, median, third = _quartiles(per_cycle[name][key])
        return f"{median:+,.1f} ({first:+,.1f} to {third:+,.1f})"

    print(H.markdown_table(
        ["contender", f"overhead per {unit}, CPU µs in logging code: median (quartiles)",
         f"overhead per {unit}, CPU µs of the whole fit: median (quartiles)"],
        [[name, spread(name, "logging_cpu_s"), spread(name, "cpu_s")] for name in (csv, ours, *others)]))
    csv_first, csv_median, _ = _quartiles(per_cycle[csv]["logging_cpu_s"])
    ours_median = _quartiles(per_cycle[ours]["logging_cpu_s"])[1]
    if same_dispatch is not None:
        print(f"\nOver {same_dispatch} (the same dispatch as ours), CPU µs per {unit} in logging code:\n")
        _print_over(per_cycle, same_dispatch, ours, [name for name in others if name != same_dispatch], unit)
    if csv_first <= 0:
        print(f"\nNO RATIO: CSVLogger's overhead in logging code is not clearly above zero (first quartile "
              f"{csv_first:+.1f} µs): ours' {ours_median:+.1f} µs per {unit} against noise")
        return 1
    targets = H.Targets()
    targets.check(f"ours' CPU overhead per {unit} in logging code over CSVLogger's", ours_median / csv_median,
                  OVERHEAD_TARGET, "x")
    print("\n" + targets.report())
    return 1 if targets.failed else 0
