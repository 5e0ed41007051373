"""RunsState: the runs bookmark of one project, without any HTTP."""

from __future__ import annotations

import datetime as dt

import pytest

from tap_wandb.state import RunsState, StateError


def _record(run_id: str, created_at: str, state: str = "finished", last_step=None) -> dict:
    return {
        "entity": "acme",
        "project": "vision",
        "run_id": run_id,
        "created_at": created_at,
        "state": state,
        "history_last_step": last_step,
    }


T1, T2, T3 = "2024-03-01T10:00:00+00:00", "2024-03-01T10:00:05+00:00", "2024-03-01T11:00:00+00:00"


def test_empty_state_reads_everything_from_step_zero():
    state = RunsState({})
    assert state.server_filter({}, None) == {}
    assert not state.already_synced("a", T1)
    assert state.child_context(_record("a", T1, last_step=9)) == {
        "entity": "acme", "project": "vision", "run_id": "a", "first_step": 0, "last_step": 9,
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
    assert state.already_synced("b", T2)
    state.save()
    assert partition == {
        "context": {"entity": "acme", "project": "vision"},
        "state_version": 2,
        "created_bookmark": T2,
        "runs_at_created_bookmark": ["b"],
        "unfinished": {"c": {"history": 41}, "d": {"history": -1}},
    }
    again = RunsState(partition)
    assert (again.created_bookmark, again.at_created_bookmark) == (T2, {"b"})
    assert again.history_from("c") == 42


def test_a_state_from_a_newer_release_is_refused_with_advice():
    with pytest.raises(StateError, match=r"newer tap-wandb.*clear the state"):
        RunsState({"state_version": 3})


def test_server_filter_combines_user_filter_start_date_bookmark_and_unfinished_runs():
    state = RunsState(
        {
            "state_version": 2,
            "created_bookmark": T2,
            "unfinished": {"z": {"history": 3}, "c": {"history": 1}},
        }
    )
    start = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    assert state.server_filter({"state": "finished"}, start) == {
        "$and": [
            {"state": "finished"},
            {"createdAt": {"$gte": "2024-01-01T00:00:00"}},
            {
                "$or": [
                    {"createdAt": {"$gte": "2024-03-01T10:00:05"}},
                    {"name": {"$in": ["c", "z"]}},
                ]
            },
        ]
    }
    assert RunsState({"created_bookmark": T1, "state_version": 2}).server_filter({}, None) == {
        "createdAt": {"$gte": "2024-03-01T10:00:00"}
    }


def test_bookmark_moves_forward_only_and_remembers_runs_of_its_second():
    state = RunsState({})
    state.run_synced(_record("a", T2), None)
    state.run_synced(_record("b", T2), None)
    state.run_synced(_record("old", T1, state="running", last_step=5), 5)  # re-read older run
    assert (state.created_bookmark, state.at_created_bookmark) == (T2, {"a", "b"})
    assert state.already_synced("a", T2)
    assert not state.already_synced("a", T3)  # a different second is a different run
    state.run_synced(_record("c", T3), None)
    assert (state.created_bookmark, state.at_created_bookmark) == (T3, {"c"})


def test_unfinished_runs_resume_after_their_last_emitted_step_until_they_end():
    state = RunsState({})
    state.run_synced(_record("r", T1, state="running", last_step=10), 10)
    assert state.history_from("r") == 11
    # Listed again while running: not skipped even in the bookmark's second.
    assert not state.already_synced("r", T1)
    assert state.child_context(_record("r", T1, "running", 20))["first_step"] == 11
    # History not read this time (e.g. deselected): the resume point stays.
    state.run_synced(_record("r", T1, state="running", last_step=20), None)
    assert state.history_from("r") == 11
    state.run_synced(_record("r", T1, state="finished", last_step=30), 30)
    assert "r" not in state.unfinished
    assert state.already_synced("r", T1)


def test_forgotten_runs_are_no_longer_followed():
    partition = {"state_version": 2, "unfinished": {"gone": {"history": 4}, "kept": {"history": 1}}}
    state = RunsState(partition)
    state.forget(["gone"])
    state.save()
    assert partition["unfinished"] == {"kept": {"history": 1}}
