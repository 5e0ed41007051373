"""HTTP front of the emulator: W&B's ``/graphql`` endpoint and signed parquet downloads on
loopback, with fault injection and request accounting kept off the W&B paths (``/_emulator/``).
"""

from __future__ import annotations

import base64
import contextlib
import copy
import gzip
import json
import random
import re
import secrets
import socket
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

from tap_wandb.emulator import api, run_history, writes
from tap_wandb.emulator.store import Store

UNAUTHORIZED = {"errors": [{"message": "user is not logged in"}]}


@dataclass
class Fault:
    """One scripted fault: applied to W&B requests whose field paths contain ``match``.

    ``kind`` is one of ``status`` (answer ``status`` with ``body``), ``drop`` (close the
    connection without an answer), ``truncate`` (a complete answer whose body is the first
    half of the real one), ``cut`` (the real answer's headers and half its body, then the
    connection closes, as a network failure leaves it), ``html`` (a 200 with an HTML page),
    ``graphql_error`` (a 200 with ``errors`` and null data) or ``delay`` (answer normally
    after ``seconds``). ``after`` matching requests pass first; then the
    fault fires ``times`` times (-1: for ever).
    """

    kind: str
    match: str = ""
    status: int = 500
    body: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    after: int = 0
    times: int = 1

    def applies(self, paths: tuple[str, ...]) -> bool:
        # "project.runs" matches that path; "history" matches "project.run.history"; the
        # downloads of exported history files are the path "parquet".
        return not self.match or any(
            path == self.match or path.endswith("." + self.match) for path in paths
        )


@dataclass
class FaultPlan:
    """Seeded, bounded fault injection for W&B requests."""

    rate_limit_every: int = 0  # every Nth W&B request gets a 429
    retry_after: float | None = 1.0  # Retry-After on those 429s (None: header left out)
    rate_limit_reset: float | None = None  # RateLimit-Reset on those 429s
    error_rate: float = 0.0  # share of W&B requests answered ``error_status``
    error_status: int = 502
    drop_rate: float = 0.0  # share of W&B requests whose connection is dropped
    delay_rate: float = 0.0
    delay_seconds: float = 0.0
    max_faults: int = 1_000  # bound on the random and periodic faults above
    seed: int = 0
    script: list[Fault] = field(default_factory=list)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FaultPlan:
        data = dict(data)
        data["script"] = [Fault(**item) for item in data.get("script", [])]
        return cls(**data)


class Emulator:
    """A W&B stand-in: ``Emulator(store).start()`` serves it on 127.0.0.1."""

    def __init__(self, store: Store, host: str = "127.0.0.1", port: int = 0) -> None:
        self.store = store
        self.file_token = secrets.token_hex(8)
        self.faults = FaultPlan()
        self._rng = random.Random(0)
        self._faults_fired = 0
        self._wandb_requests = 0
        self.stats_lock = threading.Lock()
        self.reset_stats()
        self.httpd = ThreadingHTTPServer((host, port), _Handler)
        self.httpd.daemon_threads = True
        self.httpd.emulator = self  # type: ignore[attr-defined]
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> Emulator:
        self._thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- faults and accounting -----------------------------------------------------------

    def set_faults(self, plan: FaultPlan | None) -> None:
        with self.stats_lock:
            self.faults = copy.deepcopy(plan) if plan else FaultPlan()
            self._rng = random.Random(self.faults.seed)
            self._faults_fired = 0
            self._wandb_requests = 0

    def reset_stats(self) -> None:
        with self.stats_lock:
            self.requests: Counter[str] = Counter()
            self.fields: Counter[str] = Counter()
            self.statuses: Counter[int] = Counter()
            self.faults_served: Counter[str] = Counter()
            self.bytes_served = 0
            self.log: list[dict[str, Any]] = []
            # (time.monotonic(), field paths) of each W&B request as it arrives, faulted or not.
            self.arrivals: list[tuple[float, tuple[str, ...]]] = []

    def stats(self) -> dict[str, Any]:
        with self.stats_lock:
            return {
                "requests": dict(self.requests),
                "fields": dict(self.fields),
                "statuses": {str(k): v for k, v in self.statuses.items()},
                "faults": dict(self.faults_served),
                "bytes_served": self.bytes_served,
                "total": sum(self.requests.values()),
            }

    def _record(
        self, kind: str, paths: tuple[str, ...], status: int, size: int, fault: str = "", **extra
    ) -> None:
        with self.stats_lock:
            self.requests[kind] += 1
            if fault:
                self.faults_served[fault] += 1
            self.fields.update(paths)
            self.statuses[status] += 1
            self.bytes_served += size
            if len(self.log) < 100_000:
                self.log.append({"kind": kind, "paths": paths, "status": status, **extra})

    def _pick_fault(self, paths: tuple[str, ...]) -> Fault | None:
        """Decide whether this W&B request is faulted (scripted faults first)."""
        with self.stats_lock:
            self._wandb_requests += 1
            self.arrivals.append((time.monotonic(), paths))
            plan = self.faults
            for fault in plan.script:
                if fault.times == 0 or not fault.applies(paths):
                    continue
                if fault.after > 0:
                    fault.after -= 1
                    continue
                if fault.times > 0:
                    fault.times -= 1
                return fault
            if self._faults_fired >= plan.max_faults:
                return None
            chosen = None
            if plan.rate_limit_every and self._wandb_requests % plan.rate_limit_every == 0:
                headers = {"RateLimit-Limit": "1000", "RateLimit-Remaining": "0"}
                if plan.retry_after is not None:
                    headers["Retry-After"] = _number(plan.retry_after)
                if plan.rate_limit_reset is not None:
                    headers["RateLimit-Reset"] = _number(plan.rate_limit_reset)
                body = json.dumps({"errors": [{"message": "rate limit exceeded"}]})
                chosen = Fault("status", status=429, body=body, headers=headers)
            elif plan.error_rate and self._rng.random() < plan.error_rate:
                chosen = Fault("status", status=plan.error_status, body="<html>Bad Gateway</html>")
            elif plan.drop_rate and self._rng.random() < plan.drop_rate:
                chosen = Fault("drop")
            elif plan.delay_rate and self._rng.random() < plan.delay_rate:
                chosen = Fault("delay", seconds=plan.delay_seconds)
            if chosen:
                self._faults_fired += 1
            return chosen


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


