"""The dbt project (transform/) run by Meltano after a real load from the emulator, on DuckDB
and PostgreSQL, checked value by value against the emulator's data (and the official client).

Expected values are computed here from the emulator's store, in Python, by the rules the
README states (numeric history values, summary numbers, runtime times the GPUs of the run's
system-metrics events, the metric and goal of the sweep's YAML config); nothing is read back
from the models to build an expectation. Each test deletes a run in W&B between two builds.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import math
import re
import shutil
import subprocess
from collections import defaultdict
from pathlib import Path
from typing import Any

import duckdb
import psycopg
import pytest
import yaml
from PIL import Image

from tap_wandb.emulator import DEMO_API_KEY, DEMO_USER, Run, Store, advance
from tests.conftest import official_client

# meltano_env, pipeline and postgres are test_meltano's fixtures (hence F811 where taken).
from tests.test_meltano import (  # noqa: F401
    REPO,
    SYSTEM_METRICS_SAMPLES,
    TERMINAL,
    _runs,
    meltano,
    meltano_env,
    pipeline,
    postgres,
)

SCHEMA = "analytics"


@pytest.fixture
def dbt_pipeline(pipeline, tmp_path) -> dict[str, str]:  # noqa: F811
    """`pipeline` plus the dbt utilities: the models built in the test's own DuckDB file, dbt's
    compiled files and logs in the test's directory (not transform/target, which the demo and
    a concurrent test run would share)."""
    (Path(pipeline["MELTANO_SYS_DIR_ROOT"]) / "utilities").symlink_to(
        REPO / ".meltano" / "utilities", target_is_directory=True
    )
    return {
        **pipeline,
        "DBT_DUCKDB_PATH": pipeline["TARGET_WANDB_DUCKDB_PATH"],
        "DBT_TARGET_PATH": str(tmp_path / "dbt-target"),
        "DBT_LOG_PATH": str(tmp_path / "dbt-logs"),
    }


# -- what the models must hold, from the emulator's data ------------------------------------


def is_number(value: Any) -> bool:
    """A JSON number as the warehouse sees it: NaN and Infinity arrive as null."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def history_values(runs: list[Run]) -> tuple[set[tuple], int]:
    """run_metrics' rows (entity, project, run_id, step, metric, value), and how many history
    values are not numbers. Every key of a row but _step is a value."""
    numeric, other = set(), 0
    for run in runs:
        for row in run.history:
            for key, value in row.items():
                if key == "_step":
                    continue
                if is_number(value):
                    numeric.add((run.entity, run.project, run.name, row["_step"], key, value))
                else:
                    other += 1
    return numeric, other


def final_metrics(runs: list[Run]) -> set[tuple]:
    return {
        (run.entity, run.project, run.name, key, float(value))
        for run in runs
        for key, value in run.summary.items()
        if is_number(value)
    }


def runtime_seconds(run: Run) -> float:
    """The summary's _runtime, else _wandb.runtime (a run that logged no history)."""
    runtime = run.summary.get("_runtime")
    return runtime if is_number(runtime) else run.summary["_wandb"]["runtime"]


GPU_KEY = re.compile(r"system\.gpu\.(\d+)\.")
GPU_LOAD = re.compile(r"system\.gpu\.\d+\.gpu")


def system_rows(url: str, runs: list[Run]) -> dict[str, list[dict[str, Any]] | None]:
    """run -> the system-metrics rows a sync loads: W&B's sample of an ended run's events (the
    official client's, where the sample is not all of them); None for a run still running."""
    api = None  # the client starts a service process: only when a sample needs it
    served: dict[str, list[dict[str, Any]] | None] = {}
    for run in runs:
        if run.state not in TERMINAL:
            served[run.name] = None
        elif len(run.events) <= SYSTEM_METRICS_SAMPLES:
            served[run.name] = run.events
        else:
            api = api or official_client(url)
            served[run.name] = api.run(f"{run.entity}/{run.project}/{run.name}").history(
                samples=SYSTEM_METRICS_SAMPLES, pandas=False, stream="system"
            )
            assert len(served[run.name]) == SYSTEM_METRICS_SAMPLES
    return served


def run_gpus(run: Run, rows: list[dict[str, Any]] | None) -> tuple[int, list[float]]:
    """(GPU count, utilisation values): from the run's system-metrics rows, or from its latest
    sample (runs.system_metrics) when it has none."""
    rows = rows or [run.system_metrics]
    indices = {m[1] for row in rows for key in row if (m := GPU_KEY.match(key))}
    loads = [v for row in rows for k, v in row.items() if GPU_LOAD.fullmatch(k) and is_number(v)]
    return len(indices), loads


