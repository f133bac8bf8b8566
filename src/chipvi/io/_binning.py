"""BAM files → AnnData of fixed-width bins: ``read_bams`` and ``read_bam_bins``.

Work is split into tasks of one (BAM file, chromosome), or, with several threads, of a piece of
a large chromosome cut at a record start the index lists. A task streams its compressed bytes
(located through the BAM index) and hands them to a numba kernel that inflates and counts
without the GIL, so tasks run in parallel on a thread pool and memory stays bounded by a few
buffers per thread plus the output matrices. Meanwhile the calling thread builds the AnnData
around the matrices being filled (bin names, AnnData's checks): the work that needs the GIL.
"""

from __future__ import annotations

import contextlib
import math
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .._bins import (
    bin_count,
    bin_obs,
    blacklist_mask,
    blacklist_record,
    overlapping_bins,
    parse_region,
    region_mask,
)
from .._errors import ChipviInputError
from .._utils import check_int, gc_paused
from ._bam import BamInfo, open_bam
from ._bgzf import MAX_BLOCK, OK, block_error_message, free_decompressor, new_decompressor
from ._count import (
    ERR_BUFFER,
    ERR_RECORD,
    ERR_STOP,
    S_COUNTED,
    S_DONE,
    S_FILL,
    S_HIGH,
    S_LOW,
    S_POS,
    count_blocks,
    new_duplicate_table,
    new_state,
    store_column,
)
from ._store import DEFAULT_CHUNK

if TYPE_CHECKING:
    # pandas and anndata are imported where they are used: counting needs neither, so a
    # process that bins a BAM can start counting before they are loaded (see _count_files).
    import anndata as ad
    import pandas as pd

#: Compressed bytes read per system call.
_PIECE = 4 << 20
#: Initial working buffer for inflated data (a few blocks; grows for huge records).
_WORK = 4 * MAX_BLOCK
#: With several threads, chromosomes are split into pieces of about a quarter of each thread's
#: share of the compressed bytes, but no smaller than this (each piece costs a pass over its
#: chromosome's bins).
_MIN_PIECE = 8 << 20

_STALE_INDEX = "the index does not match {path} (stale index?). Index the BAM again."

COUNTING_RULE = (
    "unmapped, secondary, supplementary and QC-fail reads dropped; duplicates dropped only if "
    "keep_duplicates is false; reads with MAPQ < min_mapq dropped; with max_per_position N, "
    "at most N of the remaining reads per (leftmost position, strand, TLEN); proper pairs "
    "counted once at the fragment midpoint (mate 1); other reads counted once per template at "
    "the centre of [5' end, 5' end + fragment_length) along the strand; centres clamped into "
    "the chromosome"
)


@dataclass(frozen=True)
class _Piece:
    """Records of one reference of one file counted by one task: virtual offsets ``[begin,
    stop)``, or ``[begin, end of the reference's records]`` when ``stop`` is -1; ``begin`` is
    -1 for a reference without records."""

    begin: int
    stop: int
    end: int


@dataclass(frozen=True)
class _Params:
    bin_size: int
    fragment_length: int
    min_mapq: int
    keep_duplicates: bool
    max_per_position: int = 0  # 0: off; AUTO: chosen per file by _resolve_for_file


#: ``_Params.max_per_position`` value standing for ``"auto"``.
AUTO = -1
#: ``max_per_position="auto"``: the smallest N with P(more than N reads at one position and
#: strand) below this for a Poisson of the file's mean reads per position and strand (the
#: rule of MACS3 ``--keep-dup auto``, which uses a binomial tail at 1e-5).
AUTO_TAIL = 1e-5


def check_read_params(
    bin_size, fragment_length, min_mapq, keep_duplicates, max_per_position=None
) -> _Params:
    """Check :func:`read_bams`' counting parameters (its own messages); returns them."""
    if max_per_position is None:
        cap = 0
    elif isinstance(max_per_position, str):
        if max_per_position != "auto":
            raise ChipviInputError(
                f"max_per_position must be an integer >= 1, 'auto' or None, "
                f"got {max_per_position!r}."
            )
        cap = AUTO
    else:
        cap = check_int("max_per_position", max_per_position, 1)
    return _Params(
        bin_size=check_int("bin_size", bin_size, 1),
        fragment_length=check_int("fragment_length", fragment_length, 1),
        min_mapq=check_int("min_mapq", min_mapq, 0, 255),
        keep_duplicates=bool(keep_duplicates),
        max_per_position=cap,
    )


def auto_max_per_position(n_reads: int, genome_length: int) -> int:
    """Reads per position and strand above which copies are PCR duplicates, not coverage.

    The smallest ``N >= 1`` with ``P(X > N) < AUTO_TAIL`` for ``X ~ Poisson(n_reads / (2 *
    genome_length))``.
    """
    lam = n_reads / max(2 * genome_length, 1)
    term = cdf = math.exp(-lam)
    k = 0
    while 1.0 - cdf >= AUTO_TAIL:
        k += 1
        term *= lam / k
        cdf += term
    return max(k, 1)


def _cap_label(params: _Params) -> int | str | None:
    """``max_per_position`` as the caller gave it."""
    return "auto" if params.max_per_position == AUTO else params.max_per_position or None


