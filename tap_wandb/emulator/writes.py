"""The emulator's writes: the mutations ``wandb.Api`` sends to change past runs, how the server
treats an ``updatedAt`` filter, and resuming a finished run (control endpoints, not W&B).

What the official client (wandb 0.31.0) sends, and so what is served here:
- ``run.update()`` / ``run.save()``: ``upsertBucket(input: {id, description, displayName, notes,
  tags, config, groupName, jobType}) { bucket {...RunFragment} }``, then a summary write;
- ``run.summary.update()``: ``upsertBucket(input: {id, summaryMetrics}) { bucket { id } }``;
- ``run.update_state(state)``: ``updateRunState(input: {id, state}) { success }``;
- ``run.delete(delete_artifacts)``: ``deleteRun(input: {id, deleteArtifacts?})
  { clientMutationId }``.
Every write bumps the run's ``updatedAt`` (an assumption, see wandb-api.md §14).
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import random
from typing import Any
from urllib.parse import unquote

from tap_wandb.emulator.generator import _history
from tap_wandb.emulator.store import FilterError, Run, Store, wandb_time

UPDATED_AT_FILTER_MODES = ("honour", "reject", "ignore")
UPDATED_AT_FIELDS = ("updatedAt", "updated_at")
# The transitions Run.update_state documents as allowed (sweep runs may not change state).
STATE_TRANSITIONS = {
    "pending": {"running", "failed", "crashed", "preempted"},
    "failed": {"pending", "running"},
}
CONTROL_PATHS = ("/_emulator/runs/", "/_emulator/updated-at-filter")


class WriteError(ValueError):
    """A write W&B would refuse."""


def run_by_storage_id(store: Store, storage_id: str | None) -> Run:
    """The run a storage id (GraphQL ``Run.id``: base64 of ``Run:v1:name:project:entity``) names."""
    try:
        kind, version, rest = base64.b64decode(storage_id or "").decode().split(":", 2)
        name, project, entity = rest.rsplit(":", 2)
    except ValueError:
        raise WriteError(f"invalid run id {storage_id!r}") from None
    run = store.run(entity, project, name) if (kind, version) == ("Run", "v1") else None
    if run is None:
        raise WriteError(f"run {storage_id!r} not found")
    return run


def _json_object(text: str, field: str) -> dict[str, Any]:
    try:
        value = json.loads(text)  # W&B's JSONString values may hold bare NaN/Infinity
    except ValueError:
        raise WriteError(f"{field} is not valid JSON") from None
    if not isinstance(value, dict):
        raise WriteError(f"{field} must be a JSON object")
    return value


class Writes:
    """Mutation resolvers, mixed into the API's root value."""

    def upsertBucket(self, info, input: dict[str, Any]) -> dict[str, Any]:
        from tap_wandb.emulator.resolvers import RunNode  # resolvers imports this module

        store: Store = info.context["store"]
        run = run_by_storage_id(store, input.get("id"))
        # A null or absent field leaves the run's value as it is (the client sends them all).
        updates = {
            "description": "description",
            "displayName": "display_name",
            "notes": "notes",
            "tags": "tags",
            "groupName": "group",
            "jobType": "job_type",
        }
        for field, attribute in updates.items():
            if input.get(field) is not None:
                setattr(run, attribute, input[field])
        # The config and summary arrive whole and replace the stored ones.
        if input.get("config") is not None:
            run.config = _json_object(input["config"], "config")
            run.raw_fields.pop("config", None)
        if input.get("summaryMetrics") is not None:
            run.summary = _json_object(input["summaryMetrics"], "summaryMetrics")
            run.raw_fields.pop("summaryMetrics", None)
        store.touch(run)
        return {"bucket": RunNode(run)}

    def updateRunState(self, info, input: dict[str, Any]) -> dict[str, Any]:
        store: Store = info.context["store"]
        run = run_by_storage_id(store, input["id"])
        state = input["state"]
        if run.sweep_name or run.state not in STATE_TRANSITIONS.get(state, ()):
            raise WriteError(
                f"cannot change the state of run {run.name} from {run.state} to {state}"
            )
        run.state = state
        store.touch(run)
        return {"success": True}

    def deleteRun(self, info, input: dict[str, Any]) -> dict[str, Any]:
        store: Store = info.context["store"]
        store.delete_run(run_by_storage_id(store, input["id"]))
        return {"clientMutationId": None}


