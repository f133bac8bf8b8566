"""A fake ENCODE portal on 127.0.0.1 for the ENCODE tests (no internet needed).

It replays the recorded-shape objects in ``experiments.json`` / ``files.json`` through the
portal's search semantics (``/search/?type=...&<dotted.field>=<value>`` filters, repeated
parameter = OR, ``field=`` projection, ``limit`` default 25 or ``all``, ``facets`` with
``terms``/``doc_count``, HTTP 404 + JSON when nothing matches), redirects file ``href`` downloads
to a storage path like the real portal does (to S3), and serves small BAMs written with pysam,
honouring ``Range`` requests. Faults are queued per endpoint to test retries and resumes.
"""

from __future__ import annotations

import collections
import contextlib
import copy
import hashlib
import json
import socket
import tempfile
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pysam

HERE = Path(__file__).parent
ORGANISM = "replicates.library.biosample.donor.organism.scientific_name"
EXPERIMENT_FACETS = [
    "assay_title",
    "status",
    "target.label",
    "biosample_ontology.term_name",
    "biosample_ontology.classification",
    "assembly",
    ORGANISM,
]
FILE_FACETS = ["status", "output_type", "file_format", "assembly"]
CONTROL_PARAMS = {"format", "frame", "limit", "field", "type"}
_BLOBS: dict[tuple[str, int], bytes] = {}


def tiny_bam(name: str, n_reads: int) -> bytes:
    """Bytes of a coordinate-sorted BAM with ``n_reads`` reads on a 20 kb chr1 (cached)."""
    key = (name, n_reads)
    if key not in _BLOBS:
        header = {"HD": {"VN": "1.6", "SO": "coordinate"}, "SQ": [{"SN": "chr1", "LN": 20000}]}
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "x.bam"
            with pysam.AlignmentFile(str(path), "wb", header=header) as out:
                for i in range(n_reads):
                    read = pysam.AlignedSegment()
                    read.query_name = f"{name}_{i}"
                    read.query_sequence = "ACGT" * 9
                    read.flag = 16 if i % 3 == 0 else 0
                    read.reference_id = 0
                    read.reference_start = (i * 37) % 19000
                    read.mapping_quality = 10 + i % 40
                    read.cigartuples = [(0, 36)]
                    read.query_qualities = pysam.qualitystring_to_array("I" * 36)
                    out.write(read)  # starts increase with i (n_reads < 500): sorted
            _BLOBS[key] = path.read_bytes()
    return _BLOBS[key]


def _values(obj, path: str) -> list:
    """Values at a dotted path, descending through lists."""
    current = [obj]
    for key in path.split("."):
        nxt = []
        for item in current:
            if isinstance(item, list):
                item_list = item
            else:
                item_list = [item]
            for element in item_list:
                if isinstance(element, dict) and key in element:
                    value = element[key]
                    nxt.extend(value if isinstance(value, list) else [value])
        current = nxt
    return current


def _project(obj: dict, paths: list[str]) -> dict:
    out: dict = {k: obj[k] for k in ("@id", "@type") if k in obj}
    for path in paths:
        _copy_path(obj, out, path.split("."))
    return out


def _copy_path(src, dst: dict, keys: list[str]) -> None:
    key = keys[0]
    if not isinstance(src, dict) or key not in src:
        return
    value = src[key]
    if len(keys) == 1:
        dst[key] = copy.deepcopy(value)
    elif isinstance(value, list):
        existing = dst.setdefault(key, [{} for _ in value])
        for element, target in zip(value, existing, strict=False):
            _copy_path(element, target, keys[1:])
    elif isinstance(value, dict):
        _copy_path(value, dst.setdefault(key, {}), keys[1:])


class FakePortal:
    """State of the fake portal; ``url`` is its base URL while running."""

    def __init__(self) -> None:
        self.experiments = json.loads((HERE / "experiments.json").read_text())["@graph"]
        raw_files = json.loads((HERE / "files.json").read_text())["@graph"]
        self.blobs: dict[str, bytes] = {}
        self.files = []
        for item in raw_files:
            item = dict(item)
            blob = tiny_bam(item["accession"], int(item.pop("_reads")))
            name = item["href"].rsplit("/", 1)[-1]
            self.blobs[name] = blob
            item["md5sum"] = hashlib.md5(blob).hexdigest()
            item["file_size"] = len(blob)
            self.files.append(item)
        self.faults: dict[str, collections.deque] = collections.defaultdict(collections.deque)
        self.html = False
        self.corrupt: set[str] = set()
        self.ignore_range: set[str] = set()
        self.log: list[dict] = []
        self.lock = threading.Lock()
        self.url = ""

    # -- helpers for tests ----------------------------------------------------------------
    def file(self, accession: str) -> dict:
        return next(f for f in self.files if f["accession"] == accession)

    def requests(self, kind: str, name: str | None = None) -> list[dict]:
        with self.lock:
            return [
                r for r in self.log if r["kind"] == kind and (name is None or r["name"] == name)
            ]

    def fault(self, key: str, *actions: tuple) -> None:
        """Queue actions for the next requests to ``key`` ("search" or a storage file name)."""
        self.faults[key].extend(actions)

    def _next_fault(self, key: str):
        with self.lock:
            queue = self.faults.get(key)
            return queue.popleft() if queue else None

    # -- search ---------------------------------------------------------------------------
    def search(self, query: dict[str, list[str]]) -> tuple[int, dict]:
        kind = (query.get("type") or ["Item"])[0]
        objects = self.experiments if kind == "Experiment" else self.files
        filters = {k: v for k, v in query.items() if k not in CONTROL_PARAMS}
        hits = [o for o in objects if self._matches(o, filters)]
        facets = []
        for field in EXPERIMENT_FACETS if kind == "Experiment" else FILE_FACETS:
            others = {k: v for k, v in filters.items() if k != field}
            counts = collections.Counter()
            for obj in objects:
                if self._matches(obj, others):
                    for value in set(map(str, _values(obj, field))):
                        counts[value] += 1
            terms = [{"key": k, "doc_count": n} for k, n in counts.most_common()]
            if terms:
                facets.append(
                    {
                        "field": field,
                        "title": field,
                        "terms": terms,
                        "total": len(hits),
                        "type": "terms",
                    }
                )
        limit = (query.get("limit") or ["25"])[0]
        shown = hits if limit == "all" else hits[: int(limit)]
        fields = query.get("field")
        graph = [_project(o, fields) if fields else copy.deepcopy(o) for o in shown]
        payload = {
            "@graph": graph,
            "@id": "/search/?" + urllib.parse.urlencode(query, doseq=True),
            "@type": ["Search"],
            "facets": facets,
            "total": len(hits),
            "notification": "Success" if hits else "No results found",
        }
        return (200 if hits else 404), payload

    @staticmethod
    def _matches(obj: dict, filters: dict[str, list[str]]) -> bool:
        for key, wanted in filters.items():
            have = {str(v) for v in _values(obj, key)}
            if not have & set(wanted):
                return False
        return True