def gpu_usage(
    runs: list[Run], served: dict[str, list[dict[str, Any]] | None]
) -> dict[tuple, tuple[float, float | None]]:
    """(entity, project, user, month) -> (GPU-hours, GPU-hour-weighted mean utilisation)."""
    hours: dict[tuple, float] = defaultdict(float)
    weighted: dict[tuple, float] = defaultdict(float)
    for run in runs:
        key = (run.entity, run.project, run.username, run.created_at.date().replace(day=1))
        gpus, loads = run_gpus(run, served[run.name])
        gpu_seconds = runtime_seconds(run) * gpus
        hours[key] += gpu_seconds / 3600
        if loads:
            weighted[key] += gpu_seconds * sum(loads) / len(loads) / 3600
    return {key: (h, weighted[key] / h if h else None) for key, h in hours.items()}


def sweep_objectives(
    store: Store, runs: list[Run], overrides: dict[str, dict[str, str]] | None = None
) -> dict[tuple, tuple[str, str]]:
    """(entity, project, sweep) -> (metric, goal): the `overrides` (the setting sweep_metrics)
    entry, else the sweep's YAML config's `metric`, else loss/minimize (setting sweep_metric)."""
    objectives = {}
    for run in runs:
        if not run.sweep_name:
            continue
        sweep = store.projects[(run.entity, run.project)].sweeps[run.sweep_name]
        metric = (yaml.safe_load(sweep.config) or {}).get("metric") or {}
        override = (overrides or {}).get(run.sweep_name)
        if override:
            metric = override
        objective = (metric["name"], metric.get("goal", "minimize")) if metric else None
        objectives[(run.entity, run.project, run.sweep_name)] = objective or ("loss", "minimize")
    return objectives


def best_runs(runs: list[Run], objectives: dict[tuple, tuple[str, str]]) -> dict[tuple, str | None]:
    """(entity, project, sweep) -> the run with the best summary value of the sweep's metric."""
    sweeps: dict[tuple, list[Run]] = defaultdict(list)
    for run in runs:
        if run.sweep_name:
            sweeps[(run.entity, run.project, run.sweep_name)].append(run)
    best = {}
    for key, members in sweeps.items():
        metric, goal = objectives[key]
        scored = [run for run in members if is_number(run.summary.get(metric))]
        pick = min if goal == "minimize" else max
        best[key] = pick(scored, key=lambda run: run.summary[metric]).name if scored else None
    return best


def prepare(store: Store) -> None:
    """The demo's runs all start in one month: move some to the next. Add W&B's per-process
    duplicate GPU keys (not GPUs of their own) to the events, and drop the metric of vision's
    sweep swp2 (a grid sweep needs none), which then ranks by the setting sweep_metric."""
    with store.lock:
        for index, run in enumerate(sorted(store.all_runs(), key=lambda r: r.seq)):
            for row in run.events:
                for key in [k for k in row if GPU_LOAD.fullmatch(k)]:
                    row[key.replace("gpu.", "gpu.process.", 1)] = 99
            if index % 5 == 0:
                run.created_at += dt.timedelta(days=31)
        sweep = store.projects[(DEMO_USER, "vision")].sweeps["swp2"]
        sweep.config = re.sub(r"metric:\n(  .*\n)+", "", sweep.config)
        assert "metric" not in sweep.config


def delete_best_run(store: Store, objectives: dict[tuple, tuple[str, str]]) -> str:
    """Delete in W&B the best run of vision's swp0, one with history and GPU rows."""
    vision = _runs(store, {(DEMO_USER, "vision")})
    name = best_runs(vision, objectives)[(DEMO_USER, "vision", "swp0")]
    run = next(run for run in vision if run.name == name)
    assert run.history and run.state in TERMINAL and run_gpus(run, run.events)[0] > 0
    store.delete_run(run)
    return name


# -- the models, read back --------------------------------------------------------------------


def rows(query, sql: str) -> list[tuple]:
    return [tuple(row) for row in query(sql)]


