"""A project's runs bookmark: what the next sync must read, and where each run resumes.

One :class:`RunsState` per project partition of the ``runs`` stream owns that partition's
state: it loads it (today's format and the one before), builds the server-side filter,
decides which listed runs are already synced, gives each run's child streams their resume
point, and saves itself back. Nothing here talks to W&B.
"""

from __future__ import annotations

import datetime as dt
import typing as t

from tap_wandb.values import TERMINAL_STATES, wandb_filter_time

STATE_VERSION = 2


class StateError(ValueError):
    """A state this version of tap-wandb cannot resume from."""


class RunsState:
    """The runs bookmark of one project, kept in its state partition (a dict, saved in place).

    - ``created_bookmark``: the newest ``created_at`` synced; runs created since are new.
    - ``at_created_bookmark``: runs already synced that were created in that very second (W&B
      times have second resolution, so the next sync lists them again and skips them).
    - ``unfinished``: runs not yet in a terminal state, each with the last history step
      emitted, so they are read again (history resuming after that step) until they end.
    """

    def __init__(self, partition: dict[str, t.Any]) -> None:
        self._partition = partition
        version = partition.get("state_version", 1)
        if not isinstance(version, int) or version > STATE_VERSION:
            raise StateError(
                f"the runs state was written by a newer tap-wandb (state_version {version!r}); "
                "upgrade tap-wandb, or clear the state to sync from the start"
            )
        if version == 1:
            # The first release: the SDK's bookmark keys, and {run: last history step}.
            self.created_bookmark: str | None = partition.get("replication_key_value")
            self.at_created_bookmark = set(partition.get("runs_at_bookmark") or ())
            unfinished = {
                run_id: {"history": step}
                for run_id, step in (partition.get("unfinished_runs") or {}).items()
            }
        else:
            self.created_bookmark = partition.get("created_bookmark")
            self.at_created_bookmark = set(partition.get("runs_at_created_bookmark") or ())
            unfinished = partition.get("unfinished") or {}
        self.unfinished: dict[str, dict[str, int]] = {
            run_id: dict(entry) for run_id, entry in unfinished.items()
        }

    def server_filter(
        self, user_filters: dict[str, t.Any], start_date: dt.datetime | None
    ) -> dict[str, t.Any]:
        """The W&B run filter for this sync: the user's, from start_date, and only runs that
        are new since the bookmark or still unfinished."""
        clauses: list[dict[str, t.Any]] = []
        if user_filters:
            clauses.append(user_filters)
        if start_date:
            clauses.append({"createdAt": {"$gte": wandb_filter_time(start_date)}})
        if self.created_bookmark:
            bookmark = dt.datetime.fromisoformat(self.created_bookmark)
            since: dict[str, t.Any] = {"createdAt": {"$gte": wandb_filter_time(bookmark)}}
            if self.unfinished:
                since = {"$or": [since, {"name": {"$in": sorted(self.unfinished)}}]}
            clauses.append(since)
        if len(clauses) > 1:
            return {"$and": clauses}
        return clauses[0] if clauses else {}

    def already_synced(self, run_id: str, created_at: str | None) -> bool:
        """Whether a listed run is finished and was fully synced by an earlier sync."""
        return (
            created_at == self.created_bookmark
            and run_id in self.at_created_bookmark
            and run_id not in self.unfinished
        )

    def history_from(self, run_id: str) -> int:
        """The first history step still to read: after the last one emitted while the run was
        unfinished, else the start."""
        entry = self.unfinished.get(run_id)
        return entry["history"] + 1 if entry else 0

    def child_context(self, record: dict[str, t.Any]) -> dict[str, t.Any]:
        """The context of a run's child streams: its key and where its history resumes."""
        last_step = record["history_last_step"]
        return {
            "entity": record["entity"],
            "project": record["project"],
            "run_id": record["run_id"],
            "first_step": self.history_from(record["run_id"]),
            "last_step": last_step if last_step is not None else -1,
        }

    def run_synced(self, record: dict[str, t.Any], history_through: int | None) -> None:
        """Note a run emitted with its children; ``history_through`` is the last history step
        emitted for it (None: history was not read, the resume point stays)."""
        run_id, created_at = record["run_id"], record["created_at"]
        if record["state"] in TERMINAL_STATES:
            self.unfinished.pop(run_id, None)
        else:
            through = (
                history_through if history_through is not None else self.history_from(run_id) - 1
            )
            self.unfinished[run_id] = {"history": through}
        if created_at is None:
            return
        if self.created_bookmark is None or created_at > self.created_bookmark:
            # Never moves back for a re-read older run.
            self.created_bookmark, self.at_created_bookmark = created_at, {run_id}
        elif created_at == self.created_bookmark:
            self.at_created_bookmark.add(run_id)

    def forget(self, run_ids: t.Iterable[str]) -> None:
        """Stop following runs W&B no longer lists (deleted, or filtered out)."""
        for run_id in run_ids:
            self.unfinished.pop(run_id, None)

    def save(self) -> None:
        """Write this state into its partition, in today's format."""
        partition = self._partition
        for old_key in ("replication_key", "replication_key_value", "runs_at_bookmark",
                        "unfinished_runs"):  # fmt: skip
            partition.pop(old_key, None)
        partition["state_version"] = STATE_VERSION
        if self.created_bookmark is not None:
            partition["created_bookmark"] = self.created_bookmark
            partition["runs_at_created_bookmark"] = sorted(self.at_created_bookmark)
        partition["unfinished"] = dict(sorted(self.unfinished.items()))
