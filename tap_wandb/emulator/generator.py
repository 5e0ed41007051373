"""Seeded, deterministic W&B data: realistic and nasty runs, and a way to advance them.

``demo_store()`` builds the dataset used by the demo and the tests; ``bench_store()`` builds
uniform projects for benchmarks; ``advance()`` moves a store forward between two syncs.
"""

from __future__ import annotations

import datetime as dt
import math
import random
import string
from typing import Any

from tap_wandb.emulator.demo_artifacts import (
    advance_artifacts,
    seed_artifacts,
    seed_bench_artifacts,
)
from tap_wandb.emulator.demo_sweeps import refresh_sweeps, seed_sweeps
from tap_wandb.emulator.store import TERMINAL_STATES, Run, Store
from tap_wandb.emulator.system_metrics import seed_system_metrics

DEMO_API_KEY = "demo" + "0123456789abcdef" * 3  # 52 characters, as W&B keys are 40+
DEMO_USER = "acme"
DEMO_TEAM = "acme-research"
START = dt.datetime(2024, 3, 1, 9, 0, 0)
STATES = ("finished", "finished", "finished", "running", "crashed", "failed", "killed")


def _run_id(rng: random.Random) -> str:
    return "".join(rng.choice(string.ascii_lowercase + string.digits) for _ in range(8))


def _config(rng: random.Random, index: int) -> dict[str, Any]:
    def wrapped(value: Any, desc: str | None = None) -> dict[str, Any]:
        return {"value": value, "desc": desc}

    config = {
        "lr": wrapped(round(10 ** rng.uniform(-5, -2), 8)),
        "batch_size": wrapped(rng.choice([16, 32, 64, 128]), "per device"),
        "epochs": wrapped(rng.randint(1, 50)),
        "optimizer": wrapped({"name": rng.choice(["adam", "sgd"]), "betas": [0.9, 0.999]}),
        "model.depth": wrapped(rng.choice([18, 34, 50])),  # a dotted top-level key
        "model": wrapped({"arch": "resnet", "width": {"stem": 64}}),
        "数据集": wrapped("训练集-v2"),
        "seed": wrapped(2**53 + rng.randint(1, 10_000)),  # beyond float precision
        "dropout": wrapped(None),
        "experiment_name": wrapped(rng.choice(["foo", "bar", "baz"])),
        "_wandb": wrapped({"cli_version": "0.31.0", "python_version": "3.11.7", "t": {"1": [1]}}),
        "wandb_version": wrapped("0.31.0"),
    }
    if index % 4 == 0:
        config["plain_value"] = 7  # stored without the {value, desc} wrapper
    if index % 5 == 0:
        config[""] = wrapped("empty key")
    return config


