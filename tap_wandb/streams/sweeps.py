"""sweeps: every sweep of each synced project, re-listed whole each sync (one request per 50
sweeps of a project). A sweep's runs are in ``runs``, by ``sweep_name``."""

from __future__ import annotations

import base64
import datetime as dt
import json
import logging
import typing as t
from textwrap import dedent

import yaml
from singer_sdk import typing as th
from typing_extensions import override

from tap_wandb.client import WandbResponseError
from tap_wandb.streams.base import BLOB, WandbStream
from tap_wandb.values import finite, rfc3339

if t.TYPE_CHECKING:
    from singer_sdk.helpers.types import Context

# The client's GetSweeps listing, with the fields of its SweepFragment (which its per-sweep
# GetSweep also reads, so the listing alone has everything). `filters` is left out, as the
# client does on servers without SWEEPS_QUERY_FILTERING; edges carry no cursor.
SWEEPS = dedent("""
    query Sweeps($entity: String!, $project: String!, $first: Int, $after: String) {
      project(name: $project, entityName: $entity) {
        sweeps(first: $first, after: $after) {
          edges {
            node {
              id
              name
              displayName
              method
              state
              description
              bestLoss
              config
              createdAt
              updatedAt
              runCount
              runCountExpected
            }
          }
          pageInfo {
            endCursor
            hasNextPage
          }
        }
      }
    }
""")
# The client's page size for sweeps.
SWEEPS_PAGE_SIZE = 50


class SweepsStream(WandbStream):
    """The sweeps of every synced project, oldest first as W&B lists them."""

    name = "sweeps"
    primary_keys = ("entity", "project", "sweep_id")
    # A full listing each sync: nothing to bookmark, so no state per project either.
    state_partitioning_keys: t.ClassVar[list[str]] = []
    schema = th.PropertiesList(
        th.Property(
            "entity", th.StringType, required=True, description="W&B entity (user or team)"
        ),
        th.Property("project", th.StringType, required=True, description="W&B project name"),
        th.Property(
            "sweep_id",
            th.StringType,
            required=True,
            description="The sweep's id as in its URL (its GraphQL name); runs.sweep_name",
        ),
        th.Property("storage_id", th.StringType, description="W&B's global sweep ID"),
        th.Property("display_name", th.StringType, description="The sweep's name in the W&B UI"),
        th.Property("method", th.StringType, description="grid, random, bayes…"),
        th.Property("state", th.StringType, description="PENDING, RUNNING, PAUSED, FINISHED…"),
        th.Property("description", th.StringType),
        th.Property(
            "best_loss", th.NumberType, description="Best value of the sweep's metric (NaN: null)"
        ),
        th.Property(
            "config",
            BLOB,
            description="The sweep configuration, its YAML parsed as the client's sweep.config",
        ),
        th.Property(
            "config_text",
            th.StringType,
            description="The configuration's text, only when it is not a YAML mapping",
        ),
        th.Property("created_at", th.DateTimeType, description="Sweep creation time, UTC"),
        th.Property("updated_at", th.DateTimeType, description="When W&B last changed it, UTC"),
        th.Property("run_count", th.IntegerType, description="Runs of the sweep"),
        th.Property(
            "run_count_expected", th.IntegerType, description="Runs planned (null: no limit)"
        ),
    ).to_dict()

    @property
    def partitions(self) -> list[dict[str, str]]:
        return [{"entity": e, "project": p} for e, p in self.wandb.project_paths]

    @override
    def get_records(self, context: Context | None) -> t.Iterable[dict[str, t.Any]]:
        assert context is not None
        entity, project = context["entity"], context["project"]
        pages = self.wandb.client.pages(
            SWEEPS,
            {"entity": entity, "project": project, "first": SWEEPS_PAGE_SIZE},
            connection=lambda data: (data.get("project") or {}).get("sweeps"),
            what=f"sweeps of {entity}/{project}",
        )
        for data in pages:
            found = data.get("project")
            if found is None:
                raise WandbResponseError(
                    f"project {entity}/{project} not found on {self.wandb.client.base_url}: check "
                    "the projects and entity settings, and that the API key can see it"
                )
            for edge in (found.get("sweeps") or {}).get("edges") or []:
                if edge.get("node"):
                    yield sweep_record(edge["node"], entity, project, self.logger)
        self.wandb.message_writer.flush()  # out with each project, as the runs are


def sweep_record(
    node: dict[str, t.Any], entity: str, project: str, logger: logging.Logger
) -> dict[str, t.Any]:
    where = f"sweep {entity}/{project}/{node['name']}"
    config, config_text = sweep_config(node.get("config"), where=where, logger=logger)
    return {
        "entity": entity,
        "project": project,
        "sweep_id": node["name"],
        "storage_id": node.get("id"),
        "display_name": node.get("displayName"),
        "method": node.get("method"),
        "state": node.get("state"),
        "description": node.get("description"),
        "best_loss": finite(node.get("bestLoss")),
        "config": config,
        "config_text": config_text,
        "created_at": rfc3339(node.get("createdAt")),
        "updated_at": rfc3339(node.get("updatedAt")),
        "run_count": node.get("runCount"),
        "run_count_expected": node.get("runCountExpected"),
    }


def sweep_config(
    text: str | None, *, where: str, logger: logging.Logger
) -> tuple[dict[str, t.Any] | None, str | None]:
    """(config, text): the YAML read as the official client reads it (PyYAML's safe_load, so
    ``1e-5`` stays a string), made JSON-ready and finite; or (None, the text) with a warning
    naming ``where`` when it is not a YAML mapping that JSON can hold."""
    if not text:
        return None, None
    try:
        value = _json_ready(yaml.safe_load(text))
    except (yaml.YAMLError, TypeError, ValueError, RecursionError) as error:
        problem = f"is not valid YAML ({' '.join(str(error).split())[:200]})"
    else:
        if isinstance(value, dict):
            return value, None
        problem = f"is a YAML {type(value).__name__}, not a mapping"
    logger.warning("%s: config %s; kept as text in config_text", where, problem)
    return None, text


def _json_ready(value: t.Any) -> t.Any:
    """A YAML value as JSON holds it: dates as ISO text, keys as JSON makes them (1 -> "1"),
    NaN/Infinity as null. Raises ValueError for cyclic aliases or too deep nesting, TypeError
    for keys JSON cannot hold (e.g. dates)."""
    return finite(json.loads(json.dumps(value, default=_yaml_scalar, ensure_ascii=False)))


def _yaml_scalar(value: t.Any) -> t.Any:
    """The JSON form of a YAML value json does not know."""
    if isinstance(value, dt.date):  # datetimes included
        return value.isoformat()
    if isinstance(value, bytes):  # !!binary: its base64 text, as written
        return base64.b64encode(value).decode()
    if isinstance(value, set):  # !!set
        return sorted(value, key=str)
    return str(value)
