"""RunsState: the runs bookmark of one project, without any HTTP."""

from __future__ import annotations

import datetime as dt

import pytest

from tap_wandb.history import FROM_LIVE_ROWS
from tap_wandb.sketch import RunIdSketch
from tap_wandb.state import Need, RunsState, StateError, user_run_filter

T1, T2, T3 = "2024-03-01T10:00:00+00:00", "2024-03-01T10:00:05+00:00", "2024-03-01T11:00:00+00:00"
LATER = "2024-03-02T09:00:00+00:00"


def _record(run_id, created_at, state="finished", last_step=None, updated_at=None, heartbeat=None):
    return {
        "entity": "acme",
        "project": "vision",
        "run_id": run_id,
        "created_at": created_at,
        "updated_at": updated_at or created_at,
        "heartbeat_at": heartbeat or created_at,
        "state": state,
        "history_last_step": last_step,
    }


def _fp(content: str, history: str = "h0") -> str:
    """A fingerprint: content half, history half (as streams.runs.fingerprint builds them)."""
    return content.ljust(8, ".") + history.ljust(8, ".")


def _synced(state: RunsState, record: dict, through: int | None = None) -> None:
    state.run_synced(record, state.need(record, _fp(record["run_id"]), changes=True), through)


def test_empty_state_reads_everything_from_step_zero():
    state = RunsState({})
    assert state.server_filter({}, None, changes=True) == {}
    record = _record("a", T1, last_step=9)
    need = state.need(record, "fp", changes=True)
    assert need is Need.FIRST_SYNC
    assert state.child_context(record, need) == {
        "entity": "acme", "project": "vision", "run_id": "a", "first_step": 0, "last_step": 9,
        "system_metrics": True,
    }  # fmt: skip


def test_first_release_state_loads_and_is_saved_in_todays_format():
    partition = {
        "context": {"entity": "acme", "project": "vision"},
        "replication_key": "created_at",
        "replication_key_value": T2,
        "runs_at_bookmark": ["b"],
        "unfinished_runs": {"c": 41, "d": -1},
    }
    state = RunsState(partition)
    assert state.history_from("c") == 42
    assert state.history_from("d") == 0
    assert state.history_from("b") == 0
    assert state.need(_record("b", T2), "fp", changes=False) is Need.NOTHING
    assert state.need(_record("c", T1, "running"), "fp", changes=False) is Need.UNFINISHED
    # Changes are looked for since the newest run it had synced.
    assert state.updated_since == T2
    state.save()
    assert partition == {
        "context": {"entity": "acme", "project": "vision"},
        "state_version": 2,
        "created_bookmark": T2,
        "runs_at_created_bookmark": ["b"],
        "unfinished": {"c": {"history": 41}, "d": {"history": -1}},
        "updated_since": T2,
        "recent": {},
    }
    again = RunsState(partition)
    assert (again.created_bookmark, again.at_created_bookmark) == (T2, {"b"})
    assert again.history_from("c") == 42


def test_a_state_from_a_newer_release_is_refused_with_advice():
    with pytest.raises(StateError, match=r"newer tap-wandb.*clear the state"):
        RunsState({"state_version": 3})


def test_server_filter_combines_user_filter_start_date_bookmarks_and_unfinished_runs():
    state = RunsState({
        "state_version": 2, "created_bookmark": T2, "updated_since": T3,
        "unfinished": {"z": {"history": 3}, "c": {"history": 1}},
    })  # fmt: skip
    start = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    assert state.server_filter({"state": "finished"}, start, changes=True) == {
        "$and": [
            {"state": "finished"},
            {"createdAt": {"$gte": "2024-01-01T00:00:00"}},
            {
                "$or": [
                    {"createdAt": {"$gte": "2024-03-01T10:00:05"}},
                    {"updatedAt": {"$gte": "2024-03-01T11:00:00"}},
                    {"name": {"$in": ["c", "z"]}},
                ]
            },
        ]
    }
    plain = RunsState({"created_bookmark": T1, "state_version": 2, "updated_since": T3})
    assert plain.server_filter({}, None, changes=False) == {
        "createdAt": {"$gte": "2024-03-01T10:00:00"}
    }


