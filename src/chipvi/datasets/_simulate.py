"""Simulated ChIP-seq BAMs with known truth and the nuisances real data has."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .._errors import ChipviInputError
from .._utils import atomic_path
from ._genome import TRUTH_BIN_SIZE, Genome, make_genome, place_intervals, smooth_noise
from ._reads import random_reference, write_library
from ._spec import SimulationSpec, _check_positive_int


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
        bins with artefactual pile-ups in ChIP and input, not enrichment; their reads have
        MAPQ 0-3 except in the ``mapq_partial`` scenarios, see ``low_mapq``); per ChIP library
        ``enriched_<sample>`` and ``lfe_<sample>`` (its own truth: the group's, less the
        features it lacks when ``replicate_specific_fraction`` > 0); plus the nuisances behind
        the counts: ``feature`` ("narrow", "broad" or "none"; with ``offgrid``, the kind
        covering more of the bin), ``gc`` (the GC-like covariate), ``copy_number_<group>``.

        In every scenario but ``"standard"`` (whose table is unchanged from earlier versions)
        also: ``low_mapq`` (bool: bins whose reads get MAPQ 0-3), ``chip_bias_<group>`` (the
        ChIP-only multiplier of ``chip_bias``; 1 without it), ``overdispersion`` (the
        Gamma-noise variance of the bin) and ``overlap_<group>`` (fraction of the bin's bp
        inside the group's features). With ``offgrid``, features do not follow the bins:
        ``lfe_<group>`` is the log of the bp-weighted mean of the multiplier ``exp(lfe)``
        over the bin (its expected reads over the technical expectation), and
        ``enriched_<group>`` holds where at least half the bin lies in features or the bin
        holds a feature's middle (every feature labels at least one bin); a bin only touched
        by a feature's edge has ``lfe`` > 0 and is not enriched.
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
    spec
        The specification simulated.
    features
        One row per enriched feature: ``chrom``, ``start``, ``end`` (bp), ``kind`` ("narrow"
        or "broad") and ``lfe_<group>`` (its summit or level log fold in the group, 0 where
        the group lacks it). Not written to a file.
    """

    samplesheet: Path
    truth: pd.DataFrame
    truth_path: Path
    chrom_sizes: dict[str, int]
    libraries: pd.DataFrame = field(repr=False)
    jackpots: pd.DataFrame = field(repr=False)
    paired: bool = False
    spec: SimulationSpec | None = field(default=None, repr=False)
    features: pd.DataFrame | None = field(default=None, repr=False)


