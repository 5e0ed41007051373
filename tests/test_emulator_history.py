"""The emulator's history against the official client (sampled, by keys, scanned, the
50,000-step run through parquet exports and a live tail), and its parquet downloads.

Expected results are computed here from the store's ``Run`` objects, independently of the
emulator's own filter, order and encoding code.
"""

from __future__ import annotations

import io
import math
from typing import Any

import pyarrow.parquet as pq
import pytest
import requests

from tap_wandb.emulator import DEMO_USER, Fault, FaultPlan, Run
from tests.emulator_support import assert_same, diff, find_run, post, runs_of

PARQUET_HISTORY = (
    'query P($name: String!) { project(name: "nlp", entityName: "acme") { run(name: $name) '
    '{ parquetHistory(liveKeys: ["_step"]) { parquetUrls liveData } } } }'
)


def without_none(row: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in row.items() if value is not None}


@pytest.fixture(scope="module")
def empty_run(demo_data) -> Run:
    return next(r for r in runs_of(demo_data, DEMO_USER, "vision") if not r.history)


# -- history -----------------------------------------------------------------------------------


def test_sampled_history(client, normal_run) -> None:
    run = client.run(f"{DEMO_USER}/vision/{normal_run.name}")
    by_step = {row["_step"]: row for row in normal_run.history}
    rows = run.history(samples=25, pandas=False)
    steps = [row["_step"] for row in rows]
    assert len(rows) == 25
    assert steps == sorted(set(steps))
    for row in rows:
        assert_same(row, by_step[row["_step"]])
    everything = run.history(samples=len(normal_run.history) + 10, pandas=False)
    assert_same(everything, normal_run.history)


def test_history_by_keys(client, normal_run) -> None:
    run = client.run(f"{DEMO_USER}/vision/{normal_run.name}")
    rows = run.history(keys=["acc", "lr"], pandas=False)
    expected = [
        {"_step": r["_step"], "acc": r["acc"], "lr": r["lr"]}
        for r in normal_run.history
        if "acc" in r and "lr" in r
    ]
    assert 0 < len(expected) < len(normal_run.history)
    assert_same(rows, expected)
    # sampledHistory is plain JSON: a NaN comes back as null.
    rows = run.history(keys=["loss"], pandas=False)
    expected = [
        {"_step": r["_step"], "loss": None if math.isnan(r["loss"]) else r["loss"]}
        for r in normal_run.history
    ]
    assert any(row["loss"] is None for row in expected)
    assert_same(rows, expected)


def test_system_metrics_stream(client, normal_run) -> None:
    run = client.run(f"{DEMO_USER}/vision/{normal_run.name}")
    assert normal_run.events
    assert_same(run.history(stream="system", pandas=False), normal_run.events)


def test_scan_history_normal_run(client, normal_run) -> None:
    run = client.run(f"{DEMO_USER}/vision/{normal_run.name}")
    assert_same(list(run.scan_history()), normal_run.history)
    keyed = list(run.scan_history(keys=["acc"]))
    assert_same(
        keyed, [{"_step": r["_step"], "acc": r["acc"]} for r in normal_run.history if "acc" in r]
    )
    window = list(run.scan_history(min_step=10, max_step=60, page_size=7))
    assert_same(window, [r for r in normal_run.history if 10 <= r["_step"] < 60])


def test_run_without_history(client, empty_run) -> None:
    run = client.run(f"{DEMO_USER}/vision/{empty_run.name}")
    assert list(run.scan_history()) == []
    assert run.history(pandas=False) == []
    assert run.history(keys=["acc"], pandas=False) == []
    assert run.history(stream="system", pandas=False) == []


