"""How each peer tool is run: one definition for every benchmark.

Peers (versions pinned in ``requirements-peers.txt``; :func:`versions` prints them):

* **MACS3** ``callpeak -B --nomodel --extsize <fragment> --keep-dup <auto|1>`` on each
  replicate and on the pooled replicates (``-t R1 R2 -c C1 C2``), fold enrichment from
  ``bdgcmp -m FE -p 1`` (pseudocount 1 read, so empty bins have a finite log); scored as
  ``log2 FE``. ``--keep-dup auto`` is MACS3's per-file Poisson limit on reads per position and
  strand (chipvi's ``max_per_position="auto"``), ``--keep-dup 1`` its default (``1``).
* **deepTools bamCompare** ``--operation log2 --scaleFactorsMethod readCount
  --ignoreDuplicates --minMappingQuality 10 --extendReads <fragment>`` per replicate and on
  the pooled replicates (BAMs merged with ``samtools merge``: bamCompare takes one BAM per
  side), without smoothing and with ``--smoothLength`` of 3 and 21 bins.
  ``--ignoreDuplicates`` keeps one read per position and strand (chipvi's
  ``max_per_position=1``).
* **pooled smoothed ratio** (numpy, from the binned counts chipvi is trained on): the group's
  replicates summed, ChIP and control each averaged over 3 bins, ``log2((chip + 1) /
  (control * chip_depth / control_depth + 1))``. The strong simple baseline.
* **raw log CPM**: ``log1p`` of each library's counts per million.

Every score is a matrix bins x libraries; a pooled peer repeats its one column for each
library. :class:`PeerScore` says which duplicate rule a peer used (chipvi is compared with
the peers that share its rule) and whether its columns are each library's own evidence.
"""

from __future__ import annotations

import functools
import hashlib
import json
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

#: Smoothing windows (in bins) of the smoothed bamCompare rows; 0 = none.
BAMCOMPARE_SMOOTH = (0, 3, 21)
#: MACS3 --keep-dup settings, and the chipvi ``max_per_position`` each one matches.
MACS3_KEEP_DUP = {"auto": "auto", "1": 1}
#: bamCompare's --ignoreDuplicates keeps one read per position and strand.
BAMCOMPARE_DUP = 1
BAMCOMPARE_MIN_MAPQ = 10
POOLED_WINDOW = 3


@dataclass
class PeerScore:
    """One peer's output over the benchmark's bins.

    Attributes
    ----------
    score
        Bins x libraries (a pooled peer repeats one column).
    evidence
        ``"own"`` (each column from its library's reads), ``"pooled"`` (one column from all
        replicates) or ``"shared"``.
    dup
        chipvi's ``max_per_position`` matching this peer's duplicate rule (``"auto"`` or 1),
        ``None`` when the peer reads chipvi's own counts (it follows chipvi's rule).
    """

    score: np.ndarray
    evidence: str
    dup: str | int | None


# ---------------------------------------------------------------------------- tool plumbing


def _run(cmd: Sequence[str | Path], log: Path) -> None:
    with open(log, "a") as fh:
        fh.write(" ".join(map(str, cmd)) + "\n")
        fh.flush()
        subprocess.run([str(c) for c in cmd], check=True, stdout=fh, stderr=fh)


@functools.cache
def versions() -> dict[str, str]:
    """Versions of the peer tools on PATH (``"missing"`` where one is not installed)."""
    out = {}
    for name, cmd in {
        "MACS3": ["macs3", "--version"],
        "deepTools": ["bamCompare", "--version"],
        "samtools": ["samtools", "--version"],
    }.items():
        try:
            text = subprocess.run(cmd, capture_output=True, text=True, errors="replace", check=True)
            line = (text.stdout or text.stderr).strip().splitlines()[0]
            out[name] = line.split()[-1]
        except (OSError, subprocess.CalledProcessError, IndexError):
            out[name] = "missing"
    return out