def _caps_used(params: _Params, infos: Sequence[BamInfo], file_params: Sequence[_Params]) -> dict:
    """``uns`` entry with the limit ``"auto"`` chose for each file (empty otherwise)."""
    if params.max_per_position != AUTO:
        return {}
    # Two aligned lists, not a dict keyed by path: h5ad would read "/" in keys as groups.
    return {
        "max_per_position_used": {
            "bam": [str(info.path) for info in infos],
            "max_per_position": [p.max_per_position for p in file_params],
        }
    }


def _resolve_for_file(params: _Params, info: BamInfo, contigs) -> _Params:
    """``params`` with ``max_per_position="auto"`` replaced by this file's limit."""
    if params.max_per_position != AUTO:
        return params
    tids = info.tids
    mapped = np.array([info.n_mapped[tids[name]] for name, _ in contigs], np.int64)
    if (mapped < 0).any():
        raise ChipviInputError(
            f"max_per_position='auto' needs the mapped-read counts of the index of {info.path}, "
            "which it does not hold; index the BAM again with samtools index, or pass an "
            "integer."
        )
    genome = sum(int(length) for _, length in contigs)
    return replace(params, max_per_position=auto_max_per_position(int(mapped.sum()), genome))


def _resolve_threads(threads) -> int:
    if threads is None:
        from .._settings import settings

        return settings.num_threads
    return check_int("threads", threads, 1)


def _kept_contigs(infos: Sequence[BamInfo], chroms) -> list[tuple[str, int]]:
    """Chromosomes to bin (first file's header order), checked against every file."""
    first = infos[0]
    if chroms is None:
        kept = list(first.contigs)
    else:
        wanted = [chroms] if isinstance(chroms, str) else list(chroms)
        if not wanted:
            raise ChipviInputError("chroms is empty; pass None to keep every chromosome.")
        names = first.tids
        unknown = [c for c in wanted if c not in names]
        if unknown:
            shown = ", ".join(list(names)[:8]) + (", ..." if len(names) > 8 else "")
            raise ChipviInputError(
                f"chroms {unknown} are not in the header of {first.path} (it has {shown})."
            )
        wanted_set = set(wanted)
        kept = [c for c in first.contigs if c[0] in wanted_set]
    for info in infos[1:]:
        if chroms is None:
            if info.contigs != first.contigs:
                raise ChipviInputError(_contig_mismatch(first, info, [n for n, _ in first.contigs]))
        else:
            lengths = dict(info.contigs)
            if any(lengths.get(name) != length for name, length in kept):
                raise ChipviInputError(_contig_mismatch(first, info, [n for n, _ in kept]))
    return kept


def _contig_mismatch(a: BamInfo, b: BamInfo, names: list[str]) -> str:
    la, lb = dict(a.contigs), dict(b.contigs)
    for name in names:
        if la.get(name) != lb.get(name):
            detail = f"{name}: length {la.get(name)} vs {lb.get(name, 'missing')}"
            break
    else:
        detail = f"{len(a.contigs)} vs {len(b.contigs)} contigs"
    return (
        f"{a.path} and {b.path} were aligned to different references ({detail}). All BAMs "
        "(ChIP and control) must share the same contigs; re-align, or pass chroms= to keep "
        "chromosomes they agree on."
    )


def _count_piece(
    info: BamInfo, tid: int, chrom_len: int, params: _Params, n_bins: int, piece: _Piece
) -> tuple[np.ndarray, np.ndarray, int, slice]:
    """Count one piece of one chromosome of one BAM.

    Returns the chromosome's counts and MAPQ sums, the reads counted and the slice of bins they
    fell in (empty if none).
    """
    counts = np.zeros(n_bins, np.int32)
    mapq_sum = np.zeros(n_bins, np.int64)
    counted, touched = 0, slice(0, 0)
    if piece.begin >= 0:
        counted, touched = _stream_reference(info, tid, chrom_len, params, piece, counts, mapq_sum)
    return counts, mapq_sum, counted, touched


