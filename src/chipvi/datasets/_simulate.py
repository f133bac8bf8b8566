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
    spec
        The specification simulated.
    """

    samplesheet: Path
    truth: pd.DataFrame
    truth_path: Path
    chrom_sizes: dict[str, int]
    libraries: pd.DataFrame = field(repr=False)
    jackpots: pd.DataFrame = field(repr=False)
    paired: bool = False
    spec: SimulationSpec | None = field(default=None, repr=False)


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
    its fields. The spec documents the generative story and every field.

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
    genome = make_genome(spec.genome)
    nuisances = _draw_nuisances(spec, rng, genome)
    features = _draw_features(spec, rng, genome, nuisances.occupied)
    _draw_copy_number_and_background(spec, rng, genome, nuisances)
    # One reference sequence per chromosome, shared by all libraries (reads carry its bases).
    references = [
        random_reference(rng, nuisances.gc[genome.offsets[c] : genome.offsets[c + 1]], length)
        for c, length in enumerate(spec.genome.values())
    ]
    libraries = _library_rates(spec, rng, genome, nuisances, features, paths)
    jackpot_rows = _write_libraries(
        spec,
        rng,
        genome,
        nuisances,
        libraries,
        references,
        compresslevel=compresslevel,
        overwrite=overwrite,
    )
    sheet = _write_samplesheet(spec, paths, overwrite)
    truth = _truth_table(spec, genome, nuisances, features)
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


# ---------------------------------------------------------------- stage 1: nuisances


@dataclass
class _Nuisances:
    """Per-bin technical terms: what the input shows, and the GC-like covariate."""

    gc: np.ndarray
    low_mappability: np.ndarray  # bool: artefact blocks, reads with MAPQ 0-3
    artefact: np.ndarray  # pile-up multiplier, 1 outside the blocks
    occupied: np.ndarray  # bins taken by a block or a feature (features avoid each other)
    copy_number: np.ndarray | None = None  # (groups, bins)
    background: np.ndarray | None = None  # (groups, bins)

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
    lowmap_blocks = place_intervals(
        rng, genome, occupied, n_lowmap, rng.integers(1, 16, n_lowmap), gap=0
    )
    artefact = np.ones(n_bins)
    for s, e in lowmap_blocks:
        artefact[s:e] = spec.lowmap_fold * math.exp(np.clip(0.3 * rng.standard_normal(), -0.7, 0.7))
    return _Nuisances(gc=gc, low_mappability=occupied.copy(), artefact=artefact, occupied=occupied)


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


# ---------------------------------------------------------------- stage 2: features


@dataclass
class _Features:
    """The biology: true log fold enrichment per group and which libraries carry it."""

    lfe: np.ndarray  # (groups, bins)
    presence: np.ndarray  # (libraries, bins): 1 where the library carries the group's feature
    feature: np.ndarray  # "narrow", "broad" or "none" per bin


def _draw_features(
    spec: SimulationSpec, rng: np.random.Generator, genome: Genome, occupied: np.ndarray
) -> _Features:
    """Narrow peaks (1-5 bins) and broad domains (20-300 bins) on free bins."""
    n_groups, n_replicates, n_bins = spec.n_groups, spec.n_replicates, genome.n_bins
    n_peaks = _count(spec, rng, spec.peaks_per_mb)
    n_domains = _count(spec, rng, spec.domains_per_mb)
    domains = place_intervals(
        rng, genome, occupied, n_domains, np.exp(rng.uniform(np.log(20), np.log(300), n_domains))
    )
    peaks = place_intervals(rng, genome, occupied, n_peaks, rng.integers(1, 6, n_peaks))
    feature = np.full(n_bins, "none", dtype=object)
    lfe = np.zeros((n_groups, n_bins))

    def feature_groups() -> np.ndarray:
        """Per-group multiplier on a feature's log fold (0: absent in that group)."""
        if n_groups == 1 or rng.random() < spec.shared_fraction:
            return np.exp(spec.group_difference_sd * rng.standard_normal(n_groups) * (n_groups > 1))
        present = np.zeros(n_groups)
        present[rng.integers(n_groups)] = 1.0
        return present

    # Which replicates carry each feature (1 = present); a stream of its own (see the spec).
    presence = np.ones((len(spec.samples), n_bins))
    rep_rng = np.random.default_rng([spec.seed, 1])

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
        lfe[:, s:e] = feature_groups()[:, None] * summit * shape[None, :]
        feature[s:e] = "narrow"
    for s, e in domains:
        replicate_specific(s, e)
        level = math.log(max(spec.domain_fold * math.exp(0.3 * rng.standard_normal()), 1.2))
        wave = np.exp(0.15 * smooth_noise(rng, e - s, 5))
        lfe[:, s:e] = feature_groups()[:, None] * level * wave[None, :]
        feature[s:e] = "broad"
    return _Features(lfe=lfe, presence=presence, feature=feature)


