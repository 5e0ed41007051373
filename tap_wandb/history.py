"""History readers: every row of a run (parquet exports + live step windows) or a sample.

A reader yields batches of ``(step, metrics)`` pairs (``history_rows.Batch``), ``metrics``
being the row without ``_step``, with non-finite floats as None. Full reads are exact: each
step at most once, nothing sampled.
"""

from __future__ import annotations

import logging
import math
import queue
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from tap_wandb import queries
from tap_wandb.client import WandbClient, WandbGraphQLError, WandbResponseError
from tap_wandb.history_rows import Batch, text_batch
from tap_wandb.values import step_of

# A history resume point: a finished run resumed since it was synced. The rows it had then are
# in W&B's parquet exports; the ones logged since its resume are live (not yet exported).
FROM_LIVE_ROWS = -1


@dataclass(frozen=True)
class RunRef:
    entity: str
    project: str
    run_id: str

    def __str__(self) -> str:
        return f"{self.entity}/{self.project}/{self.run_id}"

    def variables(self) -> dict[str, str]:
        return {"entity": self.entity, "project": self.project, "run": self.run_id}


@dataclass
class HistoryStats:
    """What reading one run's history cost, for progress logs and benchmarks."""

    rows: int = 0
    parquet_files: int = 0
    windows: int = 0


class HistoryReader:
    """Reads history through one :class:`WandbClient`."""

    def __init__(
        self,
        client: WandbClient,
        *,
        window: int = 1000,
        keys: frozenset[str] | None = None,
        logger: logging.Logger | None = None,
    ) -> None:
        self.client = client
        self.window = window
        self.keys = keys
        self.logger = logger or logging.getLogger("tap-wandb")
        # None until known; False once the server has said it has no parquetHistory field.
        self.server_has_exports: bool | None = None

    # -- full history --------------------------------------------------------------------

    def full(
        self, run: RunRef, first_step: int, last_step: int, stats: HistoryStats | None = None
    ) -> Iterator[Batch]:
        """Every row with ``first_step <= _step <= last_step``, in step order per source;
        ``first_step`` FROM_LIVE_ROWS: the live rows, or every row if none is live."""
        stats = stats or HistoryStats()
        if last_step < first_step:
            return
        exports = self._exports(run)
        if exports is None:
            live_steps: list[int] | None = None
            urls: list[str] = []
        else:
            urls, live_steps = exports
        if first_step == FROM_LIVE_ROWS:
            first_step = live_steps[0] if live_steps else 0
            if not live_steps:
                self.logger.info("history of %s: read again in full (resumed, none live)", run)
        from_files: set[int] = set()
        live_from = live_steps[0] if live_steps else math.inf
        if first_step >= live_from:
            urls = []  # resuming past the exported part: nothing to download again
        for url in urls:
            for batch in self._parquet_rows(run, url, first_step, last_step, stats):
                if live_steps:
                    from_files.update(step for step, _ in batch if step >= live_from)
                yield batch
        if live_steps is None and urls:
            return  # everything is exported
        wanted = [
            s for s in live_steps or () if first_step <= s <= last_step and s not in from_files
        ]
        if live_steps is None:
            windows = self._windows(first_step, last_step)
        else:
            windows = self._windows_over(wanted)
        for low, high in windows:
            batch = [
                (step, metrics)
                for step, metrics in self._window_rows(run, low, high, stats)
                if step not in from_files and first_step <= step <= last_step
            ]
            stats.rows += len(batch)
            yield batch

    def _exports(self, run: RunRef) -> tuple[list[str], list[int] | None] | None:
        """(parquet URLs, live steps) or None when the server has no parquet exports."""
        if self.server_has_exports is False:
            return None
        try:
            data = self.client.graphql(
                queries.PARQUET_HISTORY, run.variables(), what=f"history exports of run {run}"
            )
        except WandbGraphQLError as error:
            if any("parquetHistory" in message for message in error.messages):
                self.logger.info("W&B server has no parquet history exports; paging history")
                self.server_has_exports = False
                return None
            raise
        self.server_has_exports = True
        exports = _run_node(data, run).get("parquetHistory") or {}
        urls = [url for url in exports.get("parquetUrls") or [] if isinstance(url, str)]
        live = exports.get("liveData")
        live_steps = None
        if live:
            live_steps = sorted(
                step
                for step in (step_of(item.get("_step")) for item in live if isinstance(item, dict))
                if step is not None
            )
        return urls, live_steps

    def _windows(self, first_step: int, last_step: int) -> Iterator[tuple[int, int]]:
        for low in range(first_step, last_step + 1, self.window):
            yield low, min(low + self.window, last_step + 1)

    def _windows_over(self, steps: list[int]) -> Iterator[tuple[int, int]]:
        """Step windows that cover the given (sorted) steps, skipping empty gaps."""
        index = 0
        while index < len(steps):
            low = steps[index]
            high = low + self.window
            while index < len(steps) and steps[index] < high:
                index += 1
            yield low, min(high, steps[index - 1] + 1)

    def _window_rows(self, run: RunRef, low: int, high: int, stats: HistoryStats) -> Batch:
        data = self.client.graphql(
            queries.HISTORY_WINDOW,
            {**run.variables(), "minStep": low, "maxStep": high, "samples": high - low},
            what=f"history steps {low}-{high - 1} of run {run}",
        )
        stats.windows += 1
        lines = _run_node(data, run).get("history")
        return text_batch(lines, self.keys, where=f"run {run}", logger=self.logger)

    def _parquet_rows(
        self, run: RunRef, url: str, first_step: int, last_step: int, stats: HistoryStats
    ) -> Iterator[Batch]:
        from tap_wandb import history_parquet  # pyarrow, only for runs with exports

        with tempfile.TemporaryFile() as handle:
            self.client.download(url, handle, what=f"history export of run {run}")
            stats.parquet_files += 1
            handle.seek(0)
            batches = history_parquet.parquet_batches(
                handle, first_step, last_step, self.keys, where=f"run {run}", logger=self.logger
            )
            try:
                for batch in batches:
                    stats.rows += len(batch)
                    yield batch
            except (history_parquet.ArrowError, OSError) as error:
                raise WandbResponseError(
                    f"history export of run {run}: the parquet file W&B served is unreadable "
                    f"({error}); try again, or use history_mode sampled for this project"
                ) from None

    # -- sampled history -----------------------------------------------------------------

    def sampled(
        self, run: RunRef, samples: int, stats: HistoryStats | None = None
    ) -> Iterator[Batch]:
        """W&B's sampled view of the run (like ``run.history(samples=N)``)."""
        stats = stats or HistoryStats()
        data = self.client.graphql(
            queries.SAMPLED_HISTORY,
            {**run.variables(), "samples": samples},
            what=f"sampled history of run {run}",
        )
        stats.windows += 1
        lines = _run_node(data, run).get("history")
        batch = text_batch(lines, self.keys, where=f"run {run}", logger=self.logger)
        stats.rows += len(batch)
        yield batch


