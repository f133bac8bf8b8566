"""A small JSON client for the ENCODE portal's REST API (standard library only).

The portal documents its API at https://www.encodeproject.org/help/rest-api/ : every page is
available as JSON with ``?format=json``, searches live under ``/search/`` and return
``{"@graph": [...], "facets": [...], "total": N, "notification": ...}``, and a search without
hits answers **HTTP 404** with the same JSON body and ``"notification": "No results found"``
(snovault ``NotificationResponseField``), which this client returns as an empty result rather
than an error. The portal asks scripts to stay under 10 GET requests per second; metadata
requests here are sequential and spaced by ``min_interval``.

The base URL comes from the ``CHIPVI_ENCODE_URL`` environment variable (default
``https://www.encodeproject.org``), so tests and mirrors can point the code elsewhere.
"""

from __future__ import annotations

import http.client
import json
import os
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from typing import Any

from ..._errors import ChipviInputError

DEFAULT_URL = "https://www.encodeproject.org"
ENV_URL = "CHIPVI_ENCODE_URL"

# Answers worth another try: the portal or S3 being busy or briefly down.
RETRY_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})

# Network failures worth another try: URLError (DNS, refused connection), socket timeouts
# (TimeoutError), resets (ConnectionError), TLS errors (all OSError), and a connection closed
# mid-body (http.client.IncompleteRead). Local disk errors are OSError too: code that writes
# files must catch those before these.
NETWORK_ERRORS = (OSError, http.client.HTTPException)


class EncodeError(RuntimeError):
    """The ENCODE portal (or the network) did not give a usable answer after all retries."""


def default_base_url() -> str:
    """Base URL of the portal: ``$CHIPVI_ENCODE_URL`` or https://www.encodeproject.org."""
    return (os.environ.get(ENV_URL) or DEFAULT_URL).rstrip("/")


def _version() -> str:
    from chipvi import __version__

    return __version__


