"""The GraphQL resolvers of W&B's read API over the store: viewer, projects, runs.

graphql-core's default resolver calls a method named like the field with (info, **arguments),
or reads an attribute / dict key. Mutations are in writes, artifacts and sweeps in their own
modules.
"""

from __future__ import annotations

import base64
import bisect
import json
import math
from typing import Any

from tap_wandb.emulator.artifacts import artifacts_page
from tap_wandb.emulator.run_history import (
    encoded_history,
    evenly_sampled,
    history_keys,
    parquet_files,
    strict,
    wire_json,
)
from tap_wandb.emulator.store import (
    FilterError,
    Project,
    Run,
    Store,
    encode_cursor,
    page_after,
    select_runs,
    wandb_time,
)
from tap_wandb.emulator.sweeps import SweepNode, sweep_node, sweeps_page, total_sweeps
from tap_wandb.emulator.writes import Writes, screen_updated_at

# What serverInfo.features reports: the client then lists sweeps with filters and selects
# Artifact.digestAlgorithm, as against a current W&B server.
SERVER_FEATURES = ("SWEEPS_QUERY_FILTERING", "ARTIFACT_DIGEST_ALGORITHM")


def user_node(username: str, teams: list[str] | None = None) -> dict[str, Any]:
    return {
        "id": base64.b64encode(f"User:{username}".encode()).decode(),
        "name": username,
        "username": username,
        "email": f"{username}@example.com",
        "admin": False,
        "deletedAt": None,
        "entity": username,
        "flags": "{}",
        "apiKeys": {"edges": []},
        "teams": {"edges": [{"node": {"id": t, "name": t}} for t in teams or []]},
    }


class RunNode:
    def __init__(self, run: Run) -> None:
        self.run = run

    def _raw(self, field: str, value: Any) -> str:
        return self.run.raw_fields.get(field) or wire_json(value)

    def id(self, info) -> str:
        r = self.run
        return base64.b64encode(f"Run:v1:{r.name}:{r.project}:{r.entity}".encode()).decode()

    def name(self, info) -> str:
        return self.run.name

    def displayName(self, info) -> str:
        return self.run.display_name

    def projectId(self, info) -> str:
        return str(info.context["store"].project(self.run.entity, self.run.project).internal_id)

    def state(self, info) -> str:
        return self.run.state

    def createdAt(self, info) -> str:
        return wandb_time(self.run.created_at)

    def heartbeatAt(self, info) -> str:
        return wandb_time(self.run.heartbeat_at)

    def updatedAt(self, info) -> str:
        return wandb_time(self.run.updated_at)

    def tags(self, info) -> list[str]:
        return self.run.tags

    def group(self, info):
        return self.run.group

    def jobType(self, info):
        return self.run.job_type

    def sweepName(self, info):
        return self.run.sweep_name

    def commit(self, info):
        return self.run.commit

    def notes(self, info):
        return self.run.notes

    def description(self, info):
        return self.run.description

    def readOnly(self, info) -> bool:
        return False

    def historyLineCount(self, info) -> int:
        return len(self.run.history)

    def user(self, info) -> dict[str, Any]:
        return user_node(self.run.username)

    def config(self, info) -> str:
        return self._raw("config", self.run.config)

    def summaryMetrics(self, info) -> str:
        return self._raw("summaryMetrics", self.run.summary)

    def systemMetrics(self, info) -> str:
        return self._raw("systemMetrics", self.run.system_metrics)

    def historyKeys(self, info) -> dict[str, Any]:
        return history_keys(self.run)

    def history(self, info, samples=None, minStep=None, maxStep=None) -> list[str]:
        if minStep is None and maxStep is None:
            rows = evenly_sampled(self.run.history, 500 if samples is None else samples)
        else:
            # Step windows serve what is not exported yet (the client merges them with parquet).
            steps, encoded = encoded_history(self.run, len(self.run.history))
            low = max(minStep if minStep is not None else -math.inf, self.run.exported_before_step)
            first = bisect.bisect_left(steps, low)
            last = len(steps) if maxStep is None else bisect.bisect_left(steps, maxStep)
            if samples is not None:
                last = min(last, first + max(samples, 0))
            raw = self.run.raw_history_rows
            return [raw.get(steps[i]) or encoded[i] for i in range(first, last)]
        raw = self.run.raw_history_rows
        return [raw.get(row["_step"]) or wire_json(row) for row in rows]

    def events(self, info, samples=None) -> list[str]:
        rows = evenly_sampled(self.run.events, 500 if samples is None else samples)
        return [wire_json(row) for row in rows]

    def sampledHistory(self, info, specs) -> list[list[dict[str, Any]]]:
        results = []
        for text in specs:
            try:
                spec = json.loads(text)
            except ValueError as error:
                raise FilterError(f"invalid spec {text!r}") from error
            keys = list(dict.fromkeys(spec.get("keys") or []))
            windowed = "minStep" in spec or "maxStep" in spec
            source = (
                self.run.live_rows
                if windowed and self.run.exported_before_step
                else self.run.history
            )
            low = spec.get("minStep", -math.inf)
            high = spec.get("maxStep", math.inf)  # inclusive here, unlike history()
            rows = [
                {key: row[key] for key in keys}
                for row in source
                if low <= row["_step"] <= high and all(key in row for key in keys)
            ]
            results.append(strict(evenly_sampled(rows, spec.get("samples"))))
        return results

    def parquetHistory(self, info, liveKeys) -> dict[str, Any]:
        run = self.run
        base = info.context["base_url"]
        urls = []
        if run.exported_before_step:
            token = info.context["file_token"]
            for index in range(len(parquet_files(run))):
                urls.append(
                    f"{base}/_files/history/{run.entity}/{run.project}/{run.name}/"
                    f"{index}.parquet?token={token}"
                )
        live = [{key: row[key] for key in liveKeys if key in row} for row in run.live_rows]
        return {"parquetUrls": urls, "liveData": strict(live) or None}

    def outputArtifacts(self, info, after=None, first=None) -> dict[str, Any]:
        return artifacts_page(self.run.logged_artifacts, first, after)

    def inputArtifacts(self, info, after=None, first=None) -> dict[str, Any]:
        return artifacts_page(self.run.used_artifacts, first, after)


