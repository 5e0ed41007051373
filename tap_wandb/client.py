"""The one place for HTTP and GraphQL: auth, retries, rate limits, errors, downloads.

Every request to W&B goes through :class:`WandbClient`. Errors leave it as :class:`WandbError`
subclasses whose message says what failed, where, and what to do, and never holds the key.
"""

from __future__ import annotations

import email.utils
import json
import logging
import random
import threading
import time
from collections.abc import Callable, Iterator
from typing import IO, Any
from urllib.parse import urlsplit

import requests

from tap_wandb import __version__
from tap_wandb.values import loads

RETRIABLE_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
# No answer, or one cut short in transit (a body shorter than its Content-Length, a broken
# gzip stream): worth another try.
TRANSIENT_ERRORS = (
    requests.ConnectionError,
    requests.Timeout,
    requests.exceptions.ChunkedEncodingError,
    requests.exceptions.ContentDecodingError,
)
USER_AGENT = f"tap-wandb/{__version__}"


class WandbError(Exception):
    """A failure talking to W&B, with a message fit for a user."""


class WandbAuthError(WandbError):
    """W&B rejected the credentials."""


class WandbGraphQLError(WandbError):
    """W&B answered with GraphQL ``errors``."""

    def __init__(self, message: str, messages: list[str]) -> None:
        super().__init__(message)
        self.messages = messages


class WandbResponseError(WandbError):
    """W&B answered with a status or a body that retrying will not fix."""


class WandbUnavailableError(WandbError):
    """W&B kept failing (or could not be reached) until the retry budget ran out."""


def _error_text(response: requests.Response) -> str:
    """W&B's own words for an error: the first GraphQL message, else the start of the body."""
    try:
        errors = response.json().get("errors") or []
        if errors and isinstance(errors[0], dict) and errors[0].get("message"):
            return str(errors[0]["message"])
    except (ValueError, AttributeError):
        pass
    text = " ".join(response.text.split())
    return text[:200] or response.reason or "no body"


def _retry_after(response: requests.Response) -> float | None:
    """Seconds to wait as the server asks: Retry-After (seconds or HTTP date), else
    RateLimit-Reset (seconds)."""
    value = response.headers.get("Retry-After")
    if value:
        try:
            return max(0.0, float(value))
        except ValueError:
            try:
                when = email.utils.parsedate_to_datetime(value)
                return max(0.0, when.timestamp() - time.time())
            except (TypeError, ValueError):
                pass
    value = response.headers.get("RateLimit-Reset")
    if value:
        try:
            return max(0.0, float(value))
        except ValueError:
            pass
    return None


