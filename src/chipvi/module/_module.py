"""The ChIPVI Pyro model: technical NB and a chain of enrichment states per group.

Generative story for bin ``i``, library ``j`` of group ``g(j)`` (DESIGN §3)::

    x_ij                       technical covariates (control, MAPQ, depth)
    log μ_ij, log r_ij         = technical network(x_ij)
    (c_ig, e_ig)               chain state of group g: stay class c and log fold enrichment e
                               on a grid; e_(i+1)g = e_ig with probability stay[c], else the
                               state is redrawn from a learned prior over classes × grid:
                               background (a Normal centred at e = 0, learned width) plus
                               enrichment (free on e > 0), weights per class;
                               chains break at chromosome ends and gaps
    a_j                        gain of library j (geometric mean 1 within a group)
    w_i                        mappability weight (≈ 0 where the reads are multi-mappers)
    y_ij ~ NB(mean = μ_ij·exp(a_j·e_ig(j)), dispersion r_ij)   with likelihood weight w_i
    y_ij ~ NB(mean = μ_ij, dispersion r_ij)                    with weight 1 − w_i
    factor: replicate consistency of the gains

Inference is exact: the chain is summed out by forward-backward (:mod:`._chain`), so the
observed site's log-probability is the log marginal likelihood of the counts, and the
globals (networks, gains, stay probabilities, prior) are point estimates fitted by gradient
ascent on it; the guide is empty.

Minibatches are long runs of consecutive bins, and their objective is exact: a minibatch
scores its bins ``[a, b)`` conditioned on the ``L`` bins before it
(``log p(y[a:b] | y[a-L:a])``, :mod:`._overlap`; ``L`` ten expected dwell times of the
stickiest stay class, at most 4096; exact where a chromosome start or gap lies within them,
otherwise within float noise), and its covariate windows read :data:`CONTEXT` rows on both
sides. The technical term and the ``n_obs / n_bins`` scale count the scored bins
only. So the sum over minibatches that tile the bins is the whole-data log-likelihood and
gradient, whatever the batch size and the number of threads (the CPU engine cuts a minibatch
into one piece per thread, each conditioned the same way).
"""

from __future__ import annotations

import numpy as np
import pyro
import torch
import torch.nn.functional as F
from pyro.distributions import TorchDistribution, constraints
from scvi.module.base import PyroBaseModuleClass
from torch import nn

from ._chain import ChainInputs, chain_posterior, log_outlier_mixture
from ._covariates import COVARIATE_CONTEXT, COVARIATE_SETS, CovariateBuilder
from ._nb import nb_log_prob
from ._overlap import conditional_log_likelihood, cut_pieces, overlap_length
from ._registry import CONSISTENCY, TECHNICAL

#: Rows of genomic context each side a prediction chunk needs for exact technical parameters.
CONTEXT = COVARIATE_CONTEXT + 2

DATA_KEYS = ("X", "control", "mapq", "control_mapq", "run_start")
#: Batch key of a minibatch's ``(p, a, b)``: rows ``[a, b)`` scored, context from ``p``.
WINDOW_KEY = "window"

#: Default grid of log fold enrichments: (lowest, highest, points).
GRID = (-3.0, 6.0, 46)
#: Default initial stay probabilities, one per stay class (narrow peaks, broad domains).
STAY = (0.8, 0.98)
#: Default probability that a count is an outlier rather than NB.
OUTLIER = 1e-3


def grid_values(grid: tuple[float, float, int]) -> np.ndarray:
    """The grid points of ``(lowest, highest, points)``."""
    lo, hi, size = grid
    return np.linspace(float(lo), float(hi), int(size))


#: Width (sd, natural log) the background class of the redraw prior starts at, and its bounds.
BACKGROUND_SD = (0.15, 0.05, 0.3)
#: Initial share of the background class in the redraw prior.
BACKGROUND_SHARE = 0.9


def _sd_logit(sd: float) -> float:
    _, lo, hi = BACKGROUND_SD
    u = (sd - lo) / (hi - lo)
    return float(np.log(u / (1 - u)))


def _initial_enriched_logits(grid: np.ndarray, n_classes: int) -> torch.Tensor:
    """Enriched class to start from: a broad slab around 1.5 (ln), the same for every stay class."""
    logits = -0.5 * ((grid - 1.5) / 1.0) ** 2
    return torch.tensor(np.tile(logits, (n_classes, 1)), dtype=torch.float32)


