"""Serve a seeded W&B emulator: ``python -m tap_wandb.emulator [--port N] [--runs N]``.

It needs the ``emulator`` extra (``pip install 'tap-wandb[emulator]'``).
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import threading
from pathlib import Path

from tap_wandb.emulator.generator import DEMO_API_KEY, DEMO_USER, bench_store, demo_store
from tap_wandb.emulator.run_history import history_keys, parquet_files, warm_history
from tap_wandb.emulator.server import Emulator


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0: any free)")
    parser.add_argument("--seed", type=int, help="random seed (default: the dataset's own)")
    parser.add_argument("--runs", type=int, default=24, help="runs per demo project")
    parser.add_argument("--big-run-steps", type=int, default=50_000)
    parser.add_argument(
        "--bench", metavar="RUNSxSTEPS", help="serve one uniform project instead, e.g. 500x1000"
    )
    parser.add_argument(
        "--exported-share", type=float, default=0.0, help="with --bench: share in parquet files"
    )
    parser.add_argument(
        "--nan-share", type=float, default=0.0, help="with --bench: share of rows with NaN/Inf"
    )
    parser.add_argument("--url-file", help="also write the URL to this file once serving")
    args = parser.parse_args(argv)

    seed = {} if args.seed is None else {"seed": args.seed}
    if args.bench:
        runs, steps = (int(part) for part in args.bench.lower().split("x"))
        store = bench_store(
            runs, steps, exported_share=args.exported_share, nan_share=args.nan_share, **seed
        )
        # Build exports and encoded rows now, so that no reader pays for the first request.
        for run in store.all_runs():
            history_keys(run)
            parquet_files(run)
            warm_history(run)
    else:
        store = demo_store(runs_per_project=args.runs, big_run_steps=args.big_run_steps, **seed)
    # Handle SIGTERM before announcing the URL: a caller may stop us as soon as it reads it.
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    emulator = Emulator(store, port=args.port).start()
    print(f"W&B emulator serving at {emulator.url}", flush=True)
    print(f"  entity: {DEMO_USER}   api key: {DEMO_API_KEY}", flush=True)
    if args.url_file:  # written whole (rename), so a reader never sees half a URL
        partial = Path(args.url_file).with_suffix(".partial")
        partial.write_text(emulator.url)
        partial.replace(args.url_file)
    with contextlib.suppress(KeyboardInterrupt):
        stop.wait()
    emulator.stop()
    sys.exit(0)


if __name__ == "__main__":
    main()
