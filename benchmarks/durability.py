"""Durability trials (issue #10): kill -9 at random moments, a damage matrix, a full disk.

Three tables for README's durability section, each counted from real processes:

1. kill -9 trials: a writer (tests/scripts/durability_writer.py) records one of four
   workloads and is SIGKILLed at a random moment; a new process opens the collection and
   counts. The same for a kill inside ``finish()`` (a big run), inside a recovery
   (``rigorous-recorder recover`` or an open), for two processes recovering at once, and
   inside packing: the ``finish()`` whose run makes 64 finished runs wait (it packs them),
   and a fresh process's first ``sql()`` (it packs). A record "had to survive" when the
   writer flushed it, or committed it more than 1.5 s before the kill (the flush interval is
   1.0 s); every record of a finished run had to survive.
2. A damage matrix: every file kind found in a finished and in a killed run folder, and every
   file kind outside the run folders (collection.json, the locks, an active marker, a pack,
   its runs listing, a killed packer's temporary file), times every damage kind (garbage,
   truncation, non-UTF-8 bytes, missing, JSON without its keys, a file name pointing outside
   the run folder, another valid Parquet file in its place, ...), plus stray files in every
   folder. Damage outside the run folders must leave every SQL answer as it was.
3. Full-disk trials on an 8 MB tmpfs (needs root): the first push/add/commit/flush after
   the flusher failed, corrupt files, runs marked ok with records missing, reading the
   collection while the disk is full and once it is read-only.

And the CPU time of a flush of the manykeys workload's sparse records (``flush-cost``), which
decides whether the flusher keeps up under load.

Run: ``.venv/bin/python benchmarks/durability.py [--trials N] [--seed S] [--only PART ...]``
(~6 minutes at the default N = 2 on 2 cores; ``--only manykeys`` runs that workload's kill
trials alone, see ``--help`` for the parts). Progress goes to stderr, the report to stdout;
it exits 1 when any promise was broken.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import _harness as H

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "scripts"))
import durability_trials as trials  # noqa: E402

#: Seconds after a writer's run starts within which a kill lands, per workload.
KILL_WINDOW = (0.3, 4.0)
#: What ``--only`` may choose: a kill workload, or one group of trials.
PARTS = (*trials.WORKLOAD_OPTIONS, "finish", "recovery", "packing", "damage", "full-disk", "flush-cost")
#: The flush-cost part: records committed between two flushes, and how many flushes.
FLUSH_RECORDS, FLUSHES = 3_000, 7


def progress(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# -- kill -9 ----------------------------------------------------------------------------------


def attempt(name: str, must_survive: int, trial: Callable[[], trials.Trial]) -> trials.Trial:
    """Run one trial; a trial that raises counts as one whose reader failed."""
    try:
        return trial()
    except Exception as error:  # one broken trial is reported, the others still run
        return trials.Trial(name, must_survive, trials.Count(error=f"{type(error).__name__}: {error}"), "setup")


def kill_rows(work: Path, count: int, chooser: random.Random,
              parts: tuple[str, ...] = PARTS) -> tuple[list[list[str]], list[str]]:
    """One row per kind of kill trial among ``parts``, and every broken promise."""
    rows, problems = [], []

    def add_row(name: str, done: list[trials.Trial]) -> None:
        for trial in done:
            problems.extend(trial.problems())
        rows.append([
            name, str(len(done)),
            f"{sum(trial.must_survive for trial in done):,}",
            f"**{sum(max(trial.lost, 0) for trial in done):,}**",
            f"{sum(trial.count.doubled for trial in done if trial.count.error is None):,}",
            str(sum(1 for trial in done if trial.count.error is None and not trial.count.agree)),
            str(sum(1 for trial in done if trial.count.error is not None or trial.writer_failure)),
        ])

    for workload in trials.WORKLOAD_OPTIONS:
        if workload not in parts:
            continue
        done = []
        for index in range(count):
            delay = chooser.uniform(*KILL_WINDOW)
            progress(f"kill -9: {workload} #{index + 1} at {delay:.2f} s")
            folder = _fresh(work, f"{workload}-{index}")
            done.append(attempt(workload, 0, lambda: trials.kill_trial(folder, workload, delay)))
        add_row(f"{workload} ({' '.join(trials.WORKLOAD_OPTIONS[workload])})", done)

    if "finish" in parts:
        finish_rows(work, count, chooser, add_row, problems)
    if "recovery" in parts:
        recovery_rows(work, count, chooser, add_row, problems)
    if "packing" in parts:
        try:
            pack_rows(work, count, chooser, add_row)
        except Exception as error:
            problems.append(f"kill inside packing: the waiting runs failed: {type(error).__name__}: {error}")
    return rows, problems


def finish_rows(work: Path, count: int, chooser: random.Random,
                add_row: Callable[[str, list[trials.Trial]], None], problems: list[str]) -> None:
    """kill -9 inside the finish() of a big run."""
    try:  # a calibration that fails is reported; the other tables still print
        seconds = trials.finish_seconds(_fresh(work, "finish-calibration"))
        done = []
        for index in range(count):
            delay = chooser.uniform(0.0, 1.2 * seconds)
            progress(f"kill -9 inside finish() (takes {seconds:.2f} s) at {delay:.2f} s")
            folder = _fresh(work, f"finish-{index}")
            done.append(attempt("finish", trials.FINISHED_RECORDS, lambda: trials.finish_kill_trial(folder, delay)))
        add_row(f"inside finish() of {trials.FINISHED_RECORDS:,} records (finish takes {seconds:.2f} s)", done)
    except Exception as error:
        problems.append(f"kill inside finish(): calibration failed: {type(error).__name__}: {error}")


def recovery_rows(work: Path, count: int, chooser: random.Random,
                  add_row: Callable[[str, list[trials.Trial]], None], problems: list[str]) -> None:
    """kill -9 inside `rigorous-recorder recover` and inside an open, and the two racing."""
    try:
        template, _ = trials.crashed_collection(_fresh(work, "crashed"), trials.RECOVERED_RECORDS)
        for how in ("cli", "open"):
            calibration = _fresh(work, f"recover-{how}-calibration") / "study"
            shutil.copytree(trials.collection_folder(template), trials.collection_folder(calibration))
            seconds = trials.timed(trials.recover_command(calibration, how))
            done = []
            for index in range(count):
                delay = chooser.uniform(0.2 * seconds, seconds)
                progress(f"kill -9 inside recovery ({how}, takes {seconds:.2f} s) at {delay:.2f} s")
                folder = _fresh(work, f"recover-{how}-{index}")
                done.append(attempt(how, trials.RECOVERED_RECORDS, lambda: trials.recovery_kill_trial(
                    template, folder, trials.RECOVERED_RECORDS, how, delay)))
            what = "`rigorous-recorder recover`" if how == "cli" else "an open"
            add_row(f"inside {what} of {trials.RECOVERED_RECORDS:,} records (takes {seconds:.2f} s)", done)

        done = []
        for index in range(count):
            progress(f"two recoveries at once #{index + 1}")
            folder = _fresh(work, f"race-{index}")
            done.append(attempt("two recoveries", trials.RECOVERED_RECORDS,
                                lambda: two_recoveries(template, folder)))
        add_row("`recover` and an open racing on one crashed run", done)
    except Exception as error:
        problems.append(f"kill inside recovery: the crashed collection failed: {type(error).__name__}: {error}")


def pack_rows(work: Path, count: int, chooser: random.Random,
              add_row: Callable[[str, list[trials.Trial]], None]) -> None:
    """kill -9 inside packing: in the finish() whose run makes 64 wait, and in a first sql()."""
    def killed_inside(name: str, slug: str, seconds: float, trial: Callable[[Path, float], trials.Trial]
                      ) -> list[trials.Trial]:
        done = []
        for index in range(count):
            delay = chooser.uniform(0.0, 1.1 * seconds)
            progress(f"kill -9 inside a {name} that packs (takes {seconds:.2f} s) at {delay:.2f} s")
            folder = _fresh(work, f"{slug}-{index}")
            done.append(attempt(f"{name} packing", waiting, lambda: trial(folder, delay)))
        return done

    waiting_template = _fresh(work, "waiting") / "study"
    waiting = trials.waiting_template(waiting_template)
    seconds = trials.pack_in_finish_seconds(waiting_template, _fresh(work, "pack-finish-calibration"))
    done = killed_inside("finish()", "pack-finish", seconds, lambda folder, delay: trials.pack_in_finish_kill_trial(
        waiting_template, folder, waiting, delay))
    add_row(f"inside a finish() that packs {trials.WAITING_RUNS + 1} runs, {waiting:,} records waiting "
            f"(takes {seconds:.2f} s; {_phases(done)})", done)

    query_template = _fresh(work, "waiting-query") / "study"
    shutil.copytree(trials.collection_folder(waiting_template), trials.collection_folder(query_template))
    waiting += trials.waiting_template(query_template, runs=1, first_run=trials.WAITING_RUNS)  # 64 wait
    seconds = trials.first_query_seconds(query_template, _fresh(work, "pack-query-calibration"))
    done = killed_inside("first sql()", "pack-query", seconds, lambda folder, delay: trials.pack_in_query_kill_trial(
        query_template, folder, waiting, delay))
    add_row(f"inside a first `sql()` that packs {trials.WAITING_RUNS + 1} runs of {waiting:,} records "
            f"(takes {seconds:.2f} s; {_phases(done)})", done)


def two_recoveries(template: Path, folder: Path) -> trials.Trial:
    """``rigorous-recorder recover`` and an open, started at once on a copy of ``template``."""
    path = folder / "study"
    shutil.copytree(trials.collection_folder(template), trials.collection_folder(path))
    racers = [subprocess.Popen(trials.recover_command(path, how), stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True) for how in ("cli", "open")]
    failures = [racer.stderr.read().strip().splitlines()[-1:] for racer in racers if racer.wait(trials.PATIENCE)]
    failure = "; ".join(line for lines in failures for line in lines) or None
    count = trials.count_records(path, trials.RECOVERED_RECORDS)
    return trials.Trial("two recoveries", trials.RECOVERED_RECORDS, count, "at once", failure)


def _phases(done: list[trials.Trial]) -> str:
    """How many kills landed before, inside and after the packing."""
    phases = [next((phase for phase in PHASES if phase in trial.moment), "elsewhere") for trial in done]
    return ", ".join(f"{phases.count(phase)} {phase}" for phase in PHASES if phase in phases)


#: Where a kill of a packing process can land.
PHASES = (trials.NOT_YET, trials.WRITING, trials.PACKED, "returned")


def _fresh(work: Path, name: str) -> Path:
    folder = work / name
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    return folder


# -- damage ------------------------------------------------------------------------------------


def damage_rows(work: Path) -> tuple[list[list[str]], list[str]]:
    """One row per file kind (of a finished run, of a killed run, outside the run folders):
    damages tried, failed opens, dropped runs, wrong SQL answers, any broken promise."""
    rows, problems = [], []
    for state, make in (("finished", trials.finished_template), ("killed", trials.crashed_template)):
        template = _fresh(work, f"damage-{state}") / "template" / "study"
        try:
            target = make(template)
        except Exception as error:  # the other tables still print
            problems.append(f"damage matrix, {state} run: building it failed: {type(error).__name__}: {error}")
            continue
        kinds = sorted(trials.file_kinds(trials.run_folder_of(template, target)))
        progress(f"damage matrix: {state} run, files {kinds}")
        results = trials.damage_matrix(template, target, "target", template.parent.parent / "cases")
        results["stray files in every folder: stray files everywhere"] = trials.stray_files_problems(
            template, target, "target", template.parent.parent / "stray")
        rows += _damage_table_rows(f"{state} run", results, problems)
    template = _fresh(work, "damage-collection") / "template" / "study"
    try:
        trials.packed_template(template)
    except Exception as error:
        problems.append(f"damage matrix, the catalog: building it failed: {type(error).__name__}: {error}")
        return rows, problems
    progress(f"damage matrix: outside the run folders, files {sorted(trials.collection_files(trials.collection_folder(template)))}")
    results = trials.collection_damage_matrix(template, template.parent.parent / "cases")
    rows += _damage_table_rows("collection", results, problems)
    return rows, problems


#: Words of a problem that mean a query answered otherwise than on the undamaged collection.
WRONG_ANSWERS = ("records instead of", "answers", "reading fails", "disagree", "read from outside")


def _damage_table_rows(where: str, results: dict[str, list[str]], problems: list[str]) -> list[list[str]]:
    """The damage table's rows of one matrix (``results``: each damage's label and problems)."""
    by_kind: dict[str, dict[str, list[str]]] = {}
    for label, found in results.items():
        by_kind.setdefault(label.split(": ")[0], {})[label] = found
    rows = []
    for kind, cases in by_kind.items():
        problems.extend(problem for case in cases.values() for problem in case)
        rows.append([
            f"{where}: `{kind}`", str(len(cases)),
            f"**{sum(any('fails to open' in problem for problem in case) for case in cases.values())}**",
            f"**{sum(any('silently dropped' in problem for problem in case) for case in cases.values())}**",
            f"**{sum(any(word in problem for problem in case for word in WRONG_ANSWERS) for case in cases.values())}**",
            str(sum(bool(case) for case in cases.values())),
        ])
    return rows


# -- full disk ---------------------------------------------------------------------------------


#: Full-disk trials: the first call after the flusher failed, and whether finish() runs while still full.
FULL_DISK_CASES = (
    ("`push()` first after the failed write", "push", False),
    ("`add()` first after the failed write", "add", False),
    ("`commit()` first after the failed write", "commit", False),
    ("`flush()` first after the failed write", "flush", False),
    ("`push()` first, then `finish()` while still full", "push", True),
)


def full_disk_rows(work: Path, count: int) -> tuple[list[list[str]], list[str]]:
    """One row per full-disk case; reading while full and read-only counted too."""
    rows, problems = [], []
    for label, first_call, finish_while_full in FULL_DISK_CASES:
        done = []
        for index in range(count):
            progress(f"full disk: {label} #{index + 1}")
            try:
                with trials.small_tmpfs(_fresh(work, f"disk-{len(rows)}-{index}")) as mount_point:
                    result = trials.full_disk_trial(mount_point, first_call, finish_while_full=finish_while_full)
                    result.problems += trials.read_only_problems(mount_point, mount_point / "study", result.flushed)
            except trials.MountNotPermitted as error:
                return [], [f"full-disk trials skipped: cannot mount a tmpfs here: {error}"]
            except Exception as error:  # counted as a trial with a broken promise
                result = trials.FullDisk(problems=[f"the trial raised {type(error).__name__}: {error}"])
            done.append(result)
            problems.extend(f"full disk, {label}: {problem}" for problem in result.problems)
        rows.append([
            label, str(len(done)),
            str(sum(result.first_error is not None for result in done)),
            f"{sum(result.flushed for result in done):,} / {sum(result.kept for result in done):,}",
            f"**{sum(len(result.corrupt_files) for result in done)}**",
            f"**{sum(result.ok_with_missing for result in done)}**",
            str(sum(any("while the disk is full" in problem or "read-only" in problem for problem in result.problems)
                    for result in done)),
        ])
    return rows, problems


# -- flush cost --------------------------------------------------------------------------------


def flush_cost_row(work: Path) -> list[str]:
    """CPU time of flushing the manykeys writer's records (8 keys out of 400, ints, then floats, then
    strings), per 1,000 records, beside that of committing them, and the journal's bytes per record."""
    from rigorous_recorder import ExperimentCollection

    collection = ExperimentCollection(work / "flush-cost" / "study", quiet=True, flush_interval=600)
    experiment = collection.new_experiment()
    worker = experiment.recorder.sub_recorder(role="worker")
    chooser = random.Random(7)
    flushes, commits, seq = [], [], 0
    for flush in range(FLUSHES):
        started = time.process_time()
        for _ in range(FLUSH_RECORDS):
            values = (seq, seq + 0.5, f"text {seq}")[flush % 3]
            worker.add({f"key_{key}": values for key in chooser.sample(range(400), 8)})
            worker.add(seq=seq).commit()
            seq += 1
        committed = time.process_time()
        collection.flush()
        flushes.append(time.process_time() - committed)
        commits.append(committed - started)
    journal_bytes = sum(path.stat().st_size for path in collection.path.rglob("*.rrj"))
    experiment.finish()
    per_thousand = 1000 * 1000 / FLUSH_RECORDS  # ms per 1,000 records from seconds per flush
    return [f"{FLUSH_RECORDS:,}", str(FLUSHES), f"{statistics.median(flushes) * per_thousand:.0f}",
            f"{statistics.median(commits) * per_thousand:.0f}", f"{journal_bytes / seq:,.0f}"]