@pytest.fixture(scope="module")
def big_scan(client, emulator, demo_data):
    """One full scan of the 50,000-step run (parquet exports plus a live tail)."""
    run = find_run(demo_data, "nlp", "long-pretraining")
    before = emulator.stats()
    rows = list(client.run(f"{DEMO_USER}/nlp/{run.name}").scan_history(use_cache=False))
    after = emulator.stats()
    fields = {key: after["fields"][key] - before["fields"].get(key, 0) for key in after["fields"]}
    return run, rows, fields


def test_scan_history_big_run_every_step_once(big_scan) -> None:
    run, rows, fields = big_scan
    exported = [r for r in run.history if r["_step"] < run.exported_before_step]
    assert len(run.history) >= 50_000
    assert exported and len(exported) < len(run.history)  # both exports and a live tail
    steps = [int(row["_step"]) for row in rows]
    assert len(steps) == len(set(steps)) == len(run.history)
    assert sorted(steps) == [r["_step"] for r in run.history]
    assert fields["parquet"] >= math.ceil(len(exported) / run.rows_per_parquet_file)
    assert fields["project.run.history"] >= 1  # the live tail came through history windows


def test_scan_history_big_run_values(big_scan) -> None:
    run, rows, _ = big_scan
    by_step = {int(row["_step"]): row for row in rows}
    for expected in run.history:
        got = without_none(by_step[expected["_step"]])
        found = diff(got, without_none(expected), f"step {expected['_step']}")
        assert found is None, found


# -- parquet downloads -------------------------------------------------------------------------


def test_parquet_history_downloads(emulator, demo_data) -> None:
    run = find_run(demo_data, "nlp", "long-pretraining")
    exported = [r for r in run.history if r["_step"] < run.exported_before_step]
    history = post(emulator.url, PARQUET_HISTORY, variables={"name": run.name}).json()["data"][
        "project"
    ]["run"]["parquetHistory"]
    live = [{"_step": r["_step"]} for r in run.history if r["_step"] >= run.exported_before_step]
    assert history["liveData"] == live
    urls = history["parquetUrls"]
    assert len(urls) == math.ceil(len(exported) / run.rows_per_parquet_file)
    assert all(u.startswith(emulator.url + "/") for u in urls)

    whole = requests.get(urls[0], timeout=30)  # signed URL: no Authorization needed
    assert whole.status_code == 200
    data = whole.content
    table = pq.read_table(io.BytesIO(data))
    steps = [r["_step"] for r in exported[: run.rows_per_parquet_file]]
    assert table.column("_step").to_pylist() == steps

    size = len(data)
    for header, status, body, content_range in [
        ("bytes=0-0", 206, data[:1], f"bytes 0-0/{size}"),
        ("bytes=-8", 206, data[-8:], f"bytes {size - 8}-{size - 1}/{size}"),
        ("bytes=4-19", 206, data[4:20], f"bytes 4-19/{size}"),
        ("bytes=100-", 206, data[100:], f"bytes 100-{size - 1}/{size}"),
        (f"bytes={size}-", 416, None, f"bytes */{size}"),
    ]:
        response = requests.get(urls[0], headers={"Range": header}, timeout=30)
        assert response.status_code == status, header
        assert response.headers["Content-Range"] == content_range
        if body is not None:
            assert response.content == body
    assert data[-4:] == b"PAR1"

    base, _, token = urls[0].partition("?token=")
    assert requests.get(f"{base}?token={'0' * len(token)}", timeout=10).status_code == 403
    assert requests.get(base, timeout=10).status_code == 403


def test_parquet_download_faults(fresh_emulator, demo_data) -> None:
    run = find_run(fresh_emulator.store, "nlp", "long-pretraining")
    url = post(fresh_emulator.url, PARQUET_HISTORY, variables={"name": run.name}).json()["data"][
        "project"
    ]["run"]["parquetHistory"]
    url = url["parquetUrls"][0]
    fresh_emulator.set_faults(FaultPlan(script=[Fault("status", match="parquet", status=500)]))
    assert requests.get(url, timeout=30).status_code == 500
    assert requests.get(url, timeout=30).status_code == 200
