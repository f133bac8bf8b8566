"""The enrichment chain as torch operations: exact log marginal likelihood and posterior.

Per group, the log fold enrichment of a bin lives on :attr:`ChainSpec.grid`; along the genome
it stays (with a learned probability per stay class) or is redrawn from a learned prior over
classes × grid; chains break at the run starts given by ``starts``. The group's libraries are
joint evidence for the same state; library ``j`` sees it with gain ``a_j``.

Two engines compute the same quantities:

* :func:`chain_log_likelihood` / :func:`chain_posterior` on CPU tensors: the numba
  forward-backward of :mod:`._chain_numba`, runs of bins × groups spread over threads (the
  kernel releases the GIL); the gradient is exact (Fisher's identity) and comes from the
  same pass, exposed to autograd through :class:`_ChainLogLik`.
* the same functions on CUDA tensors: the recursion in torch (normalised messages, all
  chains of a call batched), differentiated by autograd.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch

from ._chain_numba import cell_edges, chain_pass, workspace
from ._chain_numba import chain_backward as chain_backward_pass
from ._nb import nb_log_prob

#: Bins whose forward messages are kept at once in the CPU backward pass of the posterior.
BLOCK = 4096
#: The same for training runs (one block for runs up to this length: nothing recomputed).
TRAIN_BLOCK = 16384
#: Largest chain (bins × grid points × 4 bytes) whose emissions the posterior pass keeps for
#: its backward sweep instead of recomputing them (per thread).
EMISSION_CACHE_BYTES = 256 * 2**20


def posterior_piece_bins(n_grid: int, group_size: int) -> int:
    """Bins of the longest chain whose posterior pass keeps every emission it needs (a
    group's chain and its libraries' own chains: ``(1 + group_size)`` float32 rows of
    ``n_grid`` per bin) within :data:`EMISSION_CACHE_BYTES`: computed once per bin. A longer
    chain runs in pieces of this length (:func:`chain_backward`, then :func:`chain_posterior`
    with boundary messages), its emissions computed twice, its memory bounded by the piece."""
    return max(1, int(EMISSION_CACHE_BYTES // ((1 + int(group_size)) * int(n_grid) * 4)))


@dataclass(frozen=True)
class ChainInputs:
    """What the chain needs besides the transition parameters (all ``(bins, libraries)``
    unless stated): counts ``y``, technical ``log_mu`` and ``log_r``, weight ``w`` (bins,),
    per-library ``gain`` (libraries,), library ``groups`` (libraries,) and ``starts``: sorted
    bin indices where a new chain begins (the first is 0)."""

    y: torch.Tensor
    log_mu: torch.Tensor
    log_r: torch.Tensor
    w: torch.Tensor
    gain: torch.Tensor
    groups: tuple[tuple[int, ...], ...]
    starts: tuple[int, ...]


def _jobs(
    inputs: ChainInputs, share: bool, n_grid: int, cache_bytes: float | None = None
) -> list[tuple[int, int, tuple]]:
    """``(lo, hi, chains)`` per run of bins: one chain each, or (``share``, posterior) a
    group's chain followed by its libraries' own chains, which then read the emissions the
    group's chain computed (the group's log emission is the sum of its libraries') instead of
    computing them again; only where every chain's kept emissions fit ``cache_bytes``
    (default :data:`EMISSION_CACHE_BYTES`)."""
    budget = EMISSION_CACHE_BYTES if cache_bytes is None else cache_bytes
    n = inputs.y.shape[0]
    bounds = list(inputs.starts) + [n]
    jobs = []
    for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
        if hi <= lo:
            continue
        taken: set[tuple[int, ...]] = set()
        for cols in inputs.groups:
            own = [(j,) for j in cols if (j,) in inputs.groups and (j,) != cols]
            fits = (1 + len(cols)) * (hi - lo) * n_grid * 4 <= budget
            if share and own and fits:
                jobs.append((lo, hi, (cols, *own)))
                taken.update([cols, *own])
        jobs += [(lo, hi, (cols,)) for cols in inputs.groups if cols not in taken]
    return jobs


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().to("cpu", torch.float64).numpy()


def _host(t: torch.Tensor) -> np.ndarray:
    """A CPU numpy view (dtype kept: per-chain pieces are converted to float64 one at a time,
    never the whole genome at once)."""
    return t.detach().cpu().numpy()


def _f64(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.float64)


_EMPTY3 = np.zeros((0, 0, 0), np.float32)
_EMPTY2 = np.zeros((0, 0))
_EMPTY1 = np.zeros(0)


class _Workspaces:
    """Scratch arrays of the numba pass, kept from one call to the next (one per running
    chain): training calls the pass once per minibatch, and fresh arrays (page faults on
    tens of MB) cost as much as the emissions. Kept per shape (groups of different sizes);
    a call of another kind (posterior after training: other block, no gradient) releases
    the others."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._kind: tuple | None = None
        self._free: dict[tuple, list[tuple]] = {}

    @contextmanager
    def get(self, block: int, n_class: int, n_grid: int, n_lib: int, want_grad: bool):
        key = (block, n_class, n_grid, n_lib, want_grad)
        kind = (block, n_class, n_grid, want_grad)
        with self._lock:
            if kind != self._kind:
                self._kind, self._free = kind, {}
            free = self._free.setdefault(key, [])
            work = free.pop() if free else None
        if work is None:
            work = workspace(*key)
        try:
            yield work
        finally:
            with self._lock:
                if kind == self._kind:
                    self._free.setdefault(key, []).append(work)