def versions_line() -> str:
    """``"MACS3 3.0.4, deepTools 3.5.6, samtools 1.16.1"``: for every table header."""
    return ", ".join(f"{k} {v}" for k, v in versions().items())


def missing_tools() -> list[str]:
    """Peer tools not found (empty when all are installed)."""
    return [k for k, v in versions().items() if v == "missing"]


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class PeerCache:
    """Peer outputs saved on disk, keyed by everything that changes them.

    The key hashes the peer's name and parameters, the tool versions, the bins (chrom, start,
    end) and the content of every input file, so a changed simulator, BAM, setting or tool
    never reuses a stale score. ``folder=None`` disables the cache.
    """

    def __init__(self, folder: str | Path | None):
        self.folder = Path(folder) if folder is not None else None
        if self.folder is not None:
            self.folder.mkdir(parents=True, exist_ok=True)

    def key(self, name: str, inputs: Sequence[Path], params: dict, bins: pd.DataFrame) -> str:
        bins_digest = hashlib.sha256(
            pd.util.hash_pandas_object(bins[["chrom", "start", "end"]], index=False).to_numpy()
        ).hexdigest()
        payload = {
            "name": name,
            "params": params,
            "versions": versions(),
            "bins": bins_digest,
            "inputs": [_file_digest(Path(p)) for p in inputs],
        }
        return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()

    def get(
        self,
        name: str,
        inputs: Sequence[Path],
        params: dict,
        bins: pd.DataFrame,
        compute: Callable[[], np.ndarray],
    ) -> np.ndarray:
        if self.folder is None:
            return compute()
        path = self.folder / f"{self.key(name, inputs, params, bins)[:32]}.npy"
        if path.is_file():
            return np.load(path)
        value = np.asarray(compute())
        tmp = path.with_suffix(".part.npy")
        np.save(tmp, value)
        tmp.replace(path)
        return value


# ------------------------------------------------------------------------------ bedGraph


def bedgraph_to_bins(path: Path, bins: pd.DataFrame, fill: float) -> np.ndarray:
    """Overlap-weighted mean of a bedGraph over ``bins`` (``chrom``, ``start``, ``end``).

    Bases the bedGraph does not cover count as ``fill``. Intervals of one chromosome must not
    overlap (true of MACS3 and deepTools output).
    """
    table = pd.read_csv(
        path,
        sep="\t",
        header=None,
        comment="t",  # "track ..." lines
        usecols=[0, 1, 2, 3],
        names=["chrom", "start", "end", "value"],
        dtype={"chrom": str, "start": np.int64, "end": np.int64, "value": float},
    )
    chrom = bins["chrom"].astype(str).to_numpy()
    starts = bins["start"].to_numpy(np.int64)
    ends = bins["end"].to_numpy(np.int64)
    out = np.full(len(bins), float(fill))
    by_chrom = {c: t.sort_values("start") for c, t in table.groupby("chrom", sort=False)}
    for c in pd.unique(chrom):
        rows = np.flatnonzero(chrom == c)
        sub = by_chrom.get(c)
        if sub is None:
            continue
        s, e, v = (sub[k].to_numpy() for k in ("start", "end", "value"))
        cum_val = np.r_[0.0, np.cumsum(v * (e - s))]
        cum_cov = np.r_[0.0, np.cumsum((e - s).astype(float))]

        def integral(x, cum, weight, s=s, e=e):
            # Intervals ending at or before x count whole; the next one counts up to x.
            k = np.searchsorted(e, x, side="right")
            partial = np.zeros(x.size)
            inside = k < s.size
            kk = k[inside]
            partial[inside] = weight[kk] * np.clip(x[inside] - s[kk], 0, None)
            return cum[k] + partial

        a, b = starts[rows], ends[rows]
        total = integral(b, cum_val, v) - integral(a, cum_val, v)
        ones = np.ones_like(v)
        covered = integral(b, cum_cov, ones) - integral(a, cum_cov, ones)
        out[rows] = (total + (b - a - covered) * fill) / (b - a)
    return out


