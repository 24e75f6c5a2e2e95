"""rigorous-recorder side by side with the loggers people already use.

Three comparisons, each contender in its own fresh process, interleaved over ``--rounds``
rounds (medians shown):

1. Lightning: per-step overhead over no logger of a Linear(32, 1) fit, 2,000 steps of
   batch size 1, ``log_every_n_steps=1``, CPU: ours, CSVLogger, TensorBoard, MLflow (file
   store), W&B (offline), DVCLive, Aim.
2. Keras (torch backend): per-batch overhead over no callback of a tiny Dense model: ours,
   Keras's CSVLogger, and each peer's Keras callback that runs without TensorFlow.
3. The analysis job (``peers_analysis.py``): 20 runs x 2 models x 5,000 steps recorded by
   each tool (recording time, bytes on disk), then "average loss over the first 500 steps
   per model and lr, across all runs" from a fresh process (python start + imports +
   answer) and in process with the data already open.

It installs nothing.  The peers live in a benchmark-only virtual environment:

    python3 -m venv benchmarks/.venv-peers
    benchmarks/.venv-peers/bin/pip install -e . -r benchmarks/requirements-peers.txt -c constraints.txt
    benchmarks/.venv-peers/bin/python benchmarks/peers.py              # ~10 minutes
    benchmarks/.venv-peers/bin/python benchmarks/peers.py --quick      # a smoke test, ~3 minutes

A peer that is not installed is skipped, with the pip command that installs it.  No
network at run time: W&B offline, MLflow's file store, Aim's local repo, all under a
temporary directory.  Prints Markdown to stdout (progress to stderr) and one
``PASS:``/``FAIL:`` line per target; exits 1 when a target fails.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from time import perf_counter

import _harness as H
import peers_analysis as A

FRAMEWORKS_SCRIPT = str(H.BENCHMARKS_DIR / "peers_frameworks.py")
REQUIREMENTS = "benchmarks/requirements-peers.txt"
INSTALL_HINT = (f"python3 -m venv benchmarks/.venv-peers && benchmarks/.venv-peers/bin/pip install -e . "
                f"-r {REQUIREMENTS} -c constraints.txt")
ANSWER_TOLERANCE = 1e-6  # relative; TensorBoard stores float32, the mean of 10,000 of them still agrees
# Ours keeps the records in memory at the second query of an unchanged collection: the median
# of five is the steady state, as in a notebook or the dashboard.
IN_PROCESS_REPEATS = 5
# DVCLive's Lightning logger re-reads every metric file at every step (tens of ms a step):
# a few rounds tell its overhead well enough, and five would double the Lightning part.
LIGHTNING_MOST_ROUNDS = {"DVCLive": 2}

# Distributions whose versions the report prints, and the module each one installs.
DISTRIBUTIONS = {
    "rigorous-recorder": "rigorous_recorder", "pytorch-lightning": "pytorch_lightning", "torch": "torch",
    "keras": "keras", "pandas": "pandas", "tensorboard": "tensorboard", "mlflow": "mlflow",
    "wandb": "wandb", "dvclive": "dvclive", "aim": "aim",
}
# What each contender needs installed (distribution names).
PARTS = ("lightning", "keras", "analysis")
# Peers that --peers can leave out (the rest are the targets' references), and the
# framework contenders' names for them.
OPTIONAL_PEERS = {"tensorboard", "mlflow", "wandb", "dvclive", "aim"}
PEER_KEYS = {"w&b": "wandb"}
LIGHTNING = {
    "no logger": ["pytorch-lightning"], "ours": ["pytorch-lightning", "rigorous-recorder"],
    "CSVLogger": ["pytorch-lightning"], "TensorBoard": ["pytorch-lightning", "tensorboard"],
    "MLflow": ["pytorch-lightning", "mlflow"], "W&B": ["pytorch-lightning", "wandb"],
    "DVCLive": ["pytorch-lightning", "dvclive"], "Aim": ["pytorch-lightning", "aim"],
}
KERAS = {
    "no callback": ["keras"], "ours": ["keras", "rigorous-recorder"], "CSVLogger": ["keras"],
    "CSVLogger per batch": ["keras"],
    "TensorBoard": ["keras", "tensorboard"], "MLflow": ["keras", "mlflow"], "W&B": ["keras", "wandb"],
    "DVCLive": ["keras", "dvclive"], "Aim": ["keras", "aim"],
}
ANALYSIS = {
    "ours": ("ours: `collection.sql(...).fetchall()`", ["rigorous-recorder"]),
    "csv": ("Lightning CSVLogger + pandas", ["pytorch-lightning", "pandas"]),
    "dvclive": ("DVCLive files + pandas", ["dvclive", "pandas"]),
    "tensorboard": ("TensorBoard (EventAccumulator) + pandas", ["torch", "tensorboard", "pandas"]),
    "wandb": ("W&B offline (.wandb files) + pandas", ["wandb", "pandas"]),
    "mlflow": ("MLflow file store (MlflowClient)", ["mlflow"]),
    "aim": ("Aim local repo (aim.Repo)", ["aim"]),
}


# --------------------------------------------------------------------------
# what is installed
# --------------------------------------------------------------------------

def version_of(distribution: str) -> str | None:
    """Installed version of ``distribution`` in this interpreter, or None."""
    if importlib.util.find_spec(DISTRIBUTIONS[distribution]) is None:
        return None
    return importlib.metadata.version(distribution)


def available(contenders: dict[str, list[str]], part: str, peers: set[str]) -> list[str]:
    """The contenders chosen by ``--peers`` whose distributions are installed.

    Prints how to install the missing ones.  No logger, CSV and ours always take part.
    """
    kept = []
    for name, needs in contenders.items():
        if PEER_KEYS.get(name.lower(), name.lower()) in OPTIONAL_PEERS - peers:
            continue
        missing = [distribution for distribution in needs if version_of(distribution) is None]
        if missing:
            print(f"{part}: skipping {name}: {', '.join(missing)} not installed here; install with "
                  f"`{sys.executable} -m pip install {' '.join(missing)} -c constraints.txt` "
                  f"or use the peers' venv: {INSTALL_HINT}", file=sys.stderr, flush=True)
        else:
            kept.append(name)
    return kept


# --------------------------------------------------------------------------
# running interleaved rounds
# --------------------------------------------------------------------------

def interleaved(contenders: list[str], rounds: int, run_one,
                most_rounds: dict[str, int] | None = None) -> dict[str, list[dict]]:
    """``run_one(name)`` for every contender, ``rounds`` times, the order reversed every other round.

    A contender in ``most_rounds`` runs at most that many rounds.  A contender that is
    skipped or fails keeps that result and is not run again.
    """
    most_rounds = most_rounds or {}
    results: dict[str, list[dict]] = {name: [] for name in contenders}
    for round_number in range(rounds):
        order = contenders if round_number % 2 == 0 else contenders[::-1]
        for name in order:
            if results[name] and ("error" in results[name][-1] or "skipped" in results[name][-1]):
                continue
            if len(results[name]) >= most_rounds.get(name, rounds):
                continue
            start = perf_counter()
            results[name].append(run_one(name))
            print(f"round {round_number + 1}/{rounds}: {name} ({perf_counter() - start:.1f} s)",
                  file=sys.stderr, flush=True)
    return results


def overheads(results: dict[str, list[dict]], baseline: str, key: str) -> dict[str, float | None]:
    """Median over rounds of each contender's ``key`` minus the baseline's in the same round."""
    base = results[baseline]
    merged = {}
    for name, runs in results.items():
        if not runs or "error" in runs[0] or "skipped" in runs[0] or "error" in base[0]:
            merged[name] = None
            continue
        merged[name] = statistics.median(run[key] - base_run[key] for run, base_run in zip(runs, base))
    return merged


def median_field(runs: list[dict], key: str) -> float | None:
    """Median of ``key`` over a contender's rounds, None when it did not run."""
    if not runs or any(key not in run for run in runs):
        return None
    return statistics.median(run[key] for run in runs)


