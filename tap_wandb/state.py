"""A project's runs bookmark: what the next sync must read, and where each run resumes.

One :class:`RunsState` per project partition of the ``runs`` stream owns that partition's
state: it loads it (today's format and the one before), builds the server-side filter,
decides what each listed run needs (nothing, a first sync, a re-read), gives each run's child
streams their resume point, and saves itself back. Nothing here talks to W&B.
"""

from __future__ import annotations

import datetime as dt
import enum
import typing as t

from tap_wandb.history import FROM_LIVE_ROWS
from tap_wandb.sketch import RunIdSketch
from tap_wandb.values import TERMINAL_STATES, wandb_filter_time

STATE_VERSION = 2
# How far before the newest change seen the next sync looks again, on top of the sync's own
# duration: a run edited while this sync was listing is listed again by the next one.
CHANGE_OVERLAP = dt.timedelta(seconds=60)


class StateError(ValueError):
    """A state this version of tap-wandb cannot resume from."""


class Need(enum.Enum):
    """What a listed run needs in this sync."""

    NOTHING = "nothing"  # synced before and unchanged since
    FIRST_SYNC = "first sync"  # never synced
    UNFINISHED = "unfinished"  # synced while running: read again until it ends
    CHANGED = "changed"  # finished, synced, and changed since (edited or resumed)


