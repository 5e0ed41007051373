"""The emulator over raw HTTP: GraphQL validation, authentication, strict outer JSON, the
faults it injects and what it counts, its control endpoints, and its command."""

from __future__ import annotations

import base64
import json
import math
import signal
import socket
import struct
import subprocess
import sys
import threading
import time

import pytest
import requests
import wandb

from tap_wandb.emulator import DEMO_API_KEY, DEMO_USER, Emulator, Fault, FaultPlan
from tests.conftest import official_client
from tests.emulator_support import assert_same, post, runs_of

VIEWER = "query Viewer { viewer { id username entity } }"
RUNS = (
    '{ project(name: "vision", entityName: "acme") { runs(first: 2) { edges { node { name } } } } }'
)


# -- validation, authentication, strict JSON --------------------------------------------------


@pytest.mark.parametrize(
    ("query", "needle"),
    [
        ("{ viewer { id inventedField } }", "inventedField"),
        (
            '{ project(name: "vision", entityName: "acme") { runs(first: 1, since: "x") '
            "{ edges { node { name } } } } }",
            "since",
        ),
        (
            '{ project(name: "vision", entityName: "acme") { run(name: "x") { host } } }',
            "host",
        ),
        ("{ viewer { id ", "Syntax Error"),
    ],
)
def test_unknown_field_is_a_graphql_error(emulator, query: str, needle: str) -> None:
    response = post(emulator.url, query)
    assert response.status_code == 200
    body = response.json()
    assert body["data"] is None
    assert any(needle in error["message"] for error in body["errors"]), body


@pytest.mark.parametrize(
    ("key", "user"), [("x" * 40, "api"), (DEMO_API_KEY, "someone"), (None, "api")]
)
def test_wrong_key_gets_401(emulator, key, user) -> None:
    response = post(emulator.url, VIEWER, key=key, user=user)
    assert response.status_code == 401
    errors = response.json()["errors"]
    assert errors and all(isinstance(error["message"], str) for error in errors)


def test_client_with_wrong_key_raises(emulator) -> None:
    with pytest.raises(wandb.errors.CommError):
        wandb.Api(
            api_key="y" * 40, overrides={"base_url": emulator.url, "entity": DEMO_USER}, timeout=10
        )


def test_viewer_and_strict_outer_json(emulator, normal_run) -> None:
    assert post(emulator.url, VIEWER).json()["data"]["viewer"]["username"] == DEMO_USER
    spec = json.dumps(json.dumps({"keys": ["loss"]}))
    query = (
        f'{{ project(name: "vision", entityName: "acme") {{ run(name: "{normal_run.name}") '
        f"{{ summaryMetrics history(samples: 1000) sampledHistory(specs: [{spec}]) }} }} }}"
    )

    def refuse(token: str):
        raise AssertionError(f"bare {token} in the outer JSON")

    body = json.loads(post(emulator.url, query).text, parse_constant=refuse)
    run = body["data"]["project"]["run"]
    assert math.isnan(json.loads(run["summaryMetrics"])["nan_metric"])  # bare NaN inside strings
    assert_same([json.loads(row) for row in run["history"]], normal_run.history)


# -- faults and accounting ---------------------------------------------------------------------


def statuses(url: str, count: int, query: str = VIEWER) -> list[int]:
    return [post(url, query).status_code for _ in range(count)]


def test_429_with_retry_after(fresh_emulator) -> None:
    fresh_emulator.set_faults(FaultPlan(rate_limit_every=1, retry_after=2.5, max_faults=1))
    response = post(fresh_emulator.url, VIEWER)
    assert response.status_code == 429
    assert response.headers["Retry-After"] == "2.5"
    assert response.json()["errors"]
    assert post(fresh_emulator.url, VIEWER).status_code == 200
    plan = FaultPlan(rate_limit_every=1, retry_after=None, rate_limit_reset=3, max_faults=1)
    fresh_emulator.set_faults(plan)
    response = post(fresh_emulator.url, VIEWER)
    assert response.status_code == 429
    assert "Retry-After" not in response.headers
    assert response.headers["RateLimit-Reset"] == "3"