def simulate(
    out_dir: str | os.PathLike,
    *,
    spec: SimulationSpec | None = None,
    compresslevel: int = 1,
    overwrite: bool = False,
    **fields,
) -> Simulation:
    """Write simulated ChIP-seq and input BAMs with known enrichment.

    What is simulated is a :class:`SimulationSpec`: pass one as ``spec``, or its fields as
    keywords (``simulate(out_dir, seed=3, n_groups=2)``); keywords given with ``spec`` replace
    its fields. The spec documents the generative story, every field and the scenarios
    (``scenario="misspecified"`` and others) that break the model's assumptions.

    Parameters
    ----------
    out_dir
        Folder for the BAMs (with ``.bai`` indexes), ``samplesheet.csv`` and ``truth.tsv``;
        created if missing.
    spec
        What to simulate; default ``SimulationSpec()``.
    compresslevel
        BGZF (libdeflate) compression level, 1-12 (1: fastest; files ~4 % larger than at 4).
    overwrite
        Replace existing output files.
    **fields
        :class:`SimulationSpec` fields (``seed``, ``chrom_length``, ``depths``, ...).

    Returns
    -------
    Simulation
        Paths and truth; see :class:`Simulation`.

    Raises
    ------
    ChipviInputError
        For an unknown or out-of-range field, or outputs that exist without ``overwrite``;
        raised before anything is written.

    Examples
    --------
    >>> sim = chipvi.datasets.simulate("sim")  # doctest: +SKIP
    >>> adata = chipvi.read_bams(sim.samplesheet)  # doctest: +SKIP
    """
    # ---- validate everything before writing anything
    spec = SimulationSpec.from_fields(spec, **fields)
    if not 1 <= _check_positive_int(compresslevel, "compresslevel") <= 12:
        raise ChipviInputError(f"compresslevel must lie in 1..12, got {compresslevel!r}.")
    paths = _OutputPaths.prepare(out_dir, spec.samples, overwrite)

    rng = np.random.default_rng(spec.seed)
    # The stages draw from one random stream in this order; the order defines a seed's output.
    # The scenarios' extra terms come from streams of their own (see SimulationSpec).
    genome = make_genome(spec.genome)
    grid = _Grid.for_spec(spec, genome)
    nuisances = _draw_nuisances(spec, rng, genome)
    features = _draw_features(spec, rng, grid, grid.expand(nuisances.occupied))
    _draw_copy_number_and_background(spec, rng, genome, nuisances)
    _draw_scenario_nuisances(spec, genome, nuisances)
    # One reference sequence per chromosome, shared by all libraries (reads carry its bases).
    references = [
        random_reference(rng, nuisances.gc[genome.offsets[c] : genome.offsets[c + 1]], length)
        for c, length in enumerate(spec.genome.values())
    ]
    libraries = _library_rates(spec, rng, grid, nuisances, features, paths)
    jackpot_rows = _write_libraries(
        spec,
        rng,
        grid,
        nuisances,
        libraries,
        references,
        compresslevel=compresslevel,
        overwrite=overwrite,
    )
    sheet = _write_samplesheet(spec, paths, overwrite)
    truth = _truth_table(spec, grid, nuisances, features)
    with atomic_path(paths.truth, overwrite=overwrite) as tmp:
        truth.to_csv(tmp, sep="\t", index=False)

    library_table = pd.DataFrame(
        {
            "sample": list(spec.samples),
            "group": sheet["group"],
            "replicate": sheet["replicate"],
            "bam": [str(paths.bam[s].resolve()) for s in spec.samples],
            "control_bam": [str(paths.control[s].resolve()) for s in spec.samples],
            "depth": spec.library_depths,
            "control_depth": spec.library_control_depths,
            "gc_bias": spec.library_gc_bias,
        }
    )
    jackpot_table = pd.DataFrame(
        jackpot_rows, columns=["sample", "chrom", "pos", "reverse", "n_reads", "n_flagged"]
    )
    return Simulation(
        samplesheet=paths.sheet,
        truth=truth,
        truth_path=paths.truth,
        chrom_sizes=spec.genome,
        libraries=library_table,
        jackpots=jackpot_table,
        paired=spec.paired,
        spec=spec,
        features=_feature_table(spec, grid, features),
    )


# ---------------------------------------------------------------- outputs


@dataclass
class _OutputPaths:
    """Absolute paths of everything :func:`simulate` writes."""

    bam: dict[str, Path]
    control: dict[str, Path]
    sheet: Path
    truth: Path

    @classmethod
    def prepare(
        cls, out_dir: str | os.PathLike, samples: Sequence[str], overwrite: bool
    ) -> _OutputPaths:
        """Check that the outputs are free (unless ``overwrite``) and create ``out_dir``."""
        out_dir = Path(out_dir)
        if out_dir.exists() and not out_dir.is_dir():
            raise ChipviInputError(f"out_dir {out_dir} exists and is not a folder.")
        paths = cls._under(out_dir, samples)
        if not overwrite:
            existing = [str(p) for p in paths.files() if p.exists()]
            if existing:
                raise ChipviInputError(
                    f"simulate would overwrite existing files ({', '.join(existing[:3])}"
                    f"{', ...' if len(existing) > 3 else ''}); pass overwrite=True or use an "
                    "empty out_dir."
                )
        out_dir.mkdir(parents=True, exist_ok=True)
        # Absolute paths in the returned Simulation stay valid after a change of directory.
        return cls._under(out_dir.resolve(), samples)

    @classmethod
    def _under(cls, out_dir: Path, samples: Sequence[str]) -> _OutputPaths:
        return cls(
            bam={s: out_dir / f"{s}.bam" for s in samples},
            control={s: out_dir / f"{s}_input.bam" for s in samples},
            sheet=out_dir / "samplesheet.csv",
            truth=out_dir / "truth.tsv",
        )

    def files(self) -> list[Path]:
        outputs = [self.sheet, self.truth]
        for p in [*self.bam.values(), *self.control.values()]:
            outputs += [p, p.with_name(p.name + ".bai")]
        return outputs