class RunsState:
    """The runs bookmark of one project, kept in its state partition (a dict, saved in place).

    - ``created_bookmark``: the newest ``created_at`` synced; runs created since are new.
    - ``at_created_bookmark``: runs already synced that were created in that very second (W&B
      times have second resolution, so the next sync lists them again).
    - ``unfinished``: runs not yet in a terminal state, each with the last history step
      emitted, so they are read again (history resuming after that step) until they end.
    - ``updated_since`` and ``recent``: the next sync lists runs W&B changed (``updatedAt``)
      since then; ``recent`` holds a fingerprint of each run listed in that window, so a run
      listed again unchanged is not emitted again.
    - ``sketch``: the ids of the runs synced, as a small invertible sketch (see
      :mod:`tap_wandb.sketch`), to find the ones W&B deleted; ``deletions_checked_at``.
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
        # A state from before change detection looks for changes since its newest run.
        self.updated_since: str | None = partition.get("updated_since", self.created_bookmark)
        self.recent: dict[str, str] = dict(partition.get("recent") or {})
        sketch = partition.get("sketch")
        self.sketch: RunIdSketch | None = RunIdSketch.from_text(sketch) if sketch else None
        # A first sync: every run it syncs goes into a new sketch, so there is nothing to
        # check it against yet.
        self._first_sync = self.sketch is None and self.created_bookmark is None
        if self._first_sync:
            self.sketch = RunIdSketch()
        self.deletions_checked_at: str | None = partition.get("deletions_checked_at")
        self._listed: dict[str, tuple[str, str]] = {}  # run -> (updated_at, fingerprint)

    def server_filter(
        self, user_filters: dict[str, t.Any], start_date: dt.datetime | None, *, changes: bool
    ) -> dict[str, t.Any]:
        """The W&B run filter for this sync: the user's, from start_date, and only runs that
        are new since the bookmark, still unfinished, or (``changes``) changed since."""
        clauses = _user_clauses(user_filters, start_date)
        if self.created_bookmark:
            alternatives = [{"createdAt": {"$gte": _filter_time(self.created_bookmark)}}]
            if changes and self.updated_since:
                alternatives.append({"updatedAt": {"$gte": _filter_time(self.updated_since)}})
            if self.unfinished:
                alternatives.append({"name": {"$in": sorted(self.unfinished)}})
            clauses.append(alternatives[0] if len(alternatives) == 1 else {"$or": alternatives})
        return _all_of(clauses)

    def need(self, record: dict[str, t.Any], fingerprint: str, *, changes: bool) -> Need:
        """What a listed run needs; ``fingerprint`` sums up what W&B said of it."""
        run_id, created_at = record["run_id"], record["created_at"]
        updated_at = record.get("updated_at")
        if updated_at is not None:
            self._listed[run_id] = (updated_at, fingerprint)
        if run_id in self.unfinished:
            return Need.UNFINISHED
        if self.created_bookmark is None or (
            created_at is not None
            and (
                created_at > self.created_bookmark
                or (created_at == self.created_bookmark and run_id not in self.at_created_bookmark)
            )
        ):
            return Need.FIRST_SYNC
        if not changes or self.recent.get(run_id) == fingerprint:
            return Need.NOTHING
        if self._unchanged_since_window(updated_at):
            return Need.NOTHING  # listed for another reason (or the server ignored the filter)
        return Need.CHANGED

    def listed_before_changes(self, record: dict[str, t.Any]) -> bool:
        """Whether an unchanged run was listed although W&B should have filtered it out: it is
        older than the bookmark and unchanged since the last sync (a server ignoring the
        updatedAt filter lists every run)."""
        updated_at, created_at = record.get("updated_at"), record["created_at"]
        return bool(
            self._unchanged_since_window(updated_at)
            and created_at
            and self.created_bookmark
            and created_at < self.created_bookmark
        )

    def _unchanged_since_window(self, updated_at: str | None) -> bool:
        """Whether W&B last changed a run before the change window this sync lists."""
        return bool(updated_at and self.updated_since and updated_at < self.updated_since)

    def history_from(self, run_id: str) -> int:
        """The first history step still to read: after the last one emitted while the run was
        unfinished, else the start."""
        entry = self.unfinished.get(run_id)
        return entry["history"] + 1 if entry else 0

    def child_context(self, record: dict[str, t.Any], need: Need) -> dict[str, t.Any]:
        """The context of a run's child streams: its key, where its history resumes, and
        whether its system metrics are read now."""
        last_step = record["history_last_step"]
        last_step = last_step if last_step is not None else -1
        resumed = need is Need.CHANGED and self._resumed(record)
        if need is Need.CHANGED:
            # Edited runs have no new rows; resumed ones (alive since the last look) have.
            first_step = FROM_LIVE_ROWS if resumed else last_step + 1
        else:
            first_step = self.history_from(record["run_id"])
        return {
            "entity": record["entity"],
            "project": record["project"],
            "run_id": record["run_id"],
            "first_step": first_step,
            "last_step": last_step,
            # W&B serves a sample of them that changes while the run grows: read it once the
            # run has ended (first synced ended, or ended since it was followed or resumed);
            # an edit alone leaves it as it was.
            "system_metrics": record["state"] in TERMINAL_STATES
            and (need is not Need.CHANGED or resumed),
        }

    def _resumed(self, record: dict[str, t.Any]) -> bool:
        """Whether a changed run logged since it was synced: it runs again, or what W&B says
        of its history moved (the fingerprint's second half), or, for a run last seen before
        the window, its heartbeat is in it."""
        run_id = record["run_id"]
        if record["state"] not in TERMINAL_STATES:
            return True
        listed, seen = self._listed.get(run_id), self.recent.get(run_id)
        if listed and seen:
            return history_part(listed[1]) != history_part(seen)
        heartbeat = record.get("heartbeat_at")
        return bool(heartbeat and self.updated_since and heartbeat >= self.updated_since)

    def run_synced(self, record: dict[str, t.Any], need: Need, history_through: int | None) -> None:
        """Note a run emitted with its children; ``history_through`` is the last history step
        emitted for it (None: history was not read, the resume point stays)."""
        run_id, created_at = record["run_id"], record["created_at"]
        if need is Need.FIRST_SYNC and self.sketch is not None:
            self.sketch.add(run_id)
        if record["state"] in TERMINAL_STATES:
            self.unfinished.pop(run_id, None)
        else:
            if history_through is None:
                history_through = self.history_from(run_id) - 1
            self.unfinished[run_id] = {"history": history_through}
        if created_at is None:
            return
        if self.created_bookmark is None or created_at > self.created_bookmark:
            # Never moves back for a re-read older run.
            self.created_bookmark, self.at_created_bookmark = created_at, {run_id}
        elif created_at == self.created_bookmark:
            self.at_created_bookmark.add(run_id)

    def deletions_due(self, now: dt.datetime, every: dt.timedelta) -> bool:
        """Whether to look for deleted runs now (a first sync counts as a check)."""
        if self._first_sync:
            self.deletions_checked_at = now.isoformat()
            return False
        if self.deletions_checked_at is None:
            return True
        return now - dt.datetime.fromisoformat(self.deletions_checked_at) >= every

    def deleted(self, present: set[str], now: dt.datetime) -> tuple[set[str], bool]:
        """The synced runs W&B no longer lists, given every run it lists now; False if they
        could not be told apart (too many changes for the sketch, or no sketch yet). Either
        way the sketch then holds the runs synced and present."""
        self.deletions_checked_at = now.isoformat()
        if self.sketch is not None:
            found = self.sketch.difference(RunIdSketch.of(present))
            if found is not None:
                gone, _never_synced = found
                for run_id in gone:
                    self.sketch.remove(run_id)
                self.forget(gone)
                return gone, True
        self.sketch = RunIdSketch.of(present)
        return set(), False

    def forget(self, run_ids: t.Iterable[str]) -> None:
        """Stop following runs W&B no longer lists (deleted, or filtered out)."""
        for run_id in run_ids:
            self.unfinished.pop(run_id, None)
            self.recent.pop(run_id, None)

    def sync_done(self, duration: dt.timedelta) -> None:
        """Move the change window forward: the next sync lists runs changed since shortly
        before the newest change seen here, less this sync's duration (edits made while it
        listed count), and skips those listed here unchanged."""
        if not self._listed:
            return
        newest = max(updated for updated, _ in self._listed.values())
        since = dt.datetime.fromisoformat(newest) - duration - CHANGE_OVERLAP
        since = since.isoformat(timespec="seconds")  # the form of record times
        if self.updated_since and self.updated_since > since:
            since = self.updated_since  # never moves back
        self.updated_since = since
        self.recent = {
            run_id: fingerprint
            for run_id, (updated, fingerprint) in sorted(self._listed.items())
            if updated >= since
        }

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
        if self.updated_since is not None:
            partition["updated_since"] = self.updated_since
        partition["recent"] = dict(sorted(self.recent.items()))
        if self.sketch is not None:
            partition["sketch"] = self.sketch.to_text()
        if self.deletions_checked_at is not None:
            partition["deletions_checked_at"] = self.deletions_checked_at


def user_run_filter(
    user_filters: dict[str, t.Any], start_date: dt.datetime | None
) -> dict[str, t.Any]:
    """The W&B run filter of every run the settings select: the user's filter, from
    start_date (what a sync lists before the bookmark narrows it)."""
    return _all_of(_user_clauses(user_filters, start_date))


def _user_clauses(
    user_filters: dict[str, t.Any], start_date: dt.datetime | None
) -> list[dict[str, t.Any]]:
    clauses: list[dict[str, t.Any]] = []
    if user_filters:
        clauses.append(user_filters)
    if start_date:
        clauses.append({"createdAt": {"$gte": wandb_filter_time(start_date)}})
    return clauses


def _all_of(clauses: list[dict[str, t.Any]]) -> dict[str, t.Any]:
    """A filter that every clause must match (one flat ``$and``)."""
    if len(clauses) > 1:
        return {"$and": clauses}
    return clauses[0] if clauses else {}


def history_part(fingerprint: str) -> str:
    """The half of a run's fingerprint that sums up its history (see streams.runs)."""
    return fingerprint[len(fingerprint) // 2 :]


def _filter_time(value: str) -> str:
    return wandb_filter_time(dt.datetime.fromisoformat(value))