def screen_updated_at(filters: dict[str, Any], mode: str) -> dict[str, Any]:
    """Apply the store's ``updated_at_filter`` mode to a runs filter.

    ``honour`` keeps it; ``reject`` fails as for an unknown field; ``ignore`` treats every
    ``updatedAt`` condition as true (as a server that does not know the field might).
    """
    if mode not in UPDATED_AT_FILTER_MODES:
        raise ValueError(f"updated_at_filter must be one of {UPDATED_AT_FILTER_MODES}")
    if mode == "honour":
        return filters
    screened = {}
    for key, condition in filters.items():
        if key in UPDATED_AT_FIELDS:
            if mode == "reject":
                raise FilterError(f"unsupported filter field {key!r}")
            continue
        if key in ("$and", "$or", "$nor") and isinstance(condition, list):
            condition = [
                screen_updated_at(part, mode) if isinstance(part, dict) else part
                for part in condition
            ]
        screened[key] = condition
    return screened


# ---------------------------------------------------------------------------------------------
# Resuming a finished run, as ``wandb.init(id=..., resume="must")`` and ``run.log`` would.


def _existing_run(store: Store, entity: str, project: str, name: str) -> Run:
    run = store.run(entity, project, name)
    if run is None:
        raise KeyError(f"no run {entity}/{project}/{name}")
    return run


def resume_run(
    store: Store, entity: str, project: str, name: str, steps: int = 10, seed: int = 0
) -> Run:
    """Set a run running again and log ``steps`` new history rows after its last step.

    The new rows are live (not in parquet exports); the summary follows the logged values, as
    W&B's does; heartbeat and ``updatedAt`` move to now. Call it again to log more.
    """
    with store.lock:
        run = _existing_run(store, entity, project, name)
        first_step = run.last_step + 1 if run.last_step is not None else 0
        start = run.created_at.replace(tzinfo=dt.UTC).timestamp()
        rng = random.Random(seed)
        for row in _history(rng, steps, start, scalar_only=True, first_step=first_step):
            run.log(row)
            run.summary.update(row)
        run.raw_fields.pop("summaryMetrics", None)
        run.state = "running"
        run.heartbeat_at = store.now()
        store.touch(run)
        return run


def finish_run(store: Store, entity: str, project: str, name: str, state: str = "finished") -> Run:
    """End a (resumed) run: its state becomes ``state``; heartbeat and ``updatedAt`` move."""
    with store.lock:
        run = _existing_run(store, entity, project, name)
        run.state = state
        run.heartbeat_at = store.now()
        store.touch(run)
        return run


def control(store: Store, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """``POST /_emulator/runs/<entity>/<project>/<run>/resume`` (``{"steps", "seed"}``) or
    ``.../finish`` (``{"state"}``), and ``POST /_emulator/updated-at-filter`` (``{"mode"}``).
    Returns the HTTP status and JSON answer."""
    parts = [unquote(part) for part in path.split("/")[2:]]
    try:
        if parts == ["updated-at-filter"]:
            mode = body.get("mode")
            if mode not in UPDATED_AT_FILTER_MODES:
                raise ValueError(f"mode must be one of {UPDATED_AT_FILTER_MODES}")
            store.updated_at_filter = mode
            return 200, {"ok": True, "updated_at_filter": mode}
        if len(parts) != 5 or parts[0] != "runs" or parts[4] not in ("resume", "finish"):
            return 404, {"error": "unknown control path"}
        _, entity, project, name, action = parts
        if action == "resume":
            steps, seed = int(body.get("steps", 10)), int(body.get("seed", 0))
            run = resume_run(store, entity, project, name, steps=steps, seed=seed)
        else:
            run = finish_run(store, entity, project, name, state=body.get("state", "finished"))
    except KeyError as error:
        return 404, {"error": str(error.args[0])}
    except (ValueError, TypeError) as error:
        return 400, {"error": str(error)}
    answer = {
        "state": run.state,
        "lastStep": run.last_step,
        "updatedAt": wandb_time(run.updated_at),
    }
    return 200, {"ok": True, "run": answer}
