"""Serve a benchmark dataset in its own process: ``serve.py RUNS STEPS EXPORTED_SHARE URL_FILE``."""

import signal
import sys
import threading

from tap_wandb.emulator import Emulator, bench_store
from tap_wandb.emulator.api import history_keys, parquet_files, warm_history

runs, steps, exported_share, url_file = sys.argv[1:5]
store = bench_store(int(runs), int(steps), exported_share=float(exported_share))
# Build exports and encoded rows before serving, so neither reader pays for the first request.
for run in store.all_runs():
    history_keys(run), parquet_files(run), warm_history(run)
emulator = Emulator(store).start()
with open(url_file, "w") as handle:
    handle.write(emulator.url)
stop = threading.Event()
signal.signal(signal.SIGTERM, lambda *_: stop.set())
stop.wait()
emulator.stop()