def test_periodic_429_and_max_faults(fresh_emulator) -> None:
    fresh_emulator.set_faults(FaultPlan(rate_limit_every=3))
    assert statuses(fresh_emulator.url, 9) == [200, 200, 429] * 3
    fresh_emulator.set_faults(FaultPlan(rate_limit_every=1, max_faults=2))
    assert statuses(fresh_emulator.url, 5) == [429, 429, 200, 200, 200]


def test_error_rate_is_seeded_and_counted(fresh_emulator) -> None:
    plan = FaultPlan(error_rate=0.3, seed=5)
    fresh_emulator.set_faults(plan)
    fresh_emulator.reset_stats()
    first = statuses(fresh_emulator.url, 40)
    failures = first.count(502)
    assert 0 < failures < 40 and set(first) == {200, 502}
    stats = fresh_emulator.stats()
    assert stats["statuses"] == {"200": 40 - failures, "502": failures}
    assert stats["faults"] == {"status": failures}
    fresh_emulator.set_faults(plan)
    assert statuses(fresh_emulator.url, 40) == first  # same seed, same faults
    fresh_emulator.set_faults(FaultPlan(error_rate=0.3, seed=6))
    assert statuses(fresh_emulator.url, 40) != first


def test_scripted_fault_matches_paths(fresh_emulator) -> None:
    fault = Fault("status", match="project.runs", status=503, after=1, times=2)
    fresh_emulator.set_faults(FaultPlan(script=[fault]))
    assert statuses(fresh_emulator.url, 2) == [200, 200]  # viewer does not match
    assert statuses(fresh_emulator.url, 4, RUNS) == [200, 503, 503, 200]


def test_drop_closes_the_connection(fresh_emulator) -> None:
    fresh_emulator.set_faults(FaultPlan(script=[Fault("drop")]))
    with pytest.raises(requests.ConnectionError):
        post(fresh_emulator.url, VIEWER)
    assert post(fresh_emulator.url, VIEWER).status_code == 200
    fresh_emulator.set_faults(FaultPlan(drop_rate=1.0, max_faults=1))
    with pytest.raises(requests.ConnectionError):
        post(fresh_emulator.url, VIEWER)
    assert fresh_emulator.stats()["faults"] == {"drop": 2}