def _stream_reference(
    info: BamInfo,
    tid: int,
    chrom_len: int,
    params: _Params,
    piece: _Piece,
    counts: np.ndarray,
    mapq_sum: np.ndarray,
) -> tuple[int, slice]:
    """Count a piece's records into ``counts`` / ``mapq_sum``: (reads counted, bins touched)."""
    path = info.path
    c_begin, u_begin = piece.begin >> 16, piece.begin & 0xFFFF
    # Read up to the piece's stop, or to the end of the reference's records.
    last = piece.stop if piece.stop >= 0 else piece.end
    c_end, u_end = last >> 16, last & 0xFFFF
    comp = np.empty(_PIECE, np.uint8)
    work = np.empty(_WORK, np.uint8)
    state = new_state(u_begin)
    dup = new_duplicate_table()
    handle = new_decompressor()
    try:
        with open(path, "rb", buffering=0) as fh:
            # Read through the block holding the end offset (a block is at most 64 KiB).
            stop = min(c_end + (MAX_BLOCK if u_end else 0), os.fstat(fh.fileno()).st_size)
            fh.seek(c_begin)
            file_pos, carry = c_begin, 0
            view = memoryview(comp)
            while True:
                want = min(comp.size - carry, stop - file_pos)
                if want > 0:
                    got = fh.readinto(view[carry : carry + want])
                    if not got:
                        raise ChipviInputError(
                            f"{path} ended at byte {file_pos}, before the data its index "
                            "points to; the file is truncated or the index is stale."
                        )
                    file_pos += got
                    carry += got
                err, used = count_blocks(
                    handle,
                    comp,
                    carry,
                    file_pos - carry,
                    piece.stop,
                    work,
                    state,
                    tid,
                    chrom_len,
                    params.bin_size,
                    params.fragment_length,
                    params.min_mapq,
                    params.keep_duplicates,
                    params.max_per_position,
                    dup,
                    True,
                    counts,
                    mapq_sum,
                )
                if err == ERR_BUFFER:
                    # A record larger than the working buffer: grow it, keeping its content.
                    bigger = np.empty(2 * work.size, np.uint8)
                    bigger[: state[S_FILL]] = work[: state[S_FILL]]
                    work = bigger
                elif err != OK:
                    offset = file_pos - carry + used
                    if err == ERR_RECORD:
                        raise ChipviInputError(
                            f"{path}: corrupt BAM record in the block at byte {offset}; "
                            "re-create the file."
                        )
                    if err == ERR_STOP:
                        raise ChipviInputError(_STALE_INDEX.format(path=path))
                    raise ChipviInputError(block_error_message(err, str(path), offset))
                comp[: carry - used] = comp[used:carry]
                carry -= used
                if state[S_DONE] or (err == OK and file_pos >= stop):
                    break
    finally:
        free_decompressor(handle)
    if not state[S_DONE] and state[S_FILL] != state[S_POS]:
        raise ChipviInputError(
            f"{path}: the data for {info.contigs[tid][0]} ends inside a record; "
            + _STALE_INDEX.format(path=path)
        )
    # Bins the piece counted into: its merge adds only these.
    low, high = int(state[S_LOW]), int(state[S_HIGH])
    return int(state[S_COUNTED]), slice(low, high + 1) if high >= 0 else slice(0, 0)


