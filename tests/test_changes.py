"""Runs that change after they finish: edits, resumes and deletions reach the next
incremental sync, which then equals a fresh full sync. Changes are made through the official
client, as W&B's "update past runs" guide teaches, or through the emulator's resume control."""

from __future__ import annotations

import json
import threading
import time

import pytest

from tap_wandb.emulator import (
    DEMO_API_KEY,
    DEMO_USER,
    Emulator,
    FaultPlan,
    bench_store,
    finish_run,
    resume_run,
)
from tap_wandb.emulator.server import Fault
from tests.conftest import official_client
from tests.tap_runner import STREAM_KEYS, run_tap

PATH = f"{DEMO_USER}/vision"


def _config(emulator: Emulator, **extra) -> dict:
    return {
        "api_key": DEMO_API_KEY,
        "base_url": emulator.url,
        "entity": DEMO_USER,
        "projects": ["vision"],
        "page_size": 10,
        **extra,
    }


def _warehouse(*syncs) -> dict[str, dict[tuple, dict]]:
    """What an upserting target holds after these syncs: the later record of a key wins, and
    a tombstone deletes its run (the child rows of a deleted run stay, as in DuckDB and
    PostgreSQL: the README's queries join them to live runs)."""
    tables: dict[str, dict[tuple, dict]] = {stream: {} for stream in STREAM_KEYS}
    for sync in syncs:
        for stream, key in STREAM_KEYS.items():
            for record in sync.records(stream):
                if record.get("_sdc_deleted_at"):
                    tables[stream].pop(tuple(record[k] for k in key), None)
                else:
                    tables[stream][tuple(record[k] for k in key)] = record
    return tables


def _live(tables: dict) -> dict:
    """The tables without child rows of runs that are not (or no longer) in ``runs``."""
    runs = {key[:3] for key in tables["runs"]}
    return {s: {k: v for k, v in rows.items() if k[:3] in runs} for s, rows in tables.items()}


def _assert_same(tables: dict, full: dict) -> None:
    for stream in STREAM_KEYS:
        assert tables[stream].keys() == full[stream].keys(), stream
        differing = [k for k in full[stream] if tables[stream][k] != full[stream][k]]
        assert differing == [], (stream, differing[:3])


def _finished(emulator: Emulator) -> list:
    runs = emulator.store.project(DEMO_USER, "vision").runs.values()
    return sorted((r for r in runs if r.state == "finished" and r.history), key=lambda r: r.name)


def _export_all_history(run) -> None:
    """As W&B does once a run ends: its rows go to parquet (scalar columns only)."""
    for row in run.history:
        for key in [key for key, value in row.items() if isinstance(value, dict)]:
            del row[key]
    run.exported_before_step = run.last_step + 1


def test_update_past_runs_then_an_incremental_sync_equals_a_fresh_full_sync(fresh_emulator, clock):
    edited, summarised, resumed, deleted, *_ = _finished(fresh_emulator)
    _export_all_history(resumed)
    config = _config(fresh_emulator, deleted_runs_check_hours=0)
    first = run_tap(config)

    api = official_client(fresh_emulator.url)
    clock.tick()
    run = api.run(f"{PATH}/{edited.name}")
    run.tags.append("reviewed")
    run.notes, run.name, run.description = "re-run with seed 2", "renamed ✓", "best so far"
    run.group, run.job_type = "ablation", "eval"
    run.config["learning_rate"] = 0.25
    run.update()
    clock.tick()
    run = api.run(f"{PATH}/{summarised.name}")
    run.summary["best_accuracy"] = 0.97
    run.summary.update()
    clock.tick()
    old_last_step = resumed.last_step
    resume_run(fresh_emulator.store, DEMO_USER, "vision", resumed.name, steps=5, seed=1)
    clock.tick()
    api.run(f"{PATH}/{deleted.name}").delete()

    fresh_emulator.reset_stats()
    second = run_tap(config, state=first.final_state)
    assert fresh_emulator.stats()["requests"].get("parquet", 0) == 0  # nothing downloaded again
    full = run_tap(config)
    _assert_same(_live(_warehouse(first, second)), _warehouse(full))

    runs_again = {r["run_id"] for r in second.records("runs") if not r.get("_sdc_deleted_at")}
    unfinished = {r["run_id"] for r in first.records("runs") if r["state"] == "running"}
    assert runs_again == {edited.name, summarised.name, resumed.name} | unfinished
    edited_row = next(r for r in second.records("runs") if r["run_id"] == edited.name)
    assert (edited_row["display_name"], edited_row["group"]) == ("renamed ✓", "ablation")
    assert "reviewed" in edited_row["tags"]
    # The resumed run gained exactly its new rows, and is followed until it ends.
    new_steps = [r["step"] for r in second.records("history") if r["run_id"] == resumed.name]
    assert new_steps == [row["_step"] for row in resumed.history if row["_step"] > old_last_step]
    assert len(new_steps) == 5
    tombstones = [r for r in second.records("runs") if r.get("_sdc_deleted_at")]
    assert [(t["run_id"], sorted(t)) for t in tombstones] == [
        (deleted.name, ["_sdc_deleted_at", "entity", "project", "run_id"])
    ]

    clock.tick()
    synced_through = resumed.last_step
    resume_run(fresh_emulator.store, DEMO_USER, "vision", resumed.name, steps=3, seed=2)
    finish_run(fresh_emulator.store, DEMO_USER, "vision", resumed.name)
    third = run_tap(config, state=second.final_state)
    steps = [r["step"] for r in third.records("history") if r["run_id"] == resumed.name]
    assert steps == [row["_step"] for row in resumed.history if row["_step"] > synced_through]
    assert len(steps) == 3
    _assert_same(_live(_warehouse(first, second, third)), _warehouse(run_tap(config)))
    fourth = run_tap(config, state=third.final_state)
    assert {r["run_id"] for r in fourth.records("runs")} == unfinished  # nothing else again