def check_models(
    query,
    runs: list[Run],
    log: str,
    objectives: dict[tuple, tuple[str, str]],
    served: dict[str, list[dict[str, Any]] | None],
) -> None:
    """Every model against the emulator's (live) runs. `query(sql)` returns rows from the
    warehouse; `objectives` each sweep's metric and goal; `served` each run's system rows."""
    numeric, other = history_values(runs)
    got = rows(
        query, f"SELECT entity, project, run_id, step, metric, value FROM {SCHEMA}.run_metrics"
    )
    assert len(got) == len(numeric)
    assert set(got) == numeric
    # The warning test counts the values run_metrics leaves out.
    assert [int(n) for n in re.findall(r"WARN (\d+) history_non_numeric_values", log)] == [other]
    assert other > 0

    latest = {
        row[2]: row
        for row in rows(
            query,
            "SELECT entity, project, run_id, state, username, sweep_name, tags, runtime_seconds"
            f" FROM {SCHEMA}.runs_latest",
        )
    }
    assert latest.keys() == {run.name for run in runs}
    for run in runs:
        _, _, _, state, username, sweep, tags, runtime = latest[run.name]
        assert (state, username, sweep, list(tags)) == (
            run.state, run.username, run.sweep_name, run.tags,
        )  # fmt: skip
        assert runtime == runtime_seconds(run), run.name

    got = rows(
        query, f"SELECT entity, project, run_id, metric, value FROM {SCHEMA}.run_final_metrics"
    )
    assert len(got) == len(set(got)) == len(final_metrics(runs))
    assert set(got) == final_metrics(runs)

    leaderboard = rows(
        query,
        "SELECT entity, project, sweep_name, metric, goal, rank, run_id, value"
        f" FROM {SCHEMA}.sweep_leaderboard ORDER BY entity, project, sweep_name, rank",
    )
    assert len(leaderboard) == sum(1 for run in runs if run.sweep_name)
    by_sweep: dict[tuple, list] = defaultdict(list)
    for entity, project, sweep, metric, goal, rank, run_id, value in leaderboard:
        assert (metric, goal) == objectives[(entity, project, sweep)], sweep
        by_sweep[(entity, project, sweep)].append((rank, run_id, value))
    assert by_sweep.keys() == {(r.entity, r.project, r.sweep_name) for r in runs if r.sweep_name}
    decided = 0
    for (entity, project, sweep), ranked in by_sweep.items():
        metric, goal = objectives[(entity, project, sweep)]
        best = best_runs(runs, objectives)[(entity, project, sweep)]
        assert best is not None or ranked[0][2] is None
        if best is not None:
            assert ranked[0][1] == best, (sweep, metric, goal)
            decided += 1
        # Best first, runs without a value last.
        values = [value for _, _, value in ranked]
        scored = sorted((v for v in values if v is not None), reverse=goal == "maximize")
        assert values == scored + [None] * (len(values) - len(scored))
        assert [rank for rank, _, _ in ranked] == list(range(1, len(ranked) + 1))
    assert decided >= len(by_sweep) - 1 > 0

    usage = {
        (e, p, u, m): (hours, utilisation)
        for e, p, u, m, hours, utilisation in rows(
            query,
            "SELECT entity, project, username, month, gpu_hours, mean_gpu_utilization"
            f" FROM {SCHEMA}.gpu_usage",
        )
    }
    expected = gpu_usage(runs, served)
    assert usage.keys() == expected.keys()
    # Runs with 0 to 4 GPUs, counted from system_metrics rows and (running) latest samples.
    assert {run_gpus(run, served[run.name])[0] for run in runs} >= {0, 1, 2}
    assert any(served[run.name] is None and run_gpus(run, None)[0] for run in runs)
    assert len({key[3] for key in expected}) == 2  # two months
    for key, (hours, utilisation) in expected.items():
        assert math.isclose(usage[key][0], hours, rel_tol=1e-9, abs_tol=1e-12), key
        if utilisation is None:
            assert usage[key][1] is None, key
        else:
            assert math.isclose(usage[key][1], utilisation, rel_tol=1e-9), key


def duckdb_query(path: str):
    def query(sql: str, params: list | None = None) -> list[tuple]:
        with contextlib.closing(duckdb.connect(path, read_only=True)) as con:
            return con.execute(sql, params or []).fetchall()

    return query


def duckdb_execute(path: str, sql: str, params: list) -> None:
    with contextlib.closing(duckdb.connect(path)) as con:
        con.execute(sql, params)


def build_log(result: subprocess.CompletedProcess[str]) -> str:
    return result.stderr + result.stdout


# -- DuckDB -----------------------------------------------------------------------------------


