"""Every stream, record by record, against what the official client reads from the emulator."""

from __future__ import annotations

import datetime as dt
from collections import Counter

import jsonschema
import pytest

from tap_wandb.emulator import DEMO_API_KEY, DEMO_USER
from tests.conftest import official_client
from tests.tap_runner import STREAM_KEYS, finite, numbers_equal, run_tap


@pytest.fixture(scope="module")
def full_sync(emulator):
    """One sync of the whole demo entity with default settings (entity from the key)."""
    emulator.reset_stats()
    run = run_tap({"api_key": DEMO_API_KEY, "base_url": emulator.url, "page_size": 10})
    return run, emulator.stats()


@pytest.fixture(scope="module")
def oracle(emulator, demo_data):
    """What the official client reads: runs (lazy=False) of every project of the entity."""
    api = official_client(emulator.url)
    projects = [p.name for p in demo_data.entity_projects(DEMO_USER)]
    return {
        project: list(api.runs(f"{DEMO_USER}/{project}", per_page=50, lazy=False))
        for project in projects
    }


def _utc(text: str) -> dt.datetime:
    parsed = dt.datetime.fromisoformat(text)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def test_no_duplicate_keys_and_strict_json(full_sync):
    run, _ = full_sync
    # run_tap already parsed every stdout line with a strict (no NaN/Infinity) parser.
    for stream, key in STREAM_KEYS.items():
        records = run.records(stream)
        assert records, stream
        counts = Counter(tuple(r[k] for k in key) for r in records)
        assert [k for k, n in counts.items() if n > 1] == [], stream


def test_every_record_is_valid_against_its_schema(full_sync):
    run, _ = full_sync
    validators = {
        m["stream"]: jsonschema.Draft7Validator(m["schema"])
        for m in run.messages
        if m["type"] == "SCHEMA"
    }
    for message in run.messages:
        if message["type"] == "RECORD":
            validators[message["stream"]].validate(message["record"])


def test_runs_match_official_client(full_sync, oracle):
    run, _ = full_sync
    records = {(r["project"], r["run_id"]): r for r in run.records("runs")}
    expected = {(project, r.id): r for project, runs in oracle.items() for r in runs}
    assert records.keys() == expected.keys()
    for key, client_run in expected.items():
        record = records[key]
        assert record["entity"] == DEMO_USER
        assert record["display_name"] == client_run.name
        assert record["state"] == client_run.state
        assert record["tags"] == client_run.tags
        assert record["notes"] == client_run.notes
        assert record["description"] == client_run.description
        assert record["group"] == client_run.group
        assert record["job_type"] == client_run.job_type
        assert record["sweep_name"] == client_run._attrs.get("sweepName")
        assert record["commit"] == client_run._attrs.get("commit")
        assert record["user"] == client_run._attrs["user"]["username"]
        assert record["storage_id"] == client_run.storage_id
        assert record["history_line_count"] == client_run._attrs["historyLineCount"]
        assert _utc(record["created_at"]) == _utc(client_run.created_at)
        assert _utc(record["heartbeat_at"]) == _utc(client_run._attrs["heartbeatAt"])
        assert record["created_at"].endswith("+00:00")
        assert record["config"] == dict(client_run.config)
        assert numbers_equal(record["summary"], finite(client_run.summary._json_dict))
        assert numbers_equal(record["system_metrics"], finite(client_run.system_metrics))
        # The client says -1 for a run without history; the tap says null.
        last_step = client_run.lastHistoryStep
        assert record["history_last_step"] == (None if last_step == -1 else last_step)
    described = [r["description"] for r in records.values() if r["description"]]
    assert described and len(described) < len(records)  # some runs have one


def test_runs_are_ordered_by_created_at_within_each_project(full_sync):
    run, _ = full_sync
    by_project: dict[str, list[str]] = {}
    for record in run.records("runs"):
        by_project.setdefault(record["project"], []).append(record["created_at"])
    for created in by_project.values():
        assert created == sorted(created)


def test_configs_match_official_client(full_sync, oracle, demo_data):
    run, _ = full_sync
    records = {(r["run_id"], r["key"]): r for r in run.records("configs")}
    # W&B's own keys, which every stored config holds, are left out as the client does.
    assert all({"_wandb", "wandb_version"} <= r.config.keys() for r in demo_data.all_runs())
    assert {key for _, key in records} & {"_wandb", "wandb_version"} == set()
    expected = {
        (r.id, key): value
        for runs in oracle.values()
        for r in runs
        for key, value in r.config.items()
    }
    assert records.keys() == expected.keys()
    for key, value in expected.items():
        assert records[key]["value"] == value, key


def test_config_desc_is_kept(full_sync, demo_data):
    run, _ = full_sync
    descs = {(r["run_id"], r["key"]): r["desc"] for r in run.records("configs")}
    for stored in demo_data.all_runs():
        if stored.entity != DEMO_USER:
            continue
        for key, item in stored.config.items():
            if key in ("_wandb", "wandb_version"):
                continue
            want = item.get("desc") if isinstance(item, dict) and "value" in item else None
            assert descs[(stored.name, key)] == want


def test_summaries_match_official_client_with_nan_as_null(full_sync, oracle):
    run, _ = full_sync
    records = {(r["run_id"], r["key"]): r["value"] for r in run.records("summaries")}
    expected = {
        (r.id, key): value
        for runs in oracle.values()
        for r in runs
        for key, value in r.summary._json_dict.items()
    }
    assert records.keys() == expected.keys()
    nulled = 0
    for key, value in expected.items():
        assert numbers_equal(records[key], finite(value)), key
        nulled += isinstance(value, float) and records[key] is None
    assert nulled >= 3 * len(oracle["vision"])  # NaN, Infinity and -Infinity in every run


def _client_history(client_run) -> dict[int, dict]:
    rows = {}
    for row in client_run.scan_history(use_cache=False):
        row = dict(row)
        step = int(row.pop("_step"))
        # Parquet rows carry every column; None there means "not logged at this step".
        rows[step] = finite({k: v for k, v in row.items() if v is not None})
    return rows


def test_history_matches_scan_history(full_sync, oracle):
    run, _ = full_sync
    tap_rows: dict[tuple[str, str], dict[int, dict]] = {}
    for record in run.records("history"):
        tap_rows.setdefault((record["project"], record["run_id"]), {})[record["step"]] = record[
            "metrics"
        ]
    compared = 0
    for project, runs in oracle.items():
        for client_run in runs:
            expected = _client_history(client_run)
            got = tap_rows.get((project, client_run.id), {})
            assert got.keys() == expected.keys(), client_run.id
            for step, metrics in expected.items():
                assert numbers_equal(got[step], metrics), (client_run.id, step)
            compared += len(expected)
    assert compared == len(run.records("history"))
    assert compared > 50_000  # the exported big run is in


def test_full_history_uses_parquet_exports(full_sync, demo_data):
    _, stats = full_sync
    big = next(r for r in demo_data.all_runs() if r.display_name == "long-pretraining")
    assert big.exported_rows and big.live_rows
    assert stats["requests"]["parquet"] >= 1
    # No request per run for config or summary: runs pages, history and the project list only
    # (and the artifacts of the run that logged more than a page of them).
    fields = stats["fields"]
    assert fields.get("project.run", 0) == fields.get("project.run.history", 0) + fields.get(
        "project.run.parquetHistory", 0
    ) + fields.get("project.run.outputArtifacts", 0)