def _write_samplesheet(spec: SimulationSpec, paths: _OutputPaths, overwrite: bool) -> pd.DataFrame:
    samples = list(spec.samples)
    sheet = pd.DataFrame(
        {
            "sample": samples,
            "bam": [paths.bam[s].name for s in samples],
            "control": [paths.control[s].name for s in samples],
            "target": spec.target,
            "group": [s.split("_")[0] for s in samples],
            "replicate": [int(s.split("_R")[1]) for s in samples],
        }
    )
    with atomic_path(paths.sheet, overwrite=overwrite) as tmp:
        sheet.to_csv(tmp, index=False)
    return sheet


# ---------------------------------------------------------------- the feature grid

# "offgrid": features live on cells of this many bp instead of the 200 bp bins.
OFFGRID_STEP = 10


@dataclass
class _Grid:
    """Where features and reads are drawn: the 200 bp bins, or finer cells ("offgrid").

    Technical terms stay per bin and are repeated over a bin's cells (:meth:`expand`).
    """

    bins: Genome
    cells: Genome
    bin_of_cell: np.ndarray | None  # None: the cells are the bins

    @classmethod
    def for_spec(cls, spec: SimulationSpec, bins: Genome) -> _Grid:
        if "offgrid" not in spec.mechanisms:
            return cls(bins, bins, None)
        cells = make_genome(spec.genome, OFFGRID_STEP)
        bin_of_cell = bins.offsets[cells.chrom_of_bin] + cells.start // TRUTH_BIN_SIZE
        return cls(bins, cells, bin_of_cell)

    @property
    def cells_per_bin(self) -> int:
        return 1 if self.bin_of_cell is None else TRUTH_BIN_SIZE // OFFGRID_STEP

    def expand(self, per_bin: np.ndarray) -> np.ndarray:
        """Per-bin values (last axis) repeated over each bin's cells."""
        return per_bin if self.bin_of_cell is None else per_bin[..., self.bin_of_cell]

    def bp_fraction(self, per_cell: np.ndarray) -> np.ndarray:
        """Per bin, the width-weighted mean of per-cell values."""
        if self.bin_of_cell is None:
            return per_cell.astype(np.float64)
        weights = self.cells.width * per_cell
        return np.bincount(self.bin_of_cell, weights, self.bins.n_bins) / self.bins.width

    def any_in_bin(self, per_cell: np.ndarray) -> np.ndarray:
        """Per bin, whether any of its cells is True."""
        if self.bin_of_cell is None:
            return per_cell.astype(bool)
        return np.bincount(self.bin_of_cell, per_cell, self.bins.n_bins) > 0


# ---------------------------------------------------------------- stage 1: nuisances


