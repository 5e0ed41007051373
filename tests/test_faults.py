"""Faults and bad input (issue 6): transient faults are ridden over, permanent ones fail fast
with one clear line, bad settings are refused before any request, malformed data never
crashes a sync or corrupts its output, and the API key never shows.

Every sync runs the tap's CLI against its own emulator on a small dataset (project ``vision``,
12 runs, one of them with exported parquet history). Independent syncs run in parallel.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import socket
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tap_wandb.emulator import DEMO_API_KEY, DEMO_USER, Emulator, Fault, FaultPlan, demo_store
from tap_wandb.emulator.store import Run, Store
from tap_wandb.values import decode_json_string
from tests.tap_runner import STREAM_KEYS, TapRun, run_tap

# The Authorization header's value, which must not leak either.
BASIC_AUTH = base64.b64encode(f"api:{DEMO_API_KEY}".encode()).decode()
SDK_GENERIC_ERROR = "An unhandled error occurred while syncing"


# -- data, syncs and outcomes ------------------------------------------------------------------


def _vision_runs(store: Store) -> list[Run]:
    return sorted(store.project(DEMO_USER, "vision").runs.values(), key=lambda run: run.seq)


def _exported_run(store: Store) -> Run:
    return max(_vision_runs(store), key=lambda run: len(run.history))


def _store() -> Store:
    """Small demo data; the longest vision run has half its history in 50-row parquet files."""
    store = demo_store(runs_per_project=12, big_run_steps=0)
    run = _exported_run(store)
    for row in run.history:  # parquet exports hold scalar columns only
        for key in [key for key, value in row.items() if isinstance(value, dict | list)]:
            del row[key]
    run.exported_before_step = run.history[len(run.history) // 2]["_step"]
    run.rows_per_parquet_file = 50
    return store


def _config(url: str, **settings: Any) -> dict[str, Any]:
    config = {
        "api_key": DEMO_API_KEY,
        "base_url": url,
        "entity": DEMO_USER,
        "projects": ["vision"],
        "page_size": 10,
        "request_timeout": 10,
        "max_retries": 4,
        **settings,
    }
    return {key: value for key, value in config.items() if value is not None}


@dataclass
class Outcome:
    run: TapRun
    stats: dict[str, Any]
    seconds: float
    url: str
    arrivals: list[tuple[float, tuple[str, ...]]] = field(default_factory=list)
    log: list[dict[str, Any]] = field(default_factory=list)

    @property
    def requests(self) -> int:
        """W&B requests that reached the emulator: those refused for the key, and the others
        as they arrived (the stats miss those whose client gave up waiting)."""
        return len(self.arrivals) + self.stats["statuses"].get("401", 0)

    @property
    def output(self) -> str:
        return self.run.stdout + self.run.stderr

    def failure_line(self) -> str:
        """The one clear line; the only other ERROR line allowed is the SDK's generic one."""
        errors = [line for line in self.run.stderr.splitlines() if "| ERROR" in line]
        failed = [line for line in errors if "tap-wandb failed: " in line]
        assert len(failed) == 1, self.run.stderr[-3000:]
        assert all(SDK_GENERIC_ERROR in line or line in failed for line in errors), errors
        return failed[0].split("tap-wandb failed: ", 1)[1]


def _sync(
    plan: FaultPlan | None = None,
    *,
    store: Store | None = None,
    env: dict[str, str] | None = None,
    state: dict | None = None,
    **settings: Any,
) -> Outcome:
    """One CLI sync against a fresh emulator serving ``store`` with ``plan``'s faults."""
    with Emulator(store or _store()) as emulator:
        emulator.set_faults(plan)
        config = _config(emulator.url, **settings)
        started = time.monotonic()
        run = run_tap(config, state=state, env=env, check=False, timeout=120)
        seconds = time.monotonic() - started
        return Outcome(
            run,
            emulator.stats(),
            seconds,
            emulator.url,
            list(emulator.arrivals),
            list(emulator.log),
        )


def _in_parallel(jobs: dict[str, Callable[[], Outcome]]) -> dict[str, Outcome]:
    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = {name: pool.submit(job) for name, job in jobs.items()}
        return {name: future.result() for name, future in futures.items()}


