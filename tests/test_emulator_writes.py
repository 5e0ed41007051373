"""The emulator's writes, driven through the official client (wandb 0.31.0) as a user following
W&B's "update past runs" guide would, and read back by a fresh client.

``updatedAt`` is read with raw GraphQL, since the client never selects it. The emulator's clock
is replaced by one the tests move, so that each edit lands in a later second.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from typing import Any

import pytest
import requests
import wandb
from wandb.sdk.lib.service.service_connection import WandbApiFailedError

from tap_wandb.emulator import DEMO_API_KEY, DEMO_USER, Emulator, Run, advance, resume_run
from tests.conftest import official_client

PATH = f"{DEMO_USER}/vision"
UPDATED = (
    'query U($project: String!) { project(name: $project, entityName: "acme") '
    "{ runs(first: 1000) { edges { node { name updatedAt heartbeatAt createdAt } } } } }"
)


def graphql(url: str, query: str, **variables: Any) -> dict[str, Any]:
    response = requests.post(
        f"{url}/graphql",
        json={"query": query, "variables": variables},
        auth=("api", DEMO_API_KEY),
        timeout=30,
    )
    response.raise_for_status()
    return response.json()


def run_times(url: str, project: str = "vision") -> dict[str, dict[str, str]]:
    """Each run's updatedAt, heartbeatAt and createdAt, by run name, as the server reports them."""
    edges = graphql(url, UPDATED, project=project)["data"]["project"]["runs"]["edges"]
    return {edge["node"]["name"]: edge["node"] for edge in edges}


def updated_at(url: str, project: str = "vision") -> dict[str, str]:
    return {name: node["updatedAt"] for name, node in run_times(url, project).items()}


def as_user_sees_it(url: str, name: str) -> dict[str, Any]:
    """A run's editable fields as a fresh client reads them (JSON text, so NaN equals NaN)."""
    run = official_client(url).run(f"{PATH}/{name}")
    return {
        "tags": run.tags,
        "notes": run.notes,
        "name": run.name,
        "description": run.description,
        "group": run.group,
        "job_type": run.job_type,
        "state": run.state,
        "config": json.dumps(run.config, sort_keys=True),
        "summary": json.dumps(run.summary_metrics, sort_keys=True),
    }


def vision_runs(emulator: Emulator) -> list[Run]:
    return list(emulator.store.projects[(DEMO_USER, "vision")].runs.values())


def pick(emulator: Emulator, state: str) -> Run:
    """A vision run in ``state`` that is not part of a sweep, with some history."""
    return next(
        r for r in vision_runs(emulator) if r.state == state and not r.sweep_name and r.history
    )


def summary_with(summary_json: str, path: tuple[str, ...], value: Any) -> str:
    summary = json.loads(summary_json)
    target = summary
    for key in path[:-1]:
        target = target.setdefault(key, {})
    target[path[-1]] = value
    return json.dumps(summary, sort_keys=True)


# -- each edit of W&B's "update past runs" guide ----------------------------------------------

Edit = tuple[str, Callable[[Any], None], Callable[[dict[str, Any]], None]]