# -- the report --------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=2, help="trials per row of the kill and full-disk tables")
    parser.add_argument("--seed", type=int, default=None, help="seed of the random kill moments")
    parser.add_argument("--only", nargs="+", choices=PARTS, default=None, metavar="PART",
                        help=f"run only these parts (default: all): {', '.join(PARTS)}")
    args = parser.parse_args()
    parts = PARTS if args.only is None else tuple(args.only)
    seed = random.randrange(10**6) if args.seed is None else args.seed
    chooser = random.Random(seed)
    start, load_at_start = time.time(), os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="rr-durability-") as folder:
        work = Path(folder)
        kills, kill_problems = kill_rows(work, args.trials, chooser, parts)
        damages, damage_problems = damage_rows(work) if "damage" in parts else ([], [])
        disks, disk_problems = full_disk_rows(work, args.trials) if "full-disk" in parts else ([], [])
        flush_cost = flush_cost_row(work) if "flush-cost" in parts else None
    only = [] if args.only is None else ["--only", *parts]
    command = shlex.join([Path(sys.executable).name, *sys.argv[:1], "--trials", str(args.trials), "--seed", str(seed),
                          *only])
    print(f"`{command}` ({time.time() - start:.0f} s)\n")
    print(f"- machine: {os.cpu_count()} CPUs, {platform.platform()}; load average {load_at_start:.2f} at the start, "
          f"{os.getloadavg()[0]:.2f} at the end; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    import rigorous_recorder

    print(f"- library: rigorous-recorder {H.library_version(sys.executable)} from "
          f"{Path(rigorous_recorder.__file__).parent} ({sys.executable})\n")
    if kills:
        print("kill -9 at random moments (a record had to survive if flushed, or committed > 1.5 s before the kill):\n")
        print(H.markdown_table(["workload", "trials", "records that had to survive", "records lost",
                                "records counted twice", "trials where SQL, len() and records disagree",
                                "trials where the writer or the reader failed"], kills))
    if damages:
        print("\ndamage matrix (each damage done to a copy of a collection: of three runs, the third damaged; "
              f"for the files outside the run folders, of {trials.PACKED_TEMPLATE_RUNS} finished runs, 64 of them "
              "packed, and a killed run):\n")
        print(H.markdown_table(["file kind", "damages tried", "collections that fail to open", "runs silently dropped",
                                "damages where SQL answers differ from the undamaged collection's",
                                "damages with any broken promise"], damages))
    if disks:
        print("\nfull disk (8 MB tmpfs; the flusher thread hits the full disk first):\n")
        print(H.markdown_table(["case", "trials", "first call raised", "records flushed / kept", "corrupt files",
                                "runs marked ok with records missing", "trials where reading full/read-only failed"],
                               disks))
    if flush_cost:
        print("\nflush cost of sparse records (the manykeys writer's; median of the flushes, CPU time):\n")
        print(H.markdown_table(["records a flush", "flushes", "flush CPU ms per 1,000 records",
                                "commit CPU ms per 1,000 records", "journal bytes per record"], [flush_cost]))
    problems = kill_problems + damage_problems + disk_problems
    print(f"\n{len(problems)} broken promises" + (":" if problems else "."))
    for problem in problems[:80]:
        print(f"- {problem[:300]}")
    if len(problems) > 80:
        print(f"- ... and {len(problems) - 80} more")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