_WORKSPACES = _Workspaces()


def _run_numba(
    inputs,
    grid,
    stay,
    pi,
    rho,
    outlier,
    want_grad,
    post=None,
    n_threads=1,
    alpha_in=None,
    beta_in=None,
):
    """Run every (run, group) chain; returns log_z and, on request, gradients / summaries.

    Posterior only: ``alpha_in`` / ``beta_in`` (groups, K, G) continue the first run from
    the bins before and the last run into the bins after (see :func:`chain_posterior`); the
    summaries then hold ``alpha_out``."""
    log_in, log_out = _log_mix(outlier)
    y, lmu, lr, w = _host(inputs.y), _host(inputs.log_mu), _host(inputs.log_r), _host(inputs.w)
    gain = _np(inputs.gain)
    grid, stay, pi, rho = _np(grid), _np(stay), _np(pi), _np(rho)
    n, n_lib = y.shape
    n_class, n_grid = pi.shape
    jobs = _jobs(inputs, post is not None, n_grid)
    grads = None
    if want_grad:
        grads = {
            "log_mu": np.zeros((n, n_lib)),
            "log_r": np.zeros((n, n_lib)),
            "gain": np.zeros(n_lib),
            "log_stay": np.zeros(n_class),
            "log_leave": np.zeros(n_class),
            "log_pi": np.zeros((n_class, n_grid)),
            "log_rho": np.zeros((n_class, n_grid)),
        }
    q, uniforms = 0.05, np.zeros((0, n))
    summaries = None
    n_chains = len(inputs.groups)
    if post is not None:
        q, uniforms = post["q"], post["uniforms"]
        # float32 outputs, filled by each chain as it finishes (slices never overlap)
        summaries = {
            "mean": np.zeros((n, n_chains), np.float32),
            "sd": np.zeros((n, n_chains), np.float32),
            "lower": np.zeros((n, n_chains), np.float32),
            "prob": [np.zeros((n, t.size), np.float32) for t in post["thresholds"]],
            "draws": np.zeros((uniforms.shape[0], n, n_chains), np.float32),
            "alpha_out": np.zeros((n_chains, n_class, n_grid)),
        }
    ends = {"alpha_in": alpha_in, "beta_in": beta_in}
    for key, value in ends.items():
        if value is not None:
            if post is None or np.shape(value) != (n_chains, n_class, n_grid):
                raise ValueError(f"{key} needs shape {(n_chains, n_class, n_grid)} (posterior).")
            ends[key] = _f64(value)

    def one_chain(lo, hi, cols, shared):
        """One chain; ``shared``: (e_libs, top_libs) to fill (a group sharing its
        emissions), (e_all, top) to read (an own chain), or None."""
        k = inputs.groups.index(cols)
        c = list(cols)
        m = hi - lo
        args = (
            _f64(y[lo:hi, c]),
            _f64(lmu[lo:hi, c]),
            _f64(lr[lo:hi, c]),
            _f64(w[lo:hi]),
            _f64(gain[c]),
        )
        pieces = (
            ends["alpha_in"][k] if ends["alpha_in"] is not None and lo == 0 else _EMPTY2,
            ends["beta_in"][k] if ends["beta_in"] is not None and hi == n else _EMPTY2,
            summaries["alpha_out"][k] if post is not None and hi == n else _EMPTY2,
        )
        g = (
            (np.zeros((m, len(c))), np.zeros((m, len(c))), np.zeros(len(c)))
            + tuple(np.zeros(n_class) for _ in range(2))
            + tuple(np.zeros((n_class, n_grid)) for _ in range(2))
            if want_grad
            else (_EMPTY2, _EMPTY2, _EMPTY1, _EMPTY1, _EMPTY1, _EMPTY2, _EMPTY2)
        )
        thresholds = _EMPTY1
        if post is not None:
            thresholds = post["thresholds"][k]
            s = (np.empty(m), np.empty(m), np.empty(m), np.empty((m, thresholds.size)))
            d = np.empty((uniforms.shape[0], m))
            u = np.ascontiguousarray(uniforms[:, lo:hi])
        else:
            s, d, u = (_EMPTY1, _EMPTY1, _EMPTY1, _EMPTY2), _EMPTY2, _EMPTY2
        share = (_EMPTY3, _EMPTY2, _EMPTY1)
        if shared is not None and shared[0].ndim == 2:  # read another chain's emissions
            e_all, share = shared[0], (_EMPTY3, _EMPTY2, shared[1])
        else:
            cache = post is not None and m * n_grid * 4 <= EMISSION_CACHE_BYTES
            e_all = np.empty((m if cache else 0, n_grid), np.float32)
            if shared is not None:
                share = (*shared, _EMPTY1)
        block = BLOCK if post is not None else TRAIN_BLOCK
        with _WORKSPACES.get(block, n_class, n_grid, len(c), want_grad) as work:
            log_z = chain_pass(
                *args, grid, stay, pi, rho, log_in, log_out, *pieces, want_grad, *g,
                post is not None, float(q), thresholds, *s, u, d, e_all, *share, *work,
            )  # fmt: skip
        if post is not None:
            for key, value in zip(("mean", "sd", "lower"), s[:3], strict=True):
                summaries[key][lo:hi, k] = value
            summaries["prob"][k][lo:hi] = s[3]
            summaries["draws"][:, lo:hi, k] = d
        return log_z, g

    # Waves of jobs whose kept emissions fit the threads' cache budget together: first every
    # job's first chain (a group's fills its libraries' emissions), then the libraries' own
    # chains, which read them; both steps spread over the threads.
    results: list[list] = [[] for _ in jobs]
    shared: dict[int, tuple] = {}  # a wave's groups' per-library emissions, by job

    def first(x):
        lo, hi, chains = jobs[x]
        return one_chain(lo, hi, chains[0], shared.get(x))

    def own(item):
        x, cols = item
        lo, hi, chains = jobs[x]
        p = chains[0].index(cols[0])
        return one_chain(lo, hi, cols, (shared[x][0][p], shared[x][1][p]))

    pool = ThreadPoolExecutor(n_threads) if n_threads > 1 and len(jobs) > 1 else None

    def each(fn, items):
        if pool is None or len(items) < 2:
            return [fn(x) for x in items]
        return list(pool.map(fn, items))

    try:
        for wave in _waves(jobs, n_grid, max(n_threads, 1) * EMISSION_CACHE_BYTES):
            shared.clear()
            for x in wave:
                lo, hi, chains = jobs[x]
                if len(chains) > 1:
                    shared[x] = (
                        np.empty((len(chains[0]), hi - lo, n_grid), np.float32),
                        np.empty((len(chains[0]), hi - lo)),
                    )
            for x, r in zip(wave, each(first, wave), strict=True):
                results[x].append(r)
            items = [(x, cols) for x in wave for cols in jobs[x][2][1:]]
            for (x, _), r in zip(items, each(own, items), strict=True):
                results[x].append(r)
        shared.clear()
    finally:
        if pool is not None:
            pool.shutdown()

    log_z = 0.0
    for (lo, hi, chains), per_chain in zip(jobs, results, strict=True):
        for cols, (lz, g) in zip(chains, per_chain, strict=True):
            log_z += lz
            if want_grad:
                c = list(cols)
                grads["log_mu"][lo:hi, c] += g[0]
                grads["log_r"][lo:hi, c] += g[1]
                grads["gain"][c] += g[2]
                for key, value in zip(
                    ("log_stay", "log_leave", "log_pi", "log_rho"), g[3:], strict=True
                ):
                    grads[key] += value
    return log_z, grads, summaries