def _count_files(
    infos: Sequence[BamInfo],
    contigs: Sequence[tuple[str, int]],
    file_params: Sequence[_Params],
    outputs: Sequence[tuple[np.ndarray, np.ndarray]],
    threads: int,
    progress: bool,
    meanwhile: Callable[[], object] = lambda: None,
) -> tuple[np.ndarray, object]:
    """Count every (file, chromosome) into ``outputs[i] = (x_column, mapq_column)`` of file i.

    ``threads`` workers count; the calling thread runs ``meanwhile()`` (e.g. building the bin
    table, which needs the GIL the counting kernels do not hold) and then waits. With several
    threads, chromosomes larger than a quarter of a thread's share of the compressed bytes
    (and than ``_MIN_PIECE``) are cut into pieces, so that no thread idles at the end.

    ``file_params`` are the counting parameters of each file (:func:`_resolve_for_file`).
    Returns the reads counted per file and the result of ``meanwhile``.
    """
    bin_size = file_params[0].bin_size
    lengths = np.array([length for _, length in contigs], np.int64)
    n_bins = -(-lengths // bin_size)
    offsets = np.concatenate([[0], np.cumsum(n_bins)])
    references = []  # (compressed size, file, tid, length, bins slice)
    for f, info in enumerate(infos):
        tids = info.tids
        for k, (name, length) in enumerate(contigs):
            tid = tids[name]
            size = max(int(info.span_end[tid] >> 16) - int(info.span_begin[tid] >> 16), 0)
            references.append((size, f, tid, int(length), slice(offsets[k], offsets[k + 1])))
    piece_size = max(sum(r[0] for r in references) // (4 * threads), _MIN_PIECE)
    tasks = []  # (compressed size, reference index, piece)
    for r, (size, f, tid, _, _) in enumerate(references):
        # A run of same-position reads must not be split between two tasks when they are
        # limited per position, so such references are counted whole.
        split = threads > 1 and not file_params[f].max_per_position
        n_pieces = -(-size // piece_size) if split else 1
        pieces = _split_reference(infos[f], tid, n_pieces)
        tasks += [(size // len(pieces), r, piece) for piece in pieces]
    # Largest first, so the pool does not end waiting on one big piece.
    tasks.sort(key=lambda t: -t[0])
    totals = np.zeros(len(infos), np.int64)
    per_reference = np.bincount([t[1] for t in tasks], minlength=len(references))
    merges = [_Merge(int(n)) for n in per_reference]

    def run(task) -> tuple[int, int, int]:
        size, r, piece = task
        _, f, tid, length, sl = references[r]
        counts, mapq_sum, n, touched = _count_piece(
            infos[f], tid, length, file_params[f], sl.stop - sl.start, piece
        )
        merged = merges[r].add(counts, mapq_sum, touched)
        if merged is not None:
            x_col, mapq_col = outputs[f]
            store_column(*merged, x_col[sl], mapq_col[sl])
        return f, size, n

    from .._settings import settings

    bar = _progress_bar(sum(t[0] for t in tasks), settings.progress(progress))
    # Numba's first compiled call in a process sets up its compiler target (imports, ~0.4 s):
    # pay it here (if opening the BAMs did not), so that the workers start counting at once and
    # ``meanwhile`` does not compete with them for the GIL.
    free_decompressor(new_decompressor())
    with ThreadPoolExecutor(max_workers=max(1, min(threads, len(tasks)))) as pool:
        futures = [pool.submit(run, task) for task in tasks]
        try:
            extra = meanwhile()
            for future in as_completed(futures):
                f, size, n = future.result()
                totals[f] += n
                bar(size)
        except BaseException:
            for future in futures:
                future.cancel()
            raise
        finally:
            bar(None)
    return totals, extra


def _split_reference(info: BamInfo, tid: int, n_pieces: int) -> list[_Piece]:
    """Cut a reference's records into up to ``n_pieces`` of similar compressed size.

    Cuts are at record starts listed by the index, so every record belongs to one piece.
    """
    begin, end = int(info.span_begin[tid]), int(info.span_end[tid])
    starts = info.record_starts[tid] if info.record_starts else np.zeros(0, np.int64)
    starts = starts[(starts > begin) & (starts < end)]
    cuts: list[int] = []
    if n_pieces > 1 and starts.size and begin >= 0:
        c_begin, c_end = begin >> 16, end >> 16
        targets = c_begin + (np.arange(1, n_pieces) * (c_end - c_begin)) // n_pieces
        nearest = np.searchsorted(starts >> 16, targets).clip(0, starts.size - 1)
        cuts = sorted(set(starts[nearest].tolist()))
    bounds = [begin, *cuts]
    return [
        _Piece(b, bounds[i + 1] if i + 1 < len(bounds) else -1, end) for i, b in enumerate(bounds)
    ]


class _Merge:
    """Sums the per-piece counts of one reference; the last piece gets the total."""

    def __init__(self, n_pieces: int):
        self._left = n_pieces
        self._lock = threading.Lock()
        self._sums: tuple[np.ndarray, np.ndarray] | None = None

    def add(self, counts: np.ndarray, mapq_sum: np.ndarray, touched: slice):
        """Add one piece (only its ``touched`` bins hold counts); returns ``(counts, MAPQ
        sums)`` once every piece is in, else None."""
        with self._lock:
            if self._sums is None:
                self._sums = (counts, mapq_sum)
            else:
                self._sums[0][touched] += counts[touched]
                self._sums[1][touched] += mapq_sum[touched]
            self._left -= 1
            if self._left:
                return None
            sums, self._sums = self._sums, None
            return sums


def _new_anndata(
    contigs: Sequence[tuple[str, int]],
    params: _Params,
    x: np.ndarray,
    layers: dict[str, np.ndarray],
    var: dict,
    var_names: list[str],
    uns: dict,
) -> ad.AnnData:
    """The AnnData around the count matrices, built while they are being filled.

    AnnData keeps ``X`` and the layers by reference, so the counting threads fill them in place;
    meanwhile this thread pays for what needs the GIL: importing pandas and anndata (when the
    caller has not), the bin names and AnnData's checks of them.
    """
    import anndata as ad
    import pandas as pd

    obs = bin_obs(contigs, params.bin_size)
    # Bin names are unique by construction (unique contigs, bins split at the last ":"), so
    # anndata's duplicate scan of the obs names (a hash of every name, ~0.3 s per million bins,
    # holding the GIL the counting threads need) is skipped where the setting exists (>= 0.11).
    # var names are the sample sheet's, already checked unique.
    unchecked = (
        ad.settings.override(check_uniqueness=False)
        if "check_uniqueness" in dir(getattr(ad, "settings", None))
        else contextlib.nullcontext()
    )
    with unchecked:
        adata = ad.AnnData(
            X=x,
            obs=obs,
            var=pd.DataFrame(var, index=pd.Index(var_names, dtype=object)),
            layers=layers,
            uns={"chipvi": uns},
        )
    # anndata 0.10-0.12 keep dense numpy arrays by reference; should a version copy them, point
    # it back at the arrays being filled.
    if adata.X is not x:
        adata.X = x
    for key, value in layers.items():
        if adata.layers[key] is not value:
            adata.layers[key] = value
    return adata


def _progress_bar(total: int, enabled: bool) -> Callable[[int | None], None]:
    """A callable that advances a tqdm bar by n bytes, and closes it when called with None."""
    if not enabled:
        return lambda n: None
    from tqdm.auto import tqdm

    bar = tqdm(total=total, unit="B", unit_scale=True, desc="counting reads", leave=False)

    def advance(n: int | None) -> None:
        if n is None:
            bar.close()
        else:
            bar.update(n)

    return advance


def _uns(params: _Params, contigs, **extra) -> dict:
    from .. import __version__

    return {
        "bin_size": params.bin_size,
        "chrom_sizes": {name: int(length) for name, length in contigs},
        "fragment_length": params.fragment_length,
        "min_mapq": params.min_mapq,
        "keep_duplicates": params.keep_duplicates,
        "max_per_position": _cap_label(params),
        "version": __version__,
        "counting": COUNTING_RULE,
        **extra,
    }


def _check_reads(totals: np.ndarray, infos: Sequence[BamInfo], params: _Params, contigs) -> None:
    for total, info in zip(totals, infos, strict=True):
        if total == 0:
            names = ", ".join(name for name, _ in contigs[:5]) + (
                ", ..." if len(contigs) > 5 else ""
            )
            raise ChipviInputError(
                f"No reads of {info.path} were counted on {names} with min_mapq={params.min_mapq}, "
                f"keep_duplicates={params.keep_duplicates}, "
                f"max_per_position={_cap_label(params)!r}; check chroms= and the "
                "read filters."
            )


@gc_paused()
def read_bam_bins(
    bam: str | os.PathLike,
    bin_size: int = 200,
    *,
    fragment_length: int = 200,
    min_mapq: int = 0,
    keep_duplicates: bool = True,
    max_per_position: int | str | None = None,
    chroms: Sequence[str] | str | None = None,
    threads: int | None = None,
    index: bool = False,
    progress: bool = False,
) -> ad.AnnData:
    """Count the reads of one BAM file in fixed-width genomic bins.

    The counting rule and the parameters are those of :func:`chipvi.read_bams`.

    Parameters
    ----------
    bam
        Coordinate-sorted, indexed BAM file.
    bin_size
        Bin width in bp.
    fragment_length
        Assumed fragment length for reads that are not in a proper pair.
    min_mapq
        Drop reads with a lower mapping quality.
    keep_duplicates
        Count reads flagged as duplicates.
    max_per_position
        Count at most this many reads per leftmost position, strand and TLEN; ``"auto"``:
        chosen from the file's read density (see :func:`chipvi.read_bams`); ``None``: no
        limit.
    chroms
        Chromosomes to keep (default: all, in header order).
    threads
        Worker threads (default: ``chipvi.settings.num_threads``); chromosomes are counted in parallel.
    index
        Build a missing BAM index in a temporary directory instead of raising.
    progress
        Show a progress bar.

    Returns
    -------
    AnnData with one variable named after the file stem: ``X`` read counts (int32),
    ``layers["mapq"]`` mean MAPQ of counted reads (float32), ``var["depth"]`` reads counted, and
    ``obs`` / ``uns["chipvi"]`` as in :func:`chipvi.read_bams`.
    """
    params = check_read_params(
        bin_size, fragment_length, min_mapq, keep_duplicates, max_per_position
    )
    n_threads = _resolve_threads(threads)
    info = open_bam(bam, index=index)
    contigs = _kept_contigs([info], chroms)
    n_bins = bin_count(contigs, params.bin_size)
    x = np.zeros((n_bins, 1), np.int32)
    mapq = np.zeros((n_bins, 1), np.float32)
    name = info.path.name.removesuffix(".bam")
    var = {"sample": [name], "depth": np.zeros(1, np.int64), "bam": [str(info.path)]}
    file_params = [_resolve_for_file(params, info, contigs)]
    totals, adata = _count_files(
        [info],
        contigs,
        file_params,
        [(x[:, 0], mapq[:, 0])],
        n_threads,
        progress,
        meanwhile=lambda: _new_anndata(
            contigs,
            params,
            x,
            {"mapq": mapq},
            var,
            [name],
            _uns(params, contigs, **_caps_used(params, [info], file_params)),
        ),
    )
    _check_reads(totals, [info], params, contigs)
    adata.var["depth"] = totals.astype(np.int64)
    return adata


@gc_paused()
def read_bams(
    samplesheet: str | os.PathLike | pd.DataFrame,
    bin_size: int = 200,
    *,
    fragment_length: int = 200,
    min_mapq: int = 0,
    keep_duplicates: bool = True,
    max_per_position: int | str | None = None,
    blacklist: str | os.PathLike | None = None,
    chroms: Sequence[str] | str | None = None,
    region: str | None = None,
    threads: int | None = None,
    progress: bool | None = None,
    index: bool = False,
    out: str | os.PathLike | None = None,
    chunk_size: int = DEFAULT_CHUNK,
    overwrite: bool = False,
) -> ad.AnnData | None:
    """Count ChIP and control reads in fixed-width bins for every library of a sample sheet.

    Counting rule (each BAM is counted once, even when one control serves several ChIP rows):

    * unmapped, secondary, supplementary and QC-fail reads are dropped; reads flagged as PCR or
      optical duplicates are dropped only when ``keep_duplicates=False``; reads with
      ``MAPQ < min_mapq`` are dropped;
    * with ``max_per_position=N``, of the reads left at most ``N`` per leftmost position,
      strand and TLEN are counted (in file order): duplicates found by position, like MACS3
      ``--keep-dup N`` and deepTools ``--ignoreDuplicates`` (``N = 1``), for BAMs whose
      duplicates are not flagged;
    * a properly paired read pair (flag 0x2, mate on the same chromosome, non-zero TLEN) counts
      once, at the midpoint of its fragment ``min(POS, PNEXT) + |TLEN| // 2``, from mate 1
      (whose flags and MAPQ decide the filters above);
    * every other read counts as a single-end read at the centre of its assumed fragment: the
      fragment ``[s, s + fragment_length)`` starts at the read's 5′ end and runs along its
      strand (forward: ``s = POS``; reverse: ``s = alignment end - fragment_length``, the
      alignment end coming from the CIGAR), and the count goes to ``s + fragment_length // 2``.
      Paired reads that are not a proper pair are counted this way once per template: mate 1,
      or mate 2 when mate 1 is unmapped;
    * centres outside the chromosome are clamped to its first or last base.

    MAPQ is kept as a covariate: ``layers["mapq"]`` holds the mean MAPQ of the reads counted in
    each bin (0 where none), so ``min_mapq`` defaults to 0.

    Parameters
    ----------
    samplesheet
        CSV file with columns ``sample,bam,control,target,group,replicate`` (optional integer
        ``depth`` and ``control_depth`` override the counted totals), or the DataFrame returned
        by :func:`chipvi.read_samplesheet`. See :func:`chipvi.read_samplesheet`.
    bin_size
        Bin width in bp. Bins tile each chromosome from 0; the last one ends at the chromosome
        end and may be shorter.
    fragment_length
        Assumed fragment length (bp) for reads that are not in a proper pair.
    min_mapq
        Drop reads with a lower mapping quality (0 keeps all).
    keep_duplicates
        Count reads flagged as duplicates (flag 0x400).
    max_per_position
        Count at most this many reads per leftmost position, strand and TLEN (``None``: no
        limit). ``"auto"`` chooses, per BAM, the smallest N that a Poisson of the file's mean
        reads per position and strand exceeds with probability below 1e-5 (MACS3
        ``--keep-dup auto``): chance coincidences of deep libraries are kept, PCR jackpots
        are cut. Chromosomes are then counted whole by one thread each.
    blacklist
        BED file of regions whose bins are removed after counting, with
        :func:`chipvi.pp.filter_blacklist` (bins overlapping an interval by at least one base).
    chroms
        Chromosomes to keep (default: every chromosome of the header). Bins follow the BAM
        header order whatever the order given here.
    region
        Keep the bins overlapping one region, ``"chr19:1,000,000-2,000,000"`` (0-based
        half-open, commas allowed) or a bare chromosome name, e.g. for BAMs holding the reads
        of a slice only. Bins stay on the genome-wide grid (``bin_size`` bins from 0), so
        :func:`chipvi.pp.aggregate_bins` still works. The region's chromosome is counted (as
        with ``chroms=[chrom]``; ``chroms`` may be left out or name that chromosome only), so
        ``depth`` is its reads, and ``chrom_sizes`` keeps its full length.
    threads
        Worker threads (default: ``chipvi.settings.num_threads``); files and chromosomes are
        counted in parallel.
    progress
        Show a progress bar (default: ``chipvi.settings.progress_bar``).
    index
        Build missing BAM indexes in a temporary directory instead of raising.
    out
        Write the bins to this ``.zarr`` store instead of returning them (out of core, for
        genomes too large for memory at a small bin size): chromosomes are counted a few at a
        time and appended to a chunked, compressed AnnData on disk, which
        :func:`chipvi.io.open_store` reads in blocks and :func:`anndata.read_zarr` whole. The
        store appears at ``out`` only once complete (see :func:`chipvi.io.open_store`).
    chunk_size
        With ``out``: bins per chunk of the store's arrays.
    overwrite
        With ``out``: replace an existing store.

    Returns
    -------
    None with ``out``; else an AnnData with bins as observations and ChIP libraries as variables:

    * ``obs``: index ``"chrom:start-end"``; ``chrom`` (categorical, header order), ``start``,
      ``end`` (int64);
    * ``var``: index ``sample``; ``sample``, ``target``, ``group``, ``replicate``, ``depth``
      (reads counted, or the sheet's ``depth``), ``control`` (control BAM file stem, "" if none),
      ``control_depth`` (0 if none), ``bam``, ``control_bam`` (absolute paths, "" if none);
    * ``X``: ChIP read counts (int32); ``layers["mapq"]`` mean MAPQ (float32);
      ``layers["control"]`` (int32) and ``layers["control_mapq"]`` (float32): the matched
      control, aligned to each ChIP column (zeros if none);
    * ``uns["chipvi"]``: ``bin_size``, ``chrom_sizes``, ``fragment_length``, ``min_mapq``,
      ``keep_duplicates``, ``max_per_position`` (with ``"auto"`` also
      ``max_per_position_used``: lists ``bam`` and ``max_per_position``), ``version``,
      ``counting`` (the rule above), ``samplesheet``, ``region`` (``"chrom:start-end"``)
      when given, and ``filter_blacklist`` when a blacklist was applied.

    Raises
    ------
    ChipviInputError
        For a bad sample sheet or parameter, a missing, unsorted, unindexed or truncated BAM,
        BAMs aligned to different references, unknown ``chroms``, a ``region`` that does not
        parse, names a chromosome not in the BAM headers (or not in ``chroms``) or ends beyond
        it, or a BAM with no reads left after the filters. Nothing is counted before every file has been checked.

    Examples
    --------
    >>> adata = chipvi.read_bams("samples.csv", bin_size=200, chroms=["chr19"])  # doctest: +SKIP
    >>> adata = chipvi.read_bams("samples.csv", region="chr19:1,000,000-2,000,000")  # doctest: +SKIP
    >>> chipvi.read_bams("samples.csv", bin_size=25, out="bins.zarr")  # doctest: +SKIP
    """
    params = check_read_params(
        bin_size, fragment_length, min_mapq, keep_duplicates, max_per_position
    )
    n_threads = _resolve_threads(threads)
    plan = _plan_sheet(samplesheet, params, blacklist, chroms, region, index)
    if out is not None:
        _write_store(plan, params, n_threads, out, chunk_size, overwrite, progress)
        return None
    arrays = _new_arrays(bin_count(plan.contigs, params.bin_size), len(plan.sheet))
    totals, adata = _count_files(
        plan.file_infos,
        plan.contigs,
        plan.file_params,
        _file_outputs(plan, arrays),
        n_threads,
        progress,
        meanwhile=lambda: _new_anndata(
            plan.contigs,
            params,
            arrays[0],
            dict(zip(_LAYERS, arrays[1:], strict=True)),
            plan.var,
            plan.var_names,
            plan.uns,
        ),
    )
    _check_reads(totals, plan.file_infos, params, plan.contigs)
    _copy_shared(plan, arrays)
    _set_depths(plan, adata.var, totals)
    if plan.window is not None:
        adata._inplace_subset_obs(region_mask(adata.obs, *plan.window))
    if plan.blacklist is not None:
        bad_regions, source = plan.blacklist
        hit = blacklist_mask(adata.obs, bad_regions, source)
        info = blacklist_record(adata.uns["chipvi"], adata.obs.loc[hit], len(bad_regions), source)
        adata._inplace_subset_obs(~hit)
        adata.uns["chipvi"] = info
    return adata


#: Layers of ``read_bams`` after ``X``, in the order of :func:`_new_arrays`.
_LAYERS = ("mapq", "control", "control_mapq")
#: Bins counted per pass when writing a store: chromosomes are grouped up to this many bins
#: (a larger chromosome is one pass), so memory is bounded by the largest chromosome.
_STORE_PASS_BINS = 1 << 22


@dataclass
class _Plan:
    """What ``read_bams`` counts, checked before any counting."""

    sheet: pd.DataFrame
    contigs: list[tuple[str, int]]
    window: tuple[str, int, int] | None
    blacklist: tuple[pd.DataFrame, str] | None  # (intervals, absolute path)
    files: list[str]  # each BAM once, in the order its first column appears
    file_infos: list[BamInfo]
    file_params: list[_Params]
    var: dict
    var_names: list[str]
    uns: dict


def _plan_sheet(samplesheet, params: _Params, blacklist, chroms, region, index) -> _Plan:
    """Read the sheet and the blacklist, open every BAM (building indexes) and check them."""
    import pandas as pd

    from ._bed import read_bed
    from ._samplesheet import read_samplesheet

    if isinstance(samplesheet, pd.DataFrame):
        sheet, sheet_path = samplesheet, ""
    else:
        sheet, sheet_path = read_samplesheet(samplesheet), str(Path(samplesheet).absolute())
    bad = None
    if blacklist is not None:
        # Parse it now, so a bad BED fails before any counting.
        bad = (read_bed(blacklist), str(Path(blacklist).absolute()))

    # Check every file (and build indexes) before counting anything.
    chip_paths = list(sheet["bam"])
    control_paths = [p for p in dict.fromkeys(sheet["control"]) if p]
    unique = list(dict.fromkeys(chip_paths + control_paths))
    infos = {p: open_bam(p, index=index) for p in unique}
    window = None
    if region is not None:
        window = _region_window(region, infos[unique[0]], chroms)
        chroms = [window[0]]
    contigs = _kept_contigs([infos[p] for p in unique], chroms)
    # Each file is counted once, into the first column that uses it (chip before control).
    pairs = zip(sheet["bam"], sheet["control"], strict=True)
    files = list(dict.fromkeys(p for pair in pairs for p in pair if p))
    file_infos = [infos[p] for p in files]
    file_params = [_resolve_for_file(params, info, contigs) for info in file_infos]
    no_depth = np.zeros(len(sheet), np.int64)  # filled in once counted
    var = {
        "sample": sheet["sample"].astype(str).to_numpy(),
        "target": sheet["target"].astype(str).to_numpy(),
        "group": sheet["group"].astype(str).to_numpy(),
        "replicate": sheet["replicate"].astype(str).to_numpy(),
        "depth": no_depth,
        "control": [Path(p).name.removesuffix(".bam") if p else "" for p in sheet["control"]],
        "control_depth": no_depth,
        "bam": sheet["bam"].astype(str).to_numpy(),
        "control_bam": sheet["control"].astype(str).to_numpy(),
    }
    uns = _uns(
        params,
        contigs,
        samplesheet=sheet_path,
        **({} if window is None else {"region": "{}:{}-{}".format(*window)}),
        **_caps_used(params, file_infos, file_params),
    )
    return _Plan(
        sheet,
        contigs,
        window,
        bad,
        files,
        file_infos,
        file_params,
        var,
        sheet["sample"].astype(str).tolist(),
        uns,
    )


def _new_arrays(n_bins: int, n_lib: int) -> tuple[np.ndarray, ...]:
    """Zeroed ``X``, ``mapq``, ``control``, ``control_mapq`` of ``n_bins`` bins."""
    return (
        np.zeros((n_bins, n_lib), np.int32),
        np.zeros((n_bins, n_lib), np.float32),
        np.zeros((n_bins, n_lib), np.int32),
        np.zeros((n_bins, n_lib), np.float32),
    )


def _file_outputs(plan: _Plan, arrays) -> list[tuple[np.ndarray, np.ndarray]]:
    """``(counts, MAPQ)`` columns each file of ``plan.files`` is counted into: its first."""
    x, mapq, control, control_mapq = arrays
    first: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for j, (chip, ctrl) in enumerate(zip(plan.sheet["bam"], plan.sheet["control"], strict=True)):
        for path, (xs, ms) in ((chip, (x, mapq)), (ctrl, (control, control_mapq))):
            if path and path not in first:
                first[path] = (xs[:, j], ms[:, j])
    return [first[p] for p in plan.files]


def _copy_shared(plan: _Plan, arrays) -> None:
    """Copy each file counted once into the other columns that use it (a shared control)."""
    x, mapq, control, control_mapq = arrays
    first = dict(zip(plan.files, _file_outputs(plan, arrays), strict=True))
    for j, (chip, ctrl) in enumerate(zip(plan.sheet["bam"], plan.sheet["control"], strict=True)):
        for path, (xs, ms) in ((chip, (x, mapq)), (ctrl, (control, control_mapq))):
            if path and not np.shares_memory(first[path][0], xs[:, j]):
                xs[:, j] = first[path][0]
                ms[:, j] = first[path][1]


def _set_depths(plan: _Plan, var: pd.DataFrame, totals: np.ndarray) -> None:
    """``var["depth"]`` / ``["control_depth"]``: the sheet's overrides, else the reads counted."""
    counted = dict(zip(plan.files, totals.tolist(), strict=True))
    var["depth"] = _depth(plan.sheet, "depth", "bam", counted)
    var["control_depth"] = _depth(plan.sheet, "control_depth", "control", counted)


def _write_store(
    plan: _Plan, params: _Params, threads: int, out, chunk_size: int, overwrite: bool, progress
) -> None:
    """``read_bams(out=...)``: count a few chromosomes at a time and append them to a store.

    Memory holds one pass of chromosomes (up to ``_STORE_PASS_BINS`` bins, or the largest
    chromosome), never the genome; the region crop and the blacklist are applied per pass.
    """
    import pandas as pd

    from .._settings import settings
    from ._store import store_writer

    passes: list[list[tuple[str, int]]] = [[]]
    for contig in plan.contigs:
        if passes[-1] and bin_count(passes[-1] + [contig], params.bin_size) > _STORE_PASS_BINS:
            passes.append([])
        passes[-1].append(contig)
    names = [name for name, _ in plan.contigs]
    totals = np.zeros(len(plan.files), np.int64)
    removed = []
    n_kept = 0
    show = settings.progress(progress)
    # A pass is written before the next is counted, so memory holds one pass (writing it
    # while the next is counted would hold two).
    with store_writer(out, chunk=chunk_size, overwrite=overwrite) as writer:
        for contigs in passes:
            arrays = _new_arrays(bin_count(contigs, params.bin_size), len(plan.sheet))
            counted, obs = _count_files(
                plan.file_infos,
                contigs,
                plan.file_params,
                _file_outputs(plan, arrays),
                threads,
                show,
                meanwhile=lambda contigs=contigs: bin_obs(contigs, params.bin_size),
            )
            totals += counted
            _copy_shared(plan, arrays)
            # Categories: every chromosome of the store, as in the in-memory AnnData.
            codes = obs["chrom"].cat.codes.to_numpy(np.int64) + names.index(contigs[0][0])
            obs["chrom"] = pd.Categorical.from_codes(codes, categories=names)
            keep = np.ones(len(obs), bool)
            if plan.window is not None:
                keep &= region_mask(obs, *plan.window)
            if plan.blacklist is not None:
                hit = overlapping_bins(obs, plan.blacklist[0]) & keep
                removed.append(obs.loc[hit, ["chrom", "start", "end"]])
                keep &= ~hit
            n_kept += int(keep.sum())
            if not keep.all():
                obs, arrays = obs.loc[keep], tuple(a[keep] for a in arrays)
            writer.append(obs, arrays[0], dict(zip(_LAYERS, arrays[1:], strict=True)))
            del arrays, obs  # before the next pass allocates its own
        _check_reads(totals, plan.file_infos, params, plan.contigs)
        uns = dict(plan.uns)
        if plan.blacklist is not None:
            bad_regions, source = plan.blacklist
            if n_kept == 0:  # the blacklist covers every bin: its own message
                blacklist_mask(pd.concat(removed), bad_regions, source)
            uns = blacklist_record(uns, pd.concat(removed), len(bad_regions), source)
        var = pd.DataFrame(plan.var, index=pd.Index(plan.var_names, dtype=object))
        _set_depths(plan, var, totals)
        writer.finish(var, {"chipvi": uns})


def _region_window(region, info: BamInfo, chroms) -> tuple[str, int, int]:
    """``(chrom, start, end)`` of ``read_bams(region=...)``, checked against the BAM header."""
    if not isinstance(region, str):
        raise ChipviInputError(
            f"region must be a string like 'chr19:1,000,000-2,000,000', not {region!r}."
        )
    window = parse_region(region, dict(info.contigs), what=f"region (BAM {info.path.name})")
    if chroms is not None:
        wanted = [chroms] if isinstance(chroms, str) else list(chroms)
        if wanted != [window[0]]:
            raise ChipviInputError(
                f"region {region!r} lies on {window[0]} but chroms={wanted}; pass one of them "
                "(region alone keeps its chromosome)."
            )
    return window


def _depth(
    sheet: pd.DataFrame, column: str, path_column: str, counted: dict[str, int]
) -> np.ndarray:
    """Per-row depth: the sheet's override where given, else the reads counted (0: no file)."""
    import pandas as pd

    out = np.zeros(len(sheet), np.int64)
    given = sheet[column] if column in sheet.columns else pd.Series([-1] * len(sheet))
    for i, (path, value) in enumerate(zip(sheet[path_column], given, strict=True)):
        if value is not None and not pd.isna(value) and int(value) >= 0:
            out[i] = int(value)
        elif path:
            out[i] = counted[path]
    return out