def status_of(runs: list[dict]) -> str | None:
    """``ERROR`` or ``skipped: reason`` for a contender that produced no measurement."""
    if runs and "error" in runs[0]:
        return "ERROR (traceback below)"
    if runs and "skipped" in runs[0]:
        return f"skipped: {runs[0]['skipped']}"
    return None


# --------------------------------------------------------------------------
# 1 and 2: framework overhead
# --------------------------------------------------------------------------

def framework_table(results: dict[str, list[dict]], baseline: str, unit: str,
                    rounds: int) -> tuple[str, float | None]:
    """The Markdown table of one framework part, and ours' CPU overhead over CSVLogger's."""
    cpu, wall = overheads(results, baseline, "cpu_s"), overheads(results, baseline, "wall_s")
    csv_cpu = cpu.get("CSVLogger")
    rows = []
    for name, runs in results.items():
        problem = status_of(runs)
        if problem:
            rows.append([name, problem, "", "", "", ""])
            continue
        ratio = "" if name == baseline or not csv_cpu else f"{cpu[name] / csv_cpu:.2f}"
        shown = f"**{name}**" if name == "ours" else name
        if len(runs) < rounds:
            shown += f" ({len(runs)} rounds)"
        rows.append([shown, H.fmt(median_field(runs, "cpu_s") * 1e6), f"{cpu[name] * 1e6:+,.1f}", ratio,
                     H.fmt(median_field(runs, "wall_s") * 1e6), f"{wall[name] * 1e6:+,.1f}"])
    headers = ["contender", f"CPU µs/{unit}", f"CPU overhead µs/{unit}", "× CSVLogger's overhead",
               f"wall µs/{unit}", f"wall overhead µs/{unit}"]
    ratio = None
    if cpu.get("ours") is not None and csv_cpu:
        ratio = cpu["ours"] / csv_cpu
    if ratio is not None and (ratio < 0 or csv_cpu < 0):  # an overhead below zero is noise, not a result
        print(f"{unit} overheads below zero: rounds disagree more than the loggers cost; "
              "rerun on a quieter machine or with more --rounds", file=sys.stderr)
        ratio = None
    return markdown_table(headers, rows), ratio