def _keyed(run: TapRun) -> dict[str, dict[tuple, dict]]:
    keyed = {}
    for stream, key in STREAM_KEYS.items():
        records = run.records(stream)
        keyed[stream] = {tuple(record[k] for k in key): record for record in records}
        assert len(keyed[stream]) == len(records), f"duplicate {stream} records"
    return keyed


def _arrived(outcome: Outcome, fault: Fault) -> int:
    """W&B requests of the sync that the fault's path matches."""
    return sum(fault.applies(paths) for _, paths in outcome.arrivals)


def _assert_clean_output(outcome: Outcome) -> None:
    assert DEMO_API_KEY not in outcome.output
    assert BASIC_AUTH not in outcome.output
    assert "Traceback" not in outcome.run.stderr, outcome.run.stderr[-3000:]


def _dead_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


@pytest.fixture(scope="module")
def clean() -> Outcome:
    outcome = _sync()
    assert outcome.run.returncode == 0, outcome.run.stderr[-3000:]
    assert outcome.stats["requests"].get("parquet", 0) >= 2  # exports are part of the sync
    return outcome


@pytest.fixture(scope="module")
def clean_records(clean: Outcome) -> dict[str, dict[tuple, dict]]:
    keyed = _keyed(clean.run)
    assert all(keyed[stream] for stream in STREAM_KEYS)
    return keyed


# -- transient faults: retried, nothing lost -------------------------------------------------


TRANSIENT = {
    "429 every 5th + 5% 502": (
        FaultPlan(rate_limit_every=5, retry_after=0, error_rate=0.05, seed=2),
        {"status": None},
        {},
    ),
    "HTTP 500 twice on runs page 2": (
        FaultPlan(script=[Fault("status", "project.runs", 500, "oops", after=1, times=2)]),
        {"status": 2},
        {},
    ),
    "HTTP 503 on a history window": (
        FaultPlan(script=[Fault("status", "project.run.history", 503, "busy", after=3)]),
        {"status": 1},
        {},
    ),
    "HTTP 504 on a parquet download": (
        FaultPlan(script=[Fault("status", "parquet", 504, "<html>Gateway Timeout</html>")]),
        {"status": 1},
        {},
    ),
    "HTTP 408 on history exports": (
        FaultPlan(script=[Fault("status", "parquetHistory", 408, "", after=2)]),
        {"status": 1},
        {},
    ),
    "429 without headers (backoff)": (
        FaultPlan(script=[Fault("status", "project.runs", 429, "", after=1)]),
        {"status": 1},
        {},
    ),
    "dropped connection on runs": (
        FaultPlan(script=[Fault("drop", "project.runs", after=1, times=2)]),
        {"drop": 2},
        {},
    ),
    "dropped parquet download": (
        FaultPlan(script=[Fault("drop", "parquet", after=1)]),
        {"drop": 1},
        {},
    ),
    "timeout (delay > request_timeout)": (
        FaultPlan(script=[Fault("delay", "project.run.history", seconds=3, after=2)]),
        {"delay": 1},
        {"request_timeout": 1},
    ),
    "cut transfer of a runs page": (
        FaultPlan(script=[Fault("cut", "project.runs")]),
        {"cut": 1},
        {},
    ),
    "cut parquet transfer": (
        FaultPlan(script=[Fault("cut", "parquet", after=1)]),
        {"cut": 1},
        {},
    ),
}


@pytest.fixture(scope="module")
def transient(clean: Outcome) -> dict[str, Outcome]:
    jobs = {
        name: (lambda plan=plan, settings=settings: _sync(plan, **settings))
        for name, (plan, _, settings) in TRANSIENT.items()
    }
    # The same flaky sync with debug logging, to look for the key in every log line.
    jobs["debug logging"] = lambda: _sync(
        FaultPlan(rate_limit_every=4, retry_after=0, drop_rate=0.1, seed=5),
        env={"TAP_WANDB_LOGLEVEL": "DEBUG"},
    )
    return _in_parallel(jobs)


