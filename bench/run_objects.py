"""Requests and bytes of the per-run object streams (artifacts, run_artifacts, system_metrics):
carried by the runs pages (what the tap does) against a request per run (the baseline, as
the official client reads them: run.logged_artifacts(), run.used_artifacts(),
run.history(stream="system")), on the demo entity and on a 5,000-run project.

    .venv/bin/python bench/run_objects.py [--runs 5000]

Every figure is counted by the emulator in this run. A stream's cost is the sync with it
selected (and runs) less the sync of runs alone.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from textwrap import dedent

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from tap_wandb.client import WandbClient  # noqa: E402
from tap_wandb.emulator import (  # noqa: E402
    DEMO_API_KEY,
    DEMO_USER,
    Emulator,
    advance,
    bench_store,
    demo_store,
)
from tap_wandb.streams.run_documents import ARTIFACTS_PAGE_SIZE, RUN_ARTIFACTS  # noqa: E402
from tap_wandb.values import TERMINAL_STATES  # noqa: E402

OBJECT_STREAMS = ("artifacts", "run_artifacts", "system_metrics")
# What run.history(stream="system", samples=500) sends, one run at a time.
RUN_EVENTS = dedent("""
    query RunEvents($entity: String!, $project: String!, $run: String!, $samples: Int) {
      project(name: $project, entityName: $entity) {
        run(name: $run) {
          events(samples: $samples)
        }
      }
    }
""")


def tap(config: dict, streams: set[str], state: dict | None = None) -> tuple[dict, dict]:
    """Run the tap with only ``streams`` selected; returns (record counts, final state)."""
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "config.json").write_text(json.dumps(config))
        base = [sys.executable, "-m", "tap_wandb.tap", "--config", f"{tmp}/config.json"]
        discovered = subprocess.check_output([*base, "--discover"], stderr=subprocess.DEVNULL)
        catalog = json.loads(discovered)
        for entry in catalog["streams"]:
            for item in entry["metadata"]:
                if item["breadcrumb"] == []:
                    item["metadata"]["selected"] = entry["tap_stream_id"] in streams
        Path(tmp, "catalog.json").write_text(json.dumps(catalog))
        command = [*base, "--catalog", f"{tmp}/catalog.json"]
        if state is not None:
            Path(tmp, "state.json").write_text(json.dumps(state))
            command += ["--state", f"{tmp}/state.json"]
        output = subprocess.check_output(command, stderr=subprocess.DEVNULL, text=True)
    counts: dict[str, int] = {}
    final: dict = {}
    for line in output.splitlines():
        message = json.loads(line)
        if message["type"] == "RECORD":
            counts[message["stream"]] = counts.get(message["stream"], 0) + 1
        elif message["type"] == "STATE":
            final = message["value"]
    return counts, final


def served(emulator: Emulator, action) -> tuple[int, int, object]:
    """(requests, bytes) the emulator served during ``action()``, and what it returned."""
    emulator.reset_stats()
    result = action()
    stats = emulator.stats()
    return stats["total"], stats["bytes_served"], result


def per_run_baseline(emulator: Emulator, runs: list, stream: str) -> tuple[int, int]:
    """Requests and bytes of reading each run's objects with a request per run (and page)."""
    client = WandbClient(emulator.url, DEMO_API_KEY)

    def read() -> None:
        for run in runs:
            where = {"entity": run.entity, "project": run.project, "run": run.name}
            if stream == "system_metrics":
                if run.state in TERMINAL_STATES:
                    client.graphql(RUN_EVENTS, {**where, "samples": 500}, what="events")
                continue
            for document in RUN_ARTIFACTS.values():
                pages = client.pages(
                    document,
                    {**where, "first": ARTIFACTS_PAGE_SIZE},
                    connection=lambda data: data["project"]["run"]["artifacts"],
                    what="artifacts",
                )
                for _ in pages:
                    pass

    requests, size, _ = served(emulator, read)
    return requests, size


def measure(label: str, store, config: dict, out: list[str]) -> None:
    """Rows of the results table for one dataset."""
    runs = [r for r in store.all_runs() if (r.entity, r.project) in _paths(store, config)]
    with Emulator(store) as emulator:
        config = {**config, "base_url": emulator.url}
        base_requests, base_bytes, _ = served(emulator, lambda: tap(config, {"runs"}))
        out.append(f"| {label}: runs alone | {len(runs)} runs | {base_requests} | "
                   f"{base_bytes / 1e3:,.0f} | | | | |")  # fmt: skip
        for stream in OBJECT_STREAMS:
            selected = {"runs", stream}
            requests, size, (counts, _) = served(emulator, lambda s=selected: tap(config, s))
            extra_requests, extra_bytes = requests - base_requests, size - base_bytes
            alt_requests, alt_bytes = per_run_baseline(emulator, runs, stream)
            out.append(
                f"| {label}: + {stream} | {counts.get(stream, 0):,} | +{extra_requests} | "
                f"+{extra_bytes / 1e3:,.0f} | {alt_requests:,} | {alt_bytes / 1e3:,.0f} | "
                f"{extra_requests / max(alt_requests, 1):.3f} | {extra_bytes / alt_bytes:.2f} |"
            )
        everything = {"runs", *OBJECT_STREAMS}
        requests, size, (_, state) = served(emulator, lambda: tap(config, everything))
        out.append(f"| {label}: runs + all three | | {requests} | {size / 1e3:,.0f} | | | | |")
        if label.startswith("demo"):
            _incremental(emulator, store, config, state, out)


def _incremental(emulator: Emulator, store, config: dict, state: dict, out: list[str]) -> None:
    """A sync with nothing new lists the unfinished runs again: what their objects cost; then
    the same after advance() (new runs, some unfinished ones ended)."""
    for when in ("no-op sync", "sync after advance()"):
        if when != "no-op sync":
            advance(store, seed=3)
        for streams in ({"runs"}, {"runs", *OBJECT_STREAMS}):
            requests, size, _ = served(emulator, lambda s=streams: tap(config, s, state))
            which = "runs alone" if len(streams) == 1 else "runs + all three"
            out.append(f"| demo, {when}: {which} | | {requests} | {size / 1e3:,.1f} | | | | |")


def _paths(store, config: dict) -> set[tuple[str, str]]:
    if config.get("projects"):
        return {(DEMO_USER, p) for p in config["projects"]}
    return {(p.entity, p.name) for p in store.entity_projects(DEMO_USER)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5000)
    parser.add_argument("--results", help="also write the results table (markdown) here")
    args = parser.parse_args()
    base = {"api_key": DEMO_API_KEY, "entity": DEMO_USER, "history_mode": "off"}
    out = [
        "| sync | records | requests | KB served | per run: requests | per run: KB "
        "| requests ratio | bytes ratio |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    measure("demo", demo_store(), base, out)
    store = bench_store(args.runs, 2, system_seconds=300, artifacts=True)
    measure(f"{args.runs:,} runs", store, {**base, "projects": ["bench"]}, out)
    header = (
        f"Measured {dt.date.today()} by bench/run_objects.py: requests and bytes (as served, "
        "gzip) of each object stream carried by the runs pages, against reading them with a "
        "request per run (the official client's way); ratio = carried / per run. Demo: entity "
        "acme (vision, nlp, empty); bench: one project, each run with about 20 system-metrics "
        "rows, one logged model version and one used (or logged) dataset version.\n\n"
    )
    print(header + "\n".join(out))
    if args.results:
        Path(args.results).write_text(header + "\n".join(out) + "\n")


if __name__ == "__main__":
    main()
