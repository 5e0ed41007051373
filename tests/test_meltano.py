"""End-to-end Meltano pipelines with the shipped meltano.yml, against the emulator.

Every pipeline runs ``meltano run`` in the repository (plugins installed once into .meltano/,
reinstalled only when meltano.yml or a pyproject.toml changes) with its own Meltano system
directory, state database, warehouse files and log directories, so runs never share state.
Expected row counts are computed from the emulator's store, not from what the tap emitted.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import psycopg
import pytest
import yaml

from tap_wandb.emulator import DEMO_API_KEY, DEMO_USER, Run, Store, advance
from tests.tap_runner import finite, numbers_equal

REPO = Path(__file__).resolve().parents[1]
MELTANO = REPO / ".tools" / "meltano" / "bin" / "meltano"
INSTALL_STAMP = REPO / ".meltano" / ".install-stamp"  # scripts/demo keeps the same stamp
TABLES = ("runs", "configs", "summaries", "history")
RUN_OBJECT_TABLES = ("artifacts", "run_artifacts", "system_metrics")
SYSTEM_METRICS_SAMPLES = 500  # the tap's default
# Listed whole each sync (upserted by key), so their counts stay those of the store.
TOP_LEVEL_TABLES = ("projects", "sweeps")
INTERNAL_CONFIG_KEYS = ("_wandb", "wandb_version")
TERMINAL = ("finished", "failed", "crashed", "killed")


# -- Meltano ------------------------------------------------------------------------------


def _install_stamp() -> str:
    """What `sha256sum meltano.yml pyproject.toml loader/pyproject.toml` prints (the demo
    compares the same text)."""
    lines = [
        f"{hashlib.sha256((REPO / name).read_bytes()).hexdigest()}  {name}"
        for name in ("meltano.yml", "pyproject.toml", "loader/pyproject.toml")
    ]
    return "\n".join(lines) + "\n"


def _plugin_executables() -> list[Path]:
    project = yaml.safe_load((REPO / "meltano.yml").read_text())
    found = []
    for kind, plugins in project["plugins"].items():
        for plugin in plugins:
            if "inherit_from" not in plugin:
                venv = REPO / ".meltano" / kind / plugin["name"] / "venv"
                found.append(venv / "bin" / plugin.get("executable", plugin["name"]))
    return found


@pytest.fixture(scope="session")
def meltano_env(tmp_path_factory) -> dict[str, str]:
    """Environment for `meltano`: offline, quiet, logs and caches kept out of $HOME."""
    assert MELTANO.exists(), f"{MELTANO} missing: run scripts/setup"
    home = tmp_path_factory.mktemp("meltano-home")
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("TAP_WANDB_", "TARGET_", "MELTANO_", "WANDB_"))
    }
    env.update(
        MELTANO_SEND_ANONYMOUS_USAGE_STATS="false",
        MELTANO_CLI_DISABLE_VERSION_CHECK="true",
        MELTANO_RUN_REFRESH_CATALOG="true",  # the tap is installed editable: no stale catalog
        UV_PYTHON_DOWNLOADS="never",
        # A cache that outlives the session, so a reinstall needs no index.
        UV_CACHE_DIR=str(REPO / ".meltano" / ".uv-cache"),
        XDG_STATE_HOME=str(home / "state"),
        XDG_CACHE_HOME=str(home / "cache"),
        XDG_DATA_HOME=str(home / "data"),
        NO_COLOR="1",
    )
    # A developer's .env must not leak into the tests.
    (home / "empty.env").write_text("")
    env["TEST_MELTANO_ENV_FILE"] = str(home / "empty.env")
    want = _install_stamp()
    current = INSTALL_STAMP.read_text() if INSTALL_STAMP.exists() else ""
    if current != want or not all(path.exists() for path in _plugin_executables()):
        meltano(env, "install")
        INSTALL_STAMP.write_text(want)
    return env


def meltano(
    env: dict[str, str], *args: str, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    """Run meltano in the repository (its log is stderr); fails with the log's tail."""
    command = [str(MELTANO), "--env-file", env["TEST_MELTANO_ENV_FILE"], "--log-format=plain"]
    result = subprocess.run(
        [*command, *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if result.returncode != 0:
        raise AssertionError(
            f"meltano {' '.join(args)} failed ({result.returncode}):\n"
            f"{result.stdout[-2000:]}\n{result.stderr[-6000:]}"
        )
    return result


def private_sys_dir(directory: Path) -> Path:
    """A Meltano system directory of its own (state database, catalogs and configs under run/)
    sharing the installed plugins, so that concurrent pipelines (another test run, the demo)
    never overwrite each other's files in the repository's .meltano/run/."""
    directory.mkdir(parents=True, exist_ok=True)
    for kind in ("extractors", "loaders"):
        (directory / kind).symlink_to(REPO / ".meltano" / kind, target_is_directory=True)
    return directory


@pytest.fixture
def pipeline(meltano_env, tmp_path) -> dict[str, str]:
    """Per-test Meltano state and warehouse files; the tap's base_url and key are added later."""
    return {
        **meltano_env,
        "MELTANO_SYS_DIR_ROOT": str(private_sys_dir(tmp_path / "meltano-sys")),
        "MELTANO_DATABASE_URI": f"sqlite:///{tmp_path / 'meltano.db'}",
        "TARGET_WANDB_DUCKDB_PATH": str(tmp_path / "warehouse.duckdb"),
        "TARGET_CSV_OUTPUT_PATH": str(tmp_path / "csv"),
        "TARGET_JSONL_DESTINATION_PATH": str(tmp_path / "jsonl"),
        "TAP_WANDB_API_KEY": DEMO_API_KEY,
    }


# -- what the emulator holds ----------------------------------------------------------------


def _config_keys(run: Run) -> list[str]:
    return [key for key in run.config if key not in INTERNAL_CONFIG_KEYS]


def _runs(store: Store, projects: set[tuple[str, str]] | None = None) -> list[Run]:
    """Runs a sync sees: every project of the key's entity, or the listed projects."""
    with store.lock:
        runs = list(store.all_runs())
    if projects is None:
        return [run for run in runs if run.entity == DEMO_USER]
    return [run for run in runs if (run.entity, run.project) in projects]


def expected_counts(runs: list[Run]) -> dict[str, int]:
    return {
        "runs": len(runs),
        "configs": sum(len(_config_keys(run)) for run in runs),
        "summaries": sum(len(run.summary) for run in runs),
        "history": sum(len(run.history) for run in runs),
        **run_object_counts(runs),
    }


def run_object_counts(runs: list[Run]) -> dict[str, int]:
    """Rows a sync of these runs loads into artifacts (each version once), run_artifacts and
    system_metrics (W&B's sample of each ended run)."""
    edges = [a for run in runs for a in (*run.logged_artifacts, *run.used_artifacts)]
    return {
        "artifacts": len({id(artifact) for artifact in edges}),
        "run_artifacts": len(edges),
        "system_metrics": sum(
            min(SYSTEM_METRICS_SAMPLES, len(run.events)) for run in runs if run.state in TERMINAL
        ),
    }


def expected_top_level(store: Store, projects: set[tuple[str, str]] | None = None) -> dict:
    """projects and sweeps rows: each project a sync covers, and its sweeps."""
    with store.lock:
        covered = [
            project
            for key, project in store.projects.items()
            if (key[0] == DEMO_USER if projects is None else key in projects)
        ]
        return {"projects": len(covered), "sweeps": sum(len(p.sweeps) for p in covered)}


def snapshot(runs: list[Run]) -> dict[tuple[str, str, str], tuple[str, int]]:
    """(entity, project, run) -> (state, last step) before the data moves on."""
    return {
        (run.entity, run.project, run.name): (
            run.state,
            run.last_step if run.last_step is not None else -1,
        )
        for run in runs
    }


def expected_second_sync(before: dict, runs_now: list[Run]) -> dict[str, int]:
    """Rows an incremental sync must load: new runs whole; runs unfinished at the first sync
    again (config and summary whole, history only past the last step synced)."""
    counts = dict.fromkeys(TABLES, 0)
    again = []
    for run in runs_now:
        key = (run.entity, run.project, run.name)
        if key in before and before[key][0] in TERMINAL:
            continue
        again.append(run)
        last_step = before[key][1] if key in before else -1
        counts["runs"] += 1
        counts["configs"] += len(_config_keys(run))
        counts["summaries"] += len(run.summary)
        counts["history"] += sum(1 for row in run.history if row["_step"] > last_step)
    return {**counts, **run_object_counts(again)}


# -- DuckDB -------------------------------------------------------------------------------


def duckdb_counts(
    path: str, since: Any = None, tables: tuple[str, ...] = (*TABLES, *RUN_OBJECT_TABLES)
) -> dict[str, int]:
    with contextlib.closing(duckdb.connect(path, read_only=True)) as con:
        where = "" if since is None else " WHERE _sdc_batched_at > ?"
        params = [] if since is None else [since]
        return {
            table: con.execute(f"SELECT count(*) FROM wandb.{table}{where}", params).fetchone()[0]
            for table in tables
        }


def duckdb_last_batch(path: str) -> Any:
    with contextlib.closing(duckdb.connect(path, read_only=True)) as con:
        union = " UNION ALL ".join(f"SELECT max(_sdc_batched_at) FROM wandb.{t}" for t in TABLES)
        return con.execute(f"SELECT max(m) FROM ({union}) AS batches(m)").fetchone()[0]


def test_duckdb_full_demo_then_incremental(pipeline, fresh_emulator):
    """The whole demo entity (the 50,000-step run included) lands row for row; after the data
    moves on, a second run loads only new runs, unfinished runs and new history."""
    store = fresh_emulator.store
    env = {**pipeline, "TAP_WANDB_BASE_URL": fresh_emulator.url}
    path = env["TARGET_WANDB_DUCKDB_PATH"]
    big = max(store.all_runs(), key=lambda run: len(run.history))
    assert len(big.history) == 50_000

    log = meltano(env, "run", "tap-wandb", "target-wandb-duckdb").stderr
    assert duckdb_counts(path) == expected_counts(_runs(store))
    assert duckdb_counts(path, tables=TOP_LEVEL_TABLES) == expected_top_level(store)
    # Progress a person can follow: runs per project, and the long run's history rows.
    assert re.search(r"acme/nlp\D+25 runs", log), log[-3000:]
    assert re.search(rf"{big.name}\D+50000 rows", log), log[-3000:]

    before = snapshot(_runs(store))
    cutoff = duckdb_last_batch(path)
    advance(store, seed=3)
    meltano(env, "run", "tap-wandb", "target-wandb-duckdb")
    second = duckdb_counts(path, since=cutoff)
    assert second == expected_second_sync(before, _runs(store))
    assert 0 < second["history"] < 1000  # not the 50,000 rows again
    assert duckdb_counts(path) == expected_counts(_runs(store))
    assert duckdb_counts(path, tables=TOP_LEVEL_TABLES) == expected_top_level(store)

    # Values: JSON text that DuckDB reads as JSON; an empty config key loaded as "<empty>".
    with contextlib.closing(duckdb.connect(path, read_only=True)) as con:
        seed = con.execute(
            "SELECT value::JSON::UBIGINT FROM wandb.configs WHERE key = 'seed' AND run_id = ?",
            [big.name],
        ).fetchone()[0]
        assert seed == big.config["seed"]["value"]
        empty = con.execute("SELECT count(*) FROM wandb.configs WHERE key = '<empty>'").fetchone()
        assert empty[0] == sum(1 for run in _runs(store) if "" in run.config)
        # Other empty strings stay empty (target-duckdb, the alternative, makes them NULL).
        empty_notes = sum(1 for run in _runs(store) if run.notes == "")
        assert empty_notes > 0
        found = con.execute("SELECT count(*) FROM wandb.runs WHERE notes = ''").fetchone()[0]
        assert found == empty_notes
        f1 = con.execute(
            "SELECT (value::JSON->'eval'->>'f1')::DOUBLE FROM wandb.summaries "
            "WHERE key = 'nested' AND run_id = ?",
            [big.name],
        ).fetchone()[0]
        assert f1 == big.summary["nested"]["eval"]["f1"]

    # Meltano keeps the tap's state under dev:tap-wandb-to-target-wandb-duckdb; it is compact.
    state_id = "dev:tap-wandb-to-target-wandb-duckdb"
    state = json.loads(meltano(env, "state", "get", state_id).stdout)
    bookmarks = state["singer_state"]["bookmarks"]
    partitions = bookmarks["runs"]["partitions"]
    projects = {(p["context"]["entity"], p["context"]["project"]) for p in partitions}
    assert projects == {(DEMO_USER, "vision"), (DEMO_USER, "nlp"), (DEMO_USER, "empty")}
    assert len(json.dumps(state)) < 10_000


def test_target_duckdb_the_alternative_loader_still_loads(pipeline, emulator, tmp_path):
    """target-duckdb 0.8.0, kept in meltano.yml as an alternative: one project, every row."""
    projects = {(DEMO_USER, "vision")}
    env = {
        **pipeline,
        "TAP_WANDB_BASE_URL": emulator.url,
        "TAP_WANDB_PROJECTS": json.dumps(["vision"]),
        "TARGET_DUCKDB_PATH": str(tmp_path / "target-duckdb.duckdb"),
    }
    meltano(env, "run", "tap-wandb", "target-duckdb")
    path = env["TARGET_DUCKDB_PATH"]
    assert duckdb_counts(path) == expected_counts(_runs(emulator.store, projects))
    assert duckdb_counts(path, tables=TOP_LEVEL_TABLES) == expected_top_level(
        emulator.store, projects
    )


# -- PostgreSQL -----------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def postgres() -> Iterator[int]:
    """A throwaway PostgreSQL server on 127.0.0.1 (role tap/tap, database warehouse)."""
    directory = tempfile.mkdtemp(prefix="tw-pg-", dir="/tmp")
    os.chmod(directory, 0o755)
    port = _free_port()
    script = REPO / ".ci" / "postgres.sh"
    try:
        subprocess.run([str(script), "start", directory, str(port)], check=True, timeout=120)
        yield port
    finally:
        subprocess.run([str(script), "stop", directory], check=False, timeout=120)
        shutil.rmtree(directory, ignore_errors=True)


def test_postgres_typed_json_then_incremental(pipeline, fresh_emulator, postgres):
    """tap-wandb-jsonb into a real PostgreSQL: objects and values as jsonb, typed; a second run
    loads only new and unfinished runs. Two projects of two entities keep it quick."""
    store = fresh_emulator.store
    projects = {(DEMO_USER, "vision"), ("acme-research", "shared")}
    env = {
        **pipeline,
        "TAP_WANDB_BASE_URL": fresh_emulator.url,
        "TAP_WANDB_PROJECTS": json.dumps(["vision", "acme-research/shared"]),
        "TARGET_POSTGRES_PORT": str(postgres),
        "TARGET_POSTGRES_PASSWORD": "tap",
        "TARGET_POSTGRES_DEFAULT_TARGET_SCHEMA": "wandb",
    }
    dsn = f"host=127.0.0.1 port={postgres} user=tap password=tap dbname=warehouse"

    def counts(
        con, since: int | None = None, tables: tuple[str, ...] = (*TABLES, *RUN_OBJECT_TABLES)
    ) -> dict[str, int]:
        where = "" if since is None else " WHERE _sdc_sync_started_at > %s"
        return {
            table: con.execute(
                f"SELECT count(*) FROM wandb.{table}{where}", [] if since is None else [since]
            ).fetchone()[0]
            for table in tables
        }

    meltano(env, "run", "tap-wandb-jsonb", "target-postgres")
    with psycopg.connect(dsn) as con:
        assert counts(con) == expected_counts(_runs(store, projects))
        assert counts(con, tables=TOP_LEVEL_TABLES) == expected_top_level(store, projects)
        started = con.execute("SELECT max(_sdc_sync_started_at) FROM wandb.runs").fetchone()[0]
        types = dict(
            con.execute(
                "SELECT table_name || '.' || column_name, data_type FROM information_schema.columns"
                " WHERE table_schema = 'wandb'"
            ).fetchall()
        )
        assert types["configs.value"] == types["summaries.value"] == "jsonb"
        assert types["runs.config"] == types["history.metrics"] == "jsonb"
        kinds = {
            row[0]
            for row in con.execute("SELECT DISTINCT jsonb_typeof(value) FROM wandb.summaries")
        }
        assert {"number", "object", "string", "null"} <= kinds
        empty_keys = con.execute("SELECT count(*) FROM wandb.configs WHERE key = ''").fetchone()
        assert empty_keys[0] == sum(1 for r in _runs(store, projects) if "" in r.config)

    before = snapshot(_runs(store, projects))
    advance(store, seed=3)
    meltano(env, "run", "tap-wandb-jsonb", "target-postgres")
    with psycopg.connect(dsn) as con:
        assert counts(con, since=started) == expected_second_sync(before, _runs(store, projects))
        assert counts(con) == expected_counts(_runs(store, projects))
        assert counts(con, tables=TOP_LEVEL_TABLES) == expected_top_level(store, projects)


# -- CSV and JSON Lines recipes -----------------------------------------------------------


def test_csv_of_every_runs_name_config_and_summary(pipeline, fresh_emulator):
    """The CSV W&B's docs build with pandas (name, config, summary), from a Meltano pipeline;
    --full-refresh rewrites the whole file each time."""
    store = fresh_emulator.store
    env = {**pipeline, "TAP_WANDB_BASE_URL": fresh_emulator.url}
    output = Path(env["TARGET_CSV_OUTPUT_PATH"]) / "runs.csv"
    for turn in range(2):
        if turn:
            advance(store, seed=3)
        meltano(env, "run", "--full-refresh", "tap-wandb-runs-csv", "target-csv")
        assert sorted(p.name for p in output.parent.iterdir()) == ["runs.csv"]
        with output.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            rows = list(reader)
        assert reader.fieldnames == [
            "entity", "project", "run_id", "name", "state", "created_at", "config", "summary",
        ]  # fmt: skip
        runs = {(run.project, run.name): run for run in _runs(store)}
        assert len(rows) == len(runs)
        for row in rows:
            run = runs[(row["project"], row["run_id"])]
            assert row["name"] == run.display_name
            assert row["state"] == run.state
            config = {key: run.config[key] for key in _config_keys(run)}
            unwrapped = {
                key: value["value"] if isinstance(value, dict) and "value" in value else value
                for key, value in config.items()
            }
            assert numbers_equal(json.loads(row["config"]), finite(unwrapped)), row["run_id"]
            assert numbers_equal(json.loads(row["summary"]), finite(run.summary)), row["run_id"]


def test_recipes_filter_sampled_history_some_metrics_into_jsonl(pipeline, emulator, demo_data):
    """README recipes, set as environment variables: the $or filter, sampled history, only
    some metrics, the key from WANDB_API_KEY; loaded by target-jsonl."""
    env = {
        **{name: value for name, value in pipeline.items() if name != "TAP_WANDB_API_KEY"},
        "WANDB_API_KEY": DEMO_API_KEY,  # the key as the wandb client takes it
        "TAP_WANDB_BASE_URL": emulator.url,
        "TAP_WANDB_FILTERS": json.dumps(
            {"$or": [{"config.experiment_name": "foo"}, {"config.experiment_name": "bar"}]}
        ),
        "TAP_WANDB_HISTORY_MODE": "sampled",
        "TAP_WANDB_HISTORY_SAMPLES": "20",
        "TAP_WANDB_HISTORY_KEYS": json.dumps(["loss", "acc"]),
    }
    meltano(env, "run", "tap-wandb", "target-jsonl")
    out = Path(env["TARGET_JSONL_DESTINATION_PATH"])
    records = {
        table: [json.loads(line) for line in (out / f"{table}.jsonl").read_text().splitlines()]
        for table in TABLES
    }
    wanted = [
        run for run in _runs(demo_data) if run.config["experiment_name"]["value"] in ("foo", "bar")
    ]
    assert 0 < len(wanted) < len(_runs(demo_data))
    assert sorted(r["run_id"] for r in records["runs"]) == sorted(run.name for run in wanted)
    per_run: dict[str, int] = {}
    for row in records["history"]:
        per_run[row["run_id"]] = per_run.get(row["run_id"], 0) + 1
        assert row["metrics"], row
        assert set(row["metrics"]) <= {"loss", "acc"}, row
    assert per_run and max(per_run.values()) <= 20
    assert per_run.keys() <= {run.name for run in wanted}
    with_history = {run.name for run in wanted if run.history}
    assert per_run.keys() == with_history


def test_filter_written_in_meltano_yml_reaches_the_tap_unchanged(pipeline, tmp_path):
    """Meltano expands $VARS in meltano.yml values; the filter's $or / $in keys stay as they are."""
    project = yaml.safe_load((REPO / "meltano.yml").read_text())
    tap = next(p for p in project["plugins"]["extractors"] if p["name"] == "tap-wandb")
    wanted = {
        "$or": [
            {"config.experiment_name": "foo"},
            {"config.experiment_name": {"$in": ["bar", "baz"]}},
        ]
    }
    tap["config"]["filters"] = wanted
    copy = tmp_path / "project"
    copy.mkdir()
    (copy / "meltano.yml").write_text(yaml.safe_dump(project, sort_keys=False))
    env = {**pipeline, "MELTANO_PROJECT_ROOT": str(copy)}
    printed = meltano(env, "--cwd", str(copy), "config", "print", "tap-wandb").stdout
    assert json.loads(printed)["filters"] == wanted


def test_job_and_hourly_schedule(pipeline):
    schedules = json.loads(meltano(pipeline, "schedule", "list", "--format=json").stdout)
    [hourly] = schedules["schedules"]["job"]
    assert hourly["name"] == "wandb-hourly" and hourly["cron_interval"] == "0 * * * *"
    assert hourly["job"] == {"name": "wandb-to-duckdb", "tasks": ["tap-wandb target-wandb-duckdb"]}
    log = meltano(pipeline, "run", "--dry-run", "wandb-to-duckdb").stderr
    assert "Dry run, but would have run block 1/1" in log


# -- meltano.yml and README against the tap's own description -------------------------------


def test_meltano_yml_and_readme_cover_every_tap_setting():
    about = json.loads(
        subprocess.run(
            [str(REPO / ".venv" / "bin" / "tap-wandb"), "--about", "--format=json"],
            capture_output=True, text=True, check=True, timeout=60,
        ).stdout
    )  # fmt: skip
    project = yaml.safe_load((REPO / "meltano.yml").read_text())
    tap = next(p for p in project["plugins"]["extractors"] if p["name"] == "tap-wandb")
    assert sorted(tap["capabilities"]) == sorted(about["capabilities"])
    assert tap["namespace"] == "tap_wandb" and tap["pip_url"] == "-e ."
    assert "version" not in project and project["requires_meltano"]
    assert project["send_anonymous_usage_stats"] is False
    settings = {s["name"]: s for s in tap["settings"]}
    kinds = {"string": "string", "integer": "integer", "number": "decimal", "boolean": "boolean",
             "array": "array", "object": "object"}  # fmt: skip
    readme = (REPO / "README.md").read_text()
    for name, schema in about["settings"]["properties"].items():
        if name.startswith(
            ("faker_config", "batch_config", "flattening_max_key", "flattening_sep")
        ):
            continue
        assert name in settings, f"meltano.yml lacks setting {name}"
        setting = settings[name]
        assert setting.get("label") and setting.get("description"), name
        json_type = next(t for t in schema["type"] if t != "null")
        expected = {"date-time": "date_iso8601"}.get(
            schema.get("format"), "options" if schema.get("enum") else kinds[json_type]
        )
        assert setting["kind"] == expected, name
        assert bool(setting.get("sensitive")) == bool(schema.get("secret")), name
        assert f"| {name} |" in readme, f"README settings table lacks {name}"
    for loader in project["plugins"]["loaders"]:
        assert loader.get("namespace") and loader.get("pip_url"), loader["name"]
        if loader["name"] in ("target-wandb-duckdb", "target-duckdb"):
            # The quick start's `meltano run tap-wandb target-wandb-duckdb` writes here;
            # target-duckdb does not create the directory, scripts/setup does.
            path = loader["config"]["path"].replace("$MELTANO_PROJECT_ROOT", str(REPO))
            assert Path(path).parent.is_dir(), f"{Path(path).parent} missing: run scripts/setup"
        for setting in loader.get("settings", []):
            assert setting.get("label") and setting.get("kind") and setting.get("description")
    # The project's own loader: meltano.yml lists exactly the settings it describes.
    ours = next(p for p in project["plugins"]["loaders"] if p["name"] == "target-wandb-duckdb")
    about = json.loads(
        subprocess.run(
            [str(REPO / ".venv" / "bin" / "target-wandb-duckdb"), "--about"],
            capture_output=True, text=True, check=True, timeout=60,
        ).stdout
    )  # fmt: skip
    assert {s["name"] for s in ours["settings"]} == set(about["settings"]["properties"])
    assert ours["pip_url"] == "-e ./loader"