@pytest.mark.parametrize("name", [*TRANSIENT, "debug logging"])
def test_transient_faults_are_retried_and_lose_nothing(name, transient, clean, clean_records):
    outcome = transient[name]
    assert outcome.run.returncode == 0, outcome.run.stderr[-3000:]
    _assert_clean_output(outcome)
    assert _keyed(outcome.run) == clean_records
    served = outcome.stats["faults"]
    expected = TRANSIENT[name][1] if name in TRANSIENT else {}
    faults = sum(served.values())
    for kind, count in expected.items():
        if count is not None:
            faults = count
            if kind == "delay":
                # Answered after the tap gave up, perhaps after the stats were read: count the
                # requests that arrived on the delayed path instead.
                fault = TRANSIENT[name][0].script[0]
                assert _arrived(outcome, fault) == _arrived(clean, fault) + count
            else:
                assert served.get(kind) == count, served
    assert faults >= 1, served
    # Each fault costs exactly one more request: no retry storm, nothing read twice.
    assert outcome.requests == clean.requests + faults
    assert re.search(r"\| WARNING .*; retry 1 of 4 in ", outcome.run.stderr)


def test_rate_limits_and_502s_both_fired(transient):
    statuses = transient["429 every 5th + 5% 502"].stats["statuses"]
    assert statuses.get("429", 0) >= 5 and statuses.get("502", 0) >= 1, statuses


def test_debug_logging_was_on_and_shows_no_key(transient):
    outcome = transient["debug logging"]
    assert "| DEBUG" in outcome.run.stderr and "urllib3" in outcome.run.stderr
    assert outcome.stats["faults"].get("drop", 0) >= 1
    _assert_clean_output(outcome)


def test_retry_after_then_ratelimit_reset_then_backoff_decide_the_wait():
    """429s on the three runs pages: Retry-After (1 s; RateLimit-Reset 3 s is ignored), then
    RateLimit-Reset alone (1 s), then no header (backoff: 0.25-0.5 s on a first retry)."""
    plan = FaultPlan(
        script=[
            Fault(
                "status", "project.runs", 429, headers={"Retry-After": "1", "RateLimit-Reset": "3"}
            ),
            Fault("status", "project.runs", 429, headers={"RateLimit-Reset": "1"}, after=1),
            Fault("status", "project.runs", 429, after=2),
        ]
    )
    store = demo_store(runs_per_project=24, big_run_steps=0)
    outcome = _sync(plan, store=store, history_mode="off")
    assert outcome.run.returncode == 0, outcome.run.stderr[-3000:]
    times = [at for at, paths in outcome.arrivals if "project.runs" in paths]
    assert len(times) == 6  # 3 pages, each answered 429 once
    gaps = [times[1] - times[0], times[3] - times[2], times[5] - times[4]]
    waits = [float(w) for w in re.findall(r"; retry 1 of 4 in ([\d.]+) s", outcome.run.stderr)]
    assert waits[:2] == [1.0, 1.0] and 0.2 <= waits[2] <= 0.5, waits  # logged to 0.1 s
    # Each retry came after the wait it logged, late by at most a loaded machine's delays.
    for gap, wait in zip(gaps, waits, strict=True):
        assert wait - 0.05 <= gap <= wait + 1.0, (gaps, waits)


# -- permanent faults: fail fast, one clear line ---------------------------------------------

WRONG_KEY = "wrong-" + "k" * 40
CURLY_KEY = f"\u201c{DEMO_API_KEY}\u201d"  # pasted with typographic quotes


