"""Each setting changes what is extracted as documented; the SDK's standard tap tests pass."""

from __future__ import annotations

import json
import math

from singer_sdk.testing import SuiteConfig, get_tap_test_class

from tap_wandb.emulator import DEMO_API_KEY, DEMO_USER, Emulator, demo_store
from tap_wandb.tap import TapWandb
from tests.conftest import official_client
from tests.tap_runner import discover, finite, numbers_equal, run_tap, select_streams

# The SDK's suite instantiates the tap at collection time, so its emulator starts at import.
_SUITE_EMULATOR = Emulator(demo_store(runs_per_project=6, big_run_steps=0)).start()

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


def test_about_documents_every_setting():
    about = run_tap({}, args=["--about", "--format=markdown"]).stdout
    for name in TapWandb.config_jsonschema["properties"]:
        assert f"| {name} " in about, name
    settings = json.loads(run_tap({}, args=["--about", "--format=json"]).stdout)["settings"]
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


def test_history_window_sets_steps_per_request(emulator, demo_data):
    vision = demo_data.project(DEMO_USER, "vision").runs.values()
    for window in (25, 1000):
        emulator.reset_stats()
        run = run_tap(_config(emulator, projects=["vision"], history_window=window))
        # Windows start at the first step not yet covered and span `window` steps.
        expected = 0
        for stored in vision:
            steps, covered_to = [row["_step"] for row in stored.history], -1
            for step in steps:
                if step > covered_to:
                    expected += 1
                    covered_to = step + window - 1
        assert emulator.stats()["fields"]["project.run.history"] == expected
        assert len(run.records("history")) == sum(len(r.history) for r in vision)


def test_history_concurrency_changes_speed_not_records(emulator):
    one = run_tap(_config(emulator, projects=["vision", "nlp"], history_concurrency=1))
    four = run_tap(_config(emulator, projects=["vision", "nlp"], history_concurrency=4))
    assert one.by_stream() == four.by_stream()
