"""A tiny LightningModule and data for the Lightning tests, and the entry point of their subprocess runs.

Run from the repository root (or with it on ``PYTHONPATH``), as a module, so that every worker
Lightning starts (``ddp`` runs the same command again, ``ddp_spawn`` unpickles the model) imports
``TinyModel`` from here by its name:

    python -m tests.integrations.lightning_tiny ddp <collection>    strategy="ddp" on 2 CPU processes, each printing RANK
    python -m tests.integrations.lightning_tiny spawn <collection>  "ddp_spawn", then "ddp_notebook" (fork)
    python -m tests.integrations.lightning_tiny fit <collection> <version> <epochs> [<ckpt_path>] [--crash]
"""

from __future__ import annotations

import sys

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

from rigorous_recorder.integrations.lightning import RigorousLogger, recorder_of


class TinyModel(pl.LightningModule):
    """Linear regression that logs train_loss (step and epoch) and val_loss."""

    def __init__(self, lr: float = 0.1, hidden: int = 4) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = torch.nn.Sequential(torch.nn.Linear(3, hidden), torch.nn.Linear(hidden, 1))
        self.fail_at_step: int | None = None

    def training_step(self, batch, batch_idx):
        if self.fail_at_step is not None and self.global_step >= self.fail_at_step:
            raise ValueError("boom")
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.net(x), y)
        self.log("train_loss", loss, on_step=True, on_epoch=True)
        recorder_of(self.trainer).add(batch_size=len(x))
        return loss

    def validation_step(self, batch, batch_idx, dataloader_idx=0):
        x, y = batch
        self.log("val_loss", torch.nn.functional.mse_loss(self.net(x), y))

    def test_step(self, batch, batch_idx):
        x, y = batch
        self.log("test_loss", torch.nn.functional.mse_loss(self.net(x), y))

    def predict_step(self, batch, batch_idx):
        recorder_of(self.trainer).add(predicted=len(batch[0]))
        return self.net(batch[0])

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)


def loader(batches: int = 4, batch_size: int = 4, seed: int = 0) -> DataLoader:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(batches * batch_size, 3, generator=generator)
    y = x.sum(dim=1, keepdim=True)
    return DataLoader(TensorDataset(x, y), batch_size=batch_size)


def trainer(logger, **kwargs) -> pl.Trainer:
    options = dict(logger=logger, max_epochs=2, accelerator="cpu", devices=1, enable_progress_bar=False,
                   enable_model_summary=False, log_every_n_steps=1, num_sanity_val_steps=0)
    options.update(kwargs)
    return pl.Trainer(**options)


class RankReport(pl.Callback):
    """Prints ``RANK <rank> <type of logger.experiment> <type of recorder_of(trainer)>`` during training."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if batch_idx == 0 and trainer.current_epoch == 0:
            line = f"RANK {trainer.global_rank} {type(trainer.logger.experiment).__name__} "
            sys.stdout.write(f"{line}{type(recorder_of(trainer)).__name__}\n")  # one write: ranks share stdout
            sys.stdout.flush()


def main(argv: list[str]) -> None:
    command, path = argv[0], argv[1]
    if command == "ddp":  # Lightning starts rank 1 by running this script again
        logger = RigorousLogger(path, run="ddp")
        trainer(logger, strategy="ddp", devices=2, enable_checkpointing=False, callbacks=[RankReport()]).fit(
            TinyModel(), loader(), loader(batches=2))
    elif command == "spawn":  # a worker process per rank, each with an unpickled (spawn) or copied (fork) logger
        for strategy in ("ddp_spawn", "ddp_notebook"):
            logger = RigorousLogger(path, run=strategy)
            trainer(logger, strategy=strategy, devices=2, enable_checkpointing=False).fit(
                TinyModel(), loader(), loader(batches=2))
    else:  # fit <collection> <version> <epochs> [<ckpt_path>] [--crash]: checkpoints in <study>/<version>
        version, epochs = argv[2], int(argv[3])
        ckpt_path = argv[4] if len(argv) > 4 and argv[4] != "--crash" else None
        model = TinyModel()
        if "--crash" in argv:
            model.fail_at_step = 6
        from pytorch_lightning.callbacks import Callback, ModelCheckpoint

        class Report(Callback):
            def on_train_start(self, trainer, pl_module):
                checkpoint = trainer.checkpoint_callback
                print("RESTORED", float(checkpoint.best_model_score or -1), sorted(checkpoint.best_k_models),
                      checkpoint.last_model_path, flush=True)

            def on_train_epoch_start(self, trainer, pl_module):
                if trainer.current_epoch > 0:
                    print("BEST", float(trainer.checkpoint_callback.best_model_score), flush=True)

        logger = RigorousLogger(path, version=version, run="resume")
        checkpoints = ModelCheckpoint(monitor="val_loss", save_top_k=2, save_last=True)
        fitter = trainer(logger, max_epochs=epochs, callbacks=[checkpoints, Report()])
        fitter.fit(model, loader(), loader(batches=2), ckpt_path=ckpt_path)
        print("RUN_ID", logger.experiment.id, flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