def _waves(jobs: list, n_grid: int, budget: float) -> list[list[int]]:
    """Consecutive job indices in groups whose shared emissions (a group's libraries'
    ``(bins, grid)`` float32 each) fit ``budget`` together (a job over it: a wave alone)."""
    waves, cur, used = [], [], 0.0
    for x, (lo, hi, chains) in enumerate(jobs):
        size = len(chains[0]) * (hi - lo) * n_grid * 4 if len(chains) > 1 else 0
        if cur and used + size > budget:
            waves.append(cur)
            cur, used = [], 0.0
        cur.append(x)
        used += size
    return [*waves, cur] if cur else waves


class _ChainLogLik(torch.autograd.Function):
    """Exact log marginal likelihood ratio of all chains; gradient from the same pass."""

    @staticmethod
    def forward(ctx, log_mu, log_r, gain, log_stay, log_leave, log_pi, log_rho, meta):
        inputs, grid, outlier, n_threads = meta
        inputs = ChainInputs(inputs.y, log_mu, log_r, inputs.w, gain, inputs.groups, inputs.starts)
        want = any(ctx.needs_input_grad[:7])
        log_z, grads, _ = _run_numba(
            inputs, grid, log_stay.exp(), log_pi.exp(), log_rho.exp(), outlier, want,
            n_threads=n_threads,
        )  # fmt: skip
        if want:
            order = ("log_mu", "log_r", "gain", "log_stay", "log_leave", "log_pi", "log_rho")
            refs = (log_mu, log_r, gain, log_stay, log_leave, log_pi, log_rho)
            ctx.save_for_backward(
                *(
                    torch.as_tensor(grads[k], dtype=r.dtype, device=r.device)
                    for k, r in zip(order, refs, strict=True)
                )
            )
        return log_mu.new_tensor(log_z)

    @staticmethod
    def backward(ctx, grad_out):
        grads = tuple(grad_out * g for g in ctx.saved_tensors)
        return (*grads, None)