def test_user_run_filter_is_the_user_filter_from_start_date_whatever_the_bookmark():
    start = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    assert user_run_filter({}, None) == {}
    assert user_run_filter({"state": "finished"}, None) == {"state": "finished"}
    assert user_run_filter({}, start) == {"createdAt": {"$gte": "2024-01-01T00:00:00"}}
    assert user_run_filter({"state": "finished"}, start) == {
        "$and": [{"state": "finished"}, {"createdAt": {"$gte": "2024-01-01T00:00:00"}}]
    }


def test_bookmark_moves_forward_only_and_remembers_runs_of_its_second():
    state = RunsState({})
    _synced(state, _record("a", T2))
    _synced(state, _record("b", T2))
    _synced(state, _record("old", T1, state="running", last_step=5), 5)  # a re-read older run
    assert (state.created_bookmark, state.at_created_bookmark) == (T2, {"a", "b"})
    assert state.need(_record("a", T2), "fp-a", changes=False) is Need.NOTHING
    # Another run created in the bookmark's second is new.
    assert state.need(_record("e", T2), "fp-e", changes=False) is Need.FIRST_SYNC
    _synced(state, _record("c", T3))
    assert (state.created_bookmark, state.at_created_bookmark) == (T3, {"c"})


def test_unfinished_runs_resume_after_their_last_emitted_step_until_they_end():
    state = RunsState({})
    _synced(state, _record("r", T1, state="running", last_step=10), 10)
    assert state.history_from("r") == 11
    listed = _record("r", T1, "running", 20)
    need = state.need(listed, "fp-r", changes=True)
    assert need is Need.UNFINISHED
    assert state.child_context(listed, need)["first_step"] == 11
    state.run_synced(listed, need, None)  # history not read (e.g. deselected): it stays
    assert state.history_from("r") == 11
    state.run_synced(_record("r", T1, state="finished", last_step=30), Need.UNFINISHED, 30)
    assert "r" not in state.unfinished


def test_changed_runs_are_found_by_fingerprint_within_the_window_and_by_time_after_it():
    state = RunsState({})
    for run_id, created in (("a", T1), ("b", T2)):
        _synced(state, _record(run_id, created, last_step=7))
    state.sync_done(dt.timedelta(seconds=30))
    # The window starts the sync's duration and a minute before the newest change seen.
    assert state.updated_since == "2024-03-01T09:58:35+00:00"
    assert state.recent == {"a": _fp("a"), "b": _fp("b")}
    assert state.need(_record("a", T1, last_step=7), _fp("a"), changes=True) is Need.NOTHING
    edited = _record("b", T2, last_step=7, updated_at=LATER)
    need = state.need(edited, _fp("b2"), changes=True)
    assert need is Need.CHANGED
    # An edit has no new history: nothing to read.
    assert state.child_context(edited, need)["first_step"] == 8
    # A run that logged since (resumed, and finished again) reads the rows W&B has not
    # exported yet.
    resumed = _record("a", T1, "finished", 9, updated_at=LATER, heartbeat=LATER)
    assert state.child_context(resumed, state.need(resumed, _fp("a", "h1"), changes=True)) == {
        "entity": "acme", "project": "vision", "run_id": "a", "first_step": FROM_LIVE_ROWS,
        "last_step": 9, "system_metrics": True,
    }  # fmt: skip
    # A run last seen before the window: its heartbeat tells.
    old = RunsState({"state_version": 2, "created_bookmark": T3, "updated_since": T3})
    edited_old = _record("o", T1, last_step=4, updated_at=LATER)
    assert (
        old.child_context(edited_old, old.need(edited_old, _fp("o"), changes=True))["first_step"]
        == 5
    )
    resumed_old = _record("o", T1, last_step=4, updated_at=LATER, heartbeat=LATER)
    assert (
        old.child_context(resumed_old, old.need(resumed_old, _fp("o"), changes=True))["first_step"]
        == FROM_LIVE_ROWS
    )
    # Change detection off: synced runs need nothing.
    assert state.need(edited, _fp("b2"), changes=False) is Need.NOTHING


