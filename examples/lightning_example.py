"""Train a small regression network with Lightning and query its own results with SQL.

Run from anywhere: ``python examples/lightning_example.py``; it stores in ./data/.
"""

from __future__ import annotations

try:
    import lightning.pytorch as pl
except ModuleNotFoundError:
    import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

from rigorous_recorder.integrations.lightning import RigorousLogger, recorder_of


class Regressor(pl.LightningModule):
    def __init__(self, hidden: int = 16, lr: float = 0.05) -> None:
        super().__init__()
        self.save_hyperparameters()  # hidden and lr: keys of this fit's model recorder, seen by its records
        self.net = torch.nn.Sequential(torch.nn.Linear(4, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, 1))

    def step(self, batch):
        x, y = batch
        return torch.nn.functional.mse_loss(self.net(x), y)

    def training_step(self, batch, batch_idx):
        loss = self.step(batch)
        self.log("train_loss", loss, on_step=True, on_epoch=True)
        # any extra value, tensors too; works with fast_dev_run, logger=False and several loggers
        recorder_of(self.trainer).add(first_weight_mean=self.net[0].weight.mean())
        return loss

    def validation_step(self, batch, batch_idx):
        self.log("val_loss", self.step(batch))

    def test_step(self, batch, batch_idx):
        self.log("test_loss", self.step(batch))

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)


def data(n: int, seed: int) -> DataLoader:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=generator)
    y = (x[:, :1] * 2 - x[:, 1:2] + 0.1 * torch.randn(n, 1, generator=generator)).sin()
    return DataLoader(TensorDataset(x, y), batch_size=32)


def main() -> None:
    logger = RigorousLogger("data/lightning_example", optimizer="adam")
    trainer = pl.Trainer(logger=logger, max_epochs=3, accelerator="cpu", log_every_n_steps=1,
                         enable_progress_bar=False, enable_model_summary=False)
    model = Regressor()
    trainer.fit(model, data(512, 0), data(128, 1))
    trainer.test(model, data(128, 2))
    print(logger.collection.sql(  # one row per epoch: the epoch-level records (level = 'epoch')
        "SELECT experiment_number, epoch, round(max(train_loss_epoch), 4) AS train_loss, "
        "round(max(val_loss), 4) AS val_loss, round(max(test_loss), 4) AS test_loss "
        "FROM records WHERE level = 'epoch' GROUP BY ALL ORDER BY experiment_number, epoch"
    ))  # DuckDB prints the table itself: no pandas needed
    print(logger.collection.sql(
        "SELECT stage, level, count(*) AS records FROM records GROUP BY ALL ORDER BY stage, level"
    ))
    logger.finish()


if __name__ == "__main__":
    main()