def chain_log_likelihood(
    inputs: ChainInputs,
    grid: torch.Tensor,
    log_stay: torch.Tensor,
    log_leave: torch.Tensor,
    log_pi: torch.Tensor,
    log_rho: torch.Tensor,
    outlier: float = 0.0,
    n_threads: int = 1,
) -> torch.Tensor:
    """Sum over chains of ``log p(y | chain) − log p(y | no enrichment)`` (a scalar).

    ``log_stay``, ``log_leave`` (classes,) are ``log s_k`` and ``log(1 − s_k)``; ``log_pi``
    and ``log_rho`` (classes, grid) the redraw and first-bin distributions; ``outlier`` the
    rate ε of each count's outlier component (:mod:`._chain_numba`). Differentiable in
    ``log_mu``, ``log_r``, ``gain`` and the four transition inputs.
    """
    if inputs.y.device.type == "cpu":
        return _ChainLogLik.apply(
            inputs.log_mu, inputs.log_r, inputs.gain, log_stay, log_leave, log_pi, log_rho,
            (inputs, grid, outlier, n_threads),
        )  # fmt: skip
    return _torch_pass(inputs, grid, log_stay, log_leave, log_pi, log_rho, outlier)[0]


@torch.no_grad()
def chain_posterior(
    inputs: ChainInputs,
    grid: torch.Tensor,
    log_stay: torch.Tensor,
    log_leave: torch.Tensor,
    log_pi: torch.Tensor,
    log_rho: torch.Tensor,
    q: float,
    thresholds: Sequence[Sequence[float]],
    outlier: float = 0.0,
    n_draws: int = 0,
    seed: int | None = None,
    n_threads: int = 1,
    alpha_in: np.ndarray | None = None,
    beta_in: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Posterior summaries of each group's enrichment, per bin.

    ``thresholds`` holds one sequence of thresholds per group (chain) of ``inputs.groups``.
    Returns ``mean``, ``sd``, ``lower`` (the ``q`` quantile) as ``(bins, groups)`` float32,
    ``prob``: a list with one ``(bins, len(thresholds[k]))`` float32 array per group =
    P(enrichment > threshold), ``draws`` ``(n_draws, bins, groups)`` from each bin's marginal
    posterior, and ``log_z``. Quantiles, tails and draws read the posterior on the grid as a
    piecewise-linear CDF.

    A long chain runs exactly in pieces: ``alpha_in`` (groups, classes, grid), the normalised
    forward messages of the bin before ``inputs``' first (``out["alpha_out"]`` of the piece
    before), continues the first run; ``beta_in``, the normalised backward messages of the
    last bin (:func:`chain_backward` over the bins after), continues the last run. ``log_z``
    is then conditional on the bins before; ``out["alpha_out"]`` holds the last bin's forward
    messages.
    """
    n = inputs.y.shape[0]
    if len(thresholds) != len(inputs.groups):
        raise ValueError("thresholds needs one sequence of thresholds per group.")
    uniforms = np.random.default_rng(seed).random((int(n_draws), n))
    post = {
        "q": float(q),
        "thresholds": [np.asarray(t, np.float64).reshape(-1) for t in thresholds],
        "uniforms": uniforms,
    }
    if inputs.y.device.type == "cpu":
        log_z, _, out = _run_numba(
            inputs, grid, log_stay.exp(), log_pi.exp(), log_rho.exp(), outlier, False, post,
            n_threads, alpha_in, beta_in,
        )  # fmt: skip
    else:
        log_z, out = _torch_pass(
            inputs, grid, log_stay, log_leave, log_pi, log_rho, outlier, post, alpha_in, beta_in
        )
    out["log_z"] = float(log_z)
    return out


@torch.no_grad()
def chain_backward(
    inputs: ChainInputs,
    grid: torch.Tensor,
    log_stay: torch.Tensor,
    log_leave: torch.Tensor,
    log_pi: torch.Tensor,
    log_rho: torch.Tensor,
    outlier: float = 0.0,
    beta_in: np.ndarray | None = None,
    n_threads: int = 1,
) -> np.ndarray:
    """Normalised backward messages of the bin before ``inputs``' bins, one chain piece.

    ``inputs`` holds one run (``starts == (0,)``): part of a chain that goes on after it
    when ``beta_in`` (groups, classes, grid) gives the backward messages of its last bin,
    else the chain's end. Returns ``(groups, classes, grid)`` float64: the ``beta_in`` of the
    piece before (:func:`chain_posterior`). ``log_rho`` is not used (the chain started
    before); it is taken for the same signature as the other passes.
    """
    if tuple(inputs.starts) != (0,):
        raise ValueError("chain_backward takes one run of bins (starts == (0,)).")
    n_chains, (n_class, n_grid) = len(inputs.groups), tuple(log_pi.shape)
    if beta_in is not None and np.shape(beta_in) != (n_chains, n_class, n_grid):
        raise ValueError(f"beta_in needs shape {(n_chains, n_class, n_grid)}.")
    if inputs.y.device.type != "cpu":
        return _torch_backward(inputs, grid, log_stay, log_leave, log_pi, outlier, beta_in)
    log_in, log_out = _log_mix(outlier)
    y, lmu, lr, w = _host(inputs.y), _host(inputs.log_mu), _host(inputs.log_r), _host(inputs.w)
    gain = _np(inputs.gain)
    grid, stay, pi = _np(grid), _np(log_stay.exp()), _np(log_pi.exp())
    betas = np.ones((n_chains, n_class, n_grid)) if beta_in is None else _f64(beta_in).copy()

    def one(chains):
        """A group's chain and its libraries' own chains, from the same emissions."""
        c = list(chains[0])
        own = np.array([chains[0].index(cols[0]) for cols in chains[1:]], np.int64)
        rows = [inputs.groups.index(cols) for cols in chains]
        b = np.ascontiguousarray(betas[rows])
        chain_backward_pass(
            _f64(y[:, c]), _f64(lmu[:, c]), _f64(lr[:, c]), _f64(w), _f64(gain[c]), grid, stay,
            pi, log_in, log_out, own, b,
        )  # fmt: skip
        betas[rows] = b

    jobs = [chains for _, _, chains in _jobs(inputs, True, n_grid, cache_bytes=np.inf)]
    if n_threads > 1 and len(jobs) > 1:
        with ThreadPoolExecutor(min(n_threads, len(jobs))) as pool:
            list(pool.map(one, jobs))
    else:
        for chains in jobs:
            one(chains)
    return betas


# ---------------------------------------------------------------------------------------------
# torch engine (CUDA; also the reference the numba pass is tested against)


def _log_mix(outlier: float) -> tuple[float, float]:
    """``(log(1 − ε), log ε)`` of the outlier rate ε."""
    outlier = float(outlier)
    return float(np.log1p(-outlier)), float(np.log(outlier)) if outlier > 0 else -np.inf


def log_outlier_mixture(y, log_nb, outlier: float) -> torch.Tensor:
    """``log((1 − ε)·exp(log_nb) + ε·q(y))``, ``q(y) = 1/((y+1)(y+2))`` (elementwise)."""
    log_in, log_out = _log_mix(outlier)
    if log_out == -np.inf:
        return log_nb
    lq = log_out - torch.log((y + 1) * (y + 2))
    return torch.logaddexp(log_in + log_nb, lq)


def _torch_log_emissions(inputs: ChainInputs, grid: torch.Tensor, cols, outlier) -> torch.Tensor:
    """``(bins, grid)`` log emission ratio of one group (see :mod:`._chain_numba`)."""
    c = list(cols)
    y = inputs.y[:, c].unsqueeze(-1)
    lmu = inputs.log_mu[:, c].unsqueeze(-1)
    lr = inputs.log_r[:, c].unsqueeze(-1)
    a = inputs.gain[c].reshape(1, -1, 1)
    e = grid.reshape(1, 1, -1)
    mix_e = log_outlier_mixture(y, nb_log_prob(y, lmu + a * e, lr), outlier)
    mix_0 = log_outlier_mixture(y, nb_log_prob(y, lmu, lr), outlier)
    return (inputs.w.reshape(-1, 1, 1) * (mix_e - mix_0)).sum(1)


def _torch_pass(
    inputs,
    grid,
    log_stay,
    log_leave,
    log_pi,
    log_rho,
    outlier,
    post=None,
    alpha_in=None,
    beta_in=None,
):
    """Forward (and backward) recursion in torch over every (run, group) chain; ``alpha_in``
    and ``beta_in`` as :func:`chain_posterior`'s."""
    grid = grid.to(inputs.y)
    stay, leave = log_stay.exp(), log_leave.exp()
    pi, rho = log_pi.exp(), log_rho.exp()
    n = inputs.y.shape[0]
    n_groups = len(inputs.groups)
    bounds = list(inputs.starts) + [n]
    log_z = inputs.y.new_zeros(())
    le_all = [_torch_log_emissions(inputs, grid, cols, outlier) for cols in inputs.groups]
    out = None
    if post is not None:
        out = {
            "mean": np.zeros((n, n_groups)),
            "sd": np.zeros((n, n_groups)),
            "lower": np.zeros((n, n_groups)),
            "prob": [np.zeros((n, len(t))) for t in post["thresholds"]],
            "draws": np.zeros((post["uniforms"].shape[0], n, n_groups)),
        }

    def message(x):
        return None if x is None else torch.as_tensor(x).to(inputs.y)

    alpha_in, beta_in = message(alpha_in), message(beta_in)
    for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
        if hi <= lo:
            continue
        # All groups of this run at once: (groups, bins, grid).
        le = torch.stack([x[lo:hi] for x in le_all])
        top = le.amax(-1, keepdim=True)
        e = (le - top).exp()
        log_z = log_z + top.sum()
        alphas = []
        a = rho.unsqueeze(0) * e[:, 0].unsqueeze(1)  # (groups, K, G)
        if lo == 0 and alpha_in is not None:  # continues a chain: a transition into bin 0
            a = alpha_in
        for i in range(hi - lo):
            if i > 0 or (lo == 0 and alpha_in is not None):
                redraw = (leave * a.sum(-1)).sum(-1)  # (groups,)
                a = (stay.reshape(1, -1, 1) * a + redraw.reshape(-1, 1, 1) * pi) * e[
                    :, i
                ].unsqueeze(1)
            total = a.sum((-1, -2))
            log_z = log_z + total.log().sum()
            a = a / total.reshape(-1, 1, 1)
            if post is not None:
                alphas.append(a)
        if post is None:
            continue
        if hi == n:
            out["alpha_out"] = a.double().cpu().numpy()
        beta = beta_in if hi == n and beta_in is not None else torch.ones_like(a)
        for i in range(hi - lo - 1, -1, -1):
            p = alphas[i] * beta
            marg = (p.sum(1) / p.sum((-1, -2)).unsqueeze(-1)).double().cpu().numpy()
            _summaries(marg, grid.double().cpu().numpy(), post, out, lo + i)
            if i > 0:
                beta = _step_back_torch(e[:, i], beta, stay, pi)
    return log_z, out