class WandbClient:
    """W&B's GraphQL endpoint and its signed file URLs, with bounded, shared retries.

    Safe to use from several threads: each thread gets its own HTTP session, and a 429 pauses
    every thread until the server's wait is over.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout: float = 60.0,
        max_retries: int = 8,
        backoff_base: float = 0.5,
        max_wait: float = 300.0,
        logger: logging.Logger | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.graphql_url = f"{self.base_url}/graphql"
        self._auth = ("api", api_key)
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff_base = backoff_base
        self.max_wait = max_wait
        self.logger = logger or logging.getLogger("tap-wandb")
        self._local = threading.local()
        self._lock = threading.Lock()
        self._paused_until = 0.0
        self._closed = threading.Event()
        self._random = random.Random()

    def close(self) -> None:
        """Stop retrying: requests in other threads fail at their next attempt."""
        self._closed.set()

    def __repr__(self) -> str:  # never show the key
        return f"WandbClient({self.base_url!r})"

    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            session.headers["User-Agent"] = USER_AGENT
            self._local.session = session
        return session

    # -- GraphQL ----------------------------------------------------------------------------

    def graphql(self, document: str, variables: dict[str, Any], *, what: str) -> dict[str, Any]:
        """Run one GraphQL document and return its ``data``.

        ``what`` says what is being read (e.g. "runs of acme/vision"); it leads every error.
        """
        response = self._send(
            "POST",
            self.graphql_url,
            what=what,
            json={"query": document, "variables": variables},
            auth=self._auth,
        )
        try:
            payload = loads(response.content)  # msgspec: pages of history are large
        except (ValueError, RecursionError):
            snippet = " ".join(response.text.split())[:120]
            raise WandbResponseError(
                f"{what}: W&B at {self.base_url} answered HTTP {response.status_code} with a body "
                f"that is not JSON ({len(response.content)} bytes: {snippet!r}). "
                "Check base_url, or a proxy in between."
            ) from None
        if not isinstance(payload, dict):
            raise WandbResponseError(f"{what}: W&B answered a JSON {type(payload).__name__}")
        errors = payload.get("errors")
        if errors:
            messages = [
                str(error.get("message", error)) if isinstance(error, dict) else str(error)
                for error in errors
            ]
            raise WandbGraphQLError(f"{what}: W&B answered: {'; '.join(messages)}", messages)
        data = payload.get("data")
        if not isinstance(data, dict):
            raise WandbResponseError(f"{what}: W&B answered without data")
        return data

    def pages(
        self,
        document: str,
        variables: dict[str, Any],
        *,
        connection: Callable[[dict[str, Any]], dict[str, Any] | None],
        what: str,
        cursor: str = "endCursor",
        first_page: dict[str, Any] | None = None,
        after: str | None = None,
    ) -> Iterator[dict[str, Any]]:
        """The ``data`` of each page of a Relay connection (``first``/``after``), in order.

        ``connection`` finds the connection in a page's data (None: nothing there).
        ``cursor`` is where the next page starts: ``endCursor`` of ``pageInfo``, or ``edge``
        for the last edge's cursor (how the official client pages runs). ``first_page``
        holds variables sent with the first request only. ``after``: start after this
        cursor (a page already read elsewhere) instead of at the beginning.
        """
        extra = first_page or {}
        while True:
            data = self.graphql(document, {**variables, **extra, "after": after}, what=what)
            extra = {}
            yield data
            found = connection(data) or {}
            edges = found.get("edges") or []
            page_info = found.get("pageInfo") or {}
            if not page_info.get("hasNextPage") or not edges:
                return
            after = edges[-1].get("cursor") if cursor == "edge" else page_info.get("endCursor")
            if not after:
                raise WandbResponseError(
                    f"{what}: W&B said there is a next page but gave no cursor"
                )

    # -- files ------------------------------------------------------------------------------

    def download(self, url: str, destination: IO[bytes], *, what: str) -> int:
        """Stream a (signed) file URL into ``destination``; returns the bytes written.

        Credentials go only to the W&B host itself, as the official client does.
        """
        same_host = urlsplit(url).netloc == urlsplit(self.base_url).netloc

        def save(response: requests.Response) -> int:
            destination.seek(0)
            destination.truncate()
            written = 0
            for chunk in response.iter_content(chunk_size=1 << 20):
                destination.write(chunk)
                written += len(chunk)
            return written

        return self._send(
            "GET", url, what=what, stream=True, auth=self._auth if same_host else None, read=save
        )

    # -- retries ----------------------------------------------------------------------------

    def _send(
        self,
        method: str,
        url: str,
        *,
        what: str,
        read: Callable[[requests.Response], Any] | None = None,
        **kwargs: Any,
    ) -> Any:
        """The successful response, or what ``read`` (given a streamed body) returns from it.

        Attempts, whether the request or the reading of a streamed body fails, share one
        budget of ``max_retries`` retries.
        """
        problem = ""
        for attempt in range(self.max_retries + 1):
            if self._closed.is_set():
                raise WandbUnavailableError(f"{what}: not retried, the sync is stopping")
            self._wait_while_paused()
            wait: float | None = None
            try:
                response = self._session().request(method, url, timeout=self.timeout, **kwargs)
                if read is not None and response.status_code < 400:
                    with response:
                        return read(response)
            except TRANSIENT_ERRORS as error:
                problem = f"{type(error).__name__} ({_short(error)})"
            else:
                status = response.status_code
                if status < 400:
                    return response
                if status in (401, 403):
                    raise WandbAuthError(
                        f"{what}: W&B at {self.base_url} rejected the API key "
                        f"(HTTP {status}: {_error_text(response)}). Set a valid key in the "
                        "api_key setting (TAP_WANDB_API_KEY), WANDB_API_KEY or ~/.netrc "
                        "(`wandb login`), for this base_url."
                    )
                if status not in RETRIABLE_STATUSES and not (status > 500 and status != 501):
                    raise WandbResponseError(
                        f"{what}: W&B at {self.base_url} answered HTTP {status}: "
                        f"{_error_text(response)}"
                    )
                problem = f"HTTP {status}"
                wait = _retry_after(response)
                if status == 429:
                    problem += " (rate limited)"
                    self._pause_everyone(wait if wait is not None else self._backoff(attempt))
                response.close()
            if attempt == self.max_retries:
                raise WandbUnavailableError(
                    f"{what}: W&B at {self.base_url} still failing after {attempt + 1} attempts "
                    f"(last: {problem}). Try again later, or raise max_retries / request_timeout."
                )
            self._sleep_before_retry(what, problem, attempt, wait)
        raise AssertionError("unreachable")

    def _backoff(self, attempt: int) -> float:
        # Capped exponential backoff with full jitter in its upper half.
        ceiling = min(60.0, self.backoff_base * 2**attempt)
        return ceiling * (0.5 + self._random.random() / 2)

    def _sleep_before_retry(self, what: str, problem: str, attempt: int, wait: float | None):
        wait = min(self.max_wait, self._backoff(attempt) if wait is None else wait)
        self.logger.warning(
            "%s: %s; retry %d of %d in %.1f s",
            what, problem, attempt + 1, self.max_retries, wait,
        )  # fmt: skip
        self._closed.wait(wait)

    def _pause_everyone(self, seconds: float) -> None:
        with self._lock:
            self._paused_until = max(
                self._paused_until, time.monotonic() + min(seconds, self.max_wait)
            )

    def _wait_while_paused(self) -> None:
        remaining = self._paused_until - time.monotonic()
        if remaining > 0:
            self._closed.wait(remaining)


def _short(error: Exception) -> str:
    text = str(error)
    return text if len(text) <= 160 else text[:157] + "..."


def dumps_filters(filters: dict[str, Any]) -> str:
    """W&B takes run filters as a JSONString variable."""
    return json.dumps(filters, separators=(",", ":"), allow_nan=False)
