"""projects: one record per project the sync covers, from the project list the tap reads
anyway (``models``), so the stream costs no request of its own when every project of the
entity is synced."""

from __future__ import annotations

import typing as t
from textwrap import dedent

from singer_sdk import typing as th
from typing_extensions import override

from tap_wandb import queries
from tap_wandb.streams.base import WandbStream
from tap_wandb.values import rfc3339

if t.TYPE_CHECKING:
    from singer_sdk.helpers.types import Context

    from tap_wandb.client import WandbClient

# Projects per request: the models connection pages like the runs one.
PROJECTS_PAGE_SIZE = 100

# One project that the entity's list did not show (the fields of the client's GetProject).
PROJECT = dedent("""
    query Project($entity: String!, $project: String!) {
      project(name: $project, entityName: $entity) {
        name
        entityName
        id
        createdAt
        isBenchmark
        user {
          username
        }
      }
    }
""")


class ProjectListing:
    """Each entity's project list, read once per sync (one request per 100 projects) and kept:
    the runs need it, and with ``details`` (the projects stream is selected) it also holds
    everything that stream emits."""

    def __init__(self, client: WandbClient, *, details: bool) -> None:
        self.client, self.details = client, details
        self._listed: dict[str, list[dict[str, t.Any]]] = {}

    def __call__(self, entity: str) -> list[dict[str, t.Any]]:
        """Every project node of ``entity``'s list, in W&B's order."""
        if entity not in self._listed:
            pages = self.client.pages(
                queries.PROJECTS,
                {"entity": entity, "first": PROJECTS_PAGE_SIZE, "details": self.details},
                connection=lambda data: data.get("models"),
                what=f"projects of entity {entity}",
            )
            self._listed[entity] = [
                edge["node"]
                for data in pages
                for edge in (data.get("models") or {}).get("edges") or []
                if edge.get("node")
            ]
        return self._listed[entity]


class ProjectsStream(WandbStream):
    """The projects of the entity, or those the ``projects`` setting names. Re-listed whole
    each sync: one request per 100 projects of each entity involved, none at all when the
    runs already listed them."""

    name = "projects"
    primary_keys = ("entity", "project")
    schema = th.PropertiesList(
        th.Property(
            "entity", th.StringType, required=True, description="W&B entity (user or team)"
        ),
        th.Property("project", th.StringType, required=True, description="W&B project name"),
        th.Property("storage_id", th.StringType, description="W&B's global project ID"),
        th.Property("created_at", th.DateTimeType, description="Project creation time, UTC"),
        th.Property("is_benchmark", th.BooleanType, description="Whether it is a W&B benchmark"),
        th.Property("user", th.StringType, description="Username of the project's owner"),
    ).to_dict()

    @override
    def get_records(self, context: Context | None) -> t.Iterable[dict[str, t.Any]]:
        if not self.config.get("projects"):
            yield from map(project_record, self.wandb.project_listing(self.wandb.entity))
        else:
            for entity, project in self.wandb.project_paths:
                node = self._configured(entity, project)
                if node is None:
                    self.logger.warning(
                        "project %s/%s not found on %s; no projects record for it",
                        entity, project, self.wandb.client.base_url,
                    )  # fmt: skip
                else:
                    yield project_record(node)
        # Out now, not only at the end of sync_all: the SDK's dry runs (--test, its standard
        # tests) sync streams without it.
        self.wandb.message_writer.flush()

    def _configured(self, entity: str, project: str) -> dict[str, t.Any] | None:
        """A project the setting names: from its entity's list (read once), else looked up."""
        listed = self.wandb.project_listing(entity)
        found = next((node for node in listed if node.get("name") == project), None)
        if found is not None:
            return found
        data = self.wandb.client.graphql(
            PROJECT, {"entity": entity, "project": project}, what=f"project {entity}/{project}"
        )
        return data.get("project")


def project_record(node: dict[str, t.Any]) -> dict[str, t.Any]:
    return {
        "entity": node["entityName"],
        "project": node["name"],
        "storage_id": node.get("id"),
        "created_at": rfc3339(node.get("createdAt")),
        "is_benchmark": node.get("isBenchmark"),
        "user": (node.get("user") or {}).get("username"),
    }