@dataclass
class _Nuisances:
    """Per-bin technical terms: what the input shows, the GC-like covariate, and the terms
    some scenarios add that the model does not expect."""

    gc: np.ndarray
    low_mappability: np.ndarray  # bool: artefact blocks (reads with MAPQ 0-3 unless mapq_partial)
    artefact: np.ndarray  # pile-up multiplier, 1 outside the blocks
    occupied: np.ndarray  # bins taken by a block or a feature (features avoid each other)
    blocks: list[tuple[int, int]]  # the artefact blocks
    copy_number: np.ndarray | None = None  # (groups, bins)
    background: np.ndarray | None = None  # (groups, bins)
    low_mapq: np.ndarray | None = None  # bool: bins whose reads get MAPQ 0-3
    chip_bias: np.ndarray | None = None  # (groups, bins): ChIP-only multiplier ("chip_bias")
    dispersion: np.ndarray | None = None  # per-bin Gamma variance ("dispersion")

    @property
    def gc_z(self) -> np.ndarray:
        return (self.gc - 0.5) / 0.08


def _count(spec: SimulationSpec, rng: np.random.Generator, density_per_mb: float) -> int:
    """A Poisson number of things at ``density_per_mb`` over the genome."""
    genome_mb = sum(spec.genome.values()) / 1e6
    return int(rng.poisson(density_per_mb * genome_mb))


def _draw_nuisances(spec: SimulationSpec, rng: np.random.Generator, genome: Genome) -> _Nuisances:
    """GC-like covariate and low-mappability blocks (1-15 bins) with artefactual pile-ups in
    ChIP and input alike."""
    n_bins = genome.n_bins
    gc = np.clip(0.5 + 0.08 * smooth_noise(rng, n_bins, 50), 0.3, 0.7)
    occupied = np.zeros(n_bins, dtype=bool)
    n_lowmap = _count(spec, rng, spec.lowmap_blocks_per_mb)
    blocks = place_intervals(rng, genome, occupied, n_lowmap, rng.integers(1, 16, n_lowmap), gap=0)
    artefact = np.ones(n_bins)
    for s, e in blocks:
        artefact[s:e] = spec.lowmap_fold * math.exp(np.clip(0.3 * rng.standard_normal(), -0.7, 0.7))
    low_mappability = occupied.copy()
    return _Nuisances(
        gc=gc,
        low_mappability=low_mappability,
        artefact=artefact,
        occupied=occupied,
        blocks=blocks,
        low_mapq=low_mappability,
    )


def _draw_copy_number_and_background(
    spec: SimulationSpec, rng: np.random.Generator, genome: Genome, nuisances: _Nuisances
) -> None:
    """Per group: piecewise-constant copy number and a smooth log-normal background.

    Drawn after the features (the order of draws defines a seed's output).
    """
    n_groups, n_bins = spec.n_groups, genome.n_bins
    copy_number = np.full((n_groups, n_bins), 2.0)
    background = np.ones((n_groups, n_bins))
    for g in range(n_groups):
        for c in range(len(genome.chrom_sizes)):
            lo, hi = genome.offsets[c], genome.offsets[c + 1]
            n_breaks = rng.poisson(spec.cnv_segments_per_mb * (hi - lo) * TRUTH_BIN_SIZE / 1e6)
            cuts = np.sort(rng.integers(lo, hi, n_breaks))
            for s, e in zip(np.r_[lo, cuts], np.r_[cuts, hi], strict=True):
                copy_number[g, s:e] = rng.choice([1.0, 2.0, 3.0, 4.0], p=[0.1, 0.6, 0.2, 0.1])
        background[g] = np.exp(spec.background_sd * smooth_noise(rng, n_bins, 25))
    nuisances.copy_number, nuisances.background = copy_number, background


# Scenario terms (documented in SimulationSpec). Each draws from a stream of its own, so
# switching one on leaves every other draw of a seed as it was.
CHIP_BIAS_SD, CHIP_BIAS_WIDTH = 0.5, 100  # log-scale sd, smoothing window (bins)
DEPLETED_PER_MB, DEPLETED_BINS, DEPLETED_FOLD = 3.0, (10, 100), 0.25
HIDDEN_ARTEFACT_FRACTION = 0.5
DISPERSION_LOG_SD, DISPERSION_WIDTH = 1.0, 250
_STREAM = {"replicate_specific": 1, "chip_bias": 2, "mapq_partial": 3, "dispersion": 4}