class _Handler(BaseHTTPRequestHandler):
    portal: FakePortal  # set on the subclass

    def log_message(self, *args) -> None:  # keep test output clean
        pass

    def _send(self, status: int, body: bytes, content_type: str, extra: dict | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (extra or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802 (http.server API)
        portal = self.portal
        parsed = urllib.parse.urlparse(self.path)
        query = urllib.parse.parse_qs(parsed.query, keep_blank_values=True)
        path = parsed.path
        if path.startswith("/search"):
            kind, name = "search", "search"
        elif path.startswith("/files/") and "@@download" in path:
            kind, name = "href", path.rsplit("/", 1)[-1]
        elif path.startswith("/storage/"):
            kind, name = "storage", path.rsplit("/", 1)[-1]
        else:
            kind, name = "other", path
        with portal.lock:
            portal.log.append(
                {"kind": kind, "name": name, "query": query, "range": self.headers.get("Range")}
            )
        try:
            self._answer(kind, name, query)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def _answer(self, kind: str, name: str, query: dict) -> None:
        portal = self.portal
        if kind == "href":
            if name not in portal.blobs:
                self._send(404, b'{"status": "error", "code": 404}', "application/json")
                return
            self.send_response(307)
            self.send_header("Location", f"/storage/{name}?X-Amz-Signature=fake")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        fault = portal._next_fault("search" if kind == "search" else name)
        if fault and fault[0] == "stall":
            time.sleep(fault[1])
            fault = None
        if fault and fault[0] == "status":
            body = b"<html><body>Service Unavailable</body></html>"
            self._send(fault[1], body, "text/html")
            return
        if kind == "search":
            if portal.html or (fault and fault[0] == "html"):
                self._send(
                    200,
                    b"<!DOCTYPE html><html><head><title>ENCODE</title></head></html>",
                    "text/html; charset=utf-8",
                )
                return
            status, payload = portal.search(query)
            self._send(status, json.dumps(payload).encode(), "application/json; charset=utf-8")
            return
        if kind == "storage":
            self._storage(name, fault)
            return
        self._send(404, b"not found", "text/plain")

    def _storage(self, name: str, fault) -> None:
        portal = self.portal
        blob = portal.blobs.get(name)
        if blob is None:
            self._send(404, b"<Error><Code>NoSuchKey</Code></Error>", "application/xml")
            return
        if name in portal.corrupt:
            middle = len(blob) // 2  # flip bytes inside the data (the BGZF EOF block is fixed)
            blob = (
                blob[:middle]
                + bytes(b ^ 0xFF for b in blob[middle : middle + 8])
                + blob[middle + 8 :]
            )
        start = 0
        requested = self.headers.get("Range")
        if (
            requested
            and name not in portal.ignore_range
            and not (fault and fault[0] == "ignore_range")
        ):
            start = int(requested.split("=", 1)[1].split("-", 1)[0])
            if start >= len(blob):
                self._send(416, b"", "application/xml", {"Content-Range": f"bytes */{len(blob)}"})
                return
        body = blob[start:]
        self.send_response(206 if start else 200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(len(body)))
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(blob) - 1}/{len(blob)}")
        self.end_headers()
        if fault and fault[0] == "drop":
            # Send part of the body, then cut the connection like a network failure.
            self.wfile.write(body[: fault[1]])
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True
            return
        if fault and fault[0] == "stall_body":
            self.wfile.write(body[: fault[1]])
            self.wfile.flush()
            time.sleep(fault[2])
            return
        self.wfile.write(body)


@contextlib.contextmanager
def running_portal():
    """Start a :class:`FakePortal` on an ephemeral 127.0.0.1 port; stop it on exit."""
    portal = FakePortal()
    handler = type("Handler", (_Handler,), {"portal": portal})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    portal.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield portal
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