class ChainMarginal(TorchDistribution):
    """Counts of a run of bins with the enrichment chain summed out (event: the whole run).

    ``log_prob(y)`` is the log-likelihood of the scored rows given the context rows before
    them (:mod:`._overlap`): for each piece ``(q, s, e)`` of ``pieces``,
    ``Σ_{s≤i<e, j} log p(y_ij | e = 0) + log [p(y[q:e] | chain) / p(y[q:e] | e = 0)]
    − log [p(y[q:s] | chain) / p(y[q:s] | e = 0)]``, with
    ``p(y | e) = (1 − ε)·NB(y | μ·exp(a·e), r) + ε·q(y)`` (ε: ``outlier``). ``inputs.starts``
    are the true chain starts among the rows. Without ``pieces`` every row is scored, one
    piece. The chain terms are exact (forward-backward) and differentiable in every
    parameter. Sampling is not supported (counts are always observed in chipvi).
    """

    arg_constraints = {"log_mu": constraints.real, "log_r": constraints.real}
    support = constraints.independent(constraints.nonnegative_integer, 2)
    has_rsample = False

    def __init__(
        self,
        inputs: ChainInputs,
        transition: dict,
        outlier: float,
        n_threads: int = 1,
        pieces: list[tuple[int, int, int]] | None = None,
    ) -> None:
        self.inputs = inputs
        self.log_mu, self.log_r = inputs.log_mu, inputs.log_r
        self.transition = transition
        self.outlier = outlier
        self.n_threads = n_threads
        self.pieces = [(0, 0, inputs.y.shape[0])] if pieces is None else list(pieces)
        super().__init__(torch.Size(), inputs.log_mu.shape, validate_args=False)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        a, b = self.pieces[0][1], self.pieces[-1][2]
        technical = log_outlier_mixture(
            value[a:b], nb_log_prob(value[a:b], self.log_mu[a:b], self.log_r[a:b]), self.outlier
        ).sum()
        inputs = ChainInputs(
            value, self.log_mu, self.log_r, self.inputs.w, self.inputs.gain,
            self.inputs.groups, self.inputs.starts,
        )  # fmt: skip
        chain = conditional_log_likelihood(
            inputs, self.pieces, np.asarray(self.inputs.starts, dtype=np.int64),
            self.transition, self.outlier, self.n_threads,
        )  # fmt: skip
        return technical + chain

    def sample(self, sample_shape=None):  # pragma: no cover - never sampled
        raise NotImplementedError("ChainMarginal is only observed.")