def _permanent_jobs(clean: Outcome) -> dict[str, Callable[[], Outcome]]:
    gone_after = clean.requests // 2
    graphql_error = {"errors": [{"message": "permission denied"}]}
    return {
        "wrong key (401)": lambda: _sync(api_key=WRONG_KEY, env={"TAP_WANDB_LOGLEVEL": "DEBUG"}),
        "403": lambda: _sync(
            FaultPlan(script=[Fault("status", "project.runs", 403, json.dumps(graphql_error))])
        ),
        "unknown entity": lambda: _sync(entity="no-such-entity"),
        "unknown project": lambda: _sync(projects=["no-such-project"]),
        "GraphQL error on runs page 2": lambda: _sync(
            FaultPlan(
                script=[Fault("graphql_error", "project.runs", body="query timed out", after=1)]
            )
        ),
        "GraphQL error reading history": lambda: _sync(
            FaultPlan(
                script=[
                    Fault("graphql_error", "project.run.history", body="history is unavailable")
                ]
            )
        ),
        "HTML 200": lambda: _sync(FaultPlan(script=[Fault("html", "project.runs")])),
        "truncated JSON 200": lambda: _sync(FaultPlan(script=[Fault("truncate", "project.runs")])),
        "truncated parquet file": lambda: _sync(FaultPlan(script=[Fault("truncate", "parquet")])),
        "HTTP 400": lambda: _sync(
            FaultPlan(
                script=[
                    Fault(
                        "status",
                        "project.runs",
                        400,
                        '{"errors": [{"message": "invalid filters"}]}',
                    )
                ]
            )
        ),
        "503 for ever": lambda: _sync(
            FaultPlan(script=[Fault("status", "", 503, "down", times=-1)]), max_retries=2
        ),
        "429 for ever": lambda: _sync(FaultPlan(rate_limit_every=1, retry_after=0), max_retries=2),
        "timeouts for ever": lambda: _sync(
            FaultPlan(script=[Fault("delay", "", seconds=2, times=-1)]),
            request_timeout=0.5,
            max_retries=1,
        ),
        "server gone mid-sync": lambda: _sync(
            FaultPlan(script=[Fault("drop", "", after=gone_after, times=-1)]),
            max_retries=2,
            history_concurrency=1,  # one reader: the count of attempts is exact
        ),
        "server unreachable": lambda: _sync(base_url=_dead_url(), max_retries=1),
        "parquet downloads dropped for ever": lambda: _sync(
            FaultPlan(script=[Fault("drop", "parquet", times=-1)]), max_retries=2
        ),
        "key with typographic quotes": lambda: _sync(api_key=CURLY_KEY),
    }


@pytest.fixture(scope="module")
def permanent(clean: Outcome) -> dict[str, Outcome]:
    return _in_parallel(_permanent_jobs(clean))


def _failed_fast(outcome: Outcome, *, max_requests: int) -> str:
    assert outcome.run.returncode == 1, outcome.run.stderr[-3000:]
    _assert_clean_output(outcome)
    assert outcome.requests <= max_requests, outcome.stats
    # Seconds here (tap start-up, a few short waits) even with parallel syncs on a busy
    # machine; default retries (8, backoff up to a minute) would take minutes.
    assert outcome.seconds < 60
    return outcome.failure_line()


def test_wrong_key_names_the_base_url_never_the_key(permanent):
    outcome = permanent["wrong key (401)"]
    line = _failed_fast(outcome, max_requests=1)
    assert line == (
        f"runs of acme/vision: W&B at {outcome.url} rejected the API key (HTTP 401: user is "
        "not logged in). Set a valid key in the api_key setting (TAP_WANDB_API_KEY), "
        "WANDB_API_KEY or ~/.netrc (`wandb login`), for this base_url."
    )
    assert WRONG_KEY not in outcome.output
    assert base64.b64encode(f"api:{WRONG_KEY}".encode()).decode() not in outcome.output
    assert "| DEBUG" in outcome.run.stderr  # also with debug logging (TAP_WANDB_LOGLEVEL)


def test_403_is_not_retried(permanent):
    outcome = permanent["403"]
    line = _failed_fast(outcome, max_requests=1)
    assert f"W&B at {outcome.url} rejected the API key (HTTP 403: permission denied)" in line


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("unknown entity", "project no-such-entity/vision not found on {url}"),
        ("unknown project", "project acme/no-such-project not found on {url}"),
    ],
)
def test_unknown_entity_or_project_is_named(permanent, name, expected):
    outcome = permanent[name]
    assert _failed_fast(outcome, max_requests=1).startswith(expected.format(url=outcome.url))


def test_graphql_error_names_message_project_and_what_was_read(permanent):
    outcome = permanent["GraphQL error on runs page 2"]
    line = _failed_fast(outcome, max_requests=100)
    assert line == "runs of acme/vision: W&B answered: query timed out"
    assert outcome.stats["fields"]["project.runs"] == 2  # not retried


def test_graphql_error_in_history_names_the_run(permanent):
    outcome = permanent["GraphQL error reading history"]
    line = _failed_fast(outcome, max_requests=100)
    match = re.fullmatch(
        r"history steps \d+-\d+ of run acme/vision/(\w+): W&B answered: history is unavailable",
        line,
    )
    assert match, line
    assert match[1] in {run.name for run in _vision_runs(_store())}
    reads = [
        entry
        for entry in outcome.log
        if "project.run.history" in entry["paths"] and entry["variables"]["run"] == match[1]
    ]
    assert len(reads) == 1  # not retried