def lightning_part(rounds: int, steps: int, scratch: str, peers: set[str]) -> tuple[str, dict, float | None]:
    contenders = available(LIGHTNING, "Lightning", peers)

    def run_one(name: str) -> dict:
        with tempfile.TemporaryDirectory(dir=scratch) as folder:
            return H.run_workload(sys.executable, FRAMEWORKS_SCRIPT, "lightning_fit",
                                  contender=name, steps=steps, folder=folder)

    results = interleaved(contenders, rounds, run_one, LIGHTNING_MOST_ROUNDS)
    table, ratio = framework_table(results, "no logger", "step", rounds)
    title = (f"### Lightning: Linear(32, 1), {steps:,} steps of batch size 1, `log_every_n_steps=1`, CPU; "
             f"median of {rounds} interleaved rounds, each a fresh process\n")
    return title + "\n" + table, results, ratio


def keras_part(rounds: int, epochs: int, batches: int, batch_size: int, scratch: str,
               peers: set[str]) -> tuple[str, dict, float | None]:
    contenders = available(KERAS, "Keras", peers)

    def run_one(name: str) -> dict:
        with tempfile.TemporaryDirectory(dir=scratch) as folder:
            return H.run_workload(sys.executable, FRAMEWORKS_SCRIPT, "keras_fit", contender=name, epochs=epochs,
                                  batches=batches, batch_size=batch_size, folder=folder)

    results = interleaved(contenders, rounds, run_one)
    table, ratio = framework_table(results, "no callback", "batch", rounds)
    title = (f"### Keras (torch backend): Dense(16) + Dense(1), {epochs} epochs x {batches} batches of "
             f"{batch_size}, CPU; median of {rounds} interleaved rounds, each a fresh process\n")
    return title + "\n" + table, results, ratio


# --------------------------------------------------------------------------
# 3: the analysis job
# --------------------------------------------------------------------------