def _draw_scenario_nuisances(spec: SimulationSpec, genome: Genome, nuisances: _Nuisances) -> None:
    """The technical terms of ``spec.scenario`` that the model does not expect."""
    n_bins = genome.n_bins
    if "chip_bias" in spec.mechanisms:
        rng = np.random.default_rng([spec.seed, _STREAM["chip_bias"]])
        bias = np.ones((spec.n_groups, n_bins))
        for g in range(spec.n_groups):
            bias[g] = np.exp(CHIP_BIAS_SD * smooth_noise(rng, n_bins, CHIP_BIAS_WIDTH))
            n = _count(spec, rng, DEPLETED_PER_MB)
            widths = np.exp(rng.uniform(*np.log(DEPLETED_BINS), n))
            for s, e in place_intervals(rng, genome, np.zeros(n_bins, bool), n, widths, gap=0):
                bias[g, s:e] *= DEPLETED_FOLD
        nuisances.chip_bias = bias
    if "mapq_partial" in spec.mechanisms:
        rng = np.random.default_rng([spec.seed, _STREAM["mapq_partial"]])
        blocks = nuisances.blocks
        low_mapq = nuisances.low_mappability.copy()
        # Half the artefacts (rounded up) get reads that map uniquely...
        n_hidden = math.ceil(HIDDEN_ARTEFACT_FRACTION * len(blocks))
        for k in rng.choice(len(blocks), n_hidden, replace=False):
            s, e = blocks[k]
            low_mapq[s:e] = False
        # ...and as many blocks again (same widths) get low MAPQ without a pile-up: anywhere
        # but the artefacts, enrichment included.
        taken = nuisances.low_mappability.copy()
        widths = [e - s for s, e in blocks]
        for s, e in place_intervals(rng, genome, taken, len(widths), widths, gap=0):
            low_mapq[s:e] = True
        nuisances.low_mapq = low_mapq
    if "dispersion" in spec.mechanisms:
        rng = np.random.default_rng([spec.seed, _STREAM["dispersion"]])
        field = smooth_noise(rng, n_bins, DISPERSION_WIDTH)
        nuisances.dispersion = spec.overdispersion * np.exp(DISPERSION_LOG_SD * field)


# ---------------------------------------------------------------- stage 2: features


@dataclass
class _Features:
    """The biology: true log fold enrichment per group and which libraries carry it, on the
    grid's cells."""

    lfe: np.ndarray  # (groups, cells)
    presence: np.ndarray  # (libraries, cells): 1 where the library carries the group's feature
    feature: np.ndarray  # "narrow", "broad" or "none" per cell
    intervals: list[tuple[int, int, str, np.ndarray]]  # start, end cell, kind, lfe per group


def _feature_widths(rng: np.random.Generator, grid: _Grid, kind: str, n: int) -> np.ndarray:
    """Widths in cells: narrow peaks 1-5 bins, broad domains 20-300 bins; "offgrid": peaks of
    150-600 bp and domains of 5-50 kb."""
    if grid.bin_of_cell is None:
        if kind == "broad":
            return np.exp(rng.uniform(np.log(20), np.log(300), n))
        return rng.integers(1, 6, n)
    lo, hi = (5_000, 50_000) if kind == "broad" else (150, 600)
    return np.exp(rng.uniform(np.log(lo / OFFGRID_STEP), np.log(hi / OFFGRID_STEP), n))


