"""The history prefetcher: order, bounded memory, errors, and no deadlock on skipped runs."""

from __future__ import annotations

import threading

import pytest

from tap_wandb.history import Prefetcher


def _rows(count: int, fail_at: int | None = None):
    def read():
        for step in range(count):
            if step == fail_at:
                raise ValueError(f"broken at {step}")
            yield step, {"x": step}

    return read


def _run_with_timeout(target, seconds: float = 20) -> None:
    errors: list[BaseException] = []

    def guarded():
        try:
            target()
        except BaseException as error:
            errors.append(error)

    thread = threading.Thread(target=guarded, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), "prefetcher deadlocked"
    if errors:
        raise errors[0]


def test_rows_come_back_complete_and_in_order():
    prefetcher = Prefetcher(workers=3, chunk_items=7, queued_chunks=2)
    for key in range(5):
        prefetcher.submit(("run", key), _rows(100 + key))

    def consume():
        for key in range(5):
            rows = list(prefetcher.take(("run", key)))
            assert rows == [(step, {"x": step}) for step in range(100 + key)]

    _run_with_timeout(consume)
    assert prefetcher.take(("run", 99)) is None
    prefetcher.close()


def test_skipped_and_abandoned_runs_free_their_workers():
    # Two workers; runs 0 and 1 would each block a worker for ever if nobody let them go.
    prefetcher = Prefetcher(workers=2, chunk_items=10, queued_chunks=1)
    for key in range(6):
        prefetcher.submit(key, _rows(100_000))

    def consume():
        rows = prefetcher.take(0)
        assert next(rows) == (0, {"x": 0})
        rows.close()  # abandoned half-way (the SDK's dry run stops a stream like this)
        # run 1 is never taken (e.g. filtered out by a stream map)
        for key in range(2, 6):
            assert sum(1 for _ in prefetcher.take(key)) == 100_000

    _run_with_timeout(consume, seconds=60)
    prefetcher.close()


def test_memory_stays_bounded_by_the_queue():
    # Nobody takes the run: the worker fills the 2 queued chunks, builds a third and must stop.
    # At most the queued chunks, one chunk being built and one waiting to be queued.
    bound = 10 * (2 + 2)
    filled, overran = threading.Event(), threading.Event()

    def read():
        for step in range(10_000):
            if step == 3 * 10 - 1:
                filled.set()
            if step == bound:
                overran.set()
            yield step, {"x": step}

    prefetcher = Prefetcher(workers=1, chunk_items=10, queued_chunks=2)
    prefetcher.submit("run", read)
    assert filled.wait(30), "the worker never read ahead"
    # Time for a worker that ignores the bound to run past it (a slow machine only hides it).
    assert not overran.wait(0.5), "the worker read past the queue's bound"
    rows = prefetcher.take("run")
    assert sum(1 for _ in rows) == 10_000  # and it goes on once rows are taken
    prefetcher.close()


def test_a_reading_error_is_raised_to_the_consumer():
    prefetcher = Prefetcher(workers=2, chunk_items=5)
    prefetcher.submit("bad", _rows(50, fail_at=23))
    prefetcher.submit("good", _rows(10))
    rows = []
    with pytest.raises(ValueError, match="broken at 23"):
        rows.extend(prefetcher.take("bad"))
    assert len(rows) == 20  # the chunks produced before the error arrive first
    assert len(list(prefetcher.take("good"))) == 10
    prefetcher.close()