_CONTROL_POSTS = ("/_emulator/stats/reset", "/_emulator/faults", "/_emulator/advance")
_FILE_PATH = re.compile(r"^/_files/history/([^/]+)/([^/]+)/([^/]+)/(\d+)\.parquet$")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "wandb-emulator"

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in separate writes; without this, delayed ACKs add ~40 ms.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def handle(self) -> None:
        # A client that hangs up (timed out, killed, done) is no emulator error: no traceback.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            super().handle()

    @property
    def emulator(self) -> Emulator:
        return self.server.emulator  # type: ignore[attr-defined]

    # -- plumbing -------------------------------------------------------------------------

    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        return body

    def _account(self, kind: str, paths: tuple[str, ...], fault: str = "", **extra: Any) -> None:
        """Count this request when its answer goes out: before the bytes do, so that a client
        holding the answer always finds it in the stats."""
        self._pending = (kind, paths, fault, extra)

    def _record_pending(self, status: int, size: int) -> None:
        pending, self._pending = self._pending, None
        if pending:
            kind, paths, fault, extra = pending
            self.emulator._record(kind, paths, status, size, fault, **extra)

    def _send(
        self,
        status: int,
        body: bytes,
        content_type: str = "application/json",
        headers: dict[str, str] | None = None,
    ) -> None:
        if (
            len(body) > 4096
            and "gzip" in (self.headers.get("Accept-Encoding") or "")
            and content_type == "application/json"
        ):
            body = gzip.compress(body, compresslevel=1)
            headers = {**(headers or {}), "Content-Encoding": "gzip"}
        self._record_pending(status, len(body))
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def _send_json(self, status: int, value: Any, headers: dict[str, str] | None = None) -> None:
        # W&B's outer JSON is strict: no bare NaN/Infinity.
        self._send(status, json.dumps(value, allow_nan=False).encode(), headers=headers)

    def _apply_fault(self, fault: Fault, good_body: bytes, content_type: str) -> None:
        """Answer with a fault other than ``delay``."""
        if fault.kind == "drop":
            self._record_pending(0, 0)
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
        elif fault.kind == "status":
            self._send(fault.status, fault.body.encode(), headers=fault.headers)
        elif fault.kind == "html":
            self._send(200, b"<html><body>502 Bad Gateway</body></html>", "text/html")
        elif fault.kind == "graphql_error":
            message = fault.body or "internal error"
            self._send_json(200, {"errors": [{"message": message}], "data": None})
        elif fault.kind == "truncate":
            self.close_connection = True
            self._send(200, good_body[: max(1, len(good_body) // 2)], content_type)
        elif fault.kind == "cut":
            self._record_pending(200, len(good_body) // 2)
            self.close_connection = True
            self.send_response(200)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(good_body)))
            self.end_headers()
            self.wfile.write(good_body[: len(good_body) // 2])
        else:
            raise ValueError(f"unknown fault kind {fault.kind!r}")

    def _username(self) -> str | None:
        header = self.headers.get("Authorization") or ""
        if not header.startswith("Basic "):
            return None
        try:
            user, _, key = base64.b64decode(header[6:]).decode().partition(":")
        except ValueError:
            return None
        return self.emulator.store.api_keys.get(key) if user == "api" else None

    # -- W&B paths ------------------------------------------------------------------------

    def do_POST(self) -> None:
        self._pending = None
        path = self.path.split("?")[0]
        if path.startswith("/_emulator/"):
            return self._control("POST", path)
        if path != "/graphql":
            return self._send(404, b"not found", "text/plain")
        emulator = self.emulator
        raw = self._read_body()
        try:
            payload = json.loads(raw)
            query = payload["query"]
        except (ValueError, KeyError, TypeError):
            self._account("invalid", ())
            return self._send_json(400, {"errors": [{"message": "invalid request body"}]})
        operation = payload.get("operationName") or ""
        document, errors, paths = api.parse_query(query)
        kind = operation or (paths[0] if paths else "invalid")

        username = self._username()
        if username is None:
            self._account(kind, paths)
            return self._send_json(401, UNAUTHORIZED)

        fault = emulator._pick_fault(paths)
        fault_kind = fault.kind if fault else ""
        self._account(kind, paths, fault_kind, variables=payload.get("variables"))
        if fault_kind == "delay":
            time.sleep(fault.seconds)
        if fault_kind in ("", "delay"):
            return self._send_json(200, self._execute(document, errors, payload, username))
        good = b""
        if fault_kind in ("truncate", "cut"):
            good = json.dumps(self._execute(document, errors, payload, username)).encode()
        return self._apply_fault(fault, good, "application/json")

    def _execute(self, document, errors, payload, username) -> dict[str, Any]:
        if errors:
            return {"errors": [{"message": message} for message in errors], "data": None}
        host = self.headers.get("Host") or "{}:{}".format(*self.server.server_address[:2])
        context = {
            "username": username,
            "base_url": f"http://{host}",
            "file_token": self.emulator.file_token,
        }
        return api.execute(
            self.emulator.store,
            document,
            payload.get("variables"),
            payload.get("operationName"),
            context,
        )

    def do_GET(self) -> None:
        self._pending = None
        path, _, query = self.path.partition("?")
        if path.startswith("/_emulator/"):
            return self._control("GET", path)
        match = _FILE_PATH.match(path)
        emulator = self.emulator
        self._account("parquet", ("parquet",))
        if not match or parse_qs(query).get("token") != [emulator.file_token]:
            return self._send(403, b"invalid signature", "text/plain")
        entity, project, name, index = match.groups()
        run = emulator.store.run(entity, project, name)
        files = run_history.parquet_files(run) if run else []
        if int(index) >= len(files):
            return self._send(404, b"no such export", "text/plain")
        data = files[int(index)]
        fault = emulator._pick_fault(("parquet",))
        self._account("parquet", ("parquet",), fault.kind if fault else "")
        if fault is not None and fault.kind == "delay":
            time.sleep(fault.seconds)
        elif fault is not None:
            return self._apply_fault(fault, data, "application/octet-stream")
        status, headers = 200, {"Accept-Ranges": "bytes"}
        byte_range = re.match(r"bytes=(\d*)-(\d*)$", self.headers.get("Range") or "")
        if byte_range and any(byte_range.groups()):
            first_text, last_text = byte_range.groups()
            if first_text:
                first = int(first_text)
                last = min(int(last_text), len(data) - 1) if last_text else len(data) - 1
            else:  # suffix range: the last N bytes
                first, last = max(0, len(data) - int(last_text)), len(data) - 1
            if first > last:
                headers = {"Content-Range": f"bytes */{len(data)}"}
                return self._send(416, b"range not satisfiable", "text/plain", headers)
            headers["Content-Range"] = f"bytes {first}-{last}/{len(data)}"
            data, status = data[first : last + 1], 206
        return self._send(status, data, "application/octet-stream", headers)

    # -- control (not part of W&B) -------------------------------------------------------

    def _control(self, method: str, path: str) -> None:
        """``GET stats|faults``; ``POST stats/reset``, ``faults`` (a FaultPlan), ``advance``;
        the writes' controls (``writes.control``)."""
        emulator = self.emulator
        if method == "GET" and path in ("/_emulator/stats", "/_emulator/faults"):
            found = emulator.stats() if path.endswith("stats") else asdict(emulator.faults)
            self._send_json(200, found)
            return
        if method == "POST" and path.startswith(writes.CONTROL_PATHS):
            try:
                body = json.loads(self._read_body() or b"{}")
            except ValueError:
                body = None
            if not isinstance(body, dict):
                return self._send_json(400, {"error": "the body must be a JSON object"})
            return self._send_json(*writes.control(emulator.store, path, body))
        if method != "POST" or path not in _CONTROL_POSTS:
            self._send(404, b"unknown control path", "text/plain")
            return
        try:
            body = json.loads(self._read_body() or b"{}")
            if path == "/_emulator/stats/reset":
                emulator.reset_stats()
            elif path == "/_emulator/faults":
                emulator.set_faults(FaultPlan.from_dict(body))
            else:
                from tap_wandb.emulator.generator import advance

                advance(emulator.store, seed=int(body.get("seed", 1)))
        except (ValueError, TypeError, AttributeError) as error:
            self._send_json(400, {"error": str(error)})
            return
        self._send_json(200, {"ok": True, "faults": asdict(emulator.faults)})
