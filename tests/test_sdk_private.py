"""What tap_wandb/streams/sdk_private.py relies on in the Singer SDK, checked on the SDK
installed: if an upgrade changes it, these fail."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from tap_wandb.tap import TapWandb
from tests.tap_runner import run_tap, strict_loads


def _sync(config: dict, capfd) -> tuple[TapWandb, list[dict]]:
    tap = TapWandb(config=config, parse_env_config=False)
    tap.sync_all()
    out = capfd.readouterr().out
    return tap, [strict_loads(line) for line in out.splitlines() if line.strip()]


@pytest.fixture
def vision(tap_config) -> dict:
    return {**tap_config, "projects": ["vision"]}


def test_one_schema_message_per_stream(vision, capfd):
    _, messages = _sync(vision, capfd)
    runs = sum(1 for m in messages if m["type"] == "RECORD" and m["stream"] == "runs")
    assert runs > 5  # child streams were synced once per run
    schemas = Counter(m["stream"] for m in messages if m["type"] == "SCHEMA")
    assert {"runs", "configs", "summaries", "history"} <= schemas.keys()
    assert set(schemas.values()) == {1}, schemas  # other streams (projects, sweeps) once too


def test_history_is_written_directly_when_nothing_would_change_it(vision, capfd):
    tap, messages = _sync(vision, capfd)
    history = [m for m in messages if m["type"] == "RECORD" and m["stream"] == "history"]
    assert len(history) > 1000
    assert tap.streams["history"].rows_written_directly == len(history)


def test_a_stream_map_takes_the_sdk_path_and_both_paths_write_the_same_records(vision, capfd):
    direct_tap, direct = _sync(vision, capfd)
    mapped = {**vision, "stream_maps": {"history": {"step_again": "int(step)"}}}
    sdk_tap, through_sdk = _sync(mapped, capfd)
    assert direct_tap.streams["history"].rows_written_directly > 0
    assert sdk_tap.streams["history"].rows_written_directly == 0

    def history(messages: list[dict]) -> dict:
        return {
            (m["record"]["run_id"], m["record"]["step"]): m["record"]
            for m in messages
            if m["type"] == "RECORD" and m["stream"] == "history"
        }

    direct_rows, sdk_rows = history(direct), history(through_sdk)
    assert direct_rows.keys() == sdk_rows.keys()
    for key, record in sdk_rows.items():
        assert record.pop("step_again") == key[1]  # the map was applied
        assert record == direct_rows[key]


def test_child_loggers_follow_the_tap_log_level(tap_config, monkeypatch):
    monkeypatch.setenv("TAP_WANDB_LOGLEVEL", "DEBUG")
    run = run_tap({**tap_config, "projects": ["vision"], "history_mode": "off"})
    starts = [line for line in run.stderr.splitlines() if "Beginning sync of 'configs'" in line]
    assert len(starts) == len(run.records("runs"))  # every run's child sync, at DEBUG
    monkeypatch.delenv("TAP_WANDB_LOGLEVEL")
    quiet = run_tap({**tap_config, "projects": ["vision"], "history_mode": "off"})
    assert "Beginning sync of 'configs'" not in quiet.stderr


def test_no_activate_version_even_when_asked_for(tap_config):
    """The SDK would send one ACTIVATE_VERSION per run for the child streams, and SQL targets
    would then drop every other run's rows: the tap neither offers nor sends them."""
    run = run_tap(
        {
            **tap_config,
            "projects": ["vision"],
            "history_mode": "off",
            "emit_activate_version_messages": True,
        }
    )
    assert run.records("configs")
    assert [m for m in run.messages if m["type"] == "ACTIVATE_VERSION"] == []
    about = json.loads(run_tap(tap_config, args=["--about", "--format=json"]).stdout)
    assert "activate-version" not in about["capabilities"]


def test_settings_limits_are_in_the_schema(tap_config):
    about = json.loads(run_tap(tap_config, args=["--about", "--format=json"]).stdout)
    settings = about["settings"]["properties"]
    limits = {
        name: {k: v for k, v in settings[name].items() if k in ("minimum", "exclusiveMinimum")}
        for name in ("page_size", "history_window", "history_samples", "history_concurrency",
                     "request_timeout", "max_retries", "deleted_runs_check_hours")
    }  # fmt: skip
    assert limits == {
        "page_size": {"minimum": 1},
        "history_window": {"minimum": 1},
        "history_samples": {"minimum": 1},
        "history_concurrency": {"minimum": 1},
        "request_timeout": {"exclusiveMinimum": 0},
        "max_retries": {"minimum": 0},
        "deleted_runs_check_hours": {"minimum": 0},
    }
    assert settings["history_mode"]["enum"] == ["full", "sampled", "off"]
    assert settings["change_detection"]["enum"] == ["updated_at", "off"]