def _history(
    rng: random.Random, steps: int, start_time: float, *, scalar_only: bool, first_step: int = 0
) -> list[dict[str, Any]]:
    rows = []
    step = first_step
    for i in range(steps):
        if i and rng.random() < 0.05:
            step += rng.randint(2, 20)  # gaps in _step
        runtime = round(step * 0.37 + 1.5, 3)
        row: dict[str, Any] = {
            "_step": step,
            "_runtime": runtime,
            "_timestamp": round(start_time + runtime, 3),
            "loss": round(2.5 * math.exp(-step / 400) + rng.random() * 0.05, 6),
        }
        if step % 2 == 0:
            row["acc"] = round(1 - row["loss"] / 3, 6)
        if step % 10 == 0:
            row["lr"] = round(0.001 * 0.99 ** (step // 10), 10)
        if step % 50 == 0:
            row["val/loss"] = round(row["loss"] * 1.1, 6)
        if step % 97 == 13:
            row["loss"] = math.nan
        if step % 211 == 7:
            row["grad_norm"] = math.inf
        if step % 25 == 0:
            row["epoch"] = step // 25
        if not scalar_only:
            if step % 30 == 0:
                row["weights"] = {"_type": "histogram", "values": [1, 4, 2], "bins": [0, 1, 2, 3]}
            if step % 77 == 5:
                row["loss_str"] = "NaN"  # W&B can hold the string "NaN" too
            if step % 40 == 0:
                row["métrique/précision"] = 0.5
        rows.append(row)
        step += 1
    return rows


def _summary(rng: random.Random, run: Run) -> dict[str, Any]:
    # As W&B keeps it: the latest value of every key ever logged.
    last: dict[str, Any] = {}
    for row in run.history:
        last.update(row)
    summary: dict[str, Any] = {key: value for key, value in last.items() if key != "weights"}
    summary.update(
        {
            "best/acc": round(rng.random(), 6),
            "nan_metric": math.nan,
            "inf_metric": math.inf,
            "neg_inf_metric": -math.inf,
            "nested": {"eval": {"f1": round(rng.random(), 4), "per_class": [0.1, 0.2]}},
            "examples": {
                "_type": "table-file",
                "path": f"media/table/examples_{run.name}.table.json",
                "sha256": "ab" * 32,
                "size": 2048,
                "ncols": 3,
                "nrows": 10,
            },
            "weights": {"_type": "histogram", "values": [3, 1], "bins": [0.0, 0.5, 1.0]},
            "émoji 🚀": 1,
            "huge_int": 2**63 + 5,
            "_wandb": {"runtime": int(last.get("_runtime", 0))},
        }
    )
    return summary


def _make_run(
    rng: random.Random,
    entity: str,
    project: str,
    index: int,
    created_at: dt.datetime,
    *,
    state: str | None = None,
    steps: int | None = None,
    scalar_only: bool = False,
) -> Run:
    state = state or STATES[index % len(STATES)]
    if steps is None:
        steps = 0 if index % 6 == 5 else rng.randint(5, 250)
    run = Run(
        entity=entity,
        project=project,
        name=_run_id(rng),
        display_name=f"{rng.choice(['brisk', 'calm', 'eager', 'quiet'])}-"
        f"{rng.choice(['sun', 'river', 'pine', 'dune'])}-{index}",
        state=state,
        created_at=created_at,
        heartbeat_at=created_at + dt.timedelta(seconds=steps + 30),
        tags=rng.sample(["baseline", "ablation", "prod", "ünïcode", "gpu"], k=index % 3),
        group=rng.choice([None, "sweep-a", "grp/β"]),
        job_type=rng.choice([None, "train", "eval"]),
        sweep_name=rng.choice([None, None, "swp" + str(index % 3)]),
        commit=rng.choice([None, f"{rng.getrandbits(160):040x}"]),
        notes=rng.choice([None, "", "first try\nwith a newline", '注释 "quoted"']),
        description=f"Run {index} of {project}.\nÉtape ✓" if index % 4 == 1 else None,
        username=rng.choice(["alice", "bob", "émile"]),
        config=_config(rng, index),
    )
    start = created_at.replace(tzinfo=dt.UTC).timestamp()
    run.history = _history(rng, steps, start, scalar_only=scalar_only)
    run.summary = _summary(rng, run)
    run.system_metrics = {"system.cpu": round(rng.random() * 100, 2), "system.gpu.0.gpu": 80}
    run.events = [
        {
            "system.cpu": round(rng.random() * 100, 2),
            "system.memory": 40 + i,
            "_runtime": 10.0 * (i + 1),
            "_timestamp": start + 10.0 * (i + 1),
            "_wandb": True,
        }
        for i in range(min(steps // 10, 20))
    ]
    return run


def demo_store(
    seed: int = 7,
    runs_per_project: int = 24,
    big_run_steps: int = 50_000,
) -> Store:
    """The seeded demo entity: varied projects, an empty one, and a run with exported history.

    In project ``vision`` runs 9, 10 and 11 share one ``created_at`` (so the second in which
    page 1 of 10 ends continues on page 2). Sweeps, artifacts and system metrics come from
    ``demo_sweeps``, ``demo_artifacts`` and ``system_metrics``.
    """
    rng = random.Random(seed)
    store = Store({DEMO_API_KEY: DEMO_USER})
    store.add_project(DEMO_USER, "empty", START)
    for project_name in ("vision", "nlp"):
        store.add_project(DEMO_USER, project_name, START)
        created = START
        for index in range(runs_per_project):
            if not (project_name == "vision" and index in (10, 11)):
                created += dt.timedelta(seconds=rng.randint(1, 900))
            store.add_run(_make_run(rng, DEMO_USER, project_name, index, created))
    if big_run_steps:
        project = store.projects[(DEMO_USER, "nlp")]
        created = max(run.created_at for run in project.runs.values()) + dt.timedelta(minutes=5)
        big = _make_run(
            rng,
            DEMO_USER,
            "nlp",
            runs_per_project,
            created,
            state="running",
            steps=big_run_steps,
            scalar_only=True,
        )
        big.display_name = "long-pretraining"
        big.exported_before_step = big.history[int(len(big.history) * 0.8)]["_step"]
        big.rows_per_parquet_file = 15_000
        store.add_run(big)
    store.add_project(DEMO_TEAM, "shared", START)
    for index in range(3):
        created = START + dt.timedelta(hours=index)
        store.add_run(_make_run(rng, DEMO_TEAM, "shared", index, created, state="finished"))
    _seed_objects(store, seed)
    return store


def _seed_objects(store: Store, seed: int) -> None:
    """Realistic system metrics, sweeps and artifacts, drawn from their own random generators
    after the runs are made, so the runs' own values do not depend on them."""
    for run in store.all_runs():
        seed_system_metrics(run)
    seed_sweeps(store, seed)
    seed_artifacts(store, seed)


def bench_store(
    runs: int,
    steps_per_run: int,
    *,
    exported_share: float = 0.0,
    seed: int = 11,
    system_seconds: float = 0.0,
    artifacts: bool = False,
    nan_share: float = 0.0,
) -> Store:
    """One project of uniform finished runs, for benchmarks. ``system_seconds``: runs also
    have system metrics over that runtime; ``artifacts``: runs log and use artifacts
    (``seed_bench_artifacts``); ``nan_share``: about that share of rows get a NaN, +Infinity
    or -Infinity metric (``_nan_rows``)."""
    rng = random.Random(seed)
    store = Store({DEMO_API_KEY: DEMO_USER})
    store.add_project(DEMO_USER, "bench", START)
    created = START
    for index in range(runs):
        created += dt.timedelta(seconds=1 + index % 3)
        run = _make_run(
            rng,
            DEMO_USER,
            "bench",
            index,
            created,
            state="finished",
            steps=steps_per_run,
            scalar_only=True,
        )
        if nan_share:
            _nan_rows(rng, run.history, nan_share)
        if exported_share and run.history:
            index = int(len(run.history) * exported_share)
            run.exported_before_step = (
                run.history[index]["_step"] if index < len(run.history) else run.last_step + 1
            )
        if system_seconds:
            seed_system_metrics(run, system_seconds)
        store.add_run(run)
    if artifacts and runs:
        seed_bench_artifacts(store, _bench_runs(store), seed)
    return store


def _nan_rows(rng: random.Random, rows: list[dict[str, Any]], share: float) -> None:
    """Non-finite values in about ``share`` of the rows, in both cases W&B sees: a metric
    that went NaN/Infinity, and one logged only then (its parquet column is mostly null)."""
    for row in rows:
        if rng.random() < share:
            row["acc" if rng.random() < 0.5 else "overflow"] = rng.choice(
                [math.nan, math.inf, -math.inf]
            )


def _bench_runs(store: Store) -> list[Run]:
    return sorted(store.project(DEMO_USER, "bench").runs.values(), key=lambda r: r.seq)


def advance(store: Store, seed: int = 1, new_runs_per_project: int = 3) -> None:
    """Move the data forward as time would between two syncs.

    Running runs log more steps (and some finish with a changed summary); new runs appear,
    the first of them in the same second as the newest existing run. The ``updatedAt`` of
    every run changed or added becomes the store's now. Runs' system metrics grow with
    their runtime, sweeps follow their runs, and new runs use and log artifacts.
    """
    rng = random.Random(seed)
    with store.lock:
        before = set(store.all_runs())
        for project in list(store.projects.values()):
            if not project.runs:
                continue
            for run in list(project.runs.values()):
                if run.state in TERMINAL_STATES:
                    continue
                last = run.last_step if run.last_step is not None else -1
                start = run.created_at.replace(tzinfo=dt.UTC).timestamp()
                for row in _history(
                    rng, rng.randint(5, 60), start, scalar_only=True, first_step=last + 1
                ):
                    run.log(row)
                run.heartbeat_at += dt.timedelta(minutes=10)
                run.tags = [*(tag for tag in run.tags if tag != "advanced"), "advanced"]
                if rng.random() < 0.5:
                    run.state = "finished"
                run.summary = {**_summary(rng, run), "final_eval": round(rng.random(), 4)}
                store.touch(run)
            newest = max(run.created_at for run in project.runs.values())
            base = len(project.runs)
            for i in range(new_runs_per_project):
                created = newest + dt.timedelta(seconds=0 if i == 0 else 30 * i)
                # A new run's updatedAt is now, so it is among the runs changed since a sync.
                new_run = store.add_run(
                    _make_run(
                        rng,
                        project.entity,
                        project.name,
                        base + i,
                        created,
                        steps=rng.randint(5, 80),
                    )
                )
                store.touch(new_run)
        for run in store.all_runs():
            seed_system_metrics(run)
        refresh_sweeps(store)
        advance_artifacts(store, [run for run in store.all_runs() if run not in before], seed)