@pytest.mark.parametrize("name", ["HTML 200", "truncated JSON 200"])
def test_body_that_is_not_json_fails_fast(permanent, name):
    outcome = permanent[name]
    line = _failed_fast(outcome, max_requests=1)
    assert line.startswith(
        f"runs of acme/vision: W&B at {outcome.url} answered HTTP 200 with a body that is "
        "not JSON ("
    )
    assert line.endswith("Check base_url, or a proxy in between.")
    if name == "HTML 200":
        assert "502 Bad Gateway" in line


def test_truncated_parquet_file_fails_fast_naming_the_run(permanent):
    outcome = permanent["truncated parquet file"]
    line = _failed_fast(outcome, max_requests=100)
    assert f"history export of run acme/vision/{_exported_run(_store()).name}" in line
    assert outcome.stats["requests"]["parquet"] == 1


def test_client_error_status_is_not_retried(permanent):
    outcome = permanent["HTTP 400"]
    line = _failed_fast(outcome, max_requests=1)
    assert line == f"runs of acme/vision: W&B at {outcome.url} answered HTTP 400: invalid filters"


@pytest.mark.parametrize(
    ("name", "attempts", "last"),
    [
        ("503 for ever", 3, "HTTP 503"),
        ("429 for ever", 3, "HTTP 429 (rate limited)"),
        ("timeouts for ever", 2, "ReadTimeout"),
    ],
)
def test_retries_are_bounded_by_max_retries(permanent, name, attempts, last):
    outcome = permanent[name]
    line = _failed_fast(outcome, max_requests=attempts)
    assert outcome.requests == attempts
    assert line.startswith(
        f"runs of acme/vision: W&B at {outcome.url} still failing after {attempts} attempts "
        f"(last: {last}"
    )
    assert line.endswith("Try again later, or raise max_retries / request_timeout.")


def test_unreachable_server_fails_after_bounded_retries(permanent):
    outcome = permanent["server unreachable"]
    line = _failed_fast(outcome, max_requests=0)
    assert re.match(
        r"runs of acme/vision: W&B at http://127\.0\.0\.1:\d+ still failing after 2 attempts "
        r"\(last: ConnectionError",
        line,
    ), line


def test_server_gone_mid_sync_then_resume_loses_nothing(permanent, clean, clean_records):
    outcome = permanent["server gone mid-sync"]
    gone_after = clean.requests // 2
    line = _failed_fast(outcome, max_requests=gone_after + 3)
    assert outcome.requests == gone_after + 3  # 1 try + 2 retries, then it gives up
    assert "still failing after 3 attempts (last: ConnectionError" in line
    states = outcome.run.states
    assert states and outcome.run.records("runs")
    resumed = _sync(state=states[-1])
    assert resumed.run.returncode == 0, resumed.run.stderr[-3000:]
    merged = _keyed(outcome.run)
    for stream, records in _keyed(resumed.run).items():
        merged[stream].update(records)
    assert merged == clean_records
    # The resumed sync did not start over.
    assert len(resumed.run.records("runs")) < len(clean_records["runs"])


def test_unusable_key_fails_before_any_request(permanent):
    outcome = permanent["key with typographic quotes"]
    line = _failed_fast(outcome, max_requests=0)
    assert line == (
        "The API key in the api_key setting has characters no W&B key has (spaces, quotes or "
        "non-ASCII letters); copy it again from your W&B settings."
    )
    assert CURLY_KEY not in outcome.output


def test_failing_downloads_share_one_retry_budget(permanent):
    outcome = permanent["parquet downloads dropped for ever"]
    line = _failed_fast(outcome, max_requests=100)
    assert outcome.stats["requests"]["parquet"] == 3
    assert re.fullmatch(
        rf"history export of run acme/vision/{_exported_run(_store()).name}: W&B at "
        rf"{outcome.url} still failing after 3 attempts \(last: ConnectionError .*",
        line,
    ), line


# -- bad settings: refused before any request ------------------------------------------------