class ChipviModule(PyroBaseModuleClass):
    """Pyro model (and empty guide) of ChIPVI; see the module docstring.

    Parameters
    ----------
    n_obs
        Number of training bins (scales the minibatch log-likelihood).
    group_index
        Group of each library, integers ``0..n_groups-1``.
    depth, control_depth, typical_mapq, typical_control_mapq
        Per-library constants (held as buffers: they must not go through the bin loader).
    log_mean
        Initial per-library log mean count.
    technical
        Name of a registered technical network (``"control_slope"``, ``"mu_r"`` or ``"r_p"``).
    covariates
        Name of a registered covariate set.
    consistency
        Names of registered replicate-consistency terms (factors on the libraries' gains).
    consistency_weight
        One weight per term.
    n_hidden, n_layers
        Size of the technical MLPs.
    low_mapq
        Reads of mean MAPQ below this (over ±2 bins) are multi-mappers: with weight
        ``w = sigmoid((MAPQ - low_mapq) / 2)`` a bin's counts inform the enrichment, and with
        weight ``1 - w`` they are explained by the technical NB alone. ``None``: off.
    grid
        ``(lowest, highest, points)`` of the grid of log fold enrichments.
    stay
        Initial stay probability of each stay class (learned).
    outlier
        Probability ε that a count is an outlier (a PCR jackpot, say) rather than NB:
        heavy-tailed and blind to the enrichment, so one library's jackpot does not move the
        state its replicates share.
    n_threads
        Threads of the CPU forward-backward.
    """

    def __init__(
        self,
        n_obs: int,
        group_index: torch.Tensor,
        depth: torch.Tensor,
        control_depth: torch.Tensor,
        typical_mapq: torch.Tensor,
        typical_control_mapq: torch.Tensor,
        log_mean: torch.Tensor,
        technical: str = "control_slope",
        covariates: str = "default",
        consistency: tuple[str, ...] = ("mse",),
        consistency_weight: tuple[float, ...] = (1.0,),
        n_hidden: int = 32,
        n_layers: int = 2,
        low_mapq: float | None = 10.0,
        grid: tuple[float, float, int] = GRID,
        stay: tuple[float, ...] = STAY,
        outlier: float = OUTLIER,
        n_threads: int = 1,
    ) -> None:
        super().__init__()
        self.n_obs = int(n_obs)
        self.n_libraries = int(group_index.numel())
        self.n_groups = int(group_index.max().item()) + 1
        self.register_buffer("group_index", group_index.long())
        self.groups = tuple(
            tuple(int(j) for j in torch.nonzero(group_index == g).flatten())
            for g in range(self.n_groups)
        )
        self.covariates = CovariateBuilder(
            depth, control_depth, typical_mapq, typical_control_mapq, COVARIATE_SETS[covariates]
        )
        self.technical = TECHNICAL[technical](
            self.covariates.n_covariates, log_mean, n_hidden=n_hidden, n_layers=n_layers,
            covariates=self.covariates,
        )  # fmt: skip
        self.consistency_names = tuple(consistency)
        self.consistency_weights = tuple(float(w) for w in consistency_weight)
        if len(self.consistency_weights) != len(self.consistency_names):
            raise ValueError("consistency_weight needs one weight per consistency term.")
        self.low_mapq = low_mapq
        self.n_threads = int(n_threads)
        #: Bins of conditioning context before a minibatch's cuts (:mod:`._overlap`); None:
        #: from the stay probabilities (:func:`._overlap.overlap_length`).
        self.overlap: int | None = None
        self.outlier = float(outlier)

        values = grid_values(grid)
        self.register_buffer("grid", torch.tensor(values, dtype=torch.float32))
        if not (values > 0).any() or not (values < 0).any():
            raise ValueError(f"grid {grid!r} needs points below and above 0.")
        stay = torch.as_tensor(stay, dtype=torch.float32)
        n_classes = stay.numel()
        self.stay_logit = nn.Parameter(torch.log(stay) - torch.log1p(-stay))
        # Redraw prior = background class (a discretised Normal centred at log FE 0, learned
        # width) + enriched class (free on the grid points above 0), mixed per stay class.
        # Centring the background at 0 pins each group's zero: without it a group's chain can
        # shift by -β while its libraries' technical biases absorb +a·β (a flat direction of
        # the likelihood), and groups end up on different scales (benchmarks/log/
        # 2026-12-06-background-offset.md).
        self.register_buffer("enriched_support", torch.tensor(values > 0))
        self.background_sd_logit = nn.Parameter(torch.tensor(_sd_logit(BACKGROUND_SD[0])))
        self.enriched_logits = nn.Parameter(_initial_enriched_logits(values, n_classes))
        share = np.log([BACKGROUND_SHARE / n_classes, (1 - BACKGROUND_SHARE) / n_classes])
        self.component_logits = nn.Parameter(
            torch.tensor(np.tile(share, (n_classes, 1)), dtype=torch.float32)
        )
        self.log_gain = nn.Parameter(torch.zeros(self.n_libraries))

    # ----------------------------------------------------------------------------------------
    @staticmethod
    def _get_fn_args_from_batch(tensor_dict: dict[str, torch.Tensor]):
        args = tuple(tensor_dict[k].float() for k in DATA_KEYS)
        return (*args, tensor_dict.get(WINDOW_KEY)), {}

    @property
    def list_obs_plate_vars(self) -> dict:
        return {"name": "bins", "input": [], "sites": {}}

    # Parameters are plain torch parameters of this module, optimised by one torch optimiser
    # (scvi-tools' LowLevelPyroTrainingPlan); nothing goes through Pyro's global param store,
    # so two models in one process never share weights.
    def on_load(self, model, **kwargs) -> None:
        """Nothing to warm up: all parameters are module attributes restored by the state dict."""

    # ----------------------------------------------------------------------------------------
    def technical_parameters(self, counts, control, mapq, control_mapq):
        """``(log_mu, log_r)`` of the technical NB, each ``(bins, libraries)``."""
        x = self.covariates(counts, control, mapq, control_mapq)
        return self.technical(x)

    def mappability_weight(self, counts, control, mapq, control_mapq) -> torch.Tensor:
        """Likelihood weight per bin (``1`` unless the bin's reads are mostly multi-mappers)."""
        if self.low_mapq is None:
            return torch.ones_like(counts[:, 0])
        pooled = self.covariates.pooled_mapq(counts, control, mapq, control_mapq)
        return torch.sigmoid((pooled - self.low_mapq) / 2).amin(-1)

    def gain(self) -> torch.Tensor:
        """Per-library gain, geometric mean 1 within each group."""
        centred = self.log_gain.clone()
        for members in self.groups:
            idx = list(members)
            centred[idx] = self.log_gain[idx] - self.log_gain[idx].mean()
        return centred.exp()

    def stay(self) -> torch.Tensor:
        """Stay probability of each class."""
        return torch.sigmoid(self.stay_logit)

    def transition(self) -> dict[str, torch.Tensor]:
        """Log transition inputs of the chain: stay, leave, redraw prior, first-bin law.

        The first bin is drawn from the chain's stationary law ``ρ ∝ π / (1 − stay)``, so a
        run of bins cut anywhere from the genome has the law of the whole chain.
        """
        log_stay = F.logsigmoid(self.stay_logit)
        log_leave = F.logsigmoid(-self.stay_logit)
        log_pi = self.log_prior()
        log_rho = log_pi - log_leave.unsqueeze(-1)
        log_rho = log_rho - torch.logsumexp(log_rho.flatten(), 0)
        return {
            "grid": self.grid,
            "log_stay": log_stay,
            "log_leave": log_leave,
            "log_pi": log_pi,
            "log_rho": log_rho,
        }

    def background_sd(self) -> torch.Tensor:
        """Width (sd, natural log) of the redraw prior's background class."""
        _, lo, hi = BACKGROUND_SD
        return lo + (hi - lo) * torch.sigmoid(self.background_sd_logit)

    def log_prior(self) -> torch.Tensor:
        """Log redraw prior over stay classes × grid, ``(classes, grid)``, summing to 1."""
        grid = self.grid
        log_background = torch.log_softmax(-0.5 * (grid / self.background_sd()) ** 2, 0)
        masked = self.enriched_logits.masked_fill(~self.enriched_support, float("-inf"))
        log_enriched = torch.log_softmax(masked, -1)
        log_share = torch.log_softmax(self.component_logits.flatten(), 0).reshape(-1, 2)
        return torch.logaddexp(log_share[:, :1] + log_background, log_share[:, 1:] + log_enriched)

    def prior_enrichment(self) -> np.ndarray:
        """Marginal (stationary) law of the log fold enrichment on the grid."""
        with torch.no_grad():
            return self.transition()["log_rho"].exp().sum(0).cpu().numpy()

    def minibatch(self, counts, control, mapq, control_mapq, run_start, window=None):
        """Technical parameters of the rows a minibatch's objective reads, and its pieces.

        ``window`` ``(p, a, b)`` (rows of the inputs; ``None``: every row scored): rows
        ``[a, b)`` are scored, rows from ``p`` may condition them, and the rows around those
        are covariate context. Returns ``(rows, log_mu, log_r, weight, breaks, pieces)``:
        ``rows`` the slice of the inputs the rest refers to, ``breaks`` the true chain starts
        in it, ``pieces`` ``(q, s, e)`` per chain piece (:func:`._overlap.cut_pieces`: on CPU
        one piece per thread, each with its own overlap).
        """
        n = counts.shape[0]
        p, a, b = (0, 0, n) if window is None else (int(v) for v in window.flatten().tolist())
        breaks = torch.nonzero(run_start.flatten() > 0).flatten().cpu().numpy()
        overlap = self.overlap
        if overlap is None:
            overlap = overlap_length(float(self.stay().max().detach()))
        n_pieces = self.n_threads if run_start.device.type == "cpu" else 1
        pieces = cut_pieces(p, a, b, breaks, n_pieces, overlap)
        # The first piece's context starts earliest: the rows read begin there (less CONTEXT).
        lo, hi = max(0, pieces[0][0] - CONTEXT), min(n, b + CONTEXT)
        rows = slice(lo, hi)
        args = (counts[rows], control[rows], mapq[rows], control_mapq[rows])
        log_mu, log_r = self.technical_parameters(*args)
        weight = self.mappability_weight(*args)
        breaks = breaks[(breaks >= lo) & (breaks < hi)] - lo
        pieces = [(q - lo, s - lo, e - lo) for q, s, e in pieces]
        return rows, log_mu, log_r, weight, breaks, pieces

    # ----------------------------------------------------------------------------------------
    def model(
        self, counts, control, mapq, control_mapq, run_start, window=None, kl_weight: float = 1.0
    ):
        """Generative model (see module docstring) of the rows ``window`` scores
        (:meth:`minibatch`).

        ``kl_weight`` (scvi-tools' warm-up schedule, 0 → 1 over the first epochs) scales the
        enrichment's likelihood weight: early in training the technical network alone must
        explain the counts, so it learns the pile-ups that control and MAPQ predict (artefacts)
        before the chain can claim them.
        """
        rows, log_mu, log_r, weight, breaks, pieces = self.minibatch(
            counts, control, mapq, control_mapq, run_start, window
        )
        gain = self.gain()
        y = counts[rows]
        inputs = ChainInputs(
            y, log_mu, log_r, (kl_weight * weight).detach(), gain, self.groups,
            tuple(int(i) for i in breaks),
        )  # fmt: skip
        n_scored = pieces[-1][2] - pieces[0][1]
        with pyro.poutine.scale(scale=self.n_obs / n_scored):
            pyro.sample(
                "y",
                ChainMarginal(inputs, self.transition(), self.outlier, self.n_threads, pieces),
                obs=y,
            )
        for name, w in zip(self.consistency_names, self.consistency_weights, strict=True):
            if w != 0:
                pyro.factor(f"consistency_{name}", w * CONSISTENCY[name](gain.log(), self.groups))

    def guide(
        self, counts, control, mapq, control_mapq, run_start, window=None, kl_weight: float = 1.0
    ):
        """Empty: the chain is summed out exactly and the globals are point estimates."""

    # ----------------------------------------------------------------------------------------
    @torch.inference_mode()
    def predict_technical(self, counts, control, mapq, control_mapq) -> dict[str, torch.Tensor]:
        """Technical parameters and mappability weight of a run of bins."""
        log_mu, log_r = self.technical_parameters(counts, control, mapq, control_mapq)
        weight = self.mappability_weight(counts, control, mapq, control_mapq)
        return {"log_mu": log_mu, "log_r": log_r, "weight": weight}

    @torch.inference_mode()
    def posterior(
        self,
        counts: torch.Tensor,
        log_mu: torch.Tensor,
        log_r: torch.Tensor,
        weight: torch.Tensor,
        starts: tuple[int, ...],
        groups: tuple[tuple[int, ...], ...],
        q: float,
        thresholds: list,
        n_draws: int = 0,
        seed: int | None = None,
        alpha_in: np.ndarray | None = None,
        beta_in: np.ndarray | None = None,
    ) -> dict[str, np.ndarray]:
        """Exact posterior summaries of the enrichment of ``groups`` (library index tuples:
        the model's groups, or single libraries for each library's own evidence);
        ``thresholds``: one sequence of tail-probability thresholds per entry of ``groups``;
        ``alpha_in`` / ``beta_in``: a piece of a longer chain (:func:`chain_posterior`).

        The pass runs where ``counts`` lives: the numba engine for CPU tensors (whole
        chromosomes, bounded memory), the torch engine for CUDA tensors.
        """
        device = counts.device
        inputs = ChainInputs(counts, log_mu, log_r, weight, self.gain().to(device), groups, starts)
        transition = {k: v.to(device) for k, v in self.transition().items()}
        return chain_posterior(
            inputs, q=q, thresholds=thresholds, outlier=self.outlier, n_draws=n_draws,
            seed=seed, n_threads=self.n_threads, alpha_in=alpha_in, beta_in=beta_in,
            **transition,
        )  # fmt: skip
