"""system_metrics, record by record against the official client's
``run.history(stream="system", samples=N, pandas=False)``; read once a run has ended."""

from __future__ import annotations

import datetime as dt
import math
import re

import pytest

from tap_wandb.emulator import DEMO_USER, Emulator, finish_run, resume_run
from tests.conftest import official_client
from tests.tap_runner import DEMO_PROJECTS, demo_projects_config, finite, numbers_equal, run_tap

TERMINAL = ("finished", "failed", "crashed", "killed")


def _by_run(records: list[dict]) -> dict[tuple, list[dict]]:
    found: dict[tuple, list[dict]] = {}
    for record in records:
        found.setdefault((record["entity"], record["project"], record["run_id"]), []).append(record)
    return found


def _client_rows(emulator: Emulator, path: str, samples: int) -> list[dict]:
    run = official_client(emulator.url).run(path)
    return run.history(stream="system", samples=samples, pandas=False)


def _assert_rows_equal(records: list[dict], rows: list[dict], where: str) -> None:
    """Tap records of one run against the client's rows, in order."""
    assert len(records) == len(rows), where
    for record, row in zip(records, rows, strict=True):
        when = dt.datetime.fromtimestamp(row["_timestamp"], dt.UTC)
        assert dt.datetime.fromisoformat(record["timestamp"]) == when, where
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}\+00:00", record["timestamp"])
        assert record["runtime"] == row["_runtime"], where
        metrics = {k: v for k, v in row.items() if k not in ("_timestamp", "_runtime", "_wandb")}
        assert numbers_equal(record["metrics"], finite(metrics)), where


@pytest.mark.parametrize("samples", [500, 3])
def test_system_metrics_of_ended_runs_match_the_official_client(emulator, demo_data, samples):
    run = run_tap(demo_projects_config(emulator, system_metrics_samples=samples))
    got = _by_run(run.records("system_metrics"))
    api = official_client(emulator.url)
    compared = 0
    for path in DEMO_PROJECTS:
        entity, _, project = path.rpartition("/")
        for client_run in api.runs(f"{entity or DEMO_USER}/{project}", per_page=50):
            key = (client_run.entity, client_run.project, client_run.id)
            if client_run.state not in TERMINAL:
                assert key not in got  # its sample still changes: read once it has ended
                continue
            rows = client_run.history(stream="system", samples=samples, pandas=False)
            _assert_rows_equal(got.get(key, []), rows, key)
            compared += len(rows)
    assert compared == len(run.records("system_metrics"))
    if samples == 500:
        assert compared == 155  # the demo's ended runs have few rows each
        with_rows = [r for r in demo_data.all_runs() if r.state in TERMINAL and r.events]
        assert len(got) == len(with_rows) == 32  # DEMO_PROJECTS are every project with runs
    else:
        assert max(len(records) for records in got.values()) == 3


def test_a_run_gets_its_system_metrics_once_it_has_ended(fresh_emulator):
    """The demo's long run (1,909 rows, running): none while it runs; when it has ended,
    W&B's sample of 500 (or all 1,909, NaN readings as null, with 2,000 samples), and nothing
    again for the runs synced before."""
    store = fresh_emulator.store
    config = demo_projects_config(fresh_emulator, projects=["nlp"])
    first = run_tap(config)
    long = max(store.project(DEMO_USER, "nlp").runs.values(), key=lambda r: len(r.events))
    assert long.state == "running" and len(long.events) == 1909
    assert long.name not in {r["run_id"] for r in first.records("system_metrics")}
    finish_run(store, DEMO_USER, "nlp", long.name)
    for samples, expected in ((500, 500), (2000, 1909)):
        second = run_tap({**config, "system_metrics_samples": samples}, state=first.final_state)
        got = _by_run(second.records("system_metrics"))
        ended = {r["run_id"] for r in second.records("runs") if r["state"] in TERMINAL}
        assert {key[2] for key in got} == {run for run in ended if _has_events(store, run)}
        assert long.name in ended
        rows = _client_rows(fresh_emulator, f"{DEMO_USER}/nlp/{long.name}", samples)
        records = got[(DEMO_USER, "nlp", long.name)]
        _assert_rows_equal(records, rows, long.name)
        assert len(rows) == expected
    nan = [row for row in rows if any(isinstance(v, float) and math.isnan(v) for v in row.values())]
    assert len(nan) == 4
    assert sum(None in record["metrics"].values() for record in records) == 4


def _has_events(store, run_id: str) -> bool:
    return any(run.events for run in store.all_runs() if run.name == run_id)


def test_a_resumed_run_gets_them_again_when_it_ends_and_an_edit_does_not(fresh_emulator):
    store = fresh_emulator.store
    config = demo_projects_config(fresh_emulator, projects=["vision"])
    first = run_tap(config)
    synced = _by_run(first.records("system_metrics"))
    resumed, edited = sorted(key[2] for key in synced)[:2]
    resume_run(store, DEMO_USER, "vision", resumed, steps=4)
    with store.lock:
        target = next(r for r in store.all_runs() if r.name == edited)
        target.notes = "edited"
        store.touch(target)
    second = run_tap(config, state=first.final_state)
    assert {resumed, edited} <= {r["run_id"] for r in second.records("runs")}
    assert second.records("system_metrics") == []  # running again; unchanged by an edit
    finish_run(store, DEMO_USER, "vision", resumed)
    third = run_tap(config, state=second.final_state)
    got = _by_run(third.records("system_metrics"))
    assert list(got) == [(DEMO_USER, "vision", resumed)]
    rows = _client_rows(fresh_emulator, f"{DEMO_USER}/vision/{resumed}", 500)
    _assert_rows_equal(got[(DEMO_USER, "vision", resumed)], rows, resumed)


def test_system_metrics_samples_must_be_positive(tap_config):
    run = run_tap({**tap_config, "system_metrics_samples": 0}, check=False)
    assert run.returncode != 0
    assert "system_metrics_samples" in run.stderr