BAD_SETTINGS = {
    "start_date not a date": ({"start_date": "yesterday"}, "start_date must be an ISO 8601"),
    "start_date impossible": ({"start_date": "2024-02-30"}, "start_date must be an ISO 8601"),
    "filters a list": ({"filters": ["finished"]}, "filters must be a JSON object"),
    "filters bad JSON text": ({"filters": '{"state": '}, "filters must be a JSON object"),
    "filters JSON list text": ({"filters": "[1, 2]"}, "filters must be a JSON object"),
    "history_mode unknown": (
        {"history_mode": "everything"},
        "history_mode must be one of full, sampled, off, got 'everything'",
    ),
    "page_size zero": ({"page_size": 0}, "page_size must be a positive number, got 0"),
    "page_size negative": ({"page_size": -10}, "page_size must be a positive number, got -10"),
    "request_timeout zero": ({"request_timeout": 0}, "request_timeout must be a positive"),
    "max_retries negative": ({"max_retries": -1}, "max_retries must be 0 or more, got -1"),
    "base_url ftp": ({"base_url": "ftp://example.com"}, "base_url must be an http(s) URL"),
    "base_url without scheme": ({"base_url": "api.wandb.ai"}, "base_url must be an http(s) URL"),
}


def _netrc_home(home: Path, mode: int) -> dict[str, str]:
    """An environment whose HOME holds a ~/.netrc with the key for 127.0.0.1."""
    (home / ".netrc").write_text(f"machine 127.0.0.1\n  login user\n  password {DEMO_API_KEY}\n")
    (home / ".netrc").chmod(mode)
    return {"HOME": str(home), "WANDB_API_KEY": ""}


@pytest.fixture(scope="module")
def settings_runs(tmp_path_factory) -> tuple[dict[str, Outcome], dict[str, Any]]:
    home = str(tmp_path_factory.mktemp("no-netrc"))
    no_key_env = {"HOME": home, "WANDB_API_KEY": ""}
    with Emulator(_store()) as emulator:

        def job(settings: dict, env: dict | None = None) -> Callable[[], Outcome]:
            def run() -> Outcome:
                started = time.monotonic()
                config = _config(emulator.url, **settings)
                result = run_tap(config, env=env, check=False, timeout=60)
                return Outcome(result, {}, time.monotonic() - started, emulator.url)

            return run

        jobs = {name: job(settings) for name, (settings, _) in BAD_SETTINGS.items()}
        jobs["no API key anywhere"] = job({"api_key": None}, no_key_env)
        netrc_home = _netrc_home(tmp_path_factory.mktemp("netrc"), 0o644)
        jobs["~/.netrc readable by others"] = job({"api_key": None}, netrc_home)
        outcomes = _in_parallel(jobs)
        return outcomes, emulator.stats()


@pytest.mark.parametrize("name", list(BAD_SETTINGS))
def test_bad_setting_is_refused_before_any_request(settings_runs, name):
    outcomes, stats = settings_runs
    outcome = outcomes[name]
    assert outcome.run.returncode == 1
    assert stats["total"] == 0  # not one request, from any of these syncs
    _assert_clean_output(outcome)
    errors = [line for line in outcome.run.stderr.splitlines() if "| ERROR" in line]
    assert any(BAD_SETTINGS[name][1] in line for line in errors), errors
    assert outcome.run.messages == []


def test_missing_api_key_is_named_with_its_sources(settings_runs):
    outcomes, stats = settings_runs
    outcome = outcomes["no API key anywhere"]
    assert stats["total"] == 0
    assert outcome.failure_line() == (
        f"No W&B API key found for {outcome.url}: set the api_key setting (TAP_WANDB_API_KEY), "
        "the WANDB_API_KEY environment variable, or run `wandb login` (a ~/.netrc entry for "
        "127.0.0.1)."
    )
    assert outcome.run.returncode == 1


def test_netrc_that_python_refuses_is_explained(settings_runs):
    outcomes, stats = settings_runs
    outcome = outcomes["~/.netrc readable by others"]
    assert stats["total"] == 0
    assert outcome.run.returncode == 1
    _assert_clean_output(outcome)
    assert outcome.failure_line().endswith(
        "(a ~/.netrc entry for 127.0.0.1); ~/.netrc was not read: ~/.netrc access too "
        "permissive: access permissions must restrict access to only the owner."
    )