def _run_node(data: dict[str, Any], run: RunRef) -> dict[str, Any]:
    project = data.get("project")
    if project is None:
        raise WandbResponseError(f"reading run {run}: project {run.entity}/{run.project} not found")
    node = project.get("run")
    if node is None:
        raise WandbResponseError(f"reading run {run}: the run is gone (deleted during the sync?)")
    return node


class Prefetcher:
    """Reads the history of upcoming runs on worker threads while earlier runs are written.

    Runs are submitted in the order they will be taken; each worker hands the items it reads
    (rows, or for history batches of rows) over in chunks of ``chunk_items`` items through a
    small queue, so memory stays bounded by workers x chunks, and the earliest
    submitted run always has a worker (no deadlock). A run that is skipped, or whose rows stop
    being read, is cancelled, which frees its worker.
    """

    def __init__(self, workers: int, chunk_items: int = 1, queued_chunks: int = 4) -> None:
        self.chunk_items = chunk_items
        self.queued_chunks = queued_chunks
        self._tasks: queue.Queue[_Task] = queue.Queue()
        self._pending: dict[tuple, _Task] = {}  # submitted, not yet taken, in order
        self._stop = threading.Event()
        for _ in range(workers):
            threading.Thread(target=self._work, daemon=True).start()

    def submit(self, key: tuple, read: Callable[[], Iterator[Any]]) -> None:
        task = _Task(read, queue.Queue(maxsize=self.queued_chunks))
        self._pending[key] = task
        self._tasks.put(task)

    def take(self, key: tuple) -> Iterator[Any] | None:
        """The items of a submitted run, or None if it was not submitted."""
        if key not in self._pending:
            return None
        while True:  # runs submitted before this one were skipped: let their workers go
            earlier, task = next(iter(self._pending.items()))
            del self._pending[earlier]
            if earlier == key:
                return self._drain(task)
            task.cancelled.set()

    def close(self) -> None:
        self._stop.set()

    def _drain(self, task: _Task) -> Iterator[Any]:
        try:
            while True:
                chunk = task.results.get()
                if chunk is _DONE:
                    return
                if isinstance(chunk, BaseException):
                    raise chunk
                yield from chunk
        finally:
            task.cancelled.set()  # read to the end, or abandoned half-way

    def _work(self) -> None:
        while not self._stop.is_set():
            task = self._tasks.get()
            try:
                chunk: list[Any] = []
                try:
                    for row in task.read():
                        chunk.append(row)
                        if len(chunk) >= self.chunk_items:
                            self._put(task, chunk)
                            chunk = []
                    self._put(task, chunk)
                    self._put(task, _DONE)
                except _Cancelled:
                    raise
                except Exception as error:  # handed to the consumer, raised there
                    self._put(task, error)
            except _Cancelled:
                continue

    def _put(self, task: _Task, item: Any) -> None:
        while True:
            if task.cancelled.is_set() or self._stop.is_set():
                raise _Cancelled
            try:
                task.results.put(item, timeout=0.2)
                return
            except queue.Full:
                pass


@dataclass
class _Task:
    read: Callable[[], Iterator[Any]]
    results: queue.Queue
    cancelled: threading.Event = field(default_factory=threading.Event)


_DONE = object()


class _Cancelled(Exception):
    pass
