"""End to end: rows landed per second by `meltano run`, against the tap alone, in one run.

    .venv/bin/python bench/e2e.py [--quick] [--repeat N] [--every] [--results bench/RESULTS.md]

Two datasets from the emulator (each in its own process): the demo entity, and a history-heavy
project (50 runs x 10,000 steps). For each, the pipelines of meltano.yml that load a warehouse
(DuckDB with target-wandb-duckdb, PostgreSQL) run as users run them, and the DuckDB pipeline
with target-duckdb 0.8.0, the loader the project used before; on the demo also piped
tap | loader without Meltano and target-postgres with the settings this project shipped before
(on the history project only the DuckDB pipe, unless --every). The tap alone writing the same
records to a file is the baseline, run right before each pipeline run. Every landed table is
checked against the emulator's data (row counts, spot history values) before a figure is
printed. A throwaway PostgreSQL server (.ci/postgres.sh) is started and stopped here.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))

from bench.e2e_support import (  # noqa: E402
    Dataset,
    PostgresServer,
    Run,
    check_landed,
    meltano_env,
    run_pipe,
    run_process,
    serve_dataset,
)

MELTANO = REPO / ".tools" / "meltano" / "bin" / "meltano"
PLUGINS = REPO / ".meltano"
TAP = PLUGINS / "extractors" / "tap-wandb" / "venv" / "bin" / "tap-wandb"
LOADERS = {name: PLUGINS / "loaders" / name / "venv" / "bin" / name
           for name in ("target-wandb-duckdb", "target-duckdb", "target-postgres")}  # fmt: skip
SECTION = "## End to end"
GOALS = {"target-wandb-duckdb": 0.50, "target-postgres": 0.33}

# The loader settings meltano.yml had before this benchmark; set as environment variables
# so that the same meltano.yml runs both.
PREVIOUS = {
    "target-postgres": {"TARGET_POSTGRES_USE_COPY": "false",
                        "TARGET_POSTGRES_VALIDATE_RECORDS": "true",
                        "TARGET_POSTGRES_BATCH_SIZE_ROWS": "10000"},
}  # fmt: skip


@dataclass
class Pipeline:
    label: str
    extractor: str
    loader: str
    how: str = "meltano"  # "meltano": meltano run; "pipe": tap | loader, no Meltano
    settings: dict[str, str] = field(default_factory=dict)
    results: list[Run] = field(default_factory=list)
    baselines: list[Run] = field(default_factory=list)  # the tap run before each result


def pipelines(every: bool) -> list[Pipeline]:
    """Each warehouse pipeline as shipped, piped without Meltano, and the previous DuckDB loader
    and PostgreSQL settings; with every=False only the DuckDB ones and the PostgreSQL pipeline
    as shipped (the others take minutes each on the history dataset)."""
    chosen = []
    for loader, extractor in (("target-wandb-duckdb", "tap-wandb"),
                              ("target-postgres", "tap-wandb-jsonb")):  # fmt: skip
        chosen.append(Pipeline(f"meltano run {extractor} {loader}", extractor, loader))
        if every or loader == "target-wandb-duckdb":
            chosen.append(Pipeline(f"  same, piped tap \\| {loader} (no Meltano)", extractor,
                                   loader, how="pipe"))  # fmt: skip
        if loader == "target-wandb-duckdb":
            chosen.append(Pipeline("  before: meltano run tap-wandb target-duckdb (0.8.0)",
                                   extractor, "target-duckdb"))  # fmt: skip
        if every and loader in PREVIOUS:
            chosen.append(Pipeline("  same, previous loader settings", extractor, loader,
                                   settings=PREVIOUS[loader]))  # fmt: skip
    return chosen


def meltano_config(env: dict[str, str], plugin: str) -> str:
    """The plugin's config as Meltano passes it (meltano.yml and environment); Meltano prints
    secrets masked, so the two this benchmark sets are put back."""
    command = [str(MELTANO), "--env-file", env["BENCH_EMPTY_ENV"], "config", "print", plugin]
    printed = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True,
                             check=True).stdout  # fmt: skip
    config = json.loads(printed)
    secrets = {"api_key": "TAP_WANDB_API_KEY", "password": "TARGET_POSTGRES_PASSWORD"}
    config.update({name: env[var] for name, var in secrets.items() if name in config})
    return json.dumps(config)


def tap_alone(env: dict[str, str], config: str, work: Path) -> Run:
    """The tap writing every record to a file: what the pipelines are measured against."""
    out = work / "tap.jsonl"
    with open(out, "wb") as sink:
        run = run_process([str(TAP), "--config", config], env, stdout=sink)
    with open(out, "rb") as lines:
        run.rows = sum(1 for line in lines if line.startswith(b'{"type":"RECORD"'))
    out.unlink()
    return run


def land(pipe: Pipeline, env: dict[str, str], dataset: Dataset, pg: PostgresServer,
         work: Path, turn: int) -> Run:  # fmt: skip
    """Run one pipeline into fresh tables and state, check what landed, drop it."""
    env = {**env, **pipe.settings,
           "MELTANO_DATABASE_URI": f"sqlite:///{work / f'meltano-{turn}.db'}",
           "TARGET_DUCKDB_PATH": str(work / f"warehouse-{turn}.duckdb"),
           "TARGET_WANDB_DUCKDB_PATH": str(work / f"warehouse-{turn}.duckdb"),
           "TARGET_POSTGRES_DEFAULT_TARGET_SCHEMA": f"bench_{turn}"}  # fmt: skip
    if pipe.how == "meltano":
        command = [str(MELTANO), "--env-file", env["BENCH_EMPTY_ENV"], "run",
                   pipe.extractor, pipe.loader]  # fmt: skip
        run = run_process(command, env, cwd=REPO)
    else:
        configs = {}
        for plugin in (pipe.extractor, pipe.loader):
            configs[plugin] = work / f"{plugin}.json"
            configs[plugin].write_text(meltano_config(env, plugin))
        run = run_pipe(
            [str(TAP), "--config", str(configs[pipe.extractor])],
            [str(LOADERS[pipe.loader]), "--config", str(configs[pipe.loader])],
            env,
        )
    run.rows = check_landed(pipe.loader, env, dataset, pg)
    return run


def rate(run: Run) -> float:
    return run.rows / run.seconds


def measure(dataset: Dataset, chosen: list[Pipeline], base_env: dict[str, str],
            pg: PostgresServer, tmp: str, repeat: int) -> list[Run]:  # fmt: skip
    """Turns of every pipeline, each right after a tap-alone run; returns the tap runs."""
    taps: list[Run] = []
    with serve_dataset(dataset) as url:
        env = {**base_env, **dataset.tap_env(url)}
        work = Path(tempfile.mkdtemp(dir=tmp))
        config = work / "tap-config.json"  # what Meltano hands the tap, maps included
        config.write_text(meltano_config(env, "tap-wandb"))
        tap_alone(env, str(config), work)  # warm-up: the emulator's exports, the page cache
        for _ in range(repeat):
            for pipe in chosen:
                tap = tap_alone(env, str(config), work)
                assert tap.rows == dataset.expected_rows, (tap.rows, dataset.expected)
                taps.append(tap)
                pipe.baselines.append(tap)
                pipe.results.append(land(pipe, env, dataset, pg, work, len(taps)))
    return taps


def table_line(dataset: str, name: str, runs: list[Run], taps: list[Run],
               goal: str = "", paired: bool = True) -> str:  # fmt: skip
    """Median rows/s beside the median tap-alone rows/s. The ratio is the median of each run
    against the tap run just before it; the CPU ratio likewise, of CPU seconds (tap / run),
    which the machine's other load disturbs less than wall time."""
    ratio = cpu_ratio = ""
    if paired:
        pairs = list(zip(runs, taps, strict=True))
        ratio = f"{statistics.median(rate(r) / rate(t) for r, t in pairs):.2f}"
        cpu_ratio = f"{statistics.median(t.cpu / r.cpu for r, t in pairs):.2f}"
    cpu = statistics.median(run.cpu for run in runs)
    rss = ", ".join(f"{name} {mb:.0f} MB" for name, mb in runs[-1].rss.items())
    return (f"| {dataset} | {name} | {statistics.median(map(rate, runs)):,.0f} | "
            f"{statistics.median(map(rate, taps)):,.0f} | {ratio} | {goal} | {cpu:.1f} | "
            f"{cpu_ratio} | {rss} |")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="a small history dataset, 1 turn")
    parser.add_argument(
        "--repeat", type=int, help="turns per dataset (default: 3 demo, 2 history; --quick: 1)"
    )
    parser.add_argument(
        "--every",
        action="store_true",
        help="every pipeline variant on the history dataset too (an hour more)",
    )
    parser.add_argument("--history-only", action="store_true", help="skip the demo entity")
    parser.add_argument(
        "--loader", help="only the pipelines into this loader, e.g. target-wandb-duckdb"
    )
    parser.add_argument("--results", help="also write the results (markdown) here")
    args = parser.parse_args()  # fmt: skip
    datasets = [
        (Dataset.demo(), pipelines(every=True), args.repeat or (1 if args.quick else 3)),
        (Dataset.history(10 if args.quick else 50, 5_000 if args.quick else 10_000),
         pipelines(every=args.every), args.repeat or (1 if args.quick else 2)),
    ][1 if args.history_only else 0 :]  # fmt: skip
    if args.loader:
        datasets = [(dataset, [pipe for pipe in chosen if pipe.loader == args.loader], repeat)
                    for dataset, chosen, repeat in datasets]  # fmt: skip
    load_before = os.getloadavg()[0]
    lines = [
        "| dataset | pipeline | rows/s | tap alone rows/s | ratio | goal | CPU s | CPU ratio "
        "| peak RSS |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    print("\n".join(lines), flush=True)
    with tempfile.TemporaryDirectory(prefix="e2e-bench-") as tmp, PostgresServer() as pg:
        base_env = meltano_env(Path(tmp), pg)
        for dataset, chosen, repeat in datasets:
            taps = measure(dataset, chosen, base_env, pg, tmp, repeat)
            label = f"{dataset.label} ({repeat} turns)"
            report = [table_line(label, "tap-wandb alone, to a file", taps, taps,
                                 paired=False)]  # fmt: skip
            for pipe in chosen:
                shipped = pipe.how == "meltano" and not pipe.settings and pipe.loader in GOALS
                goal = f">= {GOALS[pipe.loader]:.2f}" if shipped else ""
                report.append(table_line(label, pipe.label, pipe.results,
                                         pipe.baselines, goal))  # fmt: skip
            lines += report
            print("\n".join(report), flush=True)
    footer = (
        "\nRows: every record of every stream, landed (counted in the warehouse). Medians of "
        "the turns; CPU s is user + system time of all the pipeline's processes (the "
        f"emulator's excluded). Load average {load_before:.1f} at the start, "
        f"{os.getloadavg()[0]:.1f} at the end."
    )
    print(footer)
    if args.results:
        cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
        models = [line.split(":", 1)[1].strip() for line in cpuinfo
                  if line.startswith("model name")]  # fmt: skip
        section = (f"{SECTION}\n\n`.venv/bin/python bench/e2e.py`: measured "
                   f"{time.strftime('%Y-%m-%d')} on {models[0] if models else '?'} "
                   f"({platform.machine()}), {os.cpu_count()} cores, Python "
                   f"{platform.python_version()}{' (--quick)' if args.quick else ''}.\n\n"
                   + "\n".join(lines) + "\n" + footer + "\n")  # fmt: skip
        write_section(Path(args.results), section)


def write_section(path: Path, section: str) -> None:
    """Replace this benchmark's table in the results file: its section up to the next heading
    (the ### notes below it are written by hand and kept)."""
    text = path.read_text() if path.exists() else ""
    before, found, rest = text.partition(SECTION + "\n")
    # The next heading of either level ends the table.
    ends = [rest.find(h) for h in ("\n### ", "\n## ") if found and h in rest]
    after = rest[min(ends) + 1 :] if ends else ""
    path.write_text(before.rstrip("\n") + "\n\n" + section + ("\n" + after if after else ""))


if __name__ == "__main__":
    main()