def _step_back_torch(e, beta, stay, pi):
    """``beta ← T (e · beta)`` normalised, for (groups, K, G) messages and (groups, G) ``e``."""
    u = e.unsqueeze(1) * beta
    redraw_in = (pi * u).sum((-1, -2)).reshape(-1, 1, 1)
    beta = stay.reshape(1, -1, 1) * u + (1 - stay).reshape(1, -1, 1) * redraw_in
    return beta / beta.sum((-1, -2), keepdim=True)


def _torch_backward(inputs, grid, log_stay, log_leave, log_pi, outlier, beta_in):
    """:func:`chain_backward` in torch (every group at once)."""
    grid = grid.to(inputs.y)
    stay, pi = log_stay.exp(), log_pi.exp()
    le = torch.stack([_torch_log_emissions(inputs, grid, c, outlier) for c in inputs.groups])
    e = (le - le.amax(-1, keepdim=True)).exp()
    n_class, n_grid = pi.shape
    beta = (
        e.new_ones((len(inputs.groups), n_class, n_grid))
        if beta_in is None
        else torch.as_tensor(beta_in).to(e)
    )
    for i in range(e.shape[1] - 1, -1, -1):
        beta = _step_back_torch(e[:, i], beta, stay, pi)
    return beta.double().cpu().numpy()


