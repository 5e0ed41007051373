"""Incremental syncs: new and unfinished runs, history resume, compact state, crash resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tap_wandb.emulator import DEMO_API_KEY, DEMO_USER, Emulator, advance, bench_store
from tests.tap_runner import STREAM_KEYS, run_tap, strict_loads


def _config(emulator: Emulator, **extra) -> dict:
    return {
        "api_key": DEMO_API_KEY,
        "base_url": emulator.url,
        "entity": DEMO_USER,
        "page_size": 10,
        **extra,
    }


def _merged(*record_sets: dict[str, list[dict]]) -> dict[str, dict[tuple, dict]]:
    """Records of several syncs merged by key, the later sync winning (as a target upserts)."""
    merged: dict[str, dict[tuple, dict]] = {stream: {} for stream in STREAM_KEYS}
    for records in record_sets:
        for stream, key in STREAM_KEYS.items():
            for record in records.get(stream, []):
                merged[stream][tuple(record[k] for k in key)] = record
    return merged


def _assert_same(merged: dict, full: dict) -> None:
    for stream in STREAM_KEYS:
        assert merged[stream].keys() == full[stream].keys(), stream
        differing = [k for k in full[stream] if merged[stream][k] != full[stream][k]]
        assert differing == [], (stream, differing[:3])


def _full_sync(emulator: Emulator, **extra) -> dict:
    return _merged(run_tap(_config(emulator, **extra)).by_stream())


@pytest.mark.parametrize(
    "settings",
    [
        {},
        {"filters": {"config.experiment_name": {"$in": ["foo", "bar"]}}},
        {"start_date": "2024-03-01T11:00:00Z"},
    ],
    ids=["plain", "filters", "start_date"],
)
def test_two_syncs_merged_equal_one_full_sync_of_advanced_data(fresh_emulator, settings):
    first = run_tap(_config(fresh_emulator, **settings))
    advance(fresh_emulator.store, seed=3)
    second = run_tap(_config(fresh_emulator, **settings), state=first.final_state)
    full = _full_sync(fresh_emulator, **settings)
    _assert_same(_merged(first.by_stream(), second.by_stream()), full)
    # The second sync read only new and unfinished runs, and only new history.
    assert len(second.records("runs")) < len(first.records("runs"))
    assert len(second.records("history")) < len(first.records("history")) / 10


def test_new_run_in_the_bookmark_second_is_not_lost(fresh_emulator):
    first = run_tap(_config(fresh_emulator, projects=["vision"]))
    newest = max(r["created_at"] for r in first.records("runs"))
    advance(fresh_emulator.store, seed=5)
    same_second = [
        run.name
        for run in fresh_emulator.store.project(DEMO_USER, "vision").runs.values()
        if run.created_at.isoformat() + "+00:00" == newest
    ]
    assert len(same_second) >= 2  # advance() adds a run in the newest run's second
    second = run_tap(_config(fresh_emulator, projects=["vision"]), state=first.final_state)
    emitted = {r["run_id"] for r in first.records("runs") + second.records("runs")}
    assert set(same_second) <= emitted


def test_unfinished_runs_are_read_again_until_they_end(fresh_emulator):
    store = fresh_emulator.store
    first = run_tap(_config(fresh_emulator))
    unfinished = {r["run_id"] for r in first.records("runs") if r["state"] == "running"}
    assert unfinished
    advance(store, seed=3)
    second = run_tap(_config(fresh_emulator), state=first.final_state)
    again = {r["run_id"]: r for r in second.records("runs")}
    assert unfinished <= again.keys()
    for run_id in unfinished:
        stored = next(r for r in store.all_runs() if r.name == run_id)
        assert again[run_id]["state"] == stored.state
        assert again[run_id]["tags"] == stored.tags
    finished_now = {r for r in unfinished if again[r]["state"] != "running"}
    assert finished_now  # advance() finishes some of them
    advance(store, seed=4, new_runs_per_project=0)
    third = run_tap(_config(fresh_emulator), state=second.final_state)
    assert not finished_now & {r["run_id"] for r in third.records("runs")}


def test_history_resumes_after_the_last_emitted_step(fresh_emulator):
    store = fresh_emulator.store
    first = run_tap(_config(fresh_emulator, projects=["nlp"]))
    last_emitted: dict[str, int] = {}
    for record in first.records("history"):
        last_emitted[record["run_id"]] = max(last_emitted.get(record["run_id"], -1), record["step"])
    advance(store, seed=3, new_runs_per_project=0)
    fresh_emulator.reset_stats()
    second = run_tap(_config(fresh_emulator, projects=["nlp"]), state=first.final_state)
    for record in second.records("history"):
        assert record["step"] > last_emitted.get(record["run_id"], -1)
    windows = [e for e in fresh_emulator.log if "project.run.history" in e["paths"]]
    assert windows
    for entry in windows:
        run_id = entry["variables"]["run"]
        assert entry["variables"]["minStep"] > last_emitted.get(run_id, -1)
    # The exported part of the long run is not downloaded again.
    assert fresh_emulator.stats()["requests"].get("parquet", 0) == 0
    new_rows = sum(
        1
        for run in store.project(DEMO_USER, "nlp").runs.values()
        for row in run.history
        if row["_step"] > last_emitted.get(run.name, -1)
    )
    assert len(second.records("history")) == new_rows


def test_noop_sync_costs_two_requests_per_project_plus_one_per_unfinished_run(fresh_emulator):
    first = run_tap(_config(fresh_emulator))
    state = first.final_state
    unfinished = sum(len(p.get("unfinished", {})) for p in state["bookmarks"]["runs"]["partitions"])
    projects = len(state["bookmarks"]["runs"]["partitions"])
    fresh_emulator.reset_stats()
    second = run_tap(_config(fresh_emulator), state=state)
    total = fresh_emulator.stats()["total"]
    assert unfinished == 7  # the demo's running runs: each one read again
    assert total <= 2 * projects + unfinished
    assert second.records("history") == []
    # Nothing moved but the change window (recomputed from this sync's duration), which
    # never moves back.
    window = ("updated_since", "recent")
    before, after = (
        [
            {k: v for k, v in p.items() if k not in window}
            for p in s["bookmarks"]["runs"]["partitions"]
        ]
        for s in (state, second.final_state)
    )
    assert after == before
    for old, new in zip(
        state["bookmarks"]["runs"]["partitions"],
        second.final_state["bookmarks"]["runs"]["partitions"],
        strict=True,
    ):
        assert new.get("updated_since", "") >= old.get("updated_since", "")


def test_adding_a_project_syncs_it_from_the_start(fresh_emulator):
    first = run_tap(_config(fresh_emulator, projects=["vision"]))
    second = run_tap(_config(fresh_emulator, projects=["vision", "nlp"]), state=first.final_state)
    nlp_runs = fresh_emulator.store.project(DEMO_USER, "nlp").runs
    assert {r["run_id"] for r in second.records("runs") if r["project"] == "nlp"} == set(nlp_runs)
    vision_again = [r for r in second.records("runs") if r["project"] == "vision"]
    assert vision_again  # its unfinished runs
    assert all(r["state"] == "running" for r in vision_again)


def test_state_stays_small_for_5000_finished_runs():
    with Emulator(bench_store(runs=5000, steps_per_run=2)) as emulator:
        run = run_tap(
            _config(emulator, page_size=500, projects=["bench"]),
            catalog=None,
        )
    assert len(run.records("runs")) == 5000
    final = json.dumps(run.final_state)
    assert len(final) < 10_000
    state_bytes = sum(len(json.dumps(s)) for s in run.states)
    # Linear: every STATE message stays about as small as the final one.
    assert state_bytes <= len(run.states) * 2 * len(final)


def _run_until_killed(config: dict, state: dict | None, kill_after_records: int) -> list[dict]:
    """Start the tap, SIGKILL it after N records, return what it wrote until then."""
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "config.json").write_text(json.dumps(config))
        command = [sys.executable, "-m", "tap_wandb.tap", "--config", f"{tmp}/config.json"]
        if state is not None:
            Path(tmp, "state.json").write_text(json.dumps(state))
            command += ["--state", f"{tmp}/state.json"]
        process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=os.environ
        )
        messages, records = [], 0
        assert process.stdout is not None
        for line in process.stdout:
            try:
                messages.append(strict_loads(line))
            except ValueError:
                break  # a line cut by the kill
            records += messages[-1]["type"] == "RECORD"
            if records >= kill_after_records:
                process.send_signal(signal.SIGKILL)
                break
        process.wait(timeout=60)
    return messages


@pytest.mark.parametrize("kill_after", [1, 60, 700, 20_000])
def test_killed_sync_resumed_from_its_last_state_loses_nothing(fresh_emulator, kill_after):
    config = _config(fresh_emulator, projects=["vision", "nlp"])
    partial = _run_until_killed(config, None, kill_after)
    states = [m["value"] for m in partial if m["type"] == "STATE"]
    resumed = run_tap(config, state=states[-1] if states else None)
    got: dict[str, list[dict]] = {}
    for message in partial:
        if message["type"] == "RECORD":
            got.setdefault(message["stream"], []).append(message["record"])
    full = _full_sync(fresh_emulator, projects=["vision", "nlp"])
    _assert_same(_merged(got, resumed.by_stream()), full)
    # Distinct cases: killed before any STATE (1), after STATEs that record no progress yet
    # (60: the resumed sync starts over), or resumed from a bookmark that skips work.
    assert bool(states) == (kill_after > 1)
    resumed_records = sum(
        len(records) for stream, records in resumed.by_stream().items() if stream in STREAM_KEYS
    )
    assert (resumed_records == sum(len(keyed) for keyed in full.values())) == (kill_after <= 60)


def test_a_state_written_by_the_first_release_resumes_without_loss(fresh_emulator):
    """tests/data/state_v1_demo.json is the final state of a full sync of the demo data by
    the first release (commit ee933e5): {run: last step} bookmarks under the SDK's keys."""
    old_state = json.loads((Path(__file__).parent / "data" / "state_v1_demo.json").read_text())
    first = run_tap(_config(fresh_emulator))  # what that sync emitted (same seeded data)
    advance(fresh_emulator.store, seed=3)
    second = run_tap(_config(fresh_emulator), state=old_state)
    _assert_same(_merged(first.by_stream(), second.by_stream()), _full_sync(fresh_emulator))
    # Only new and unfinished runs were read again, their history from where it stopped.
    assert len(second.records("history")) < len(first.records("history")) / 10
    partitions = second.final_state["bookmarks"]["runs"]["partitions"]
    assert {p.get("state_version") for p in partitions} == {2}
