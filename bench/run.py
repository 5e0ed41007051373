"""tap-wandb against the official client (wandb 0.31.0) on the same emulator, in one run.

    .venv/bin/python bench/run.py [--quick] [--results bench/RESULTS.md]

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
from contextlib import contextmanager
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from tap_wandb.emulator import DEMO_API_KEY, DEMO_USER, bench_store  # noqa: E402

PROJECT = f"{DEMO_USER}/bench"
E2E_SECTION = "\n## End to end"


@contextmanager
def serve(runs: int, steps: int, exported_share: float = 0.0):
    """An emulator with ``runs`` uniform runs of ``steps`` steps, in a separate process."""
    with tempfile.TemporaryDirectory() as tmp:
        url_file = Path(tmp, "url")
        process = subprocess.Popen(
            [sys.executable, "-m", "tap_wandb.emulator", "--bench", f"{runs}x{steps}",
             "--exported-share", str(exported_share), "--url-file", str(url_file)],
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
    """Run the tap CLI to a file; count records per stream."""
    with tempfile.TemporaryDirectory() as tmp:
        catalog = catalog_for(url, streams, tmp)
        config = tap_config(url, tmp, **extra)
        out_path = Path(tmp, "out.jsonl")
        with open(out_path, "wb") as out:
            seconds, rss, _ = run_child(
                [sys.executable, "-m", "tap_wandb.tap", "--config", config, "--catalog", catalog],
                stdout=out,
            )
        counts: dict[str, int] = {}
        with open(out_path, "rb") as lines:
            for line in lines:
                if line.startswith(b'{"type":"RECORD"'):
                    stream = json.loads(line)["stream"]
                    counts[stream] = counts.get(stream, 0) + 1
    return {"seconds": seconds, "rss_mb": rss, "records": counts}


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
        with open(os.devnull, "w") as sink:
            for run in api.runs(PROJECT, per_page=100):
                for row in run.scan_history():
                    sink.write(json.dumps(row) + "\n")
                    rows += 1
    print(json.dumps({"rows": rows, "seconds": time.perf_counter() - started}))


def client_run(mode: str, url: str) -> dict:
    with tempfile.TemporaryDirectory(prefix="wandb-bench-") as home:
        seconds, rss, output = run_child(
            [sys.executable, __file__, "--client", mode, url], env=client_env(home)
        )
    return {**json.loads(output), "wall": seconds, "rss_mb": rss}


def orjson_rows_per_second(runs: int, steps: int, exported_share: float) -> tuple[float, int]:
    """The practical ceiling: orjson.dumps of each row as a Singer RECORD, to /dev/null."""
    import orjson

    store = bench_store(runs, steps, exported_share=exported_share)
    rows = [row for run in store.all_runs() for row in run.history]
    started = time.perf_counter()
    with open(os.devnull, "wb") as sink:
        for row in rows:
            record = {"entity": DEMO_USER, "project": "bench", "run_id": "r", "step": row["_step"],
                      "metrics": row}  # fmt: skip
            message = {"type": "RECORD", "stream": "history", "record": record}
            sink.write(orjson.dumps(message, option=orjson.OPT_APPEND_NEWLINE))
    return len(rows) / (time.perf_counter() - started), len(rows)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="smaller datasets (a smoke run)")
    parser.add_argument("--results", help="also write the results table (markdown) here")
    parser.add_argument("--client", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client:
        return client_main(*args.client)

    scale = 10 if args.quick else 1
    lines = []

    def report(measure: str, tap: str, baseline: str, ratio: str, target: str) -> None:
        line = f"| {measure} | {tap} | {baseline} | {ratio} | {target} |"
        lines.append(line)
        print(line, flush=True)

    print("| measure | tap-wandb | baseline | ratio | target |")
    print("|---|---:|---:|---:|---:|")

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

    # 2./3. Full history throughput (80% of each run exported to parquet, as W&B does).
    runs, steps, share = 20 // (2 if args.quick else 1), 10_000 // scale, 0.8
    with serve(runs, steps, share) as url:
        client = client_run("scan", url)
        tap = tap_sync(url, {"runs", "history"})
    tap_rows = tap["records"]["history"]
    assert tap_rows == client["rows"], (tap_rows, client["rows"])
    tap_rate = tap_rows / tap["seconds"]
    client_rate = client["rows"] / client["wall"]
    report(f"history rows/s, full mode, {runs} runs x {steps} steps (vs client scan_history)",
           f"{tap_rate:,.0f}", f"{client_rate:,.0f}", f"{tap_rate / client_rate:.2f}x",
           ">= 2x")  # fmt: skip
    ceiling, _ = orjson_rows_per_second(runs, steps, share)
    report("history rows/s vs a bare orjson.dumps loop over the same rows",
           f"{tap_rate:,.0f}", f"{ceiling:,.0f}", f"{tap_rate / ceiling:.2f}x",
           ">= 0.25x")  # fmt: skip

    # 4. Scaling: 5,000 runs against 500 runs of the same shape, all streams.
    walls = {}
    for count in (500 // scale, 5000 // scale):
        with serve(count, 20) as url:
            walls[count] = tap_sync(url, {"runs", "configs", "summaries", "history"},
                                    page_size=500)["seconds"]  # fmt: skip
    small, large = sorted(walls)
    report(f"wall time, {large} runs / {small} runs",
           f"{walls[large]:.1f} s", f"{walls[small]:.1f} s",
           f"{walls[large] / walls[small]:.1f}", "<= 12")  # fmt: skip

    # 5. Peak memory for one run with 200,000 history steps.
    with serve(1, 200_000 // scale, 0.8) as url:
        tap = tap_sync(url, {"runs", "history"})
    report(f"peak RSS, one run with {200_000 // scale:,} steps", f"{tap['rss_mb']:.0f} MB",
           "", "", "<= 150 MB")  # fmt: skip

    if args.results:
        cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
        models = [
            line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")
        ]
        cpu = models[0] if models else platform.machine()
        header = (
            f"Measured {time.strftime('%Y-%m-%d')} on {cpu} ({platform.machine()}), "
            f"{os.cpu_count()} cores, Python {platform.python_version()}"
            f"{' (--quick)' if args.quick else ''}.\n\n"
            "| measure | tap-wandb | baseline | ratio | target |\n|---|---:|---:|---:|---:|\n"
        )
        results = Path(args.results)
        # bench/e2e.py keeps its own section in the same file.
        kept = results.read_text().partition(E2E_SECTION)[1:] if results.exists() else ()
        results.write_text(header + "\n".join(lines) + "\n" + "".join(kept))


if __name__ == "__main__":
    main()