def test_a_client_hanging_up_is_not_an_error(demo_data, capfd) -> None:
    body = json.dumps({"query": VIEWER}).encode()
    key = base64.b64encode(f"api:{DEMO_API_KEY}".encode()).decode()
    request = (
        f"POST /graphql HTTP/1.1\r\nHost: emulator\r\nAuthorization: Basic {key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    threads_before = set(threading.enumerate())
    with Emulator(demo_data) as emulator:
        emulator.set_faults(FaultPlan(script=[Fault("delay", match="viewer", seconds=0.5)]))
        with socket.create_connection(emulator.httpd.server_address[:2]) as client:
            client.sendall(request)
            deadline = time.monotonic() + 30
            while not emulator.arrivals:  # the emulator is holding its answer back
                assert time.monotonic() < deadline
                time.sleep(0.01)
            # Hang up with a reset, as a killed client does, before the answer goes out.
            client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        handlers = [
            thread
            for thread in set(threading.enumerate()) - threads_before
            if "process_request_thread" in thread.name
        ]
        assert handlers
        for thread in handlers:  # answering into the reset connection
            thread.join(30)
    assert "Traceback" not in capfd.readouterr().err


def test_truncate_html_graphql_error_delay(fresh_emulator) -> None:
    url = fresh_emulator.url
    fresh_emulator.set_faults(
        FaultPlan(
            script=[
                Fault("truncate", match="project.runs"),
                Fault("html", match="viewer"),
                Fault("graphql_error", match="viewer", body="boom"),
                Fault("delay", match="viewer", seconds=0.4),
            ]
        )
    )
    truncated = post(url, RUNS)
    complete = post(url, RUNS)
    assert truncated.status_code == complete.status_code == 200
    assert complete.json()["data"]["project"]["runs"]["edges"]
    assert 0 < len(truncated.content) < len(complete.content)
    assert complete.content.startswith(truncated.content)
    with pytest.raises(ValueError):
        truncated.json()

    html = post(url, VIEWER)
    assert html.status_code == 200
    assert html.headers["Content-Type"].startswith("text/html") and html.text.startswith("<html")
    assert post(url, VIEWER).json() == {"errors": [{"message": "boom"}], "data": None}
    started = time.monotonic()
    delayed = post(url, VIEWER)
    assert time.monotonic() - started >= 0.4
    assert delayed.json()["data"]["viewer"]["username"] == DEMO_USER


def test_official_client_rides_out_rate_limits(fresh_emulator, demo_data) -> None:
    api = official_client(fresh_emulator.url)
    fresh_emulator.reset_stats()
    fresh_emulator.set_faults(FaultPlan(rate_limit_every=2, retry_after=0, max_faults=3))
    got = [run.id for run in api.runs(f"{DEMO_USER}/vision", per_page=5)]
    assert got == [r.name for r in runs_of(demo_data, DEMO_USER, "vision")]
    assert fresh_emulator.stats()["statuses"]["429"] == 3
    fresh_emulator.set_faults(FaultPlan(script=[Fault("graphql_error", body="no such luck")]))
    with pytest.raises(Exception, match="no such luck"):
        list(api.runs(f"{DEMO_USER}/nlp"))


def test_stats_count_requests_fields_and_bytes(fresh_emulator) -> None:
    url, plain = fresh_emulator.url, {"Accept-Encoding": "identity"}
    fresh_emulator.reset_stats()
    responses = [
        post(url, VIEWER, operation="Viewer", headers=plain),
        post(url, VIEWER, key="z" * 40, operation="Viewer", headers=plain),
        post(url, RUNS, headers=plain),
    ]
    assert [r.status_code for r in responses] == [200, 401, 200]
    stats = fresh_emulator.stats()
    assert stats["requests"] == {"Viewer": 2, "project": 1}
    assert stats["fields"] == {"viewer": 2, "project": 1, "project.runs": 1}
    assert stats["statuses"] == {"200": 2, "401": 1}
    assert stats["total"] == 3
    assert stats["bytes_served"] == sum(len(r.content) for r in responses)


def test_control_endpoints(fresh_emulator) -> None:
    url = fresh_emulator.url
    control = f"{url}/_emulator"
    post(url, VIEWER)
    assert requests.get(f"{control}/stats", timeout=10).json() == fresh_emulator.stats()
    assert fresh_emulator.stats()["total"] == 1  # control traffic is not W&B traffic

    plan = {"rate_limit_every": 1, "retry_after": 0, "max_faults": 1}
    assert requests.post(f"{control}/faults", json=plan, timeout=10).status_code == 200
    assert requests.get(f"{control}/faults", timeout=10).json()["rate_limit_every"] == 1
    response = post(url, VIEWER)
    assert (response.status_code, response.headers["Retry-After"]) == (429, "0")
    assert post(url, VIEWER).status_code == 200

    assert requests.post(f"{control}/stats/reset", timeout=10).status_code == 200
    assert fresh_emulator.stats()["total"] == 0

    before = len(fresh_emulator.store.all_runs())
    assert requests.post(f"{control}/advance", json={"seed": 3}, timeout=10).status_code == 200
    assert len(fresh_emulator.store.all_runs()) > before

    assert requests.post(f"{control}/faults", json={"bogus": 1}, timeout=10).status_code == 400
    assert requests.post(f"{control}/faults", data=b"{", timeout=10).status_code == 400
    assert requests.get(f"{control}/nothing", timeout=10).status_code == 404


# -- the command -------------------------------------------------------------------------------


def test_command_serves_and_stops_on_sigterm(tmp_path) -> None:
    url_file = tmp_path / "url"
    command = [
        sys.executable,
        "-m",
        "tap_wandb.emulator",
        "--port",
        "0",
        "--url-file",
        str(url_file),
    ]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 90  # it builds the demo data first (a loaded CI)
        while not url_file.exists():
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "no URL file after 90 s"
            time.sleep(0.05)
        url = url_file.read_text()
        assert url.startswith("http://127.0.0.1:")
        viewer = post(url, VIEWER).json()["data"]["viewer"]
        assert viewer["username"] == DEMO_USER
        process.send_signal(signal.SIGTERM)
        stdout, _ = process.communicate(timeout=15)
        assert process.returncode == 0
        assert url in stdout
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
