"""Parallel, resumable, md5-verified downloads of ENCODE files.

Each file is fetched from its portal ``href`` (``/files/<ENCFF>/@@download/<ENCFF>.bam``; the
portal answers with a redirect to storage, which is followed) into ``<name>.part``. A retry, or
a later run after an interrupted one, resumes the ``.part`` file with an HTTP ``Range:
bytes=<size>-`` request (a server that ignores the range and answers 200 is handled by starting
over). A finished ``.part`` file is checked against the portal's ``md5sum`` and only then renamed
onto the final name, so a final file is always complete and verified. Files already present
with the right size and md5 are skipped.

BAM indexes: ENCODE does not ship ``.bai`` files for most BAMs, so after a BAM is verified its
index is built here with ``pysam.index`` (written as ``<name>.bai`` through a temporary file);
``index=False`` turns this off.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import shutil
import sys
import tempfile
import threading
import urllib.error
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from tqdm.auto import tqdm

from ..._errors import ChipviInputError
from ..._utils import atomic_path
from ._client import NETWORK_ERRORS, RETRY_STATUS, EncodeClient, EncodeError
from ._samplesheet import build_samplesheet
from ._search import accession_from_id

SAMPLESHEET_NAME = "samplesheet.csv"
CHUNK = 1 << 20
_MD5 = re.compile(r"[0-9a-f]{32}")
_EXPERIMENT = re.compile(r"ENCSR[0-9]{3}[A-Z]{3}")
_FILE = re.compile(r"ENCFF[0-9]{3}[A-Z]{3}")
# Local write errors that no retry can fix.
_LOCAL_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}


class DownloadError(EncodeError):
    """One or more files could not be downloaded or verified (the message lists each)."""


@dataclass(frozen=True)
class _Job:
    accession: str
    url: str
    md5: str
    size: int
    name: str


@dataclass
class DownloadResult:
    """What :func:`download` did.

    Attributes
    ----------
    out_dir
        Folder holding the files.
    samplesheet
        Path of the written sample sheet, or ``None`` when plain file accessions were given.
    sheet
        The sample sheet as written (``bam``/``control`` are file names relative to
        ``out_dir``), or ``None``.
    files
        One row per file: ``accession``, ``file``, ``path``, ``size``, ``md5``, ``status``
        (``"downloaded"`` or ``"present"``), ``fetched`` (bytes transferred in this call),
        ``index`` (path of the ``.bai``, ``""`` if none).
    """

    out_dir: Path
    samplesheet: Path | None
    sheet: pd.DataFrame | None
    files: pd.DataFrame

    def summary(self) -> str:
        """One paragraph: counts, bytes and where the sample sheet is."""
        done = self.files[self.files["status"] == "downloaded"]
        present = self.files[self.files["status"] == "present"]
        text = (
            f"ENCODE download into {self.out_dir}: {len(done)} file(s) downloaded "
            f"({_human(int(done['fetched'].sum()))} transferred), {len(present)} already present "
            f"and verified, 0 failed."
        )
        if self.samplesheet is not None:
            text += f" Sample sheet: {self.samplesheet}"
        return text


def download(
    samplesheet_or_accessions: pd.DataFrame | str | os.PathLike | Sequence[str],
    out_dir: str | os.PathLike,
    *,
    threads: int = 4,
    index: bool = True,
    progress: bool = True,
    client: EncodeClient | None = None,
) -> DownloadResult:
    """Download ENCODE BAMs (resumable, md5-verified) and write the local sample sheet.

    Parameters
    ----------
    samplesheet_or_accessions
        A sample sheet from :func:`~chipvi.io.encode.build_samplesheet` (DataFrame or the path of
        its CSV), experiment accessions (``ENCSR...``: the sheet is built with default options),
        or file accessions (``ENCFF...``: the files are downloaded, no sheet is written).
    out_dir
        Folder for the files and ``samplesheet.csv`` (created if missing).
    threads
        Files downloaded at the same time.
    index
        Build a ``.bai`` index next to each BAM that has none (``pysam.index``).
    progress
        Show a progress bar (bytes) and print the summary to stderr.
    client
        Portal client; its ``retries``, ``backoff`` and ``timeout`` also govern the downloads.
        Default :class:`~chipvi.io.encode.EncodeClient`.

    Returns
    -------
    DownloadResult
        Files, their status, and the sample sheet written to ``out_dir/samplesheet.csv`` with
        local file names (relative paths resolve against the sheet's folder). The sheet is
        rewritten on every successful call.

    Raises
    ------
    chipvi.ChipviInputError
        Before anything is downloaded: malformed sheet (missing columns, bad md5/size, file names
        with folders), BAMs of several assemblies, ``out_dir`` not a writable folder, or less
        free disk space than the bytes still to download.
    DownloadError
        After all files were tried: the files that failed (HTTP 404, retries exhausted, md5
        mismatch: the bad file is removed). Completed files stay; a re-run resumes the rest.
    """
    if not isinstance(threads, int) or threads < 1:
        raise ChipviInputError(f"threads must be a positive integer, got {threads!r}.")
    client = client or EncodeClient()
    sheet, jobs = _plan(samplesheet_or_accessions, client)
    out_dir = _prepare_out_dir(out_dir)
    to_fetch = _bytes_to_fetch(jobs, out_dir)
    free = _free_bytes(out_dir)
    if to_fetch > free:
        raise ChipviInputError(
            f"Not enough disk space in {out_dir}: {_human(to_fetch)} still to download, "
            f"{_human(free)} free. Free some space or choose another out_dir."
        )

    bar = tqdm(
        total=to_fetch,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        desc="ENCODE",
        disable=not progress,
        file=sys.stderr,
    )
    lock = threading.Lock()
    # Set on Ctrl-C: workers stop at the next chunk and keep their .part files for a resume.
    stop = threading.Event()
    records: list[dict[str, Any]] = []
    failures: list[str] = []
    try:
        with ThreadPoolExecutor(max_workers=min(threads, max(len(jobs), 1))) as pool:
            futures = {
                pool.submit(_fetch_one, job, out_dir, client, bar, lock, index, stop): job
                for job in jobs
            }
            try:
                for future, job in futures.items():
                    try:
                        records.append(future.result())
                    except _Failure as failure:
                        failures.append(str(failure))
                    except OSError as error:  # local disk problems while writing
                        failures.append(f"{job.name}: cannot write in {out_dir}: {error}")
            except BaseException:
                stop.set()
                pool.shutdown(wait=True, cancel_futures=True)
                raise
    finally:
        bar.close()
    if failures:
        done = len(records)
        raise DownloadError(
            f"{len(failures)} of {len(jobs)} file(s) failed ({done} done; re-run to resume):\n  "
            + "\n  ".join(failures)
        )

    files = pd.DataFrame(
        records,
        columns=["accession", "file", "path", "size", "md5", "status", "fetched", "index"],
    )
    sheet_path = None
    if sheet is not None:
        sheet_path = out_dir / SAMPLESHEET_NAME
        with atomic_path(sheet_path, overwrite=True) as tmp:
            sheet.to_csv(tmp, index=False)
    result = DownloadResult(out_dir=out_dir, samplesheet=sheet_path, sheet=sheet, files=files)
    if progress:
        print(result.summary(), file=sys.stderr)
    return result


# -- planning ---------------------------------------------------------------------------------
def _plan(source: Any, client: EncodeClient) -> tuple[pd.DataFrame | None, list[_Job]]:
    if isinstance(source, pd.DataFrame):
        sheet = source.copy()
    elif isinstance(source, (str, os.PathLike)) and not _looks_like_accession(source):
        path = Path(source)
        if not path.is_file():
            raise ChipviInputError(f"Sample sheet {path} does not exist.")
        sheet = pd.read_csv(path, dtype=str, keep_default_na=False)
    else:
        accessions = [str(a).strip() for a in ([source] if isinstance(source, str) else source)]
        if accessions and all(_EXPERIMENT.fullmatch(a) for a in accessions):
            sheet = build_samplesheet(accessions, client=client)
        elif accessions and all(_FILE.fullmatch(a) for a in accessions):
            return None, _jobs_from_accessions(accessions, client)
        else:
            raise ChipviInputError(
                "Pass a sample sheet, or only experiment accessions (ENCSR...), or only file "
                f"accessions (ENCFF...); got {accessions[:5]!r}."
            )
    return sheet, _jobs_from_sheet(sheet)


def _looks_like_accession(value: Any) -> bool:
    return isinstance(value, str) and bool(_EXPERIMENT.fullmatch(value) or _FILE.fullmatch(value))


def _jobs_from_sheet(sheet: pd.DataFrame) -> list[_Job]:
    required = ["bam", "bam_accession", "bam_url", "bam_md5", "bam_size"]
    missing = [c for c in required if c not in sheet.columns]
    if missing:
        raise ChipviInputError(
            f"The sample sheet lacks column(s) {', '.join(missing)}: download needs the ENCODE "
            f"columns written by build_samplesheet."
        )
    if sheet.empty:
        raise ChipviInputError("The sample sheet has no rows: nothing to download.")
    if "assembly" in sheet.columns:
        assemblies = sorted({str(a) for a in sheet["assembly"] if str(a)})
        if len(assemblies) > 1:
            raise ChipviInputError(
                f"The sample sheet mixes assemblies ({', '.join(assemblies)}); bins of one "
                f"AnnData need one genome. Keep the rows of one assembly."
            )
    jobs: dict[str, _Job] = {}
    for number, row in enumerate(sheet.to_dict("records"), start=2):  # CSV line numbers
        roles = [("bam", "bam")]
        if _text(row.get("control")):
            roles.append(("control", "control"))
        for column, prefix in roles:
            job = _job(row, column, prefix, number)
            seen = jobs.get(job.name)
            if seen is not None and seen != job:
                raise ChipviInputError(
                    f"File name {job.name} appears twice in the sample sheet with different "
                    f"URL/md5/size (row {number})."
                )
            jobs[job.name] = job
    return list(jobs.values())


def _job(row: dict, column: str, prefix: str, number: int) -> _Job:
    for needed in (f"{prefix}_url", f"{prefix}_md5", f"{prefix}_size"):
        if needed not in row:
            raise ChipviInputError(
                f"The sample sheet has a {column!r} but no {needed!r} column (row {number})."
            )
    name = _text(row[column])
    url = _text(row[f"{prefix}_url"])
    md5 = _text(row[f"{prefix}_md5"]).lower()
    accession = _text(row.get(f"{prefix}_accession")) or name.split(".")[0]
    where = f"row {number}, column {column!r}"
    if not name or Path(name).name != name or name.startswith("."):
        raise ChipviInputError(
            f"{where}: {name!r} must be a plain file name (no folder): files are written into "
            f"out_dir."
        )
    if not url.startswith(("http://", "https://")):
        raise ChipviInputError(f"{where}: {prefix}_url {url!r} is not an http(s) URL.")
    if not _MD5.fullmatch(md5):
        raise ChipviInputError(f"{where}: {prefix}_md5 {md5!r} is not an md5 checksum.")
    try:
        size = int(float(row[f"{prefix}_size"]))
    except (TypeError, ValueError):
        size = -1
    if size <= 0:
        raise ChipviInputError(
            f"{where}: {prefix}_size {row[f'{prefix}_size']!r} is not a positive byte count."
        )
    return _Job(accession=accession, url=url, md5=md5, size=size, name=name)


def _text(value: Any) -> str:
    """A sheet cell as stripped text; missing values (None, NaN) are ""."""
    if value is None or (isinstance(value, float) and value != value):
        return ""
    return str(value).strip()


def _jobs_from_accessions(accessions: list[str], client: EncodeClient) -> list[_Job]:
    wanted = sorted(set(accessions))
    found: dict[str, dict] = {}
    for start in range(0, len(wanted), 50):
        payload = client.search(
            {
                "type": "File",
                "accession": wanted[start : start + 50],
                "frame": "object",
                "limit": "all",
            }
        )
        for item in payload.get("@graph") or []:
            found[item.get("accession", "")] = item
    missing = [a for a in wanted if a not in found]
    if missing:
        raise ChipviInputError(f"ENCODE has no file with accession {', '.join(missing)}.")
    assemblies = sorted({found[a].get("assembly") for a in wanted if found[a].get("assembly")})
    if len(assemblies) > 1:
        raise ChipviInputError(
            f"The files are aligned to several assemblies ({', '.join(assemblies)}); download "
            f"the files of one assembly at a time."
        )
    jobs = []
    for accession in wanted:
        item = found[accession]
        if item.get("no_file_available") or not item.get("href") or not item.get("md5sum"):
            raise ChipviInputError(f"ENCODE file {accession} has no downloadable content.")
        row = {
            "file": accession_from_id(item["href"]),
            "file_url": client.url(item["href"]),
            "file_md5": item["md5sum"],
            "file_size": item.get("file_size"),
            "file_accession": accession,
        }
        jobs.append(_job(row, "file", "file", 0))
    return jobs


# -- file system ------------------------------------------------------------------------------
def _prepare_out_dir(out_dir: str | os.PathLike) -> Path:
    out_dir = Path(out_dir).expanduser().absolute()
    if out_dir.exists() and not out_dir.is_dir():
        raise ChipviInputError(f"out_dir {out_dir} exists and is not a folder.")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out_dir):
            pass
    except OSError as error:
        raise ChipviInputError(
            f"out_dir {out_dir} is not a writable folder ({error.strerror or error}); choose "
            f"another one or fix its permissions."
        ) from None
    return out_dir


def _free_bytes(path: Path) -> int:
    return shutil.disk_usage(path).free


def _bytes_to_fetch(jobs: list[_Job], out_dir: Path) -> int:
    total = 0
    for job in jobs:
        final = out_dir / job.name
        if final.is_file() and final.stat().st_size == job.size:
            continue  # md5 checked by the worker
        part = out_dir / f"{job.name}.part"
        have = part.stat().st_size if part.is_file() else 0
        total += job.size - have if have <= job.size else job.size
    return total


def _md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(4 * CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def _index(path: Path) -> str:
    """Build ``<bam>.bai`` (via a temporary name) unless an up-to-date one exists."""
    if path.suffix != ".bam":
        return ""
    bai = path.with_name(path.name + ".bai")
    if bai.is_file() and bai.stat().st_mtime >= path.stat().st_mtime:
        return str(bai)
    import pysam

    tmp = path.with_name(f".{path.name}.bai.tmp")
    try:
        pysam.index(str(path), str(tmp))
        os.replace(tmp, bai)
    except pysam.SamtoolsError as error:
        raise _Failure(f"{path.name}: cannot index the BAM ({error}).") from None
    finally:
        tmp.unlink(missing_ok=True)
    return str(bai)


# -- one file ---------------------------------------------------------------------------------
class _Failure(Exception):
    """A file that could not be fetched or verified (message names it and why)."""


def _fetch_one(
    job: _Job,
    out_dir: Path,
    client: EncodeClient,
    bar,
    lock: threading.Lock,
    index: bool,
    stop: threading.Event,
) -> dict[str, Any]:
    final = out_dir / job.name
    part = out_dir / f"{job.name}.part"
    status, fetched = "present", 0
    if not (final.is_file() and final.stat().st_size == job.size and _md5(final) == job.md5):
        status = "downloaded"
        if final.is_file() and final.stat().st_size == job.size:
            with lock:  # counted as present when planning; it failed verification
                bar.total += job.size
                bar.refresh()
        for fresh in (False, True):
            resumed = part.is_file() and part.stat().st_size > 0
            fetched += _transfer(job, part, client, bar, lock, stop)
            digest = _md5(part)
            if digest == job.md5:
                os.replace(part, final)
                break
            part.unlink()
            if fresh or not resumed:
                raise _Failure(
                    f"{job.name}: md5 {digest} does not match ENCODE's md5sum {job.md5}; the "
                    f"file was removed. Re-run to download it again; if this repeats, report it "
                    f"to the ENCODE portal."
                )
            # The partial file we resumed from may have been corrupt: one fresh download.
    return {
        "accession": job.accession,
        "file": job.name,
        "path": str(final),
        "size": job.size,
        "md5": job.md5,
        "status": status,
        "fetched": fetched,
        "index": _index(final) if index else "",
    }


def _transfer(
    job: _Job, part: Path, client: EncodeClient, bar, lock: threading.Lock, stop: threading.Event
) -> int:
    """Bring ``part`` to ``job.size`` bytes, resuming; returns bytes received."""
    received = 0
    failures = 0
    best = 0  # largest size the partial file has reached: growth beyond it is progress
    last_error = ""
    while True:
        if stop.is_set():
            raise _Failure(f"{job.name}: interrupted; the partial file is kept for a resume.")
        offset = part.stat().st_size if part.is_file() else 0
        if offset > job.size:
            _restart(part, offset, bar, lock)
            offset = 0
        if offset == job.size:
            return received
        if failures > client.retries:
            raise _Failure(
                f"{job.name}: gave up after {failures} failed attempt(s) ({last_error}) at "
                f"{offset} of {job.size} bytes; the partial file is kept: re-run to resume."
            )
        if failures:
            client.wait_before_retry(failures - 1)
        headers = {"Range": f"bytes={offset}-"} if offset else {}
        try:
            response = client.open(job.url, headers)
        except urllib.error.HTTPError as error:
            error.close()
            if error.code == 416:  # our partial file is not a prefix of theirs
                _restart(part, offset, bar, lock)
                last_error = "HTTP 416 (range not satisfiable)"
                failures += 1
                continue
            if error.code in RETRY_STATUS:
                last_error = f"HTTP {error.code} {error.reason}"
                failures += 1
                continue
            raise _Failure(
                f"{job.name}: HTTP {error.code} ({error.reason}) for {job.url}."
            ) from None
        except NETWORK_ERRORS as error:
            last_error = f"{type(error).__name__}: {getattr(error, 'reason', error)}"
            failures += 1
            continue
        with response:
            if offset and not _resumes_at(response, offset):
                _restart(part, offset, bar, lock)  # range ignored: the body is the whole file
                offset = 0
            got = 0
            read_error = ""
            with open(part, "ab" if offset else "wb") as handle:
                while True:
                    try:
                        chunk = response.read1(CHUNK)  # what arrived: kept on a timeout
                    except NETWORK_ERRORS as error:
                        read_error = f"{type(error).__name__} after {offset + got} bytes"
                        break
                    if not chunk or stop.is_set():
                        break
                    handle.write(chunk)
                    got += len(chunk)
                    with lock:
                        bar.update(len(chunk))
        received += got
        size_now = offset + got
        if size_now == job.size:
            continue  # the loop head returns
        if size_now > job.size:
            last_error = f"server sent {size_now} bytes, ENCODE's file_size is {job.size}"
            failures += 1
            continue  # the loop head starts over
        last_error = read_error or f"connection closed after {size_now} of {job.size} bytes"
        # Progress resets the failure count, so a long download survives many drops; a server
        # that ignores ranges and drops at the same place makes no progress and runs out.
        failures = 1 if size_now > best else failures + 1
        best = max(best, size_now)


def _resumes_at(response, offset: int) -> bool:
    if response.status != 206:
        return False
    match = re.match(r"bytes\s+(\d+)-", response.headers.get("Content-Range", ""))
    return bool(match) and int(match.group(1)) == offset


def _restart(part: Path, discarded: int, bar, lock: threading.Lock) -> None:
    part.unlink(missing_ok=True)
    with lock:
        if bar.total is not None:
            bar.total += discarded
            bar.refresh()


def _human(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.1f} {unit}" if unit != "B" else f"{int(value)} B"
        value /= 1024
    return f"{n} B"
