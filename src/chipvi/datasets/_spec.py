"""What :func:`chipvi.datasets.simulate` simulates: a frozen, validated specification."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from .._errors import ChipviInputError
from ._genome import TRUTH_BIN_SIZE

_DEFAULT_DEPTHS = (500_000, 120_000)
_DEFAULT_CONTROL_DEPTHS = (300_000, 100_000)
_DEFAULT_GC_BIAS = (0.1, 0.25)
# "sparse": reads per 200 bp bin of the strong / weak replicate (ChIP) and of their inputs.
_SPARSE_READS_PER_BIN = (0.4, 0.25)
_SPARSE_CONTROL_READS_PER_BIN = (0.6, 0.4)

# Scenario name -> (the departures from the model's assumptions it switches on, summary).
_SCENARIO_TABLE: dict[str, tuple[tuple[str, ...], str]] = {
    "standard": ((), "the model's own assumptions hold (the default)"),
    "chip_bias": (
        ("chip_bias",),
        "ChIP-only broad background bias and depleted stretches that the input lacks",
    ),
    "mapq_partial": (
        ("mapq_partial",),
        "pile-up artefacts with high MAPQ and low-MAPQ bins without artefacts",
    ),
    "offgrid": (
        ("offgrid",),
        "features at any position (10 bp grid): 150-600 bp peaks and 5-50 kb domains",
    ),
    "dispersion": (
        ("dispersion",),
        "per-bin overdispersion varying along the genome (a smooth random field)",
    ),
    "sparse": (("sparse",), "0.25-0.4 ChIP reads per 200 bp bin"),
    "misspecified": (
        ("chip_bias", "mapq_partial", "offgrid", "dispersion"),
        "chip_bias + mapq_partial + offgrid + dispersion together",
    ),
}
#: Simulation scenarios, name -> what it changes (see :class:`SimulationSpec`).
SCENARIOS: dict[str, str] = {name: summary for name, (_, summary) in _SCENARIO_TABLE.items()}


def _check_positive_int(value, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ChipviInputError(f"{name} must be an integer >= {minimum}, got {value!r}.")
    return int(value)


def _check_nonnegative(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.number) or value < 0:
        raise ChipviInputError(f"{name} must be a number >= 0, got {value!r}.")
    return float(value)


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


@dataclass(frozen=True)
class SimulationSpec:
    """What :func:`~chipvi.datasets.simulate` simulates; the same spec gives the same files.

    The genome is cut into 200 bp bins. For ChIP library ``j`` of group ``g`` the expected
    fragment count of bin ``i`` is proportional to

        width_i * CN_gi * B_gi * A_i * exp(b_j * GC_i) * exp(lfe_gi) * e_ij

    and for its input to ``width_i * CN_gi * B_gi * A_i * e'_ij``, where ``CN`` is a
    piecewise-constant copy number (segments shared by the ChIP and input libraries of a group),
    ``B`` a smooth open-chromatin background, ``A`` an artefactual pile-up multiplier inside
    low-mappability blocks (reads there get MAPQ 0-3), ``GC`` a smooth GC-like covariate with
    a library-specific bias strength ``b_j``, ``lfe`` the true log fold enrichment (narrow
    peaks of 1-5 bins and broad domains of tens to hundreds of bins; 0 elsewhere) and ``e``
    Gamma noise of mean 1 and variance ``overdispersion``. Fragment counts are drawn from a
    multinomial with the library's depth; fragment centres fall uniformly inside their bin,
    fragment lengths are Normal(``fragment_length``, ``fragment_sd``). One library also
    receives PCR-duplicate jackpots: many copies of one fragment, mostly without the duplicate
    flag.

    That is the model's own story: the ChIP rate is the input's technical rate (explained by
    input counts and MAPQ) times ``exp(enrichment)``, with a constant dispersion, and low MAPQ
    marks exactly the artefacts. The other scenarios break one assumption each (``scenario``).
    Their extra randomness comes from random streams of their own, so a scenario other than
    ``"offgrid"``/``"misspecified"`` keeps the features, copy number and nuisances of the
    ``"standard"`` simulation with the same seed (only the reads differ).

    Parameters
    ----------
    seed
        Seed of the random generator; the same spec and seed give identical files.
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
        (120 000 / 100 000); in the ``"sparse"`` scenario, 0.4 / 0.25 ChIP and 0.6 / 0.4
        input reads per 200 bp bin of the genome.
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
        Copy-number breakpoints per Mb. Each segment, and so each chromosome, draws its copy
        number (1-4, mostly 2); 0 leaves one copy number per chromosome.
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
        Variance of the per-bin Gamma noise (mean 1) on every library's rate; in the
        ``"dispersion"`` scenario, its median along the genome.
    target
        Value of the sample sheet's ``target`` column.
    scenario
        Which of the model's assumptions the simulation breaks (one of :data:`SCENARIOS`):

        ``"standard"``
            None: the story above.
        ``"chip_bias"``
            The model explains the ChIP background by the input. Here each group's ChIP
            rate (not its input's) is multiplied by a smooth log-normal field (sd 0.5 on the
            log scale, correlation length ~20 kb: open-chromatin-like bias) and by 0.25 in
            depleted stretches (3 per Mb, 2-20 kb). The group's replicates share it, so
            replicate consistency cannot remove it. Truth column ``chip_bias_<group>``: the
            multiplier, which is not enrichment (``lfe`` is unchanged).
        ``"mapq_partial"``
            The model takes low MAPQ as the mark of artefacts. Here half the artefact blocks
            (rounded up) keep normal MAPQ (60 for 94 % of reads), and as many blocks again,
            of the same widths, get reads of MAPQ 0-3 without a pile-up; they may overlap
            enrichment. Truth columns ``low_mappability`` (the artefacts) and ``low_mapq``.
        ``"offgrid"``
            The model's states and the benchmarks' truth are per 200 bp bin. Here features
            lie on a 10 bp grid: narrow peaks of 150-600 bp and broad domains of 5-50 kb
            (log-uniform widths) start anywhere, so bins are often partly enriched; the
            per-bin truth is overlap-weighted (see :class:`Simulation`), and the features'
            bp coordinates are in :attr:`Simulation.features`. Features, and so every later
            draw of the seed, differ from ``"standard"``.
        ``"dispersion"``
            The model's dispersion follows the covariates. Here the Gamma noise variance
            is ``overdispersion * exp(1.0 * z_i)`` with ``z`` a smooth standard-normal field
            along the genome (correlation length ~50 kb), shared by all libraries and seen
            by no covariate (truth column ``overdispersion``).
        ``"sparse"``
            Real-data depth: 0.4 and 0.25 ChIP reads per bin for the strong and weak
            replicates (see ``depths``), so most bins hold no read; the same features as
            ``"standard"``.
        ``"misspecified"``
            ``chip_bias``, ``mapq_partial``, ``offgrid`` and ``dispersion`` together.

    Raises
    ------
    ChipviInputError
        When a field is out of range; the message names the field and the value.

    Examples
    --------
    >>> spec = SimulationSpec(seed=3, chrom_length=200_000, scenario="chip_bias")
    >>> spec.samples
    ('G1_R1', 'G1_R2')
    """

    seed: int = 0
    chrom_sizes: Mapping[str, int] | None = None
    n_chroms: int = 2
    chrom_length: int = 1_000_000
    n_groups: int = 1
    n_replicates: int = 2
    depths: Sequence[int] | int | None = None
    control_depths: Sequence[int] | int | None = None
    fragment_length: int = 200
    fragment_sd: float = 25.0
    read_length: int = 50
    paired: bool = False
    peaks_per_mb: float = 60.0
    domains_per_mb: float = 5.0
    peak_fold: float = 10.0
    domain_fold: float = 3.5
    shared_fraction: float = 0.6
    group_difference_sd: float = 0.4
    replicate_specific_fraction: float = 0.0
    cnv_segments_per_mb: float = 2.0
    background_sd: float = 0.25
    gc_bias: Sequence[float] | float | None = None
    lowmap_blocks_per_mb: float = 6.0
    lowmap_fold: float = 6.0
    jackpot_sample: str | None = None
    jackpots_per_mb: float = 10.0
    jackpot_size: float = 100.0
    jackpot_flagged: float = 0.1
    overdispersion: float = 0.05
    target: str = "sim"
    scenario: str = "standard"

    def __post_init__(self) -> None:
        # Sequences become tuples so that a spec cannot change after its checks.
        for name in ("depths", "control_depths", "gc_bias"):
            value = getattr(self, name)
            if value is not None and not np.isscalar(value):
                object.__setattr__(self, name, tuple(value))
        if self.chrom_sizes is not None:
            if not isinstance(self.chrom_sizes, Mapping) or not self.chrom_sizes:
                raise ChipviInputError("chrom_sizes must be a non-empty mapping {chrom: length}.")
            object.__setattr__(self, "chrom_sizes", dict(self.chrom_sizes))
        self._validate()

    @classmethod
    def from_fields(cls, spec: SimulationSpec | None = None, **fields) -> SimulationSpec:
        """A spec from keyword fields, optionally replacing fields of ``spec``.

        Unknown names raise :class:`~chipvi.ChipviInputError` listing the valid ones.
        """
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(fields) - set(names))
        if unknown:
            raise ChipviInputError(
                f"unknown simulation field(s) {unknown}; SimulationSpec fields are {names}."
            )
        if spec is None:
            return cls(**fields)
        if not isinstance(spec, SimulationSpec):
            raise ChipviInputError(f"spec must be a SimulationSpec, got {type(spec).__name__}.")
        return dataclasses.replace(spec, **fields)

    # ---- derived values (computed from the fields, so dataclasses.replace stays consistent)
    @property
    def genome(self) -> dict[str, int]:
        """Chromosome lengths: ``chrom_sizes``, or ``n_chroms`` of ``chrom_length`` bp."""
        if self.chrom_sizes is not None:
            return {
                str(c): _check_positive_int(n, f"chrom_sizes[{c!r}]")
                for c, n in self.chrom_sizes.items()
            }
        n_chroms = _check_positive_int(self.n_chroms, "n_chroms")
        chrom_length = _check_positive_int(self.chrom_length, "chrom_length")
        return {f"chr{i + 1}": chrom_length for i in range(n_chroms)}

    @property
    def n_bins(self) -> int:
        """Number of 200 bp bins (the last bin of a chromosome may be shorter)."""
        return sum(-(-n // TRUTH_BIN_SIZE) for n in self.genome.values())

    @property
    def groups(self) -> tuple[str, ...]:
        """Group names ``G1, G2, ...``."""
        return tuple(f"G{g + 1}" for g in range(self.n_groups))

    @property
    def samples(self) -> tuple[str, ...]:
        """ChIP library names ``<group>_R<replicate>``, group-major."""
        return tuple(f"{g}_R{r + 1}" for g in self.groups for r in range(self.n_replicates))

    @property
    def mechanisms(self) -> frozenset[str]:
        """The departures from the model switched on by ``scenario``."""
        return frozenset(_SCENARIO_TABLE[self.scenario][0])

    @property
    def library_depths(self) -> list[int]:
        """ChIP reads (fragments) per library, group-major."""
        return self._depths(self.depths, _DEFAULT_DEPTHS, _SPARSE_READS_PER_BIN, "depths")

    @property
    def library_control_depths(self) -> list[int]:
        """Input reads (fragments) per library, group-major."""
        return self._depths(
            self.control_depths,
            _DEFAULT_CONTROL_DEPTHS,
            _SPARSE_CONTROL_READS_PER_BIN,
            "control_depths",
        )

    @property
    def library_gc_bias(self) -> list[float]:
        """GC-like bias strength per library, group-major."""
        gc_bias = self.gc_bias
        if gc_bias is None:
            gc_bias = [_DEFAULT_GC_BIAS[r % 2] for r in range(self.n_replicates)]
        return _per_library(gc_bias, "gc_bias", self.n_groups, self.n_replicates, float)

    @property
    def jackpot_library(self) -> str:
        """The library given PCR jackpots, ``""`` for none."""
        if self.jackpot_sample is None:
            return self.samples[min(1, len(self.samples) - 1)]
        return self.jackpot_sample

    def _depths(self, value, default, sparse_per_bin, name: str) -> list[int]:
        if value is None:
            # Defaults alternate a strong and a weak replicate (deep, mild GC bias / shallow,
            # strong); "sparse" scales them to the genome.
            if "sparse" in self.mechanisms:
                n_bins = self.n_bins
                value = [max(round(f * n_bins), 1) for f in sparse_per_bin]
                value = [value[r % 2] for r in range(self.n_replicates)]
            else:
                value = [default[r % 2] for r in range(self.n_replicates)]
        values = _per_library(value, name, self.n_groups, self.n_replicates, int)
        if min(values) < 1:
            raise ChipviInputError(f"{name} must all be >= 1, got {values}.")
        return values

    def _validate(self) -> None:
        if not isinstance(self.scenario, str) or self.scenario not in _SCENARIO_TABLE:
            raise ChipviInputError(
                f"scenario {self.scenario!r} is not one of {list(_SCENARIO_TABLE)}."
            )
        _check_positive_int(self.seed, "seed", 0)
        _check_positive_int(self.n_groups, "n_groups")
        _check_positive_int(self.n_replicates, "n_replicates")
        genome = self.genome
        read_length = _check_positive_int(self.read_length, "read_length")
        fragment_length = _check_positive_int(self.fragment_length, "fragment_length")
        if fragment_length < read_length:
            raise ChipviInputError(
                f"fragment_length ({fragment_length}) must be at least read_length ({read_length})."
            )
        too_short = [c for c, n in genome.items() if n < 2 * fragment_length]
        if too_short:
            raise ChipviInputError(
                f"chromosomes {too_short} are shorter than 2 * fragment_length; make them longer."
            )
        # The derived per-library values check themselves.
        _ = self.library_depths, self.library_control_depths, self.library_gc_bias
        for name in (
            "fragment_sd",
            "peaks_per_mb",
            "domains_per_mb",
            "group_difference_sd",
            "cnv_segments_per_mb",
            "background_sd",
            "lowmap_blocks_per_mb",
            "jackpots_per_mb",
            "jackpot_size",
            "overdispersion",
        ):
            _check_nonnegative(getattr(self, name), name)
        for name in ("peak_fold", "domain_fold"):
            value = getattr(self, name)
            if _check_nonnegative(value, name) < 1:
                raise ChipviInputError(f"{name} must be >= 1 (a fold enrichment), got {value!r}.")
        _check_nonnegative(self.lowmap_fold, "lowmap_fold")
        for name in ("shared_fraction", "jackpot_flagged", "replicate_specific_fraction"):
            value = getattr(self, name)
            if not 0 <= _check_nonnegative(value, name) <= 1:
                raise ChipviInputError(f"{name} must lie in [0, 1], got {value!r}.")
        if not isinstance(self.target, str) or not self.target:
            raise ChipviInputError(f"target must be a non-empty string, got {self.target!r}.")
        if not isinstance(self.paired, bool | np.bool_):
            raise ChipviInputError(f"paired must be True or False, got {self.paired!r}.")
        jackpot = self.jackpot_library
        if jackpot and jackpot not in self.samples:
            raise ChipviInputError(
                f"jackpot_sample {jackpot!r} is not one of the samples {list(self.samples)}; "
                "use '' to disable jackpots."
            )