def test_duckdb_models_then_incremental_after_edits_and_resumed_runs(dbt_pipeline, fresh_emulator):
    """`meltano run tap-wandb target-wandb-duckdb dbt-duckdb:build`: every model's values against
    the emulator and the official client. Then a reloaded (edited) history row and a sync of
    resumed, new and deleted runs: the second build processes only the rows loaded since the
    first, and drops the deleted run's rows (its `runs` row deleted, its other rows kept)."""
    store = fresh_emulator.store
    prepare(store)
    url = fresh_emulator.url
    env = {**dbt_pipeline, "TAP_WANDB_BASE_URL": url, "TAP_WANDB_DELETED_RUNS_CHECK_HOURS": "0"}
    path = env["DBT_DUCKDB_PATH"]
    log = build_log(meltano(env, "run", "tap-wandb", "target-wandb-duckdb", "dbt-duckdb:build"))
    assert "Completed with 1 warning" in log, log[-3000:]
    runs = _runs(store)
    objectives = sweep_objectives(store, runs)
    check_models(duckdb_query(path), runs, log, objectives, system_rows(url, runs))

    # The minimum loss of each run is what the official client's scan_history finds.
    api = official_client(fresh_emulator.url)
    lowest = dict(
        duckdb_query(path)(
            f"SELECT run_id, min(value) FROM {SCHEMA}.run_metrics"
            " WHERE metric = 'loss' GROUP BY run_id"
        )
    )
    for run in _runs(store):
        scanned = api.run(f"{run.entity}/{run.project}/{run.name}").scan_history(
            keys=["loss"], page_size=20_000, use_cache=False
        )
        losses = [row["loss"] for row in scanned if is_number(row["loss"])]
        assert lowest.get(run.name) == (min(losses) if losses else None), run.name

    deleted = delete_best_run(store, objectives)

    # A row the loader writes again replaces its step's rows; rows not loaded again are not
    # processed again (a value changed in the model by hand stays as it is).
    finished = [run for run in _runs(store) if run.state == "finished" and len(run.history) > 20]
    edited, untouched = finished[0], finished[1]
    step = next(row["_step"] for row in edited.history if is_number(row.get("loss")))
    duckdb_execute(
        path,
        'UPDATE wandb.history SET metrics = json_merge_patch(metrics, \'{"loss": "n/a"}\'),'
        " _sdc_batched_at = ? WHERE run_id = ? AND step = ?",
        [dt.datetime.now(dt.UTC).replace(tzinfo=None), edited.name, step],  # the loader's clock
    )
    tampered = (
        f"{SCHEMA}.run_metrics WHERE run_id = ? AND step = 0 AND metric = '_runtime'",
        [untouched.name],
    )
    duckdb_execute(
        path, f"UPDATE {tampered[0]}".replace("WHERE", "SET value = -1 WHERE"), tampered[1]
    )
    running = [run.name for run in _runs(store) if run.state == "running"]
    advance(store, seed=3)
    # The setting sweep_metrics overrides a sweep's own metric and goal.
    sweep_metrics = {"swp0": {"name": "acc", "goal": "maximize"}}
    env["DBT_SWEEP_METRICS"] = json.dumps(sweep_metrics)
    log = build_log(meltano(env, "run", "tap-wandb", "target-wandb-duckdb", "dbt-duckdb:build"))

    runs = _runs(store)
    assert deleted not in {run.name for run in runs}
    # hard_delete removed the run's row; its history and system rows stay in the raw tables.
    assert [
        duckdb_query(path)(f"SELECT count(*) FROM wandb.{table} WHERE run_id = ?", [deleted])[0][0]
        > 0
        for table in ("runs", "history", "system_metrics")
    ] == [False, True, True]
    resumed = {run.name: run for run in runs if run.name in running}
    assert any(run.state == "finished" for run in resumed.values())  # resumed runs that ended
    for row in edited.history:
        if row["_step"] == step:
            row["loss"] = "n/a"  # as edited in the warehouse
    query = duckdb_query(path)
    assert query(f"SELECT value FROM {tampered[0]}", tampered[1]) == [(-1.0,)]
    duckdb_execute(
        path,
        f"UPDATE {tampered[0]}".replace("WHERE", "SET value = ? WHERE"),
        [untouched.history[0]["_runtime"], *tampered[1]],
    )
    objectives = sweep_objectives(store, runs, sweep_metrics)
    check_models(query, runs, log, objectives, system_rows(url, runs))

    # The demo's pictures, drawn from these models.
    pictures = subprocess.run(
        [str(REPO / ".venv" / "bin" / "python"), str(REPO / "scripts" / "plot_models.py"),
         path, str(Path(path).parent / "plots")],
        capture_output=True, text=True, check=True, timeout=120,
    ).stdout.split()  # fmt: skip
    assert [Path(p).name for p in pictures] == ["loss_curves.png", "gpu_hours.png"]
    for picture in pictures:
        with Image.open(picture) as image:
            assert image.format == "PNG" and image.width > 600 and image.height > 400