class ProjectNode:
    def __init__(self, project: Project) -> None:
        self.project = project

    def id(self, info) -> str:
        p = self.project
        return base64.b64encode(f"Project:{p.internal_id}".encode()).decode()

    def internalId(self, info) -> str:
        return str(self.project.internal_id)

    def name(self, info) -> str:
        return self.project.name

    def entityName(self, info) -> str:
        return self.project.entity

    def createdAt(self, info) -> str:
        return wandb_time(self.project.created_at)

    def isBenchmark(self, info) -> bool:
        return False

    def readOnly(self, info) -> bool:
        return False

    def user(self, info) -> dict[str, Any]:
        return user_node(self.project.entity)

    def runCount(self, info, filters=None) -> int:
        runs, _, _ = select_runs(self.project, _filters(filters, info), None)
        return len(runs)

    def runs(self, info, filters=None, order=None, first=None, after=None) -> dict[str, Any]:
        runs, key, descending = select_runs(self.project, _filters(filters, info), order)
        remaining = page_after(runs, key, descending, after)
        first = 50 if first is None else first
        if first < 0:
            raise FilterError("first must not be negative")
        page = remaining[:first]
        edges = [{"cursor": encode_cursor(key(run)), "node": RunNode(run)} for run in page]
        return {
            "edges": edges,
            "pageInfo": {
                "startCursor": edges[0]["cursor"] if edges else None,
                "endCursor": edges[-1]["cursor"] if edges else None,
                "hasNextPage": len(remaining) > len(page),
                "hasPreviousPage": bool(after),
            },
        }

    def run(self, info, name) -> RunNode | None:
        run = self.project.runs.get(name)
        return RunNode(run) if run else None

    def entity(self, info) -> dict[str, str]:
        return {
            "id": base64.b64encode(f"Entity:{self.project.entity}".encode()).decode(),
            "name": self.project.entity,
        }

    def totalSweeps(self, info) -> int:
        return total_sweeps(self.project)

    def sweeps(self, info, filters=None, first=None, after=None) -> dict[str, Any]:
        return sweeps_page(self.project, filters, first, after)

    def sweep(self, info, sweepName) -> SweepNode | None:
        return sweep_node(self.project, sweepName)


def _filters(text: str | None, info) -> dict[str, Any]:
    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError as error:
        raise FilterError(f"filters is not valid JSON: {text!r}") from error
    if not isinstance(value, dict):
        raise FilterError("filters must be a JSON object")
    return screen_updated_at(value, info.context["store"].updated_at_filter)


class Root(Writes):
    def viewer(self, info) -> dict[str, Any] | None:
        username = info.context["username"]
        store: Store = info.context["store"]
        teams = sorted({e for (e, _) in store.projects if e != username})
        return user_node(username, teams)

    def models(self, info, entityName=None, after=None, first=None, order=None):
        store: Store = info.context["store"]
        projects = store.entity_projects(entityName or info.context["username"])
        start = int(base64.b64decode(after).decode().split(":")[1]) + 1 if after else 0
        first = 50 if first is None else first
        page = projects[start : start + first]
        edges = [
            {
                "cursor": base64.b64encode(f"project:{start + i}".encode()).decode(),
                "node": ProjectNode(p),
            }
            for i, p in enumerate(page)
        ]
        return {
            "edges": edges,
            "pageInfo": {
                "startCursor": edges[0]["cursor"] if edges else None,
                "endCursor": edges[-1]["cursor"] if edges else None,
                "hasNextPage": start + first < len(projects),
                "hasPreviousPage": start > 0,
            },
        }

    def project(self, info, name=None, entityName=None) -> ProjectNode | None:
        store: Store = info.context["store"]
        found = store.project(entityName or info.context["username"], name or "")
        return ProjectNode(found) if found else None

    def serverInfo(self, info) -> dict[str, Any]:
        return {"features": [{"name": name, "isEnabled": True} for name in SERVER_FEATURES]}
