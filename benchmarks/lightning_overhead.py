"""Per-step overhead of RigorousLogger next to Lightning's CSVLogger and no logger at all.

Each contender fits the same tiny model with ``log_every_n_steps=1`` in a fresh process
(one short warm-up fit first, so imports and first-call costs are not counted; CPU time
of the process, so other work on the machine does not count), and the
contenders are interleaved over several rounds; the table shows each one's best round
(the one least disturbed by other work on the machine).

    .venv/bin/python benchmarks/lightning_overhead.py            # ~1-2 minutes
    .venv/bin/python benchmarks/lightning_overhead.py --quick    # seconds
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time

CONTENDERS = ("none", "CSVLogger", "RigorousLogger")


def workload(contender: str, steps: int, folder: str) -> float:
    """Seconds per training step of one fit (plus the logger's own end of run)."""
    import pytorch_lightning as pl
    import torch
    from pytorch_lightning.loggers import CSVLogger
    from torch.utils.data import DataLoader, TensorDataset

    from rigorous_recorder.integrations.lightning import RigorousLogger

    torch.set_num_threads(1)  # a tiny model: threads only add noise

    class Tiny(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = torch.nn.Linear(4, 1)

        def training_step(self, batch, batch_idx):
            x, y = batch
            loss = torch.nn.functional.mse_loss(self.net(x), y)
            self.log("train_loss", loss)
            return loss

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.01)

    def run(n: int, tag: str) -> float:
        data = DataLoader(TensorDataset(torch.randn(n, 4), torch.randn(n, 1)), batch_size=1)
        if contender == "CSVLogger":
            logger = CSVLogger(folder, name=tag)
        elif contender == "RigorousLogger":
            logger = RigorousLogger(f"{folder}/{tag}")
        else:
            logger = False
        trainer = pl.Trainer(logger=logger, max_epochs=1, accelerator="cpu", log_every_n_steps=1,
                             enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False)
        start = time.process_time()  # CPU time of every thread of this process: other work on the
        trainer.fit(Tiny(), data)      # machine does not count, our background flushes do
        if contender == "RigorousLogger":
            logger.finish()
        return (time.process_time() - start) / n

    run(50, "warmup")
    return run(steps, "measured")


def main() -> None:
    if sys.argv[1:2] == ["--worker"]:
        contender, steps, folder = sys.argv[2], int(sys.argv[3]), sys.argv[4]
        print(json.dumps(workload(contender, steps, folder)))
        return
    quick = "--quick" in sys.argv
    steps, rounds = (300, 1) if quick else (2000, 5)
    seconds: dict[str, list[float]] = {name: [] for name in CONTENDERS}
    for round_ in range(rounds):
        for contender in CONTENDERS:
            with tempfile.TemporaryDirectory() as folder:
                done = subprocess.run([sys.executable, __file__, "--worker", contender, str(steps), folder],
                                      capture_output=True, text=True)
            if done.returncode != 0:
                sys.exit(f"{contender} failed:\n{done.stderr[-3000:]}")
            seconds[contender].append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(f"round {round_ + 1}: {contender} {seconds[contender][-1] * 1e6:.0f} us/step", file=sys.stderr)
    best = {name: min(values) * 1e6 for name, values in seconds.items()}  # least disturbed run
    print(f"Lightning fit, tiny model, batch size 1, log_every_n_steps=1, {steps} steps, "
          f"best of {rounds} fresh processes each\n")
    print("| logger | CPU us per step | overhead vs no logger (us) |")
    print("| --- | ---: | ---: |")
    for name in CONTENDERS:
        print(f"| {name} | {best[name]:.0f} | {best[name] - best['none']:+.0f} |")
    ours, csv = best["RigorousLogger"] - best["none"], best["CSVLogger"] - best["none"]
    verdict = "PASS" if ours <= csv else "FAIL"
    print(f"\n{verdict}: RigorousLogger overhead {ours:.0f} us/step <= CSVLogger's {csv:.0f} us/step")
    sys.exit(0 if verdict == "PASS" else 1)


if __name__ == "__main__":
    main()