def test_key_from_environment_and_from_netrc(clean_records, tmp_path):
    empty_home = str(tmp_path / "no-netrc")
    (tmp_path / "no-netrc").mkdir()
    # A key pasted with its line end still works.
    key_env = {"HOME": empty_home, "WANDB_API_KEY": DEMO_API_KEY + "\n"}
    netrc_env = _netrc_home(tmp_path, 0o600)
    outcomes = _in_parallel(
        {
            "env": lambda: _sync(api_key=None, history_mode="off", env=key_env),
            "netrc": lambda: _sync(api_key=None, history_mode="off", env=netrc_env),
        }
    )
    for outcome in outcomes.values():
        assert outcome.run.returncode == 0, outcome.run.stderr[-3000:]
        _assert_clean_output(outcome)
        assert _keyed(outcome.run)["runs"] == clean_records["runs"]


# -- malformed data: nulls and warnings, never a crash ---------------------------------------

DEEP = 5000  # beyond any JSON parser's recursion limit
RATHER_DEEP = 600  # parses, but deeper than a recursive walk of it can go
NESTED_50 = json.loads("[" * 50 + "1" + "]" * 50)


def _nest(depth: int) -> str:
    return "[" * depth + "1" + "]" * depth


def _malformed_store() -> tuple[Store, dict[str, Any]]:
    store = _store()
    runs = [run for run in _vision_runs(store) if run is not _exported_run(store)]
    r = {f"r{i}": run.name for i, run in enumerate(runs)}
    runs[0].raw_fields["config"] = "{not json"
    runs[1].raw_fields["summaryMetrics"] = '{"acc": 0.9, "loss":'
    runs[2].raw_fields["config"] = "[1, 2, 3]"
    runs[3].raw_fields["systemMetrics"] = "NaN"
    runs[4].raw_fields["summaryMetrics"] = (
        '{"a": NaN, "b": [1, Infinity, {"c": -Infinity}], "big": 1180591620717411303424, '
        '"neg_big": -18446744073709551616, "": "empty key", "ключ 🚀": "ü", '
        '"bad\\udcff": "/data/\\udcff.bin"}'
    )
    runs[5].raw_fields["config"] = (
        f'{{"lr": {{"value": NaN, "desc": "x"}}, "inf": {{"value": [Infinity, -Infinity]}}, '
        f'"shallow": {{"value": {_nest(50)}}}, "deep": {{"value": {_nest(RATHER_DEEP)}}}}}'
    )
    runs[6].raw_fields["summaryMetrics"] = f'{{"deep": {_nest(DEEP)}}}'
    history_run = next(run for run in runs[7:] if len(run.history) >= 10)
    steps = [row["_step"] for row in history_run.history[:9]]
    raw = {
        steps[0]: "not json at all",
        steps[1]: "[1, 2, 3]",
        steps[2]: '{"loss": 0.5}',
        steps[3]: f'{{"_step": "{steps[3]}", "loss": 1}}',
        steps[4]: (
            f'{{"_step": {steps[4]}.0, "loss": NaN, "acc": Infinity, "neg": -Infinity, '
            f'"nested": {{"x": [NaN, 1]}}, "big": 1180591620717411303424, "": 1, '
            f'"ключ": "\\udcff"}}'
        ),
        steps[5]: f'{{"_step": {steps[5]}, "deep": {_nest(DEEP)}}}',
        steps[6]: f'{{"_step": {steps[6]}, "deep": {_nest(RATHER_DEEP)}, "loss": 0.25}}',
        steps[7]: "null",
    }
    history_run.raw_history_rows.update(raw)
    r["history"] = history_run.name
    r["steps"] = steps
    return store, r


@pytest.fixture(scope="module")
def malformed(clean: Outcome) -> tuple[Outcome, dict[str, Any]]:
    store, names = _malformed_store()
    return _sync(store=store), names