# ---------------------------------------------------------------------------------- MACS3


def macs3_callpeak(
    chips: Sequence[Path],
    controls: Sequence[Path],
    outdir: Path,
    name: str,
    *,
    genome_size: int,
    fragment: int,
    keep_dup: str,
    extra: Sequence[str] = (),
) -> Path:
    """``macs3 callpeak`` with the benchmarks' settings; returns ``outdir`` (files ``name_*``)."""
    outdir.mkdir(parents=True, exist_ok=True)
    cmd = [
        "macs3", "callpeak", "-t", *chips, "-c", *controls, "-f", "BAM",
        "-g", str(genome_size), "-n", name, "--outdir", outdir,
        "--nomodel", "--extsize", str(fragment), "--keep-dup", str(keep_dup), *extra,
    ]  # fmt: skip
    _run(cmd, outdir / "macs3.log")
    return outdir


def macs3_log2_fe(
    chips: Sequence[Path],
    controls: Sequence[Path],
    bins: pd.DataFrame,
    work: Path,
    *,
    genome_size: int,
    fragment: int,
    keep_dup: str,
) -> np.ndarray:
    """log2 fold enrichment of MACS3 (``callpeak -B`` + ``bdgcmp -m FE -p 1``) over ``bins``."""
    tag = hashlib.sha256("|".join(map(str, [*chips, *controls, keep_dup])).encode()).hexdigest()
    name = f"m{tag[:12]}"
    macs3_callpeak(
        chips, controls, work, name,
        genome_size=genome_size, fragment=fragment, keep_dup=keep_dup, extra=["-B"],
    )  # fmt: skip
    fe = work / f"{name}_FE.bdg"
    _run(
        ["macs3", "bdgcmp", "-t", work / f"{name}_treat_pileup.bdg",
         "-c", work / f"{name}_control_lambda.bdg", "-m", "FE", "-p", "1", "-o", fe],
        work / "macs3.log",
    )  # fmt: skip
    return np.log2(bedgraph_to_bins(fe, bins, fill=1.0))


# ------------------------------------------------------------------------------- deepTools


def single_chrom_bam(src: Path, dest: Path, chrom: str) -> Path:
    """Copy ``chrom``'s reads of ``src`` into ``dest`` whose header lists ``chrom`` only.

    bamCompare's estimate of the reads its filters keep samples the whole header's genome: for
    a slice of chr19 under an hg19 header that took ~5 min a call on this machine, against ~10 s
    with a one-contig header and the same bedGraph (checked on the CSSQ data). Existing
    ``dest`` files are reused.
    """
    import pysam

    if dest.is_file() and Path(f"{dest}.bai").is_file():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    with pysam.AlignmentFile(str(src), "rb") as bam:
        header = {"HD": {"VN": "1.6", "SO": "coordinate"},
                  "SQ": [{"SN": chrom, "LN": bam.get_reference_length(chrom)}]}  # fmt: skip
        tmp = dest.with_suffix(".part.bam")
        with pysam.AlignmentFile(str(tmp), "wb", header=header) as out:
            for read in bam.fetch(chrom):
                out.write(pysam.AlignedSegment.from_dict(read.to_dict(), out.header))
    tmp.replace(dest)
    pysam.index(str(dest))
    return dest