def _config_set(key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def expect(fields: dict[str, Any]) -> None:
        fields["config"] = json.dumps({**json.loads(fields["config"]), key: value}, sort_keys=True)

    return expect


def _summary_set(path: tuple[str, ...], value: Any) -> Callable[[dict[str, Any]], None]:
    def expect(fields: dict[str, Any]) -> None:
        fields["summary"] = summary_with(fields["summary"], path, value)

    return expect


def _set_summary(run, key: str, value: Any) -> None:
    run.summary[key] = value
    run.summary.update()


def _set_nested_summary(run) -> None:
    run.summary["nested"]["eval"]["f1"] = 0.75
    run.summary.update()


def _updated(run, **fields: Any) -> None:
    for name, value in fields.items():
        setattr(run, name, value)
    run.update()


EDITS: list[Edit] = [
    (
        "append a tag",
        lambda run: (run.tags.append("reviewed"), run.update()),
        lambda f: f.update(tags=[*f["tags"], "reviewed"]),
    ),
    (
        "notes",
        lambda run: _updated(run, notes="re-checked\nby hand"),
        lambda f: f.update(notes="re-checked\nby hand"),
    ),
    (
        "display name",
        lambda run: _updated(run, name="renamed-run"),
        lambda f: f.update(name="renamed-run"),
    ),
    (
        "description",
        lambda run: _updated(run, description="a description"),
        lambda f: f.update(description="a description"),
    ),
    ("group", lambda run: _updated(run, group="grp-new"), lambda f: f.update(group="grp-new")),
    ("job type", lambda run: _updated(run, job_type="eval"), lambda f: f.update(job_type="eval")),
    (
        "config key",
        lambda run: (run.config.update(lr=0.5, added={"k": [1, 2]}), run.update()),
        lambda f: (_config_set("lr", 0.5)(f), _config_set("added", {"k": [1, 2]})(f)),
    ),
    (
        "summary key",
        lambda run: _set_summary(run, "best/acc", 0.99),
        _summary_set(("best/acc",), 0.99),
    ),
    (
        "new nested summary key",
        lambda run: _set_summary(run, "review", {"score": {"mean": 4.5}}),
        _summary_set(("review", "score", "mean"), 4.5),
    ),
    ("nested summary value", _set_nested_summary, _summary_set(("nested", "eval", "f1"), 0.75)),
]


def test_each_edit_is_visible_and_bumps_only_that_runs_updated_at(fresh_emulator, clock) -> None:
    url = fresh_emulator.url
    for node in run_times(url).values():  # seeded runs: their last change in the data
        assert node["updatedAt"] == max(node["createdAt"], node["heartbeatAt"])

    name = pick(fresh_emulator, "finished").name
    seen, before = as_user_sees_it(url, name), updated_at(url)
    for label, edit, expect in EDITS:
        expected = {**seen, "tags": list(seen["tags"])}
        expect(expected)
        stamp = clock.tick()
        edit(official_client(url).run(f"{PATH}/{name}"))

        seen, after = as_user_sees_it(url, name), updated_at(url)
        assert seen == expected, label
        assert after[name] > before[name], label
        assert after[name] == stamp, label
        assert {k: v for k, v in after.items() if k != name} == {
            k: v for k, v in before.items() if k != name
        }, label
        before = after


# -- run state and deletion --------------------------------------------------------------------


def test_update_state(fresh_emulator, clock) -> None:
    url = fresh_emulator.url
    running, crashed, finished = (
        pick(fresh_emulator, s).name for s in ("running", "crashed", "finished")
    )
    for name, state in ((running, "failed"), (crashed, "pending")):
        before = updated_at(url)
        clock.tick()
        assert official_client(url).run(f"{PATH}/{name}").update_state(state) is True
        assert official_client(url).run(f"{PATH}/{name}").state == state
        after = updated_at(url)
        assert after[name] > before[name]
        assert {k for k in after if after[k] != before[k]} == {name}

    # The transitions the client documents as refused are refused, and change nothing.
    before = updated_at(url)
    clock.tick()
    with pytest.raises(wandb.Error, match="cannot change the state"):
        official_client(url).run(f"{PATH}/{finished}").update_state("pending")
    assert official_client(url).run(f"{PATH}/{finished}").state == "finished"
    assert updated_at(url) == before


def test_delete(fresh_emulator, clock) -> None:
    url = fresh_emulator.url
    gone = pick(fresh_emulator, "finished").name
    api = official_client(url)
    names = [r.id for r in api.runs(PATH)]
    finished = len(api.runs(PATH, filters={"state": "finished"}))
    before = updated_at(url)
    clock.tick()
    api.run(f"{PATH}/{gone}").delete()

    api = official_client(url)
    assert [r.id for r in api.runs(PATH)] == [n for n in names if n != gone]
    assert len(api.runs(PATH)) == len(names) - 1
    assert len(api.runs(PATH, filters={"state": "finished"})) == finished - 1
    assert gone not in [r.id for r in api.runs(PATH, filters={"state": "finished"}, per_page=2)]
    with pytest.raises(wandb.errors.CommError, match="Could not find run"):
        api.run(f"{PATH}/{gone}")
    after = updated_at(url)
    del before[gone]
    assert after == before


# -- updatedAt filters and order, in the three server modes -------------------------------------


def test_updated_at_filter_and_order(fresh_emulator, clock) -> None:
    url = fresh_emulator.url
    first, second = (r.name for r in vision_runs(fresh_emulator)[3:5])
    cutoff = clock.tick()
    _set_summary(official_client(url).run(f"{PATH}/{first}"), "k", 1)
    later = clock.tick()
    _set_summary(official_client(url).run(f"{PATH}/{second}"), "k", 2)
    _set_summary(official_client(url).run(f"{PATH}/{second}"), "k", 3)
    assert updated_at(url)[second] == later  # edits within one second share it
    offset = dt.datetime.fromisoformat(cutoff).replace(tzinfo=dt.UTC).isoformat()
    running = {r.name for r in vision_runs(fresh_emulator) if r.state == "running"}
    finished = {r.name for r in vision_runs(fresh_emulator) if r.state == "finished"}
    everyone = {r.name for r in vision_runs(fresh_emulator)}
    assert running - {first, second} and finished

    def names(filters: dict | None = None, order: str = "+created_at", per_page: int = 50) -> list:
        return [r.id for r in official_client(url).runs(PATH, filters, order, per_page)]

    changed_since = {"updatedAt": {"$gte": cutoff}}
    assert set(names(changed_since)) == {first, second}
    assert set(names({"updatedAt": {"$gte": offset}})) == {first, second}
    assert names({"updatedAt": {"$gt": cutoff}}) == [second]
    assert set(names({"$or": [{"state": "running"}, changed_since]})) == running | {first, second}
    assert names({"$and": [changed_since, {"updatedAt": {"$lt": later}}]}) == [first]
    assert names(order="-updated_at")[:2] == [second, first]

    times = updated_at(url)
    ascending = names(order="+updated_at", per_page=3)  # eight pages: cursors must page stably
    assert len(ascending) == len(everyone) and set(ascending) == everyone
    assert [times[n] for n in ascending] == sorted(times.values())
    assert names(order="-updated_at", per_page=4) == names(order="-updated_at", per_page=100)

    fresh_emulator.store.updated_at_filter = "ignore"
    assert set(names(changed_since)) == everyone
    assert set(names({"$and": [{"state": "finished"}, changed_since]})) == finished
    assert len(official_client(url).runs(PATH, changed_since)) == len(everyone)

    control = f"{url}/_emulator/updated-at-filter"
    assert requests.post(control, json={"mode": "reject"}, timeout=10).status_code == 200
    assert fresh_emulator.store.updated_at_filter == "reject"
    with pytest.raises(WandbApiFailedError, match="unsupported filter field 'updatedAt'"):
        names({"$or": [{"state": "running"}, changed_since]})
    answer = graphql(
        url, UPDATED.replace("first: 1000", 'filters: "{\\"updatedAt\\": 1}"'), project="vision"
    )
    assert answer["data"]["project"]["runs"] is None
    assert "unsupported filter field 'updatedAt'" in answer["errors"][0]["message"]
    assert set(names({"state": "running"})) == running  # other filters still work
    assert names(order="-updated_at")[:2] == [second, first]  # ordering is unaffected

    assert requests.post(control, json={"mode": "bogus"}, timeout=10).status_code == 400
    assert requests.post(control, json={"mode": "honour"}, timeout=10).status_code == 200
    assert set(names(changed_since)) == {first, second}


# -- resuming a finished run, and advancing the data --------------------------------------------


def test_resume_and_finish(fresh_emulator, clock) -> None:
    url = fresh_emulator.url
    store = fresh_emulator.store
    run = max(
        (r for r in vision_runs(fresh_emulator) if r.state == "finished"),
        key=lambda r: len(r.history),
    )
    # Half its history exported to parquet (which holds scalar columns only), half live.
    for row in run.history:
        for key in [key for key, value in row.items() if isinstance(value, dict)]:
            del row[key]
    run.exported_before_step = run.history[len(run.history) // 2]["_step"]
    path = f"{PATH}/{run.name}"

    def steps() -> list[int]:
        rows = official_client(url).run(path).scan_history(use_cache=False)
        return [row["_step"] for row in rows]

    old_steps = steps()
    assert len(old_steps) == len(run.history) == len(set(old_steps))
    before = run_times(url)
    clock.tick()
    resume_run(store, DEMO_USER, "vision", run.name, steps=7, seed=3)

    resumed = official_client(url).run(path)
    assert resumed.state == "running"
    new_steps = steps()
    assert new_steps[: len(old_steps)] == old_steps
    added = new_steps[len(old_steps) :]
    assert len(added) == 7 and added[0] > old_steps[-1] and len(set(new_steps)) == len(new_steps)
    after = run_times(url)
    assert after[run.name]["updatedAt"] > before[run.name]["updatedAt"]
    assert after[run.name]["heartbeatAt"] > before[run.name]["heartbeatAt"]
    assert {k for k in after if after[k] != before[k]} == {run.name}

    # More logging through the control endpoint, then the run ends.
    clock.tick()
    control = f"{url}/_emulator/runs/{DEMO_USER}/vision/{run.name}"
    answer = requests.post(f"{control}/resume", json={"steps": 3, "seed": 4}, timeout=10).json()
    assert answer["run"]["state"] == "running"
    assert steps()[len(new_steps) :] == list(range(added[-1] + 1, added[-1] + 4))
    stamp = clock.tick()
    answer = requests.post(f"{control}/finish", json={}, timeout=10).json()
    assert answer["run"] == {"state": "finished", "lastStep": added[-1] + 3, "updatedAt": stamp}

    finished = official_client(url).run(path)
    last_row = list(finished.scan_history(use_cache=False))[-1]
    assert finished.state == "finished"
    assert finished.summary_metrics["_step"] == last_row["_step"] == added[-1] + 3
    assert finished.summary_metrics["loss"] == last_row["loss"]
    assert updated_at(url)[run.name] == stamp
    missing = requests.post(f"{url}/_emulator/runs/acme/vision/nope/finish", json={}, timeout=10)
    assert missing.status_code == 404


def test_advance_bumps_the_runs_it_changes(fresh_emulator, clock) -> None:
    url = fresh_emulator.url
    before = run_times(url, "nlp")
    running = {
        name
        for name, r in fresh_emulator.store.projects[(DEMO_USER, "nlp")].runs.items()
        if r.state == "running"
    }
    stamp = clock.tick()
    advance(fresh_emulator.store)
    after = updated_at(url, "nlp")
    changed = {name for name in after if after[name] != before.get(name, {}).get("updatedAt")}
    new = set(after) - set(before)
    assert running and new
    assert changed == running | new
    assert all(after[name] == stamp for name in changed)