def _draw_features(
    spec: SimulationSpec, rng: np.random.Generator, grid: _Grid, occupied: np.ndarray
) -> _Features:
    """Narrow peaks and broad domains on free cells (see :func:`_feature_widths`)."""
    n_groups, n_replicates, n_cells = spec.n_groups, spec.n_replicates, grid.cells.n_bins
    n_peaks = _count(spec, rng, spec.peaks_per_mb)
    n_domains = _count(spec, rng, spec.domains_per_mb)
    domain_widths = _feature_widths(rng, grid, "broad", n_domains)
    domains = place_intervals(rng, grid.cells, occupied, n_domains, domain_widths)
    peak_widths = _feature_widths(rng, grid, "narrow", n_peaks)
    peaks = place_intervals(rng, grid.cells, occupied, n_peaks, peak_widths)
    feature = np.full(n_cells, "none", dtype=object)
    lfe = np.zeros((n_groups, n_cells))
    intervals = []

    def feature_groups() -> np.ndarray:
        """Per-group multiplier on a feature's log fold (0: absent in that group)."""
        if n_groups == 1 or rng.random() < spec.shared_fraction:
            return np.exp(spec.group_difference_sd * rng.standard_normal(n_groups) * (n_groups > 1))
        present = np.zeros(n_groups)
        present[rng.integers(n_groups)] = 1.0
        return present

    # Which replicates carry each feature (1 = present); a stream of its own (see the spec).
    presence = np.ones((len(spec.samples), n_cells))
    rep_rng = np.random.default_rng([spec.seed, _STREAM["replicate_specific"]])

    def replicate_specific(s: int, e: int) -> None:
        for g in range(n_groups):
            if rep_rng.random() < spec.replicate_specific_fraction:
                libs = g * n_replicates + np.arange(n_replicates)
                presence[np.delete(libs, rep_rng.integers(n_replicates)), s:e] = 0.0

    for s, e in peaks:
        replicate_specific(s, e)
        summit = math.log(max(spec.peak_fold * math.exp(0.5 * rng.standard_normal()), 1.5))
        offsets = np.arange(s, e) - (s + e - 1) / 2
        shape = np.exp(-0.5 * (offsets / max((e - s) / 2.5, 0.5)) ** 2)
        groups = feature_groups()
        lfe[:, s:e] = groups[:, None] * summit * shape[None, :]
        feature[s:e] = "narrow"
        intervals.append((s, e, "narrow", groups * summit))
    for s, e in domains:
        replicate_specific(s, e)
        level = math.log(max(spec.domain_fold * math.exp(0.3 * rng.standard_normal()), 1.2))
        wave = np.exp(0.15 * smooth_noise(rng, e - s, 5 * grid.cells_per_bin))
        groups = feature_groups()
        lfe[:, s:e] = groups[:, None] * level * wave[None, :]
        feature[s:e] = "broad"
        intervals.append((s, e, "broad", groups * level))
    return _Features(lfe=lfe, presence=presence, feature=feature, intervals=intervals)


# ---------------------------------------------------------------- stage 3: per-library counts


@dataclass
class _Library:
    sample: str
    replicate: int  # 0-based; -1 for an input library
    rate: np.ndarray  # expected fragments per grid cell, up to a constant
    depth: int
    path: Path


def _library_rates(
    spec: SimulationSpec,
    rng: np.random.Generator,
    grid: _Grid,
    nuisances: _Nuisances,
    features: _Features,
    paths: _OutputPaths,
) -> list[_Library]:
    """Each ChIP library followed by its input, with its expected fragments per grid cell."""
    n_bins, n_replicates = grid.bins.n_bins, spec.n_replicates
    depths, control_depths = spec.library_depths, spec.library_control_depths
    gc_bias, gc_z = spec.library_gc_bias, grid.expand(nuisances.gc_z)
    dispersion = spec.overdispersion if nuisances.dispersion is None else nuisances.dispersion
    expand = grid.expand

    def gamma_noise() -> np.ndarray:
        if spec.overdispersion == 0:
            return np.ones(n_bins)
        return rng.gamma(1.0 / dispersion, dispersion, n_bins)

    width = grid.cells.width
    libraries = []
    for j, sample in enumerate(spec.samples):
        g = j // n_replicates
        base = (
            width
            * expand(nuisances.copy_number[g])
            * expand(nuisances.background[g])
            * expand(nuisances.artefact)
        )
        lfe = features.lfe[g] * features.presence[j]
        chip_rate = base * np.exp(gc_bias[j] * gc_z + lfe) * expand(gamma_noise())
        if nuisances.chip_bias is not None:
            chip_rate = chip_rate * expand(nuisances.chip_bias[g])
        input_rate = base * expand(gamma_noise())
        libraries += [
            _Library(sample, j % n_replicates, chip_rate, depths[j], paths.bam[sample]),
            _Library(sample, -1, input_rate, control_depths[j], paths.control[sample]),
        ]
    return libraries


