"""Simulated ChIP-seq BAMs with known truth and the nuisances real data has."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pysam

from .._errors import ChipviInputError
from .._utils import atomic_path
from ._bam_writer import BamWriter

TRUTH_BIN_SIZE = 200
_DEFAULT_DEPTHS = (500_000, 120_000)
_DEFAULT_CONTROL_DEPTHS = (300_000, 100_000)
_DEFAULT_GC_BIAS = (0.1, 0.25)
_FLAG_PAIRED, _FLAG_PROPER, _FLAG_REVERSE, _FLAG_MATE_REVERSE = 0x1, 0x2, 0x10, 0x20
_FLAG_READ1, _FLAG_READ2, _FLAG_DUPLICATE = 0x40, 0x80, 0x400


@dataclass
class Simulation:
    """What :func:`simulate` wrote.

    Attributes
    ----------
    samplesheet
        Absolute path of ``samplesheet.csv`` (columns ``sample,bam,control,target,group,replicate``;
        BAM paths relative to the sheet's folder).
    truth
        One row per 200 bp bin: ``chrom``, ``start``, ``end``; per group ``enriched_<group>``
        (bool) and ``lfe_<group>`` (true natural-log fold enrichment: the log of the biological
        multiplier on the technical rate, 0 outside enrichment); ``low_mappability`` (bool:
        bins whose reads have MAPQ 0-3 and that carry artefactual pile-ups in ChIP and input,
        not enrichment); per ChIP library ``enriched_<sample>`` and ``lfe_<sample>`` (its
        own truth: the group's, less the features it lacks when
        ``replicate_specific_fraction`` > 0); plus the nuisances behind the counts:
        ``feature`` ("narrow", "broad" or "none"), ``gc`` (the GC-like covariate),
        ``copy_number_<group>``.
    truth_path
        Path of ``truth.tsv`` (the ``truth`` table).
    chrom_sizes
        Chromosome lengths in BAM-header order.
    libraries
        One row per ChIP library: ``sample``, ``group``, ``replicate``, ``bam``, ``control_bam``
        (absolute paths), ``depth`` and ``control_depth`` (reads written, fragments for paired
        data), ``gc_bias`` (strength of the GC-like bias).
    jackpots
        PCR-duplicate jackpots: ``sample``, ``chrom``, ``pos`` (leftmost read position),
        ``reverse``, ``n_reads`` (copies written), ``n_flagged`` (copies with the duplicate flag).
    paired
        Whether reads are paired-end.
    """

    samplesheet: Path
    truth: pd.DataFrame
    truth_path: Path
    chrom_sizes: dict[str, int]
    libraries: pd.DataFrame = field(repr=False)
    jackpots: pd.DataFrame = field(repr=False)
    paired: bool = False


def _per_library(value, name: str, n_groups: int, n_replicates: int, kind=float) -> list:
    """Expand a per-replicate (repeated for every group) or per-library sequence."""
    if np.isscalar(value):
        values = [value] * n_replicates
    else:
        values = list(value)
    if len(values) == n_replicates:
        values = values * n_groups
    if len(values) != n_groups * n_replicates:
        raise ChipviInputError(
            f"{name} has {len(values)} values; give one per replicate ({n_replicates}) or one "
            f"per library (n_groups * n_replicates = {n_groups * n_replicates})."
        )
    out = []
    for v in values:
        try:
            out.append(kind(v))
        except (TypeError, ValueError):
            raise ChipviInputError(f"{name} contains {v!r}, which is not a number.") from None
    return out


def _check_positive_int(value, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ChipviInputError(f"{name} must be an integer >= {minimum}, got {value!r}.")
    return int(value)


def _check_nonnegative(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.number) or value < 0:
        raise ChipviInputError(f"{name} must be a number >= 0, got {value!r}.")
    return float(value)


def _smooth_noise(rng: np.random.Generator, n: int, width: int) -> np.ndarray:
    """Zero-mean, unit-sd noise smoothed by a moving average over ``width`` bins."""
    raw = rng.standard_normal(n + 2 * width)
    kernel = np.hanning(2 * width + 1)
    smooth = np.convolve(raw, kernel / kernel.sum(), mode="same")[width : width + n]
    sd = smooth.std()
    return (smooth - smooth.mean()) / (sd if sd > 0 else 1.0)


@dataclass
class _Genome:
    """Bins of all chromosomes concatenated, with per-bin covariates."""

    chrom_sizes: dict[str, int]
    chrom_of_bin: np.ndarray  # int index into chrom_sizes
    start: np.ndarray
    end: np.ndarray
    offsets: np.ndarray  # first global bin of each chromosome (+ total at the end)

    @property
    def n_bins(self) -> int:
        return len(self.start)

    @property
    def width(self) -> np.ndarray:
        return (self.end - self.start).astype(np.float64)


def _make_genome(chrom_sizes: Mapping[str, int]) -> _Genome:
    starts, ends, chrom_idx, offsets = [], [], [], [0]
    for i, length in enumerate(chrom_sizes.values()):
        s = np.arange(0, length, TRUTH_BIN_SIZE, dtype=np.int64)
        starts.append(s)
        ends.append(np.minimum(s + TRUTH_BIN_SIZE, length))
        chrom_idx.append(np.full(len(s), i, dtype=np.int64))
        offsets.append(offsets[-1] + len(s))
    return _Genome(
        dict(chrom_sizes),
        np.concatenate(chrom_idx),
        np.concatenate(starts),
        np.concatenate(ends),
        np.asarray(offsets),
    )


def _place_intervals(
    rng: np.random.Generator,
    genome: _Genome,
    occupied: np.ndarray,
    n: int,
    widths: np.ndarray,
    gap: int = 2,
) -> list[tuple[int, int]]:
    """Place ``n`` intervals of the given widths (in bins) on free bins of one chromosome each."""
    placed = []
    for k in range(n):
        w = int(widths[k])
        for _ in range(200):
            c = rng.integers(len(genome.offsets) - 1)
            lo, hi = genome.offsets[c], genome.offsets[c + 1]
            if hi - lo < w + 2 * gap:
                continue
            s = int(rng.integers(lo + gap, hi - w - gap + 1))
            if not occupied[s - gap : s + w + gap].any():
                occupied[s : s + w] = True
                placed.append((s, s + w))
                break
    return placed


def _check_paths_free(paths: Sequence[Path], overwrite: bool) -> None:
    if overwrite:
        return
    existing = [str(p) for p in paths if p.exists()]
    if existing:
        raise ChipviInputError(
            f"simulate would overwrite existing files ({', '.join(existing[:3])}"
            f"{', ...' if len(existing) > 3 else ''}); pass overwrite=True or use an empty out_dir."
        )


def simulate(
    out_dir: str | os.PathLike,
    *,
    seed: int = 0,
    chrom_sizes: Mapping[str, int] | None = None,
    n_chroms: int = 2,
    chrom_length: int = 1_000_000,
    n_groups: int = 1,
    n_replicates: int = 2,
    depths: Sequence[int] | int | None = None,
    control_depths: Sequence[int] | int | None = None,
    fragment_length: int = 200,
    fragment_sd: float = 25.0,
    read_length: int = 50,
    paired: bool = False,
    peaks_per_mb: float = 60.0,
    domains_per_mb: float = 5.0,
    peak_fold: float = 10.0,
    domain_fold: float = 3.5,
    shared_fraction: float = 0.6,
    group_difference_sd: float = 0.4,
    replicate_specific_fraction: float = 0.0,
    cnv_segments_per_mb: float = 2.0,
    background_sd: float = 0.25,
    gc_bias: Sequence[float] | float | None = None,
    lowmap_blocks_per_mb: float = 6.0,
    lowmap_fold: float = 6.0,
    jackpot_sample: str | None = None,
    jackpots_per_mb: float = 10.0,
    jackpot_size: float = 100.0,
    jackpot_flagged: float = 0.1,
    overdispersion: float = 0.05,
    target: str = "sim",
    compresslevel: int = 1,
    overwrite: bool = False,
) -> Simulation:
    """Write simulated ChIP-seq and input BAMs with known enrichment.

    The genome is cut into 200 bp bins. For ChIP library ``j`` of group ``g`` the expected
    fragment count of bin ``i`` is proportional to

        width_i * CN_gi * B_gi * A_i * exp(b_j * GC_i) * exp(lfe_gi) * e_ij

    and for its input to ``width_i * CN_gi * B_gi * A_i * e'_ij``, where ``CN`` is a
    piecewise-constant copy number (segments shared by the ChIP and input libraries of a group),
    ``B`` a smooth open-chromatin background, ``A`` an artefactual pile-up multiplier inside
    low-mappability blocks (reads there get MAPQ 0-3), ``GC`` a smooth GC-like covariate with
    a library-specific bias strength ``b_j``, ``lfe`` the true log fold enrichment (narrow
    peaks of 1-5 bins and broad domains of tens to hundreds of bins; 0 elsewhere) and ``e``
    Gamma noise of variance ``overdispersion``. Fragment counts are drawn from a multinomial
    with the library's depth; fragment centres fall uniformly inside their bin, fragment
    lengths are Normal(``fragment_length``, ``fragment_sd``). One library also receives
    PCR-duplicate jackpots: many copies of one fragment, mostly without the duplicate flag.

    Parameters
    ----------
    out_dir
        Folder for the BAMs (with ``.bai`` indexes), ``samplesheet.csv`` and ``truth.tsv``;
        created if missing.
    seed
        Seed of the random generator; the same arguments and seed give identical files.
    chrom_sizes
        Chromosome names and lengths; default ``n_chroms`` chromosomes ``chr1, ...`` of
        ``chrom_length`` bp.
    n_chroms, chrom_length
        Genome used when ``chrom_sizes`` is not given.
    n_groups
        Biological groups (``G1, G2, ...``). With two or more, each enriched feature is
        shared by all groups with probability ``shared_fraction`` (with group-specific
        strengths, log-normal spread ``group_difference_sd``) and otherwise specific to one.
    n_replicates
        ChIP libraries per group, each with its own input library.
    depths, control_depths
        Reads (fragments when ``paired``) per ChIP / input library: one value per replicate
        (repeated for every group) or one per library, group-major. Default: replicates
        alternate a strong library (500 000 ChIP / 300 000 input reads) and a weak one
        (120 000 / 100 000). With these, MACS3 fold enrichment reaches an AUPRC
        of about 0.95 on enriched bins for the strong library and 0.89 for the weak one.
    fragment_length, fragment_sd
        Mean and sd of fragment lengths (bp).
    read_length
        Read length (bp).
    paired
        Write properly paired reads (both mates) instead of single-end reads.
    peaks_per_mb, domains_per_mb
        Density of narrow peaks and broad domains per Mb of genome.
    peak_fold, domain_fold
        Median fold enrichment at the summit of narrow peaks / inside broad domains.
    shared_fraction, group_difference_sd
        See ``n_groups``.
    replicate_specific_fraction
        Fraction of enriched features present in only one replicate of each group that has
        them (chosen at random): biology the replicates do not share, as after a failed
        immunoprecipitation or in heterogeneous samples. Their truth is in the per-library
        columns ``lfe_<sample>`` / ``enriched_<sample>``. Drawn from a separate random stream,
        so 0 (the default) leaves every other output of a seed unchanged.
    cnv_segments_per_mb
        Copy-number breakpoints per Mb (0: no copy-number changes).
    background_sd
        sd of the smooth log background shared by ChIP and input.
    gc_bias
        Strength of the GC-like bias on the log ChIP rate, per replicate or per library.
        Default: 0.1 for the strong and 0.25 for the weak replicates.
    lowmap_blocks_per_mb, lowmap_fold
        Density of low-mappability blocks and median fold of their artefactual pile-ups.
    jackpot_sample
        Library that receives PCR jackpots (default: the second replicate of the first group,
        or the only one); ``""`` disables jackpots.
    jackpots_per_mb, jackpot_size, jackpot_flagged
        Jackpot density, median number of copies per jackpot, and the fraction of copies
        flagged as duplicates.
    overdispersion
        Variance of the per-bin Gamma noise (mean 1) on every library's rate.
    target
        Value of the sample sheet's ``target`` column.
    compresslevel
        BGZF (libdeflate) compression level, 1-12 (1: fastest; files ~4 % larger than at 4).
    overwrite
        Replace existing output files.

    Returns
    -------
    Simulation
        Paths and truth; see :class:`Simulation`.

    Examples
    --------
    >>> sim = chipvi.datasets.simulate("sim")  # doctest: +SKIP
    >>> adata = chipvi.read_bams(sim.samplesheet)  # doctest: +SKIP
    """
    # ---- validate everything before writing anything
    seed = _check_positive_int(seed, "seed", 0)
    n_groups = _check_positive_int(n_groups, "n_groups")
    n_replicates = _check_positive_int(n_replicates, "n_replicates")
    if chrom_sizes is None:
        n_chroms = _check_positive_int(n_chroms, "n_chroms")
        chrom_length = _check_positive_int(chrom_length, "chrom_length")
        chrom_sizes = {f"chr{i + 1}": chrom_length for i in range(n_chroms)}
    else:
        if not isinstance(chrom_sizes, Mapping) or not chrom_sizes:
            raise ChipviInputError("chrom_sizes must be a non-empty mapping {chrom: length}.")
        chrom_sizes = {
            str(c): _check_positive_int(n, f"chrom_sizes[{c!r}]") for c, n in chrom_sizes.items()
        }
    read_length = _check_positive_int(read_length, "read_length")
    fragment_length = _check_positive_int(fragment_length, "fragment_length")
    if fragment_length < read_length:
        raise ChipviInputError(
            f"fragment_length ({fragment_length}) must be at least read_length ({read_length})."
        )
    too_short = [c for c, n in chrom_sizes.items() if n < 2 * fragment_length]
    if too_short:
        raise ChipviInputError(
            f"chromosomes {too_short} are shorter than 2 * fragment_length; make them longer."
        )
    # Defaults alternate a strong and a weak replicate (deep, mild GC bias / shallow, strong).
    if depths is None:
        depths = [_DEFAULT_DEPTHS[r % 2] for r in range(n_replicates)]
    if control_depths is None:
        control_depths = [_DEFAULT_CONTROL_DEPTHS[r % 2] for r in range(n_replicates)]
    if gc_bias is None:
        gc_bias = [_DEFAULT_GC_BIAS[r % 2] for r in range(n_replicates)]
    depths = _per_library(depths, "depths", n_groups, n_replicates, int)
    control_depths = _per_library(control_depths, "control_depths", n_groups, n_replicates, int)
    for name, values in (("depths", depths), ("control_depths", control_depths)):
        if min(values) < 1:
            raise ChipviInputError(f"{name} must all be >= 1, got {values}.")
    gc_bias = _per_library(gc_bias, "gc_bias", n_groups, n_replicates, float)
    for name, value in (
        ("fragment_sd", fragment_sd),
        ("peaks_per_mb", peaks_per_mb),
        ("domains_per_mb", domains_per_mb),
        ("group_difference_sd", group_difference_sd),
        ("cnv_segments_per_mb", cnv_segments_per_mb),
        ("background_sd", background_sd),
        ("lowmap_blocks_per_mb", lowmap_blocks_per_mb),
        ("jackpots_per_mb", jackpots_per_mb),
        ("jackpot_size", jackpot_size),
        ("overdispersion", overdispersion),
    ):
        _check_nonnegative(value, name)
    for name, value in (("peak_fold", peak_fold), ("domain_fold", domain_fold)):
        if _check_nonnegative(value, name) < 1:
            raise ChipviInputError(f"{name} must be >= 1 (a fold enrichment), got {value!r}.")
    _check_nonnegative(lowmap_fold, "lowmap_fold")
    for name, value in (
        ("shared_fraction", shared_fraction),
        ("jackpot_flagged", jackpot_flagged),
        ("replicate_specific_fraction", replicate_specific_fraction),
    ):
        if not 0 <= _check_nonnegative(value, name) <= 1:
            raise ChipviInputError(f"{name} must lie in [0, 1], got {value!r}.")
    if not 1 <= _check_positive_int(compresslevel, "compresslevel") <= 12:
        raise ChipviInputError(f"compresslevel must lie in 1..12, got {compresslevel!r}.")
    if not isinstance(target, str) or not target:
        raise ChipviInputError(f"target must be a non-empty string, got {target!r}.")

    groups = [f"G{g + 1}" for g in range(n_groups)]
    samples = [f"{g}_R{r + 1}" for g in groups for r in range(n_replicates)]
    if jackpot_sample is None:
        jackpot_sample = samples[min(1, len(samples) - 1)]
    if jackpot_sample and jackpot_sample not in samples:
        raise ChipviInputError(
            f"jackpot_sample {jackpot_sample!r} is not one of the samples {samples}; "
            "use '' to disable jackpots."
        )

    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ChipviInputError(f"out_dir {out_dir} exists and is not a folder.")
    bam_paths = {s: out_dir / f"{s}.bam" for s in samples}
    control_paths = {s: out_dir / f"{s}_input.bam" for s in samples}
    sheet_path, truth_path = out_dir / "samplesheet.csv", out_dir / "truth.tsv"
    outputs = [sheet_path, truth_path]
    for p in [*bam_paths.values(), *control_paths.values()]:
        outputs += [p, p.with_name(p.name + ".bai")]
    _check_paths_free(outputs, overwrite)
    out_dir.mkdir(parents=True, exist_ok=True)
    # Absolute paths in the returned Simulation stay valid after a change of directory.
    out_dir = out_dir.resolve()
    bam_paths = {s: out_dir / p.name for s, p in bam_paths.items()}
    control_paths = {s: out_dir / p.name for s, p in control_paths.items()}
    sheet_path, truth_path = out_dir / sheet_path.name, out_dir / truth_path.name

    # ---- the genome and its covariates
    rng = np.random.default_rng(seed)
    genome = _make_genome(chrom_sizes)
    n_bins = genome.n_bins
    genome_mb = sum(chrom_sizes.values()) / 1e6

    def count(density: float) -> int:
        return int(rng.poisson(density * genome_mb))

    gc = np.clip(0.5 + 0.08 * _smooth_noise(rng, n_bins, 50), 0.3, 0.7)
    gc_z = (gc - 0.5) / 0.08

    # Low-mappability blocks (1-15 bins) with artefactual pile-ups in ChIP and input alike.
    occupied = np.zeros(n_bins, dtype=bool)
    n_lowmap = count(lowmap_blocks_per_mb)
    lowmap_blocks = _place_intervals(
        rng, genome, occupied, n_lowmap, rng.integers(1, 16, n_lowmap), gap=0
    )
    low_mappability = occupied.copy()
    artefact = np.ones(n_bins)
    for s, e in lowmap_blocks:
        artefact[s:e] = lowmap_fold * math.exp(np.clip(0.3 * rng.standard_normal(), -0.7, 0.7))

    # Enriched features: narrow peaks (1-5 bins) and broad domains (20-300 bins).
    n_peaks, n_domains = count(peaks_per_mb), count(domains_per_mb)
    domains = _place_intervals(
        rng, genome, occupied, n_domains, np.exp(rng.uniform(np.log(20), np.log(300), n_domains))
    )
    peaks = _place_intervals(rng, genome, occupied, n_peaks, rng.integers(1, 6, n_peaks))
    feature = np.full(n_bins, "none", dtype=object)
    lfe = np.zeros((n_groups, n_bins))

    def feature_groups() -> np.ndarray:
        """Per-group multiplier on a feature's log fold (0: absent in that group)."""
        if n_groups == 1 or rng.random() < shared_fraction:
            return np.exp(group_difference_sd * rng.standard_normal(n_groups) * (n_groups > 1))
        present = np.zeros(n_groups)
        present[rng.integers(n_groups)] = 1.0
        return present

    # Which replicates carry each feature (1 = present); a stream of its own (see docstring).
    presence = np.ones((len(samples), n_bins))
    rep_rng = np.random.default_rng([seed, 1])

    def replicate_specific(s: int, e: int) -> None:
        for g in range(n_groups):
            if rep_rng.random() < replicate_specific_fraction:
                libs = g * n_replicates + np.arange(n_replicates)
                presence[np.delete(libs, rep_rng.integers(n_replicates)), s:e] = 0.0

    for s, e in peaks:
        replicate_specific(s, e)
        summit = math.log(max(peak_fold * math.exp(0.5 * rng.standard_normal()), 1.5))
        offsets = np.arange(s, e) - (s + e - 1) / 2
        shape = np.exp(-0.5 * (offsets / max((e - s) / 2.5, 0.5)) ** 2)
        lfe[:, s:e] = feature_groups()[:, None] * summit * shape[None, :]
        feature[s:e] = "narrow"
    for s, e in domains:
        replicate_specific(s, e)
        level = math.log(max(domain_fold * math.exp(0.3 * rng.standard_normal()), 1.2))
        wave = np.exp(0.15 * _smooth_noise(rng, e - s, 5))
        lfe[:, s:e] = feature_groups()[:, None] * level * wave[None, :]
        feature[s:e] = "broad"

    copy_number = np.full((n_groups, n_bins), 2.0)
    background = np.ones((n_groups, n_bins))
    for g in range(n_groups):
        for c in range(len(chrom_sizes)):
            lo, hi = genome.offsets[c], genome.offsets[c + 1]
            n_breaks = rng.poisson(cnv_segments_per_mb * (hi - lo) * TRUTH_BIN_SIZE / 1e6)
            cuts = np.sort(rng.integers(lo, hi, n_breaks))
            for s, e in zip(np.r_[lo, cuts], np.r_[cuts, hi], strict=True):
                copy_number[g, s:e] = rng.choice([1.0, 2.0, 3.0, 4.0], p=[0.1, 0.6, 0.2, 0.1])
        background[g] = np.exp(background_sd * _smooth_noise(rng, n_bins, 25))

    def gamma_noise() -> np.ndarray:
        if overdispersion == 0:
            return np.ones(n_bins)
        return rng.gamma(1.0 / overdispersion, overdispersion, n_bins)

    # One reference sequence per chromosome, shared by all libraries (reads carry its bases).
    references = [
        _random_reference(rng, gc[genome.offsets[c] : genome.offsets[c + 1]], length)
        for c, length in enumerate(chrom_sizes.values())
    ]

    # ---- fragment counts per library
    width = genome.width
    libraries = []
    for j, sample in enumerate(samples):
        g = j // n_replicates
        base = width * copy_number[g] * background[g] * artefact
        chip_rate = base * np.exp(gc_bias[j] * gc_z + lfe[g] * presence[j]) * gamma_noise()
        input_rate = base * gamma_noise()
        libraries.append((sample, g, j % n_replicates, chip_rate, depths[j], bam_paths[sample]))
        libraries.append((sample, g, -1, input_rate, control_depths[j], control_paths[sample]))

    jackpot_rows = []
    free_of_lowmap = np.flatnonzero(~low_mappability)
    for sample, _g, rep, rate, depth, path in libraries:
        jackpots = None
        if sample == jackpot_sample and rep >= 0:
            n_jp = count(jackpots_per_mb)
            sizes = np.maximum(
                np.round(jackpot_size * np.exp(0.6 * rng.standard_normal(n_jp))), 10
            ).astype(np.int64)
            # Jackpots never eat more than a tenth of the library.
            keep = np.cumsum(sizes) <= depth // 10
            sizes = sizes[keep]
            jackpots = (rng.choice(free_of_lowmap, len(sizes)), sizes)
            depth -= int(sizes.sum())
        counts = rng.multinomial(depth, rate / rate.sum())
        rows = _write_library(
            path,
            genome,
            counts,
            low_mappability,
            jackpots,
            rng=rng,
            references=references,
            fragment_length=fragment_length,
            fragment_sd=fragment_sd,
            read_length=read_length,
            paired=paired,
            jackpot_flagged=jackpot_flagged,
            compresslevel=compresslevel,
            overwrite=overwrite,
            name_prefix=f"{path.stem}.",
        )
        for row in rows:
            jackpot_rows.append({"sample": sample, **row})

    # ---- sample sheet and truth
    sheet = pd.DataFrame(
        {
            "sample": samples,
            "bam": [bam_paths[s].name for s in samples],
            "control": [control_paths[s].name for s in samples],
            "target": target,
            "group": [s.split("_")[0] for s in samples],
            "replicate": [int(s.split("_R")[1]) for s in samples],
        }
    )
    with atomic_path(sheet_path, overwrite=overwrite) as tmp:
        sheet.to_csv(tmp, index=False)

    truth = pd.DataFrame(
        {
            "chrom": pd.Categorical(
                np.asarray(list(chrom_sizes))[genome.chrom_of_bin], categories=list(chrom_sizes)
            ),
            "start": genome.start,
            "end": genome.end,
        }
    )
    # Rounded so that the table read back from truth.tsv equals the one returned.
    lfe = np.round(lfe, 6)
    for g, group in enumerate(groups):
        truth[f"enriched_{group}"] = lfe[g] > 0
        truth[f"lfe_{group}"] = lfe[g]
    for j, sample in enumerate(samples):
        lfe_j = lfe[j // n_replicates] * presence[j]
        truth[f"enriched_{sample}"] = lfe_j > 0
        truth[f"lfe_{sample}"] = lfe_j
    truth["low_mappability"] = low_mappability
    truth["feature"] = pd.Series(feature, dtype=str)
    truth["gc"] = np.round(gc, 6)
    for g, group in enumerate(groups):
        truth[f"copy_number_{group}"] = copy_number[g]
    with atomic_path(truth_path, overwrite=overwrite) as tmp:
        truth.to_csv(tmp, sep="\t", index=False)

    library_table = pd.DataFrame(
        {
            "sample": samples,
            "group": sheet["group"],
            "replicate": sheet["replicate"],
            "bam": [str(bam_paths[s].resolve()) for s in samples],
            "control_bam": [str(control_paths[s].resolve()) for s in samples],
            "depth": depths,
            "control_depth": control_depths,
            "gc_bias": gc_bias,
        }
    )
    jackpot_table = pd.DataFrame(
        jackpot_rows, columns=["sample", "chrom", "pos", "reverse", "n_reads", "n_flagged"]
    )
    return Simulation(
        samplesheet=sheet_path,
        truth=truth,
        truth_path=truth_path,
        chrom_sizes=dict(chrom_sizes),
        libraries=library_table,
        jackpots=jackpot_table,
        paired=paired,
    )


def _random_reference(rng: np.random.Generator, gc: np.ndarray, length: int) -> np.ndarray:
    """4-bit base codes whose local GC fraction follows the per-bin covariate ``gc``."""
    threshold = np.repeat(np.round(gc * 65536).astype(np.uint32), TRUTH_BIN_SIZE)[:length]
    draw = rng.integers(0, 65536, length, dtype=np.uint32)
    # One 16-bit draw per base: below the threshold means G/C; its lowest bit picks which.
    choice = 2 * (draw < threshold) + (draw & 1)
    return np.array([1, 8, 2, 4], dtype=np.uint8)[choice]  # A, T, C, G


def _jackpot_fragments(
    rng: np.random.Generator,
    genome: _Genome,
    jackpots: tuple[np.ndarray, np.ndarray],
    lo: int,
    hi: int,
    fragment_length: int,
    fragment_sd: float,
    read_length: int,
    jackpot_flagged: float,
) -> dict:
    """Copies of one fragment per jackpot in bins ``[lo, hi)``; few flagged as duplicates."""
    length = int(genome.end[hi - 1])
    jp_bins, jp_sizes = jackpots
    here = (jp_bins >= lo) & (jp_bins < hi)
    bins, sizes = jp_bins[here], jp_sizes[here]
    k = len(bins)
    flen = np.clip(
        np.round(rng.normal(fragment_length, fragment_sd, k)).astype(np.int64),
        read_length,
        min(2 * fragment_length, length),
    )
    centre = genome.start[bins] + rng.integers(0, genome.width[bins].astype(np.int64))
    fstart = np.clip(centre - flen // 2, 0, length - flen)
    reverse = rng.random(k) < 0.5
    duplicate = rng.random(int(sizes.sum())) < jackpot_flagged
    first_copy = np.r_[0, np.cumsum(sizes)[:-1]].astype(np.int64)
    duplicate[first_copy[sizes > 0]] = False  # the original molecule is never the duplicate
    rows = [
        {
            "pos": int(fstart[i]),
            "flen": int(flen[i]),
            "reverse": bool(reverse[i]),
            "n_reads": int(sizes[i]),
            "n_flagged": int(duplicate[first_copy[i] : first_copy[i] + sizes[i]].sum()),
        }
        for i in range(k)
    ]
    return {
        "fstart": np.repeat(fstart, sizes),
        "flen": np.repeat(flen, sizes),
        "reverse": np.repeat(reverse, sizes),
        "duplicate": duplicate,
        "rows": rows,
    }


def _write_library(
    path: Path,
    genome: _Genome,
    counts: np.ndarray,
    low_mappability: np.ndarray,
    jackpots: tuple[np.ndarray, np.ndarray] | None,
    *,
    rng: np.random.Generator,
    references: list[np.ndarray],
    fragment_length: int,
    fragment_sd: float,
    read_length: int,
    paired: bool,
    jackpot_flagged: float,
    compresslevel: int,
    overwrite: bool,
    name_prefix: str,
) -> list[dict]:
    """Draw fragments from per-bin counts, write a sorted BAM and index it."""
    jackpot_rows = []
    next_name = 0
    with atomic_path(path, overwrite=overwrite) as tmp:
        writer = BamWriter(
            tmp,
            genome.chrom_sizes,
            read_length=read_length,
            name_prefix=name_prefix,
            level=compresslevel,
        )
        for c, (chrom, length) in enumerate(genome.chrom_sizes.items()):
            lo, hi = genome.offsets[c], genome.offsets[c + 1]
            bins = np.repeat(np.arange(lo, hi), counts[lo:hi])
            n = len(bins)
            centre = genome.start[bins] + rng.random(n) * genome.width[bins]
            flen = np.round(rng.normal(fragment_length, fragment_sd, n)).astype(np.int64)
            flen = np.clip(flen, read_length, min(2 * fragment_length, length))
            fstart = np.clip(np.round(centre - flen / 2).astype(np.int64), 0, length - flen)
            reverse = rng.random(n) < 0.5
            mapq = np.where(rng.random(n) < 0.94, 60, rng.integers(0, 60, n))
            mapq = np.where(low_mappability[bins], rng.integers(0, 4, n), mapq).astype(np.uint8)
            duplicate = np.zeros(n, dtype=bool)
            if jackpots is not None:
                extra = _jackpot_fragments(
                    rng,
                    genome,
                    jackpots,
                    lo,
                    hi,
                    fragment_length,
                    fragment_sd,
                    read_length,
                    jackpot_flagged,
                )
                fstart = np.r_[fstart, extra["fstart"]]
                flen = np.r_[flen, extra["flen"]]
                reverse = np.r_[reverse, extra["reverse"]]
                mapq = np.r_[mapq, np.full(len(extra["fstart"]), 60, dtype=np.uint8)]
                duplicate = np.r_[duplicate, extra["duplicate"]]
                for row in extra["rows"]:
                    if row["reverse"] and not paired:
                        row["pos"] += row.pop("flen") - read_length
                    else:
                        row.pop("flen")
                    jackpot_rows.append({"chrom": chrom, **row})
            n = len(fstart)
            name_id = next_name + np.arange(n)
            next_name += n
            fend = fstart + flen
            dup_flag = np.where(duplicate, _FLAG_DUPLICATE, 0)
            if not paired:
                pos = np.where(reverse, fend - read_length, fstart)
                flag = np.where(reverse, _FLAG_REVERSE, 0) | dup_flag
                order = np.argsort(pos, kind="stable")
                writer.write(c, pos[order], flag[order], mapq[order], name_id[order], references[c])
                continue
            # Paired: mate 1 lies on the fragment's strand; mates face each other.
            left, right = fstart, fend - read_length
            base = _FLAG_PAIRED | _FLAG_PROPER | dup_flag
            flag1 = base | _FLAG_READ1 | np.where(reverse, _FLAG_REVERSE, _FLAG_MATE_REVERSE)
            flag2 = base | _FLAG_READ2 | np.where(reverse, _FLAG_MATE_REVERSE, _FLAG_REVERSE)
            pos1 = np.where(reverse, right, left)
            pos2 = np.where(reverse, left, right)
            tlen1 = np.where(reverse, -flen, flen)
            pos = np.r_[pos1, pos2]
            order = np.argsort(pos, kind="stable")
            writer.write(
                c,
                pos[order],
                np.r_[flag1, flag2][order],
                np.r_[mapq, mapq][order],
                np.r_[name_id, name_id][order],
                references[c],
                next_pos=np.r_[pos2, pos1][order],
                tlen=np.r_[tlen1, -tlen1][order],
            )
        writer.close()
    index_path = path.with_name(path.name + ".bai")
    if index_path.exists():
        index_path.unlink()
    pysam.index(str(path))
    return jackpot_rows
