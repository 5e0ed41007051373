"""Runs changed after they finish, end to end: W&B's "update past runs" guide followed with the
official client, then an incremental `meltano run` into DuckDB and into PostgreSQL; every table
then equals a fresh full sync of the same emulator (the deleted run gone or flagged)."""

from __future__ import annotations

import contextlib
import json

import duckdb
import psycopg

from tap_wandb.emulator import DEMO_USER, Emulator, resume_run
from tests.conftest import official_client
from tests.test_meltano import (  # noqa: F401 (fixtures)
    TABLES,
    meltano,
    meltano_env,
    pipeline,
    postgres,
)

PATH = f"{DEMO_USER}/vision"
KEYS = {
    "runs": "entity, project, run_id",
    "configs": "entity, project, run_id, key",
    "summaries": "entity, project, run_id, key",
    "history": "entity, project, run_id, step",
}


def _update_past_runs(emulator: Emulator) -> tuple[str, str]:
    """Edit, resume and delete finished runs as a user would; (resumed, deleted) run ids."""
    store = emulator.store
    finished = sorted(
        (r for r in store.project(DEMO_USER, "vision").runs.values()
         if r.state == "finished" and r.history),
        key=lambda r: r.name,
    )  # fmt: skip
    edited, summarised, resumed, deleted = finished[:4]
    api = official_client(emulator.url)
    run = api.run(f"{PATH}/{edited.name}")
    run.tags.append("reviewed")
    run.notes, run.name = "checked by hand", "renamed ✓"
    run.config["learning_rate"] = 0.25
    run.update()
    run = api.run(f"{PATH}/{summarised.name}")
    run.summary["best_accuracy"] = 0.97
    run.summary.update()
    resume_run(store, DEMO_USER, "vision", resumed.name, steps=6, seed=1)
    api.run(f"{PATH}/{deleted.name}").delete()
    return resumed.name, deleted.name


def _exported(emulator: Emulator) -> None:
    """Finished runs' history as W&B keeps it once they end: in parquet (scalar columns)."""
    for run in emulator.store.project(DEMO_USER, "vision").runs.values():
        if run.state == "finished" and run.history:
            for row in run.history:
                for key in [k for k, v in row.items() if isinstance(v, dict)]:
                    del row[key]
            run.exported_before_step = run.last_step + 1


def _columns(con, table: str, schema_query: str) -> list[str]:
    names = [row[0] for row in con.execute(schema_query, [table]).fetchall()]
    return sorted(name for name in names if not name.startswith("_sdc_"))


def _rows(con, table: str, columns: list[str], where: str = "", schema: str = "wandb") -> set:
    """A table's rows (as text) whose run is in ``runs`` (and meets ``where``)."""
    select = ", ".join(f"t.{c}::text" for c in columns)
    sql = (
        f"SELECT {select} FROM {schema}.{table} t "
        f"JOIN {schema}.runs r USING (entity, project, run_id) {where}"
    )
    return set(con.execute(sql).fetchall())


def _env(base: dict, emulator: Emulator, **extra: str) -> dict:
    return {
        **base,
        "TAP_WANDB_BASE_URL": emulator.url,
        "TAP_WANDB_PROJECTS": json.dumps(["vision"]),
        "TAP_WANDB_DELETED_RUNS_CHECK_HOURS": "0",
        **extra,
    }


def test_duckdb_after_updating_past_runs_equals_a_fresh_full_sync(
    pipeline,  # noqa: F811 (the fixture imported above)
    fresh_emulator,
    tmp_path,
):
    _exported(fresh_emulator)
    env = _env(pipeline, fresh_emulator)
    meltano(env, "run", "tap-wandb", "target-wandb-duckdb")
    resumed, deleted = _update_past_runs(fresh_emulator)
    meltano(env, "run", "tap-wandb", "target-wandb-duckdb")
    fresh = {
        **env,
        "TARGET_WANDB_DUCKDB_PATH": str(tmp_path / "fresh.duckdb"),
        "MELTANO_DATABASE_URI": f"sqlite:///{tmp_path / 'fresh.db'}",
    }
    meltano(fresh, "run", "tap-wandb", "target-wandb-duckdb")
    schema = (
        "SELECT column_name FROM information_schema.columns "
        "WHERE table_schema = 'wandb' AND table_name = ?"
    )
    paths = (env["TARGET_WANDB_DUCKDB_PATH"], fresh["TARGET_WANDB_DUCKDB_PATH"])
    with contextlib.ExitStack() as stack:
        incremental, full = (
            stack.enter_context(contextlib.closing(duckdb.connect(p, read_only=True)))
            for p in paths
        )
        # hard_delete: the tombstone removed the deleted run's row.
        assert (
            incremental.execute(
                "SELECT count(*) FROM wandb.runs WHERE run_id = ?", [deleted]
            ).fetchone()[0]
            == 0
        )
        for table in TABLES:
            columns = _columns(full, table, schema)
            assert columns == _columns(incremental, table, schema)
            want = _rows(full, table, columns)
            assert want and _rows(incremental, table, columns) == want, table
        # The resumed run's new rows were loaded once (the history key is the row's key).
        steps = incremental.execute(
            "SELECT count(*), count(DISTINCT step) FROM wandb.history WHERE run_id = ?", [resumed]
        ).fetchone()
        assert steps[0] == steps[1] > 0


def test_postgres_after_updating_past_runs_equals_a_fresh_full_sync(
    pipeline,  # noqa: F811
    fresh_emulator,
    postgres,  # noqa: F811
):
    _exported(fresh_emulator)
    base = {
        "TARGET_POSTGRES_PORT": str(postgres),
        "TARGET_POSTGRES_PASSWORD": "tap",
    }
    env = _env(pipeline, fresh_emulator, **base, TARGET_POSTGRES_DEFAULT_TARGET_SCHEMA="wandb")
    meltano(env, "run", "tap-wandb-jsonb", "target-postgres")
    _, deleted = _update_past_runs(fresh_emulator)
    meltano(env, "run", "tap-wandb-jsonb", "target-postgres")
    fresh = {
        **env,
        "TARGET_POSTGRES_DEFAULT_TARGET_SCHEMA": "fresh",
        "MELTANO_DATABASE_URI": env["MELTANO_DATABASE_URI"] + ".fresh",
    }
    meltano(fresh, "run", "tap-wandb-jsonb", "target-postgres")
    dsn = f"host=127.0.0.1 port={postgres} user=tap password=tap dbname=warehouse"
    schema = (
        "SELECT column_name FROM information_schema.columns "
        "WHERE table_schema = '{}' AND table_name = %s"
    )
    with psycopg.connect(dsn) as con:
        # The deleted run is flagged, its other columns emptied.
        flagged = con.execute(
            "SELECT _sdc_deleted_at IS NOT NULL, state FROM wandb.runs WHERE run_id = %s",
            [deleted],
        ).fetchall()
        assert flagged == [(True, None)]
        live = "WHERE r._sdc_deleted_at IS NULL"
        for table in TABLES:
            columns = _columns(con, table, schema.format("fresh"))
            assert columns == _columns(con, table, schema.format("wandb"))
            want = _rows(con, table, columns, schema="fresh")
            got = _rows(con, table, columns, live)
            assert want and got == want, table