# ---------------------------------------------------------------- stage 4: reads


def _write_libraries(
    spec: SimulationSpec,
    rng: np.random.Generator,
    grid: _Grid,
    nuisances: _Nuisances,
    libraries: list[_Library],
    references: list[np.ndarray],
    *,
    compresslevel: int,
    overwrite: bool,
) -> list[dict]:
    """Draw each library's fragment counts and reads and write its BAM; the jackpots' rows."""
    jackpot_rows = []
    low_mapq = grid.expand(nuisances.low_mapq)
    free_of_lowmap = np.flatnonzero(~grid.expand(nuisances.low_mappability | nuisances.low_mapq))
    for lib in libraries:
        depth, jackpots = lib.depth, None
        if lib.sample == spec.jackpot_library and lib.replicate >= 0:
            n_jp = _count(spec, rng, spec.jackpots_per_mb)
            sizes = np.maximum(
                np.round(spec.jackpot_size * np.exp(0.6 * rng.standard_normal(n_jp))), 10
            ).astype(np.int64)
            # Jackpots never eat more than a tenth of the library.
            keep = np.cumsum(sizes) <= depth // 10
            sizes = sizes[keep]
            jackpots = (rng.choice(free_of_lowmap, len(sizes)), sizes)
            depth -= int(sizes.sum())
        counts = rng.multinomial(depth, lib.rate / lib.rate.sum())
        rows = write_library(
            lib.path,
            grid.cells,
            counts,
            low_mapq,
            jackpots,
            rng=rng,
            references=references,
            fragment_length=spec.fragment_length,
            fragment_sd=spec.fragment_sd,
            read_length=spec.read_length,
            paired=spec.paired,
            jackpot_flagged=spec.jackpot_flagged,
            compresslevel=compresslevel,
            overwrite=overwrite,
            name_prefix=f"{lib.path.stem}.",
        )
        jackpot_rows += [{"sample": lib.sample, **row} for row in rows]
    return jackpot_rows


# ---------------------------------------------------------------- truth


def _bin_truth(grid: _Grid, lfe: np.ndarray, midpoint: np.ndarray) -> tuple[np.ndarray, ...]:
    """Per 200 bp bin: log fold enrichment, enriched label and the fraction of bp in features.

    On the bins themselves, the cell's values. On a finer grid ("offgrid"), the log of the
    bp-weighted mean multiplier ``exp(lfe)`` (the bin's expected reads over its technical
    expectation), and "enriched" where at least half the bin's bp lie in features or the
    bin holds a feature's middle cell (so every feature labels at least one bin).
    """
    in_feature = lfe > 0
    if grid.bin_of_cell is None:
        lfe_bins = np.round(lfe, 6)
        return lfe_bins, lfe_bins > 0, in_feature.astype(np.float64)
    overlap = grid.bp_fraction(in_feature)
    lfe_bins = np.round(np.log(grid.bp_fraction(np.exp(lfe))), 6)
    enriched = (overlap >= 0.5) | grid.any_in_bin(in_feature & midpoint)
    return lfe_bins, enriched, np.round(overlap, 6)