def test_malformed_data_gives_nulls_and_warnings_not_a_crash(malformed, clean_records):
    outcome, r = malformed
    assert outcome.run.returncode == 0, outcome.run.stderr[-3000:]
    _assert_clean_output(outcome)  # and run_tap parsed every line as strict JSON
    got = _keyed(outcome.run)
    runs = {key[2]: record for key, record in got["runs"].items()}
    clean_runs = {key[2]: record for key, record in clean_records["runs"].items()}
    assert runs.keys() == clean_runs.keys()

    assert runs[r["r0"]]["config"] is None
    assert runs[r["r1"]]["summary"] is None
    assert runs[r["r2"]]["config"] is None
    assert runs[r["r3"]]["system_metrics"] is None
    assert runs[r["r4"]]["summary"] == {
        "a": None,
        "b": [1, None, {"c": None}],
        "big": 2**70,
        "neg_big": -(2**64),
        "": "empty key",
        "ключ 🚀": "ü",
        "bad\ufffd": "/data/\ufffd.bin",
    }
    assert runs[r["r5"]]["config"] == {
        "lr": None,
        "inf": [None, None],
        "shallow": NESTED_50,
        "deep": None,
    }
    assert runs[r["r6"]]["summary"] is None
    # Everything else about these runs, and every other run, is as in a clean sync.
    changed = {
        "r0": "config",
        "r1": "summary",
        "r2": "config",
        "r3": "system_metrics",
        "r4": "summary",
        "r5": "config",
        "r6": "summary",
    }
    by_run = {r[name]: field for name, field in changed.items()}
    for run_id, record in runs.items():
        field = by_run.get(run_id)
        assert {k: v for k, v in record.items() if k != field} == {
            k: v for k, v in clean_runs[run_id].items() if k != field
        }, run_id

    configs = {(key[2], key[3]): record for key, record in got["configs"].items()}
    assert not any(run_id in (r["r0"], r["r2"]) for run_id, _ in configs)
    assert configs[(r["r5"], "lr")]["value"] is None
    assert configs[(r["r5"], "lr")]["desc"] == "x"
    assert configs[(r["r5"], "deep")]["value"] is None
    assert configs[(r["r5"], "shallow")]["value"] == NESTED_50
    summaries = {(key[2], key[3]): record["value"] for key, record in got["summaries"].items()}
    assert not any(run_id in (r["r1"], r["r6"]) for run_id, _ in summaries)
    assert summaries[(r["r4"], "big")] == 2**70
    assert summaries[(r["r4"], "")] == "empty key"
    assert summaries[(r["r4"], "bad\ufffd")] == "/data/\ufffd.bin"
    untouched = {r[n] for n in changed} | {r["history"]}
    for stream in ("configs", "summaries", "history"):
        for key, record in clean_records[stream].items():
            if key[2] not in untouched:
                assert got[stream][key] == record, (stream, key)

    steps = r["steps"]
    history = {
        key[3]: record["metrics"]
        for key, record in got["history"].items()
        if key[2] == r["history"]
    }
    clean_history = {
        key[3]: record["metrics"]
        for key, record in clean_records["history"].items()
        if key[2] == r["history"]
    }
    skipped = {steps[i] for i in (0, 1, 2, 3, 5, 7)}
    assert history.keys() == clean_history.keys() - skipped
    assert history[steps[4]] == {
        "loss": None,
        "acc": None,
        "neg": None,
        "nested": {"x": [None, 1]},
        "big": 2**70,
        "": 1,
        "ключ": "\ufffd",
    }
    assert history[steps[6]] == {"deep": None, "loss": 0.25}
    for step in history.keys() - {steps[4], steps[6]}:
        assert history[step] == clean_history[step]


def test_malformed_data_warnings_name_the_run_and_key(malformed):
    outcome, r = malformed
    warnings = [line for line in outcome.run.stderr.splitlines() if "| WARNING" in line]

    def warned(*fragments: str) -> bool:
        return any(all(fragment in line for fragment in fragments) for line in warnings)

    where = "run acme/vision/{}".format
    assert warned(where(r["r0"]), "config is not valid JSON")
    assert warned(where(r["r1"]), "summaryMetrics is not valid JSON")
    assert warned(where(r["r2"]), "config is a JSON list, not an object")
    assert warned(where(r["r3"]), "systemMetrics is a JSON float, not an object")
    assert warned(where(r["r5"]), "config key 'deep'", "emitting null")
    assert warned(where(r["r6"]), "summaryMetrics is not valid JSON")
    history_run = where(r["history"])
    assert warned(history_run, "skipping a history row that is not JSON")
    assert warned(history_run, "skipping a history row without an integer _step")
    assert warned(history_run, "key 'deep'", "emitting null")


def test_non_string_wire_values_become_null_with_a_warning(caplog):
    logger = logging.getLogger("test-faults")
    with caplog.at_level(logging.WARNING, logger="test-faults"):
        for value in (5, [1, 2], True):
            assert (
                decode_json_string(value, what="config", where="run a/b/c", logger=logger) is None
            )
    assert len(caplog.records) == 3
    assert all("run a/b/c: config" in record.getMessage() for record in caplog.records)