def test_a_run_edited_twice_between_syncs_ends_with_its_last_values(fresh_emulator, clock):
    config = _config(fresh_emulator)
    first = run_tap(config)
    target = _finished(fresh_emulator)[0]
    api = official_client(fresh_emulator.url)
    for notes in ("first edit", "second edit"):
        clock.tick()
        run = api.run(f"{PATH}/{target.name}")
        run.notes = notes
        run.update()
    second = run_tap(config, state=first.final_state)
    notes = [r["notes"] for r in second.records("runs") if r["run_id"] == target.name]
    assert notes == ["second edit"]
    _assert_same(_warehouse(first, second), _warehouse(run_tap(config)))


def test_an_edit_landing_while_a_sync_lists_runs_is_in_the_next_sync(fresh_emulator):
    """The edit lands once the sync has read the edited run's page (page 1 of 3), in the
    same second as the runs it reads next: the next sync must still pick it up."""
    store = fresh_emulator.store
    config = _config(fresh_emulator, history_mode="off")
    target = min(_finished(fresh_emulator), key=lambda r: r.created_at)
    fresh_emulator.set_faults(
        FaultPlan(script=[Fault("delay", match="project.runs", seconds=1.5, times=-1)])
    )
    fresh_emulator.reset_stats()

    latest = max(fresh_emulator.store.project(DEMO_USER, "vision").runs.values(),
                 key=lambda r: r.created_at)  # fmt: skip

    def edit_after_first_page() -> None:
        # Page 2 asked for: page 1 (with the target) has been answered, and page 3 (with the
        # latest run) will be read only once page 2 has been (1.5 s from now).
        deadline = time.monotonic() + 60
        while fresh_emulator.stats()["total"] < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        with store.lock:
            target.notes = "edited mid-sync"
            store.touch(target)
        time.sleep(0.2)  # a later change, on a page not read yet: it moves the window
        with store.lock:
            latest.notes = "edited later"
            store.touch(latest)

    # The target must be read before the edit: a full listing starts with it (oldest first).
    editor = threading.Thread(target=edit_after_first_page)
    editor.start()
    during = run_tap(config)
    editor.join()
    fresh_emulator.set_faults(None)
    first_seen = next(r for r in during.records("runs") if r["run_id"] == target.name)
    assert first_seen["notes"] != "edited mid-sync"  # the sync read it before the edit
    assert [r["notes"] for r in during.records("runs") if r["run_id"] == latest.name] == [
        "edited later"
    ]
    after = run_tap(config, state=during.final_state)
    assert [r["notes"] for r in after.records("runs") if r["run_id"] == target.name] == [
        "edited mid-sync"
    ]


@pytest.mark.parametrize("mode", ["ignore", "reject"])
def test_a_server_that_ignores_or_rejects_the_updated_at_filter(fresh_emulator, clock, mode):
    config = _config(fresh_emulator, history_mode="off")
    first = run_tap(config)
    target = _finished(fresh_emulator)[0]
    clock.tick()
    run = official_client(fresh_emulator.url).run(f"{PATH}/{target.name}")
    run.notes = "edited"
    run.update()
    fresh_emulator.store.updated_at_filter = mode
    second = run_tap(config, state=first.final_state, check=False)
    if mode == "ignore":
        assert second.returncode == 0
        assert "seems to ignore the filter" in second.stderr
        assert [r["notes"] for r in second.records("runs") if r["run_id"] == target.name] == [
            "edited"
        ]
        _assert_same(_warehouse(first, second), _warehouse(run_tap(config)))
        return
    assert second.returncode == 1
    failures = [line for line in second.stderr.splitlines() if "tap-wandb failed:" in line]
    assert len(failures) == 1
    assert "set change_detection to off" in failures[0]
    off = run_tap({**config, "change_detection": "off"}, state=first.final_state)
    assert {r["run_id"] for r in off.records("runs")} == {
        r["run_id"] for r in first.records("runs") if r["state"] == "running"
    }


def test_request_budget_and_state_size_in_a_5000_run_project():
    store = bench_store(runs=5000, steps_per_run=2)
    with Emulator(store) as emulator:
        config = {
            "api_key": DEMO_API_KEY,
            "base_url": emulator.url,
            "entity": DEMO_USER,
            "projects": ["bench"],
            "page_size": 100,
            "history_mode": "off",
        }
        first = run_tap(config)
        state_bytes = len(json.dumps(first.final_state))
        assert state_bytes < 10_000, state_bytes
        emulator.reset_stats()
        noop = run_tap(config, state=first.final_state)
        assert noop.records("runs") == []
        assert emulator.stats()["total"] <= 3
        runs = sorted(store.project(DEMO_USER, "bench").runs.values(), key=lambda r: r.name)
        edited = runs[::500]
        with store.lock:
            for run in edited:
                run.tags = [*run.tags, "edited"]
                store.touch(run)
        emulator.reset_stats()
        after = run_tap(config, state=noop.final_state)
        assert sorted(r["run_id"] for r in after.records("runs")) == [r.name for r in edited]
        assert emulator.stats()["total"] <= 3  # 10 edits: one page of runs
        print(f"state {state_bytes} B; no-op and 10-edit syncs: <= 3 requests each")
