"""tap-wandb against the official client (wandb 0.31.0) on the same emulator, in one run.

    .venv/bin/python bench/run.py [--quick] [--results bench/RESULTS.md]
    .venv/bin/python bench/run.py --scale-50k    (only 50,000 runs vs 5,000: minutes, not in CI)

Every figure is measured here and printed as a ratio to a baseline measured in the same run.
The emulator runs in its own process, so the tap and the client do not share its CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from bench.launch import read_report, start  # noqa: E402
from tap_wandb.emulator import DEMO_API_KEY, DEMO_USER, bench_store  # noqa: E402

PROJECT = f"{DEMO_USER}/bench"
# (label, share of each run exported to parquet, share of rows with a NaN/Infinity value)
HISTORY_MIXES = (
    ("80% exported, no NaN", 0.8, 0.0),
    ("30% exported (70% live), 15% of rows NaN/Infinity", 0.3, 0.15),
    ("all exported, 15% of rows NaN/Infinity", 1.0, 0.15),
)
E2E_SECTION = "\n## End to end"


@contextmanager
def serve(runs: int, steps: int, exported_share: float = 0.0, nan_share: float = 0.0):
    """An emulator with ``runs`` uniform runs of ``steps`` steps, in a separate process."""
    with tempfile.TemporaryDirectory() as tmp:
        url_file = Path(tmp, "url")
        process = subprocess.Popen(
            [sys.executable, "-m", "tap_wandb.emulator", "--bench", f"{runs}x{steps}",
             "--exported-share", str(exported_share), "--nan-share", str(nan_share),
             "--url-file", str(url_file)],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 300
            while not url_file.exists() or not url_file.read_text():
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError("benchmark emulator did not start")
                time.sleep(0.05)
            yield url_file.read_text()
        finally:
            process.terminate()
            process.wait(timeout=30)


def control(url: str, path: str, body: dict | None = None) -> dict:
    request = urllib.request.Request(
        url + path, data=json.dumps(body or {}).encode() if body is not None else None
    )
    with urllib.request.urlopen(request) as response:
        return json.load(response)


def requests_served(url: str) -> int:
    return control(url, "/_emulator/stats")["total"]


def run_child(command: list[str], env: dict[str, str] | None = None, stdout=None):
    """Run a command; return (seconds, peak RSS in MB, stdout text or None)."""
    started = time.perf_counter()
    process = subprocess.Popen(
        command, stdout=stdout or subprocess.PIPE, env={**os.environ, **(env or {})}
    )
    output = process.stdout.read() if stdout is None else None
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    if status != 0:
        raise RuntimeError(f"{command[:3]} failed with status {status}")
    return seconds, usage.ru_maxrss / 1024, output


def catalog_for(url: str, streams: set[str], tmp: str) -> str:
    config = tap_config(url, tmp)
    raw = subprocess.run(
        [sys.executable, "-m", "tap_wandb.tap", "--config", config, "--discover"],
        capture_output=True, check=True, text=True,
    ).stdout  # fmt: skip
    catalog = json.loads(raw)
    for entry in catalog["streams"]:
        for item in entry["metadata"]:
            if item["breadcrumb"] == []:
                item["metadata"]["selected"] = entry["tap_stream_id"] in streams
    path = Path(tmp, "catalog.json")
    path.write_text(json.dumps(catalog))
    return str(path)


def tap_config(url: str, tmp: str, **extra) -> str:
    path = Path(tmp, "config.json")
    config = {"api_key": DEMO_API_KEY, "base_url": url, "entity": DEMO_USER,
              "projects": ["bench"], **extra}  # fmt: skip
    path.write_text(json.dumps(config))
    return str(path)


def tap_sync(url: str, streams: set[str], **extra) -> dict:
    """Run the tap CLI; count records per stream as its output arrives (through a pipe).

    ``history_rate``: history rows per second between the first and the last piece of
    output holding history records (the tap's start-up and discovery left out);
    ``rss_mb``: peak RSS; ``rss_at``: (runs written so far, RSS in MB) sampled over the sync;
    ``cpu``: the tap's user + system seconds.
    """
    with tempfile.TemporaryDirectory() as tmp:
        catalog = catalog_for(url, streams, tmp)
        config = tap_config(url, tmp, **extra)
        command = [sys.executable, "-m", "tap_wandb.tap", "--config", config, "--catalog", catalog]
        report = Path(tmp, "rusage")
        started = time.perf_counter()
        process = start(command, report, stdout=subprocess.PIPE)
        counts = dict.fromkeys(streams, 0)
        marks = {name: b'{"type":"RECORD","stream":"%s"' % name.encode() for name in streams}
        history_times: list[tuple[float, int]] = []  # (when, history rows up to that piece)
        rss_at: list[tuple[int, float]] = []
        rest = b""
        while piece := process.stdout.read1(1 << 20):
            lines, _, rest = (rest + piece).rpartition(b"\n")
            for name, mark in marks.items():
                counts[name] += lines.count(mark)
            if "history" in marks and marks["history"] in lines:
                history_times.append((time.perf_counter(), counts["history"]))
            if not rss_at or time.perf_counter() - rss_at[-1][2] > 0.5:
                rss_at.append((counts.get("runs", 0), _rss_mb(process.pid), time.perf_counter()))
        process.wait()
        seconds = time.perf_counter() - started
        status, rss_mb, cpu = read_report(report)
    if status != 0:
        raise RuntimeError(f"tap failed with status {status}")
    rate = None
    if len(history_times) > 1:
        (first, first_rows), (last, _) = history_times[0], history_times[-1]
        rate = (counts["history"] - first_rows) / (last - first)
    rss_at = [(runs, rss) for runs, rss, _ in rss_at if rss]
    return {"seconds": seconds, "cpu": cpu, "rss_mb": rss_mb, "records": counts,
            "history_rate": rate, "rss_at": rss_at}  # fmt: skip


def _rss_mb(launcher: int) -> float | None:
    """The current RSS of the launcher's child (the tap)."""
    try:
        child = Path(f"/proc/{launcher}/task/{launcher}/children").read_text().split()[0]
        status = Path(f"/proc/{child}/status").read_text()
    except (OSError, IndexError):
        return None
    kb = [line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:")]
    return int(kb[0]) / 1024 if kb else None


def client_env(home: str) -> dict[str, str]:
    env = {"WANDB_ERROR_REPORTING": "false", "WANDB_SILENT": "true",
           "NO_PROXY": "127.0.0.1,localhost"}  # fmt: skip
    for name in ("HOME", "TMPDIR", "WANDB_CACHE_DIR", "WANDB_DIR", "WANDB_CONFIG_DIR",
                 "WANDB_DATA_DIR", "XDG_CACHE_HOME", "XDG_CONFIG_HOME"):  # fmt: skip
        os.makedirs(os.path.join(home, name))
        env[name] = os.path.join(home, name)
    return env


def client_main(mode: str, url: str) -> None:
    """The official client doing what W&B users do (run in a child process)."""
    import wandb

    api = wandb.Api(api_key=DEMO_API_KEY, overrides={"base_url": url, "entity": DEMO_USER},
                    timeout=120)  # fmt: skip
    started = time.perf_counter()
    rows = 0
    if mode == "recipe":  # W&B's documented export recipe: runs, then config and summary
        for run in api.runs(PROJECT):
            rows += bool(dict(run.config)) + bool(run.summary._json_dict)
    else:  # every history row, written as JSON
        first = None
        with open(os.devnull, "w") as sink:
            for run in api.runs(PROJECT, per_page=100):
                for row in run.scan_history():
                    sink.write(json.dumps(row) + "\n")
                    rows += 1
                    first = first or time.perf_counter()
        # Like the tap's history_rate: first to last row, the client's start-up left out.
        rate = (rows - 1) / (time.perf_counter() - first) if rows > 1 else None
        print(json.dumps({"rows": rows, "seconds": time.perf_counter() - started,
                          "history_rate": rate}))  # fmt: skip
        return
    print(json.dumps({"rows": rows, "seconds": time.perf_counter() - started}))


def client_run(mode: str, url: str) -> dict:
    with tempfile.TemporaryDirectory(prefix="wandb-bench-") as home:
        seconds, rss, output = run_child(
            [sys.executable, __file__, "--client", mode, url], env=client_env(home)
        )
    return {**json.loads(output), "wall": seconds, "rss_mb": rss}


def orjson_rows_per_second(
    runs: int, steps: int, exported_share: float, nan_share: float = 0.0
) -> tuple[float, float]:
    """The practical ceiling: orjson.dumps of each row as a Singer RECORD, to /dev/null; rows
    per second of wall time and per CPU second."""
    import orjson

    store = bench_store(runs, steps, exported_share=exported_share, nan_share=nan_share)
    rows = [row for run in store.all_runs() for row in run.history]
    started, cpu = time.perf_counter(), time.process_time()
    with open(os.devnull, "wb") as sink:
        for row in rows:
            record = {"entity": DEMO_USER, "project": "bench", "run_id": "r", "step": row["_step"],
                      "metrics": row}  # fmt: skip
            message = {"type": "RECORD", "stream": "history", "record": record}
            sink.write(orjson.dumps(message, option=orjson.OPT_APPEND_NEWLINE))
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    return len(rows) / wall, len(rows) / cpu


def measure_scaling(report: Callable[..., None], *counts: int) -> None:
    """Wall time of a sync of many runs (20 steps each, all streams) against one of fewer
    runs; memory should not grow with runs (peak RSS of both, RSS sampled along the larger)."""
    syncs = {}
    for count in counts:
        with serve(count, 20) as url:
            syncs[count] = tap_sync(url, {"runs", "configs", "summaries", "history"},
                                    page_size=500)  # fmt: skip
        assert syncs[count]["records"]["runs"] == count
    small, large = counts
    walls = {count: sync["seconds"] for count, sync in syncs.items()}
    report(f"wall time, {large} runs / {small} runs",
           f"{walls[large]:.1f} s", f"{walls[small]:.1f} s",
           f"{walls[large] / walls[small]:.1f}", "<= 10")  # fmt: skip
    report(f"peak RSS, {large} runs (vs {small} runs)",
           f"{syncs[large]['rss_mb']:.0f} MB", f"{syncs[small]['rss_mb']:.0f} MB",
           f"{syncs[large]['rss_mb'] / syncs[small]['rss_mb']:.2f}", "flat")  # fmt: skip
    samples = syncs[large]["rss_at"]
    quarter = next((s for s in samples if s[0] >= large // 4), samples[-1])
    report(f"RSS along the {large}-run sync, at the last sample vs at {quarter[0]} runs",
           f"{samples[-1][1]:.0f} MB ({samples[-1][0]} runs)", f"{quarter[1]:.0f} MB",
           f"{samples[-1][1] / quarter[1]:.2f}", "flat")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="smaller datasets (a smoke run)")
    parser.add_argument("--results", help="also write the results table (markdown) here")
    parser.add_argument("--client", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument(
        "--scale-50k",
        action="store_true",
        help="only the scaling measure, 50,000 runs against 5,000 (minutes; not part of CI)",
    )
    args = parser.parse_args()
    if args.client:
        return client_main(*args.client)

    scale = 10 if args.quick else 1
    load_at_start = os.getloadavg()[0]
    lines = []

    def report(measure: str, tap: str, baseline: str, ratio: str, target: str) -> None:
        line = f"| {measure} | {tap} | {baseline} | {ratio} | {target} |"
        lines.append(line)
        print(line, flush=True)

    print("| measure | tap-wandb | baseline | ratio | target |")
    print("|---|---:|---:|---:|---:|")
    if args.scale_50k:  # only this (minutes); not written to the results file
        return measure_scaling(report, 5000 // scale, 50_000 // scale)

    # 1. Requests for runs + configs + summaries of 300 runs.
    with serve(300, 10) as url:
        control(url, "/_emulator/stats/reset", {})
        client = client_run("recipe", url)
        client_requests = requests_served(url)
        control(url, "/_emulator/stats/reset", {})
        tap = tap_sync(url, {"runs", "configs", "summaries"}, page_size=100)
        tap_requests = requests_served(url)
    assert tap["records"]["runs"] == 300
    report("requests, 300 runs + configs + summaries (vs client recipe)",
           f"{tap_requests}", f"{client_requests}",
           f"{client_requests / tap_requests:.1f}x fewer", ">= 20x fewer")  # fmt: skip

    # 2./3. Full history throughput on three mixes: W&B exports most of a finished run to
    # parquet; a live or resumed run is mostly live rows; diverging runs log NaN/Infinity.
    runs, steps = 20 // (2 if args.quick else 1), 10_000 // scale
    for label, share, nan_share in HISTORY_MIXES:
        with serve(runs, steps, share, nan_share) as url:
            client = client_run("scan", url)
            tap = tap_sync(url, {"runs", "history"})
            runs_only = tap_sync(url, {"runs"})  # the tap's CPU for all but history
        tap_rows = tap["records"]["history"]
        assert tap_rows == client["rows"] == runs * steps, (tap_rows, client["rows"])
        mix = f"{runs} runs x {steps} steps, {label}"
        tap_rate, client_rate = tap["history_rate"], client["history_rate"]
        report(f"history rows/s over the history phase, {mix} (vs client scan_history)",
               f"{tap_rate:,.0f}", f"{client_rate:,.0f}", f"{tap_rate / client_rate:.2f}x",
               ">= 3x")  # fmt: skip
        tap_wall, client_wall = tap_rows / tap["seconds"], client["rows"] / client["wall"]
        report("  same, whole process (start-up, imports and discovery included)",
               f"{tap_wall:,.0f}", f"{client_wall:,.0f}", f"{tap_wall / client_wall:.2f}x",
               "")  # fmt: skip
        ceiling, ceiling_cpu = orjson_rows_per_second(runs, steps, share, nan_share)
        report("  history phase vs a bare orjson.dumps loop over the same rows in memory",
               f"{tap_rate:,.0f}", f"{ceiling:,.0f}", f"{tap_rate / ceiling:.2f}x",
               ">= 0.25x")  # fmt: skip
        # Per CPU second, steadier than wall time on a shared machine: the tap's CPU less that
        # of the same sync without history (start-up, discovery, runs), the emulator's apart.
        tap_cpu_rate = tap_rows / (tap["cpu"] - runs_only["cpu"])
        report("  same, rows per CPU second (tap: CPU of the sync less a runs-only sync)",
               f"{tap_cpu_rate:,.0f}", f"{ceiling_cpu:,.0f}",
               f"{tap_cpu_rate / ceiling_cpu:.2f}x", "")  # fmt: skip

    # 4. Scaling: 5,000 runs against 500 runs of the same shape, all streams.
    measure_scaling(report, 500 // scale, 5000 // scale)

    # 5. Peak memory for one run with 200,000 history steps.
    with serve(1, 200_000 // scale, 0.8) as url:
        tap = tap_sync(url, {"runs", "history"})
    report(f"peak RSS, one run with {200_000 // scale:,} steps", f"{tap['rss_mb']:.0f} MB",
           "", "", "<= 100 MB")  # fmt: skip

    if args.results:
        cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
        models = [
            line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")
        ]
        cpu = models[0] if models else platform.machine()
        header = (
            f"Measured {time.strftime('%Y-%m-%d')} on {cpu} ({platform.machine()}), "
            f"{os.cpu_count()} cores, Python {platform.python_version()}"
            f"{' (--quick)' if args.quick else ''}; load average {load_at_start:.1f} at the "
            f"start, {os.getloadavg()[0]:.1f} at the end (the machine is shared: compare the "
            "ratios, each paired within this run).\n\n"
            "| measure | tap-wandb | baseline | ratio | target |\n|---|---:|---:|---:|---:|\n"
        )
        results = Path(args.results)
        # bench/e2e.py keeps its own section in the same file.
        kept = results.read_text().partition(E2E_SECTION)[1:] if results.exists() else ()
        results.write_text(header + "\n".join(lines) + "\n" + "".join(kept))


if __name__ == "__main__":
    main()