def _summaries(marg, grid, post, out, i):
    """Posterior summaries of bin ``i`` for every group from its grid marginals."""
    cdf = np.cumsum(marg, -1)
    edges = cell_edges(grid)
    for k in range(marg.shape[0]):
        m = float((marg[k] * grid).sum())
        knots = np.r_[0.0, cdf[k]]
        out["mean"][i, k] = m
        out["sd"][i, k] = np.sqrt(float((marg[k] * (grid - m) ** 2).sum()))
        out["lower"][i, k] = _np_quantile(knots, edges, post["q"])
        for t, thr in enumerate(post["thresholds"][k]):
            out["prob"][k][i, t] = 1.0 - np.interp(thr, edges, knots)
        for s in range(post["uniforms"].shape[0]):
            out["draws"][s, i, k] = _np_quantile(knots, edges, post["uniforms"][s, i])


def _np_quantile(knots, edges, q):
    """Inverse of the piecewise-linear CDF through ``(edges, knots)`` (knots[0] = 0)."""
    g = min(max(int(np.searchsorted(knots, q)), 1), len(edges) - 1)
    step = knots[g] - knots[g - 1]
    f = (q - knots[g - 1]) / step if step > 0 else 1.0
    return float(edges[g - 1] + f * (edges[g] - edges[g - 1]))
