"""Each setting changes what is extracted as documented; the SDK's standard tap tests pass."""

from __future__ import annotations

import atexit
import json
import math

import pytest
from singer_sdk.testing import SuiteConfig, get_tap_test_class

from tap_wandb.emulator import (
    DEMO_API_KEY,
    DEMO_USER,
    Emulator,
    Fault,
    FaultPlan,
    Store,
    bench_store,
    demo_store,
)
from tap_wandb.tap import TapWandb
from tests.conftest import official_client
from tests.tap_runner import discover, finite, numbers_equal, run_tap, select_streams

# The SDK's suite instantiates the tap at collection time, so its emulator starts at import.
_SUITE_EMULATOR = Emulator(demo_store(runs_per_project=6, big_run_steps=0)).start()
atexit.register(_SUITE_EMULATOR.stop)

TestTapWandbStandard = get_tap_test_class(
    tap_class=TapWandb,
    config={"api_key": DEMO_API_KEY, "base_url": _SUITE_EMULATOR.url, "entity": DEMO_USER},
    parse_env_config=False,
    suite_config=SuiteConfig(max_records_limit=40),
    # Its attribute tests take any type listed in a schema as the only one (a polymorphic
    # `value` "is boolean"); records are validated against their full schemas in test_streams.
    include_stream_attribute_tests=False,
)


def _config(emulator: Emulator, **extra) -> dict:
    return {"api_key": DEMO_API_KEY, "base_url": emulator.url, "entity": DEMO_USER, **extra}


# The tap's own settings and their defaults, as README.md documents them.
DOCUMENTED_DEFAULTS = {
    "api_key": None,
    "base_url": "https://api.wandb.ai",
    "entity": None,
    "projects": None,
    "start_date": None,
    "filters": None,
    "history_mode": "full",
    "history_samples": 500,
    "history_keys": None,
    "page_size": 100,
    "history_window": 1000,
    "history_concurrency": 4,
    "request_timeout": 60,
    "max_retries": 8,
}


def test_about_documents_every_setting():
    about = run_tap({}, args=["--about", "--format=markdown"]).stdout
    settings = json.loads(run_tap({}, args=["--about", "--format=json"]).stdout)["settings"]
    for name, default in DOCUMENTED_DEFAULTS.items():
        assert f"| {name} " in about, name
        assert settings["properties"][name].get("description"), name
        assert settings["properties"][name].get("default") == default, name
    assert settings["properties"]["api_key"].get("secret") is True


def test_projects_setting_takes_names_and_entity_paths(emulator, demo_data):
    run = run_tap(
        _config(emulator, projects=["vision", "acme-research/shared"], history_mode="off")
    )
    got = {(r["entity"], r["project"], r["run_id"]) for r in run.records("runs")}
    want = {
        (r.entity, r.project, r.name)
        for r in demo_data.all_runs()
        if (r.entity, r.project) in {(DEMO_USER, "vision"), ("acme-research", "shared")}
    }
    assert got == want


def test_default_entity_comes_from_the_api_key(emulator):
    emulator.reset_stats()
    run = run_tap({"api_key": DEMO_API_KEY, "base_url": emulator.url, "history_mode": "off"})
    assert {r["entity"] for r in run.records("runs")} == {DEMO_USER}
    assert emulator.stats()["fields"].get("viewer") == 1


def test_filters_and_start_date_match_the_official_client(emulator, demo_data):
    filters = {"$or": [{"config.experiment_name": "foo"}, {"config.experiment_name": "bar"}]}
    run = run_tap(
        _config(
            emulator,
            projects=["vision"],
            filters=filters,
            start_date="2024-03-01T10:00:00Z",
            history_mode="off",
        )
    )
    api = official_client(emulator.url)
    client_filters = {"$and": [filters, {"createdAt": {"$gte": "2024-03-01T10:00:00"}}]}
    expected = [r.id for r in api.runs(f"{DEMO_USER}/vision", filters=client_filters)]
    assert [r["run_id"] for r in run.records("runs")] == expected
    assert 0 < len(expected) < len(demo_data.project(DEMO_USER, "vision").runs)


def test_filters_given_as_json_text_work_too(emulator):
    as_object = run_tap(_config(emulator, projects=["vision"], history_mode="off",
                                filters={"state": "finished"}))  # fmt: skip
    as_text = run_tap(_config(emulator, projects=["vision"], history_mode="off",
                              filters=json.dumps({"state": "finished"})))  # fmt: skip
    assert as_object.records("runs") == as_text.records("runs")
    assert {r["state"] for r in as_text.records("runs")} == {"finished"}


def test_sampled_history_matches_the_official_client(emulator):
    run = run_tap(_config(emulator, projects=["vision"], history_mode="sampled", history_samples=7))
    api = official_client(emulator.url)
    got: dict[str, dict[int, dict]] = {}
    for record in run.records("history"):
        got.setdefault(record["run_id"], {})[record["step"]] = record["metrics"]
    for client_run in api.runs(f"{DEMO_USER}/vision"):
        expected = {}
        for row in client_run.history(samples=7, pandas=False):
            row = dict(row)
            step = int(row.pop("_step"))
            expected[step] = finite(row)
        assert numbers_equal(got.get(client_run.id, {}), expected), client_run.id
        assert len(expected) <= 7