def test_system_metrics_are_read_once_a_run_has_ended_and_again_after_a_resume():
    """W&B's system-metrics sample changes while a run grows: read it when a run is first
    synced ended, when a followed run ends, when a resumed run ends again; not for an edit."""
    state = RunsState({})

    def reads(record: dict, fingerprint: str) -> bool:
        need = state.need(record, fingerprint, changes=True)
        context = state.child_context(record, need)
        state.run_synced(record, need, record["history_last_step"])
        return context["system_metrics"]

    assert reads(_record("done", T1, "finished", 5), _fp("done"))
    assert reads(_record("broke", T1, "crashed", 5), _fp("broke"))
    assert not reads(_record("live", T1, "running", 5), _fp("live"))
    assert not reads(_record("live", T1, "running", 9), _fp("live", "h1"))  # still running
    assert reads(_record("live", T1, "killed", 12), _fp("live", "h2"))  # it ended
    state.sync_done(dt.timedelta(seconds=30))
    assert "done" in state.recent
    # An edit: the same history, a later updatedAt.
    assert not reads(_record("done", T1, "finished", 5, updated_at=LATER), _fp("done2"))
    # Resumed: running again (not yet), then ended with more history (now).
    assert not reads(_record("broke", T1, "running", 8, updated_at=LATER), _fp("broke", "h1"))
    assert reads(_record("broke", T1, "finished", 9, updated_at=LATER), _fp("broke", "h2"))
    # Resumed and ended between two syncs, never seen running.
    assert reads(
        _record("live", T1, "finished", 20, updated_at=LATER, heartbeat=LATER),
        _fp("live", "h3"),
    )


def test_the_window_never_moves_back():
    state = RunsState({"state_version": 2, "created_bookmark": T3, "updated_since": T3})
    state.need(_record("old", T1), "fp", changes=True)  # listed, though older than the window
    state.sync_done(dt.timedelta(seconds=5))
    assert state.updated_since == T3
    assert state.recent == {}


def test_deleted_runs_are_told_from_the_sketch_of_the_runs_synced():
    partition: dict = {}
    state = RunsState(partition)
    for run_id in ("a", "b", "c"):
        _synced(state, _record(run_id, T1))
    now = dt.datetime(2024, 3, 3, tzinfo=dt.UTC)
    # The first sync started the sketch: it counts as a check.
    assert not state.deletions_due(now, dt.timedelta(hours=0))
    state.save()
    state = RunsState(partition)
    assert not state.deletions_due(now, dt.timedelta(hours=24))
    assert state.deletions_due(now + dt.timedelta(hours=24), dt.timedelta(hours=24))
    gone, told_apart = state.deleted({"a", "c", "new"}, now)
    assert (gone, told_apart) == ({"b"}, True)
    assert not state.deletions_due(now + dt.timedelta(hours=23), dt.timedelta(hours=24))
    assert state.deletions_due(now + dt.timedelta(hours=24), dt.timedelta(hours=24))
    # The sketch now holds the runs synced and present.
    assert state.sketch == RunIdSketch.of({"a", "c"})


def test_without_a_sketch_the_first_check_starts_one():
    state = RunsState({"state_version": 2, "created_bookmark": T1})
    now = dt.datetime(2024, 3, 3, tzinfo=dt.UTC)
    assert state.deleted({"a", "b"}, now) == (set(), False)
    assert state.sketch == RunIdSketch.of({"a", "b"})


def test_forgotten_runs_are_no_longer_followed():
    partition = {"state_version": 2, "unfinished": {"gone": {"history": 4}, "kept": {"history": 1}}}
    state = RunsState(partition)
    state.forget(["gone"])
    state.save()
    assert partition["unfinished"] == {"kept": {"history": 1}}