# -- PostgreSQL -------------------------------------------------------------------------------


def test_postgres_models_then_incremental(dbt_pipeline, fresh_emulator, postgres):  # noqa: F811
    """`meltano run tap-wandb-jsonb target-postgres dbt-postgres:build` into a real PostgreSQL:
    the same models, the same values; then resumed, new and deleted runs (the deleted run's row
    kept, flagged with _sdc_deleted_at). Two projects keep it quick."""
    store = fresh_emulator.store
    prepare(store)
    projects = {(DEMO_USER, "vision"), ("acme-research", "shared")}
    env = {
        **dbt_pipeline,
        "TAP_WANDB_BASE_URL": fresh_emulator.url,
        "TAP_WANDB_PROJECTS": '["vision", "acme-research/shared"]',
        "TARGET_POSTGRES_PORT": str(postgres),
        "TARGET_POSTGRES_PASSWORD": "tap",  # dbt-postgres takes it too (meltano.yml)
        "DBT_POSTGRES_PORT": str(postgres),
        "TAP_WANDB_DELETED_RUNS_CHECK_HOURS": "0",
    }
    dsn = f"host=127.0.0.1 port={postgres} user=tap password=tap dbname=warehouse"

    def query(sql: str) -> list[tuple]:
        with psycopg.connect(dsn) as con:
            return con.execute(sql).fetchall()

    def build_and_check() -> None:
        result = meltano(env, "run", "tap-wandb-jsonb", "target-postgres", "dbt-postgres:build")
        runs = _runs(store, projects)
        served = system_rows(fresh_emulator.url, runs)
        check_models(query, runs, build_log(result), sweep_objectives(store, runs), served)

    build_and_check()
    advance(store, seed=3)
    deleted = delete_best_run(store, sweep_objectives(store, _runs(store, projects)))
    build_and_check()
    flagged = f"SELECT count(*) FROM wandb.runs WHERE run_id = '{deleted}'"
    assert query(flagged + " AND _sdc_deleted_at IS NOT NULL") == [(1,)]
    types = dict(
        query(
            "SELECT table_name || '.' || column_name, data_type FROM information_schema.columns"
            f" WHERE table_schema = '{SCHEMA}'"
        )
    )
    assert types["run_metrics.value"] == "double precision"
    assert types["runs_latest.tags"] == "ARRAY"
    assert types["runs_latest.created_at"] == "timestamp without time zone"


# -- a clean clone ----------------------------------------------------------------------------


def test_documented_pipelines_on_a_clean_clone(meltano_env, emulator, tmp_path):  # noqa: F811
    """What a clean clone holds (tracked and unignored files, no output/ made by scripts/setup),
    with the plugins installed: the README's DuckDB pipeline runs with meltano.yml's own paths
    (output/ is not in the clone: the loaders create their directories)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO, capture_output=True, check=True,
    ).stdout.decode().split("\0")  # fmt: skip
    clone = tmp_path / "clone"
    for name in filter(None, listed):
        if (REPO / name).is_file():
            (clone / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, clone / name)
    sys_dir = tmp_path / "meltano-sys"
    sys_dir.mkdir()
    for kind in ("extractors", "loaders", "utilities"):
        (sys_dir / kind).symlink_to(REPO / ".meltano" / kind, target_is_directory=True)
    env = {
        **meltano_env,
        "MELTANO_SYS_DIR_ROOT": str(sys_dir),
        "MELTANO_DATABASE_URI": f"sqlite:///{tmp_path / 'meltano.db'}",
        "TAP_WANDB_API_KEY": DEMO_API_KEY,
        "TAP_WANDB_BASE_URL": emulator.url,
        "TAP_WANDB_PROJECTS": '["acme-research/shared"]',
    }
    assert not (clone / "output" / "warehouse.duckdb").exists()

    meltano(env, "--cwd", str(clone), "run", "tap-wandb", "target-wandb-duckdb", "dbt-duckdb:build")
    warehouse = clone / "output" / "warehouse.duckdb"
    runs = {run.name for run in emulator.store.all_runs() if run.entity == "acme-research"}
    query = duckdb_query(str(warehouse))
    assert {row[0] for row in query(f"SELECT run_id FROM {SCHEMA}.runs_latest")} == runs