class EncodeClient:
    """HTTP access to the ENCODE portal with timeouts, bounded retries and JSON checks.

    Parameters
    ----------
    base_url
        Portal root, e.g. ``https://www.encodeproject.org``; default ``$CHIPVI_ENCODE_URL``
        or the public portal.
    timeout
        Seconds allowed for connecting and for each socket read.
    retries
        Extra attempts after a failed one (5xx, 408/429, timeouts, dropped connections).
        Client errors such as 404 are not retried.
    backoff
        Seconds before the first retry; doubled after each failed attempt, capped at
        ``max_backoff``. Tests use 0.
    max_backoff
        Longest wait between two attempts.
    min_interval
        Least seconds between two metadata requests (the portal allows 10 per second).
    """

    def __init__(
        self,
        base_url: str | None = None,
        *,
        timeout: float = 60.0,
        retries: int = 5,
        backoff: float = 1.0,
        max_backoff: float = 60.0,
        min_interval: float = 0.1,
    ) -> None:
        self.base_url = (base_url or default_base_url()).rstrip("/")
        parsed = urllib.parse.urlparse(self.base_url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise EncodeError(
                f"ENCODE base URL {self.base_url!r} is not an http(s) URL; set {ENV_URL} to "
                f"something like {DEFAULT_URL}."
            )
        if retries < 0 or timeout <= 0 or backoff < 0:
            raise ChipviInputError(
                f"EncodeClient needs retries >= 0, timeout > 0 and backoff >= 0; got "
                f"retries={retries}, timeout={timeout}, backoff={backoff}."
            )
        self.timeout = float(timeout)
        self.retries = int(retries)
        self.backoff = float(backoff)
        self.max_backoff = float(max_backoff)
        self.min_interval = float(min_interval)
        # Built per client so proxy settings are read from the environment at creation time.
        self._opener = urllib.request.build_opener()
        self._lock = threading.Lock()
        self._last_request = 0.0

    def __repr__(self) -> str:
        return f"EncodeClient({self.base_url!r})"

    # -- URLs -------------------------------------------------------------------------------
    def url(self, path: str, params: Mapping[str, Any] | None = None) -> str:
        """Absolute URL for a portal path (``/search/``, a file ``href``) or a full URL."""
        url = path if "://" in path else self.base_url + "/" + path.lstrip("/")
        if params:
            query = urllib.parse.urlencode(_flatten_params(params), doseq=True)
            url += ("&" if "?" in url else "?") + query
        return url

    # -- retries ----------------------------------------------------------------------------
    def wait_before_retry(self, attempt: int) -> None:
        """Sleep ``backoff * 2**attempt`` seconds (capped) before retry number ``attempt + 1``."""
        delay = min(self.backoff * (2**attempt), self.max_backoff)
        if delay > 0:
            time.sleep(delay)

    def _throttle(self) -> None:
        if self.min_interval <= 0:
            return
        with self._lock:
            wait = self._last_request + self.min_interval - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            self._last_request = time.monotonic()

    # -- raw access -------------------------------------------------------------------------
    def open(self, url: str, headers: Mapping[str, str] | None = None):
        """One GET attempt; returns the ``http.client.HTTPResponse`` (redirects followed).

        Raises ``urllib.error.HTTPError`` for HTTP errors and the network errors in
        ``NETWORK_ERRORS``; callers that stream (downloads) handle retries themselves because
        a retry there must resume where the previous attempt stopped.
        """
        request = urllib.request.Request(self.url(url), headers=dict(headers or {}))
        request.add_header("User-Agent", f"chipvi/{_version()} (python urllib)")
        return self._opener.open(request, timeout=self.timeout)

    # -- JSON -------------------------------------------------------------------------------
    def get_json(self, path: str, params: Mapping[str, Any] | None = None) -> dict:
        """GET a portal page as JSON, retrying transient failures.

        A 404 whose body is portal JSON (a search without hits) is returned as is; any other
        client error, an HTML page, or a body that is not JSON raises :class:`EncodeError`.
        """
        params = dict(params or {})
        params.setdefault("format", "json")
        url = self.url(path, params)
        last_error = ""
        for attempt in range(self.retries + 1):
            if attempt:
                self.wait_before_retry(attempt - 1)
            self._throttle()
            try:
                with self.open(url, {"Accept": "application/json"}) as response:
                    body = response.read()
                    content_type = response.headers.get("Content-Type", "")
                return _parse_json(body, content_type, url)
            except urllib.error.HTTPError as error:
                try:
                    body = error.read()
                except (OSError, http.client.HTTPException):
                    body = b""
                content_type = error.headers.get("Content-Type", "") if error.headers else ""
                if error.code in RETRY_STATUS:
                    last_error = f"HTTP {error.code} {error.reason}"
                    continue
                if error.code == 404 and _looks_like_json(body, content_type):
                    payload = _parse_json(body, content_type, url)
                    if "@graph" in payload:
                        return payload
                raise EncodeError(
                    f"ENCODE portal answered HTTP {error.code} ({error.reason}) for {url}."
                    + _hint_from_body(body)
                ) from None
            except NETWORK_ERRORS as error:
                last_error = f"{type(error).__name__}: {getattr(error, 'reason', error)}"
                continue
        raise EncodeError(
            f"ENCODE portal at {self.base_url} did not answer {url} after "
            f"{self.retries + 1} attempts (last error: {last_error}). Check the network, or "
            f"set {ENV_URL} if you use a mirror."
        )

    def search(self, params: Mapping[str, Any]) -> dict:
        """``GET /search/`` with ``params`` (lists become repeated parameters = OR)."""
        return self.get_json("/search/", params)


def _flatten_params(params: Mapping[str, Any]) -> list[tuple[str, str]]:
    pairs: list[tuple[str, str]] = []
    for key, value in params.items():
        if value is None:
            continue
        if isinstance(value, str) or not isinstance(value, Sequence):
            pairs.append((key, str(value)))
        else:
            pairs.extend((key, str(v)) for v in value)
    return pairs


def _looks_like_json(body: bytes, content_type: str) -> bool:
    return "json" in content_type.lower() or body.lstrip()[:1] in (b"{", b"[")


def _parse_json(body: bytes, content_type: str, url: str) -> dict:
    head = body.lstrip()[:1]
    if "html" in content_type.lower() or head == b"<":
        raise EncodeError(
            f"{url} returned an HTML page instead of JSON (Content-Type {content_type!r}). "
            f"The portal may be down for maintenance, a proxy or login page may have answered, "
            f"or {ENV_URL} does not point to an ENCODE portal."
        )
    try:
        payload = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        snippet = body[:120].decode("utf-8", "replace")
        raise EncodeError(f"{url} did not return valid JSON ({error}): {snippet!r}") from None
    if not isinstance(payload, dict):
        raise EncodeError(f"{url} returned JSON of type {type(payload).__name__}, not an object.")
    return payload


def _hint_from_body(body: bytes) -> str:
    try:
        payload = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return ""
    if isinstance(payload, dict):
        detail = payload.get("detail") or payload.get("description") or ""
        return f" Portal says: {detail}" if detail else ""
    return ""