def _truth_table(
    spec: SimulationSpec, grid: _Grid, nuisances: _Nuisances, features: _Features
) -> pd.DataFrame:
    bins = grid.bins
    chroms = list(bins.chrom_sizes)
    truth = pd.DataFrame(
        {
            "chrom": pd.Categorical(np.asarray(chroms)[bins.chrom_of_bin], categories=chroms),
            "start": bins.start,
            "end": bins.end,
        }
    )
    midpoint = np.zeros(grid.cells.n_bins, dtype=bool)
    midpoint[[(s + e - 1) // 2 for s, e, _, _ in features.intervals]] = True
    # Rounded so that the table read back from truth.tsv equals the one returned.
    overlaps = {}
    for g, group in enumerate(spec.groups):
        lfe, enriched, overlaps[group] = _bin_truth(grid, features.lfe[g], midpoint)
        truth[f"enriched_{group}"] = enriched
        truth[f"lfe_{group}"] = lfe
    for j, sample in enumerate(spec.samples):
        g = j // spec.n_replicates
        if grid.bin_of_cell is None:  # as rounded per group, then masked
            lfe_j = np.round(features.lfe[g], 6) * features.presence[j]
            enriched = lfe_j > 0
        else:
            lfe_j, enriched, _ = _bin_truth(grid, features.lfe[g] * features.presence[j], midpoint)
        truth[f"enriched_{sample}"] = enriched
        truth[f"lfe_{sample}"] = lfe_j
    truth["low_mappability"] = nuisances.low_mappability
    if grid.bin_of_cell is None:
        truth["feature"] = pd.Series(features.feature, dtype=str)
    else:  # the kind covering more of the bin
        narrow = grid.bp_fraction(features.feature == "narrow")
        broad = grid.bp_fraction(features.feature == "broad")
        kind = np.where(broad >= narrow, "broad", "narrow")
        truth["feature"] = pd.Series(np.where(narrow + broad > 0, kind, "none"), dtype=str)
    truth["gc"] = np.round(nuisances.gc, 6)
    for g, group in enumerate(spec.groups):
        truth[f"copy_number_{group}"] = nuisances.copy_number[g]
    if spec.scenario == "standard":
        return truth
    # Every other scenario: the terms behind its departures from the model (neutral values
    # where the scenario does not use them).
    truth["low_mapq"] = nuisances.low_mapq
    for g, group in enumerate(spec.groups):
        bias = np.ones(bins.n_bins) if nuisances.chip_bias is None else nuisances.chip_bias[g]
        truth[f"chip_bias_{group}"] = np.round(bias, 6)
    dispersion = nuisances.dispersion
    truth["overdispersion"] = np.round(
        np.full(bins.n_bins, spec.overdispersion) if dispersion is None else dispersion, 6
    )
    for group, overlap in overlaps.items():
        truth[f"overlap_{group}"] = overlap
    return truth


def _feature_table(spec: SimulationSpec, grid: _Grid, features: _Features) -> pd.DataFrame:
    """One row per enriched feature: bp coordinates, kind and its log fold per group."""
    cells = grid.cells
    chroms = np.asarray(list(cells.chrom_sizes))
    rows = sorted(features.intervals, key=lambda f: f[0])
    starts = np.array([s for s, _, _, _ in rows], dtype=np.int64)
    ends = np.array([e for _, e, _, _ in rows], dtype=np.int64)
    table = pd.DataFrame(
        {
            "chrom": pd.Categorical(chroms[cells.chrom_of_bin[starts]], categories=list(chroms)),
            "start": cells.start[starts],
            "end": cells.end[ends - 1],
            "kind": [kind for _, _, kind, _ in rows],
        }
    )
    for g, group in enumerate(spec.groups):
        table[f"lfe_{group}"] = np.round([lfe[g] for _, _, _, lfe in rows], 6)
    return table