def fresh_query(tool: str, root: str, expected: list[list]) -> dict:
    """Wall time of a fresh process until it prints the answer, and its in-process query times."""
    start = perf_counter()
    process = subprocess.Popen([sys.executable, "-I", A.__file__, tool, root, str(IN_PROCESS_REPEATS)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first_line = process.stdout.readline()
    fresh = perf_counter() - start
    rest, errors = process.communicate(timeout=H.WORKLOAD_TIMEOUT_S)
    if process.returncode != 0 or not first_line:
        return {"error": f"query process exited {process.returncode}\n{errors[-4000:]}"}
    reply = json.loads(first_line)
    if not answers_agree(reply["answer"], expected):
        return {"error": f"wrong answer\n got:      {reply['answer']}\n expected: {expected}"}
    repeats = json.loads(rest)
    return {"fresh_s": fresh, "fresh_cpu_s": reply["cpu_s"], "in_process_s": statistics.median(repeats["wall_s"]),
            "in_process_cpu_s": statistics.median(repeats["cpu_s"])}


def answers_agree(answer: list[list], expected: list[list]) -> bool:
    """Same (model, lr) groups and means equal within ``ANSWER_TOLERANCE``."""
    return len(answer) == len(expected) and all(
        got[:2] == want[:2] and abs(got[2] - want[2]) <= ANSWER_TOLERANCE * abs(want[2])
        for got, want in zip(answer, expected))


def analysis_part(rounds: int, steps: int, scratch: str, peers: set[str]) -> tuple[str, dict, dict]:
    tools = available({tool: needs for tool, (_, needs) in ANALYSIS.items()}, "analysis job", peers)
    recorded: dict[str, dict] = {}
    for tool in tools:
        root = Path(scratch, tool)
        root.mkdir()
        start = perf_counter()
        result = H.run_workload(sys.executable, A.__file__, "record",
                                tool=tool, root=str(root), steps=steps)
        if "error" not in result:
            result["bytes"] = H.folder_bytes(root)
        recorded[tool] = result
        print(f"recorded {tool} ({perf_counter() - start:.1f} s)", file=sys.stderr, flush=True)
    expected = A.expected_answer(steps)
    queried = interleaved([tool for tool in tools if "error" not in recorded[tool]], rounds,
                          lambda tool: fresh_query(tool, str(Path(scratch, tool)), expected))
    values = A.RUNS * len(A.MODELS) * steps
    ours_fresh = median_field(queried.get("ours", []), "fresh_s")
    ours_in = median_field(queried.get("ours", []), "in_process_s")
    rows = []
    for tool in tools:
        runs = queried.get(tool, [])
        problem = status_of([recorded[tool]]) or status_of(runs)
        label = f"**{ANALYSIS[tool][0]}**" if tool == "ours" else ANALYSIS[tool][0]
        if problem:
            rows.append([label, problem, "", "", "", "", "", "", "", ""])
            continue
        fresh, in_process = median_field(runs, "fresh_s"), median_field(runs, "in_process_s")
        rows.append([label, H.fmt(recorded[tool]["record_s"], 1), H.fmt(recorded[tool]["bytes"] / 1e6, 1),
                     H.fmt(recorded[tool]["bytes"] / values, 1), H.fmt(fresh, 2),
                     "" if not ours_fresh else f"{fresh / ours_fresh:.2f}",
                     H.fmt(median_field(runs, "fresh_cpu_s"), 2),
                     H.fmt(in_process * 1e3, 1), "" if not ours_in else f"{in_process / ours_in:.2f}",
                     H.fmt(median_field(runs, "in_process_cpu_s") * 1e3, 1)])
    headers = ["tool", "recording s", "disk MB", "B/value", "fresh process s", "× ours", "its CPU s",
               "in process ms", "× ours", "its CPU ms"]
    title = (f"### Analysis job: {A.RUNS} runs x {len(A.MODELS)} models x {steps:,} steps "
             f"({values:,} values); \"average loss over the first {A.FIRST_STEPS} steps per model and lr, "
             f"across all runs\"; medians of {rounds} interleaved rounds\n")
    return title + "\n" + markdown_table(headers, rows), recorded, queried


# --------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------

def markdown_table(headers: list[str], rows: list[list[str]]) -> str:
    """A Markdown table, the first column left-aligned and the numbers right-aligned."""
    lines = ["| " + " | ".join(headers) + " |", "| --- |" + " ---: |" * (len(headers) - 1)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def header(command: str) -> str:
    """Command, machine and versions: printed first, so a long run shows what it measures."""
    versions = ", ".join(f"{name} {version_of(name) or 'not installed'}" for name in DISTRIBUTIONS)
    return "\n".join([
        "## Peers benchmark",
        "",
        f"- command: `{command}`",
        f"- machine: {os.cpu_count()} CPUs, {platform.machine()}, {platform.platform()}",
        f"- Python {platform.python_version()} ({sys.executable})",
        f"- versions: {versions}",
    ])


def footer(wall_s: float) -> str:
    """How long the run took, in wall and CPU minutes, and how busy the machine was."""
    finished = os.times()
    cpu_minutes = (finished.children_user + finished.children_system) / 60
    return (f"Took {wall_s / 60:.1f} minutes; its processes used {cpu_minutes:.1f} CPU minutes (about the wall "
            f"time on an otherwise idle machine); load average {os.getloadavg()[0]:.2f} at the end.")


def fastest_peer(queried: dict, key: str) -> tuple[str | None, float | None]:
    """The peer (not ours) with the lowest median ``key``."""
    times = {tool: median_field(runs, key) for tool, runs in queried.items() if tool != "ours"}
    times = {tool: value for tool, value in times.items() if value is not None}
    if not times:
        return None, None
    tool = min(times, key=times.get)
    return tool, times[tool]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds per contender (default 5)")
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {','.join(PARTS)}")
    parser.add_argument("--peers", default=",".join(sorted(OPTIONAL_PEERS)),
                        help="comma-separated subset of the optional peers "
                             f"{','.join(sorted(OPTIONAL_PEERS))} (no logger, CSV and ours always run)")
    parser.add_argument("--quick", action="store_true", help="small sizes and one round: a smoke test")
    args = parser.parse_args()
    parts = set(args.parts.split(","))
    peers = set(filter(None, args.peers.split(",")))
    if peers - OPTIONAL_PEERS or parts - set(PARTS):
        parser.error(f"unknown --peers {sorted(peers - OPTIONAL_PEERS)} or --parts {sorted(parts - set(PARTS))}")
    rounds = 1 if args.quick else args.rounds
    lightning_steps, keras_epochs, keras_batches, analysis_steps = (
        (300, 1, 50, 600) if args.quick else (2000, 3, 300, 5000))
    command = shlex.join([os.path.relpath(sys.executable), os.path.relpath(__file__), *sys.argv[1:]])
    started = perf_counter()
    targets = H.Targets()
    failures: dict[str, dict] = {}
    print(header(command), flush=True)
    with tempfile.TemporaryDirectory(prefix="rr-peers-") as scratch:
        if "lightning" in parts:
            table, results, ratio = lightning_part(rounds, lightning_steps, scratch, peers)
            print("\n" + table, flush=True)
            failures.update({f"Lightning {name}": runs[0] for name, runs in results.items() if "error" in runs[0]})
            targets.check("Lightning: ours' CPU overhead per step over CSVLogger's", ratio, 0.5, "x")
        if "keras" in parts:
            table, results, ratio = keras_part(rounds, keras_epochs, keras_batches, 32, scratch, peers)
            print("\n" + table, flush=True)
            failures.update({f"Keras {name}": runs[0] for name, runs in results.items() if "error" in runs[0]})
            targets.check("Keras: ours' CPU overhead per batch over CSVLogger's", ratio, 0.5, "x")
        if "analysis" in parts:
            table, recorded, queried = analysis_part(rounds, analysis_steps, scratch, peers)
            print("\n" + table, flush=True)
            failures.update({f"analysis {tool}": result for tool, result in recorded.items() if "error" in result})
            failures.update({f"analysis query {tool}": runs[0] for tool, runs in queried.items() if "error" in runs[0]})
            for key, limit, what in (("fresh_s", 0.5, "from a fresh process"), ("fresh_cpu_s", 0.5, "fresh, CPU"),
                                     ("in_process_s", 0.1, "in process"), ("in_process_cpu_s", 0.1, "in process, CPU")):
                peer, peer_time = fastest_peer(queried, key)
                ours = median_field(queried.get("ours", []), key)
                ratio = ours / peer_time if ours is not None and peer_time else None
                targets.check(f"analysis job {what}: ours over the fastest peer ({peer})", ratio, limit, "x")
    print("\n" + footer(perf_counter() - started))
    print("\n" + targets.report())
    H.print_errors(failures)
    return 1 if targets.failed else 0


if __name__ == "__main__":
    sys.exit(main())