def test_history_keys_extracts_only_those_metrics(emulator, demo_data):
    run = run_tap(_config(emulator, projects=["vision"], history_keys=["val/loss", "lr"]))
    records = run.records("history")
    assert records
    expected = {}
    for stored in demo_data.project(DEMO_USER, "vision").runs.values():
        for row in stored.history:
            metrics = {k: v for k, v in row.items() if k in ("val/loss", "lr")}
            if metrics:
                expected[(stored.name, row["_step"])] = finite(metrics)
    assert {(r["run_id"], r["step"]): r["metrics"] for r in records} == expected


def test_history_keys_with_parquet_exports(emulator, demo_data):
    big = next(r for r in demo_data.all_runs() if r.display_name == "long-pretraining")
    run = run_tap(_config(emulator, projects=["nlp"], history_keys=["lr"], page_size=50))
    got = {r["step"]: r["metrics"] for r in run.records("history") if r["run_id"] == big.name}
    expected = {row["_step"]: {"lr": row["lr"]} for row in big.history if "lr" in row}
    assert got == expected


def test_history_mode_off_and_runs_only_make_no_history_requests(emulator):
    emulator.reset_stats()
    off = run_tap(_config(emulator, projects=["nlp"], history_mode="off"))
    assert off.records("history") == [] and off.records("runs")
    fields = emulator.stats()["fields"]
    # Its only per-run request reads the artifacts of the run that logged 120 (artifacts).
    assert fields.get("project.run", 0) == fields.get("project.run.outputArtifacts", 0) == 1

    catalog = select_streams(discover(_config(emulator)), {"runs"})
    emulator.reset_stats()
    runs_only = run_tap(_config(emulator, projects=["nlp"]), catalog=catalog)
    assert set(runs_only.by_stream()) == {"runs"}
    stats = emulator.stats()
    assert stats["fields"].get("project.run", 0) == 0
    assert stats["requests"].get("parquet", 0) == 0


def test_page_size_sets_runs_per_request(emulator, demo_data):
    runs = len(demo_data.project(DEMO_USER, "vision").runs)
    for page_size in (5, 7, 100):
        emulator.reset_stats()
        run_tap(_config(emulator, projects=["vision"], page_size=page_size, history_mode="off"))
        assert emulator.stats()["fields"]["project.runs"] == max(1, math.ceil(runs / page_size))


def test_blob_fields_survive_flattening(emulator):
    run = run_tap(
        _config(
            emulator,
            projects=["vision"],
            history_mode="off",
            flattening_enabled=True,
            flattening_max_depth=1,
        )
    )
    schema = next(m for m in run.messages if m["type"] == "SCHEMA" and m["stream"] == "runs")
    assert "config" in schema["schema"]["properties"]
    record = run.records("runs")[0]
    assert isinstance(json.loads(record["config"]), dict)


GAPPY_STEPS = [*range(30), *range(40, 45), *range(1000, 1003)]


def _gappy_store() -> Store:
    """Project ``bench`` with one run whose steps leave gaps: 0-29, 40-44 and 1000-1002."""
    store = bench_store(runs=1, steps_per_run=0)
    (run,) = store.all_runs()
    run.history = [{"_step": step, "loss": step / 10} for step in GAPPY_STEPS]
    return store


@pytest.mark.parametrize(
    ("window", "expected"),
    [
        (25, [(0, 25), (25, 45), (1000, 1003)]),
        (1000, [(0, 45), (1000, 1003)]),
    ],
)
def test_history_window_sets_steps_per_request(window, expected):
    """Windows [minStep, maxStep) of at most `window` steps, from the first step not yet read
    to the last one inside; empty gaps are not asked for."""
    with Emulator(_gappy_store()) as emulator:
        run = run_tap(_config(emulator, projects=["bench"], history_window=window))
        windows = [
            (entry["variables"]["minStep"], entry["variables"]["maxStep"])
            for entry in emulator.log
            if "project.run.history" in entry["paths"]
        ]
    assert windows == expected
    assert [record["step"] for record in run.records("history")] == GAPPY_STEPS


def test_history_concurrency_overlaps_reads_and_keeps_records():
    """The first run-level read is answered late: with 4 readers, other runs are read in the
    meantime; with 1, nothing is. Either way the records are the same, in the same order."""
    delay = 2.0
    syncs, overlapping = {}, {}
    # A smaller long run (still partly exported to parquet) keeps the two syncs quick.
    with Emulator(demo_store(runs_per_project=12, big_run_steps=2_000)) as emulator:
        for readers in (1, 4):
            emulator.reset_stats()
            emulator.set_faults(FaultPlan(script=[Fault("delay", "project.run", seconds=delay)]))
            config = _config(emulator, projects=["vision", "nlp"], history_concurrency=readers)
            syncs[readers] = run_tap(config)
            reads = [at for at, paths in emulator.arrivals if "project.run" in paths]
            overlapping[readers] = sum(reads[0] < at < reads[0] + delay for at in reads[1:])
    assert emulator.stats()["requests"]["parquet"] >= 1
    assert overlapping[1] == 0 and overlapping[4] >= 1, overlapping
    assert syncs[1].by_stream() == syncs[4].by_stream()