# ---------------------------------------------------------------- stage 3: per-library counts


@dataclass
class _Library:
    sample: str
    replicate: int  # 0-based; -1 for an input library
    rate: np.ndarray  # expected fragments per bin, up to a constant
    depth: int
    path: Path


def _library_rates(
    spec: SimulationSpec,
    rng: np.random.Generator,
    genome: Genome,
    nuisances: _Nuisances,
    features: _Features,
    paths: _OutputPaths,
) -> list[_Library]:
    """Each ChIP library followed by its input, with its expected fragments per bin."""
    n_bins, n_replicates = genome.n_bins, spec.n_replicates
    depths, control_depths = spec.library_depths, spec.library_control_depths
    gc_bias, gc_z = spec.library_gc_bias, nuisances.gc_z

    def gamma_noise() -> np.ndarray:
        if spec.overdispersion == 0:
            return np.ones(n_bins)
        return rng.gamma(1.0 / spec.overdispersion, spec.overdispersion, n_bins)

    width = genome.width
    libraries = []
    for j, sample in enumerate(spec.samples):
        g = j // n_replicates
        base = width * nuisances.copy_number[g] * nuisances.background[g] * nuisances.artefact
        lfe = features.lfe[g] * features.presence[j]
        chip_rate = base * np.exp(gc_bias[j] * gc_z + lfe) * gamma_noise()
        input_rate = base * gamma_noise()
        libraries.append(
            _Library(sample, j % n_replicates, chip_rate, depths[j], paths.bam[sample])
        )
        libraries.append(_Library(sample, -1, input_rate, control_depths[j], paths.control[sample]))
    return libraries


# ---------------------------------------------------------------- stage 4: reads


def _write_libraries(
    spec: SimulationSpec,
    rng: np.random.Generator,
    genome: Genome,
    nuisances: _Nuisances,
    libraries: list[_Library],
    references: list[np.ndarray],
    *,
    compresslevel: int,
    overwrite: bool,
) -> list[dict]:
    """Draw each library's fragment counts and reads and write its BAM; the jackpots' rows."""
    jackpot_rows = []
    free_of_lowmap = np.flatnonzero(~nuisances.low_mappability)
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
            genome,
            counts,
            nuisances.low_mappability,
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


def _truth_table(
    spec: SimulationSpec, genome: Genome, nuisances: _Nuisances, features: _Features
) -> pd.DataFrame:
    chroms = list(genome.chrom_sizes)
    truth = pd.DataFrame(
        {
            "chrom": pd.Categorical(np.asarray(chroms)[genome.chrom_of_bin], categories=chroms),
            "start": genome.start,
            "end": genome.end,
        }
    )
    # Rounded so that the table read back from truth.tsv equals the one returned.
    lfe = np.round(features.lfe, 6)
    for g, group in enumerate(spec.groups):
        truth[f"enriched_{group}"] = lfe[g] > 0
        truth[f"lfe_{group}"] = lfe[g]
    for j, sample in enumerate(spec.samples):
        lfe_j = lfe[j // spec.n_replicates] * features.presence[j]
        truth[f"enriched_{sample}"] = lfe_j > 0
        truth[f"lfe_{sample}"] = lfe_j
    truth["low_mappability"] = nuisances.low_mappability
    truth["feature"] = pd.Series(features.feature, dtype=str)
    truth["gc"] = np.round(nuisances.gc, 6)
    for g, group in enumerate(spec.groups):
        truth[f"copy_number_{group}"] = nuisances.copy_number[g]
    return truth