def merge_bams(paths: Sequence[Path], dest: Path) -> Path:
    """``samtools merge`` + index (bamCompare takes one BAM per side)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    _run(["samtools", "merge", "-f", "-o", dest, *paths], dest.with_suffix(".log"))
    _run(["samtools", "index", dest], dest.with_suffix(".log"))
    return dest


def bamcompare_log2(
    chip: Path,
    control: Path,
    bins: pd.DataFrame,
    work: Path,
    *,
    bin_size: int,
    fragment: int,
    smooth_bins: int = 0,
    region: str | None = None,
) -> np.ndarray:
    """deepTools ``bamCompare`` log2 ratio (settings in the module docstring) over ``bins``."""
    work.mkdir(parents=True, exist_ok=True)
    tag = hashlib.sha256(f"{chip}|{control}|{smooth_bins}|{region}".encode()).hexdigest()
    dest = work / f"bc{tag[:12]}.bedgraph"
    cmd = [
        "bamCompare", "-b1", chip, "-b2", control, "--operation", "log2",
        "--scaleFactorsMethod", "readCount", "--ignoreDuplicates",
        "--minMappingQuality", str(BAMCOMPARE_MIN_MAPQ), "--binSize", str(bin_size),
        "--extendReads", str(fragment), "--outFileFormat", "bedgraph", "-o", dest, "-p", "1",
    ]  # fmt: skip
    if smooth_bins:
        cmd += ["--smoothLength", str(smooth_bins * bin_size)]
    if region:
        cmd += ["--region", region]
    _run(cmd, work / "bamCompare.log")
    return bedgraph_to_bins(dest, bins, fill=0.0)


# ------------------------------------------------------------------- numpy, binned counts


def moving_average(x: np.ndarray, chrom: np.ndarray, window: int) -> np.ndarray:
    """Centred moving average along the bins of each chromosome (edges: bins available)."""
    x = np.asarray(x, float)
    out = np.empty_like(x)
    half = window // 2
    for c in pd.unique(chrom):
        rows = np.flatnonzero(chrom == c)
        v = x[rows]
        cs = np.r_[np.zeros((1, *v.shape[1:])), np.cumsum(v, axis=0)]
        i = np.arange(rows.size)
        lo, hi = np.clip(i - half, 0, rows.size), np.clip(i + half + 1, 0, rows.size)
        width = (hi - lo).reshape(-1, *([1] * (v.ndim - 1)))
        out[rows] = (cs[hi] - cs[lo]) / width
    return out


def raw_log_cpm(adata) -> np.ndarray:
    """``log1p`` counts per million of each library (bins x libraries)."""
    x = np.asarray(adata.X.toarray() if hasattr(adata.X, "toarray") else adata.X, float)
    return np.log1p(x / adata.var["depth"].to_numpy(float) * 1e6)


def pooled_smoothed_ratio(adata, columns: Sequence[int], window: int = POOLED_WINDOW) -> np.ndarray:
    """log2 ratio of the pooled ChIP over the pooled control, each smoothed over ``window`` bins.

    Controls shared by several of ``columns`` (same ``var["control_bam"]``) are counted once.
    Depths are the ``var`` totals, so ``+ 1`` is one ChIP read.
    """
    x = adata.X.toarray() if hasattr(adata.X, "toarray") else adata.X
    ctrl = adata.layers["control"]
    ctrl = ctrl.toarray() if hasattr(ctrl, "toarray") else ctrl
    var = adata.var.iloc[list(columns)]
    chip = np.asarray(x[:, list(columns)], float).sum(axis=1)
    _, first = np.unique(var["control_bam"].to_numpy(), return_index=True)
    ctrl_cols = [columns[i] for i in sorted(first)]
    control = np.asarray(ctrl[:, ctrl_cols], float).sum(axis=1)
    chip_depth = var["depth"].sum()
    control_depth = adata.var["control_depth"].iloc[ctrl_cols].sum()
    chrom = adata.obs["chrom"].astype(str).to_numpy()
    chip_s = moving_average(chip, chrom, window)
    control_s = moving_average(control, chrom, window) * chip_depth / control_depth
    return np.log2((chip_s + 1) / (control_s + 1))


# ----------------------------------------------------------------------- every peer at once


def peer_scores(
    chips: Sequence[Path],
    controls: Sequence[Path],
    bins: pd.DataFrame,
    work: Path,
    cache: PeerCache,
    *,
    bin_size: int,
    fragment: int,
    genome_size: int,
    region: str | None = None,
    pooled: bool = True,
    bamcompare_smooth: Sequence[int] = BAMCOMPARE_SMOOTH,
    keep_dup: Sequence[str] = tuple(MACS3_KEEP_DUP),
) -> dict[str, PeerScore]:
    """Every tool-run peer for these libraries (``chips[j]`` with ``controls[j]``).

    Per library (own evidence) and, with ``pooled`` and at least two libraries, on the pooled
    replicates. The numpy peers (:func:`pooled_smoothed_ratio`, :func:`raw_log_cpm`) need the
    binned counts and are added by the caller.
    """
    chips, controls = [Path(p) for p in chips], [Path(p) for p in controls]
    n = len(chips)
    out: dict[str, PeerScore] = {}
    common = {"bin_size": bin_size, "fragment": fragment, "region": region}

    def own_and_pooled(label, dup, run_one, run_pooled, params):
        cols = [
            cache.get(label, [c, k], params, bins, functools.partial(run_one, c, k))
            for c, k in zip(chips, controls, strict=True)
        ]
        out[label] = PeerScore(np.column_stack(cols), "own", dup)
        if pooled and n > 1:
            col = cache.get(label + " pooled", [*chips, *controls], params, bins, run_pooled)
            out[f"{label}, pooled"] = PeerScore(np.repeat(col[:, None], n, 1), "pooled", dup)

    for kd in keep_dup:
        params = {**common, "genome_size": genome_size, "keep_dup": kd}
        macs = functools.partial(
            macs3_log2_fe, bins=bins, work=work / "macs3", genome_size=genome_size,
            fragment=fragment, keep_dup=kd,
        )  # fmt: skip
        own_and_pooled(
            f"MACS3 log2 FE keep-dup {kd}",
            MACS3_KEEP_DUP[kd],
            lambda c, k, macs=macs: macs([c], [k]),
            lambda macs=macs: macs(chips, controls),
            params,
        )
    merged: tuple[Path, Path] | None = None
    for smooth in bamcompare_smooth:
        params = {**common, "smooth_bins": smooth, "mapq": BAMCOMPARE_MIN_MAPQ}
        bc = functools.partial(
            bamcompare_log2, bins=bins, work=work / "bamcompare", bin_size=bin_size,
            fragment=fragment, smooth_bins=smooth, region=region,
        )  # fmt: skip

        def run_pooled(bc=bc):
            nonlocal merged
            if merged is None:
                merged = (
                    merge_bams(chips, work / "pooled" / "chip.bam"),
                    merge_bams(controls, work / "pooled" / "control.bam"),
                )
            return bc(*merged)

        label = "bamCompare log2" + (f" smooth {smooth}" if smooth else "")
        own_and_pooled(label, BAMCOMPARE_DUP, lambda c, k, bc=bc: bc(c, k), run_pooled, params)
    return out


def count_peers(adata, groups: dict[str, list[int]] | None = None) -> dict[str, PeerScore]:
    """The numpy peers on chipvi's binned counts: raw log CPM and the pooled smoothed ratio.

    ``groups`` maps a group to its columns (default ``adata.var["group"]``); each library gets
    its group's pooled ratio.
    """
    if groups is None:
        g = adata.var["group"].astype(str).to_numpy()
        groups = {k: list(np.flatnonzero(g == k)) for k in pd.unique(g)}
    ratio = np.empty(adata.shape, float)
    for cols in groups.values():
        ratio[:, cols] = pooled_smoothed_ratio(adata, cols)[:, None]
    pooled = all(len(c) > 1 for c in groups.values())
    name = f"{'pooled ' * pooled}smoothed ratio MA{POOLED_WINDOW} (numpy)"
    return {
        "raw log CPM": PeerScore(raw_log_cpm(adata), "own", None),
        name: PeerScore(ratio, "pooled" if pooled else "own", None),
    }
