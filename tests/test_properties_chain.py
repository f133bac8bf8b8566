"""Property-based tests (hypothesis) of the enrichment chain's forward-backward.

Random small problems (a few bins, a small grid, one or two stay classes, one or two
libraries per group, run starts anywhere, zero and fractional likelihood weights, with and
without the outlier component) are solved three ways: by enumerating every state path (torch,
float64, autograd for the gradient), by the numba engine and by the torch engine. The log
marginal likelihood, its gradient with respect to every input, and each bin's posterior over
the grid agree; the posterior sums to 1.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import chipvi.module._chain as chain
from chipvi.module import ChainInputs, chain_log_likelihood, chain_posterior
from chipvi.module._chain_numba import cell_edges

FAST = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
LEAVES = ("log_mu", "log_r", "gain", "log_stay", "log_leave", "log_pi", "log_rho")


@st.composite
def problems(draw, max_bins: int = 5, max_grid: int = 4, max_libs: int = 2, max_classes: int = 2):
    """A chain problem: shapes and structure drawn by hypothesis, values from a seeded rng."""
    n = draw(st.integers(1, max_bins))
    n_grid = draw(st.integers(2, max_grid))
    n_class = draw(st.integers(1, max_classes))
    n_lib = draw(st.integers(1, max_libs))
    # Libraries split into groups: each group is one chain per run, with joint evidence.
    labels = draw(st.lists(st.integers(0, n_lib - 1), min_size=n_lib, max_size=n_lib))
    groups = tuple(tuple(j for j in range(n_lib) if labels[j] == g) for g in sorted(set(labels)))
    cuts = draw(st.sets(st.integers(1, n - 1), max_size=n)) if n > 1 else set()
    starts = (0, *sorted(cuts))
    eps = draw(st.sampled_from([0.0, 0.0, 1e-3, 0.05]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    grid = np.cumsum(rng.uniform(0.2, 1.5, n_grid)) + rng.uniform(-3.0, 0.0)
    y = rng.poisson(rng.gamma(1.0, 3.0, (n, n_lib))).astype(np.float64)
    if draw(st.booleans()):  # a PCR jackpot in one library
        y[rng.integers(n), rng.integers(n_lib)] += rng.integers(20, 200)
    w = rng.choice([0.0, 0.3, 1.0, 1.0, 1.0], n)
    stay = rng.uniform(0.05, 0.99, n_class)
    leaf = {
        "log_mu": rng.normal(0.5, 0.8, (n, n_lib)),
        "log_r": rng.normal(1.0, 1.0, (n, n_lib)),
        "gain": rng.uniform(0.3, 1.5, n_lib),
        "log_stay": np.log(stay),
        "log_leave": np.log1p(-stay),
        "log_pi": np.log(rng.dirichlet(np.ones(n_class * n_grid))).reshape(n_class, n_grid),
        "log_rho": np.log(rng.dirichlet(np.ones(n_class * n_grid))).reshape(n_class, n_grid),
    }
    leaf = {k: torch.tensor(v, dtype=torch.float64, requires_grad=True) for k, v in leaf.items()}
    return {
        "y": torch.tensor(y),
        "w": torch.tensor(w),
        "grid": torch.tensor(grid),
        "groups": groups,
        "starts": starts,
        "eps": eps,
        "leaf": leaf,
    }


def _inputs(p, leaf=None) -> ChainInputs:
    leaf = p["leaf"] if leaf is None else leaf
    return ChainInputs(
        p["y"], leaf["log_mu"], leaf["log_r"], p["w"], leaf["gain"], p["groups"], p["starts"]
    )


def _grad(value, leaves) -> list[np.ndarray]:
    """Gradient with respect to each leaf (zeros where it does not enter, e.g. the transition
    of a one-bin chain)."""
    grads = torch.autograd.grad(value, leaves, allow_unused=True)
    return [
        np.zeros(x.shape) if g is None else g.numpy() for g, x in zip(grads, leaves, strict=True)
    ]


def _transition(leaf) -> dict:
    return {k: leaf[k] for k in ("log_stay", "log_leave", "log_pi", "log_rho")}


def _log_count(y, log_mean, log_r, eps):
    """log[(1 − ε)·NB(y | mean, r) + ε/((y+1)(y+2))], written out from the NB pmf."""
    r, mean = log_r.exp(), log_mean.exp()
    lp = (
        torch.lgamma(y + r) - torch.lgamma(r) - torch.lgamma(y + 1)
        + r * (log_r - torch.log(r + mean)) + y * (log_mean - torch.log(r + mean))
    )  # fmt: skip
    if eps == 0:
        return lp
    return torch.logaddexp(np.log1p(-eps) + lp, np.log(eps) - torch.log((y + 1) * (y + 2)))


def _brute_force(p):
    """Enumerate every path of every (run, group) chain.

    Returns the log marginal likelihood ratio (a differentiable scalar) and each bin's
    posterior over the grid, ``(bins, groups, grid)``.
    """
    leaf, y, w, grid, eps = p["leaf"], p["y"], p["w"], p["grid"], p["eps"]
    n = y.shape[0]
    n_class, n_grid = leaf["log_pi"].shape
    n_state = n_class * n_grid
    klass = torch.arange(n_state) // n_grid
    same = torch.eye(n_state, dtype=torch.bool)
    # log T[s, t] = log(leave_k(s) · pi[t] + stay_k(s) · [s == t])
    log_t = torch.logaddexp(
        leaf["log_leave"][klass][:, None] + leaf["log_pi"].reshape(1, -1),
        torch.where(same, leaf["log_stay"][klass][:, None], torch.tensor(-torch.inf)),
    )
    bounds = list(p["starts"]) + [n]
    total = torch.zeros((), dtype=torch.float64)
    marginals = np.zeros((n, len(p["groups"]), n_grid))
    for k, cols in enumerate(p["groups"]):
        c = list(cols)
        log_e = torch.zeros((n, n_grid), dtype=torch.float64)
        for g in range(n_grid):
            shifted = leaf["log_mu"][:, c] + leaf["gain"][c] * grid[g]
            ratio = _log_count(y[:, c], shifted, leaf["log_r"][:, c], eps) - _log_count(
                y[:, c], leaf["log_mu"][:, c], leaf["log_r"][:, c], eps
            )
            log_e[:, g] = w * ratio.sum(1)
        for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
            paths = torch.tensor(list(itertools.product(range(n_state), repeat=hi - lo)))
            point = paths % n_grid
            terms = leaf["log_rho"].reshape(-1)[paths[:, 0]] + log_e[lo, point[:, 0]]
            for i in range(1, hi - lo):
                terms = terms + log_t[paths[:, i - 1], paths[:, i]] + log_e[lo + i, point[:, i]]
            total = total + torch.logsumexp(terms, 0)
            weight = torch.softmax(terms.detach(), 0).numpy()
            for i in range(hi - lo):
                marginals[lo + i, k] = np.bincount(point[:, i].numpy(), weight, n_grid)
    return total, marginals


def _marginals_from_tails(post, grid: np.ndarray) -> np.ndarray:
    """Each bin's posterior over the grid, read back from tail probabilities.

    The summaries spread grid point ``g``'s mass evenly over its cell, so ``P(e > edge_g)``
    is ``1 − cdf[g − 1]`` and, halfway through the last cell, ``1 − (cdf[G−2] + cdf[G−1])/2``:
    every ``cdf[g]``, the last one (the total mass) included.
    """
    n_grid = grid.size
    prob = np.stack(post["prob"], 1).astype(np.float64)  # one (bins, thresholds) per chain
    cdf = 1.0 - prob[..., : n_grid - 1]  # cdf[0 .. G-2]
    last = 2.0 * (1.0 - prob[..., n_grid - 1]) - cdf[..., -1]
    cdf = np.concatenate([cdf, last[..., None]], -1)
    return np.diff(cdf, axis=-1, prepend=0.0)


def _thresholds(grid: np.ndarray, n_chains: int) -> list[np.ndarray]:
    """The same tail thresholds for each chain: every inner cell edge and mid-last-cell."""
    edges = cell_edges(grid)
    return [np.r_[edges[1:-1], (edges[-2] + edges[-1]) / 2]] * n_chains


def _lower_quantile(marg: np.ndarray, grid: np.ndarray, q: float) -> np.ndarray:
    """The ``q`` quantile of the cell-spread posterior, computed directly from the marginals."""
    edges = cell_edges(grid)
    cdf = np.cumsum(marg, -1)
    out = np.empty(marg.shape[:-1])
    for idx in np.ndindex(*marg.shape[:-1]):
        g = int(np.argmax(cdf[idx] >= q - 1e-12))
        below = cdf[idx][g - 1] if g else 0.0
        frac = (q - below) / marg[idx][g] if marg[idx][g] > 0 else 1.0
        out[idx] = edges[g] + frac * (edges[g + 1] - edges[g])
    return out


@FAST
@given(p=problems())
def test_chain_equals_path_enumeration(p):
    """Numba engine (used on CPU): log marginal likelihood, its gradient and every bin's
    posterior over the grid equal brute-force enumeration; each posterior sums to 1."""
    exact, marg = _brute_force(p)
    leaves = [p["leaf"][k] for k in LEAVES]
    g_exact = _grad(exact, leaves)
    value = chain_log_likelihood(_inputs(p), p["grid"], outlier=p["eps"], **_transition(p["leaf"]))
    assert value.item() == pytest.approx(exact.item(), rel=1e-10, abs=1e-9)
    for name, a, b in zip(LEAVES, _grad(value, leaves), g_exact, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-7, atol=1e-8, err_msg=name)

    grid = p["grid"].numpy()
    fixed = {k: v.detach() for k, v in p["leaf"].items()}
    post = chain_posterior(
        _inputs(p, fixed), p["grid"], q=0.1, thresholds=_thresholds(grid, len(p["groups"])), outlier=p["eps"],
        **_transition(fixed),
    )  # fmt: skip
    assert post["log_z"] == pytest.approx(exact.item(), rel=1e-10, abs=1e-9)
    got = _marginals_from_tails(post, grid)
    np.testing.assert_allclose(got.sum(-1), 1.0, atol=1e-6)  # float32 summaries
    np.testing.assert_allclose(got, marg, atol=2e-6)
    mean = (marg * grid).sum(-1)
    np.testing.assert_allclose(post["mean"], mean, atol=2e-6 * (1 + np.abs(grid).max()))
    sd = np.sqrt((marg * (grid - mean[..., None]) ** 2).sum(-1))
    np.testing.assert_allclose(post["sd"], sd, atol=1e-5 * (1 + np.abs(grid).max()))
    # Quantile: where the posterior has no mass near q the inverse CDF jumps; compare where
    # it is well defined.
    lower = _lower_quantile(marg, grid, 0.1)
    cdf = np.cumsum(marg, -1)
    clear = (np.abs(cdf - 0.1) > 1e-4).all(-1)
    np.testing.assert_allclose(post["lower"][clear], lower[clear], atol=1e-4)


@FAST
@given(p=problems(max_bins=30, max_grid=9, max_libs=4, max_classes=3), n_draws=st.integers(0, 3))
def test_numba_and_torch_engines_agree(p, n_draws):
    """The CPU (numba) and GPU (torch) recursions give the same log marginal likelihood,
    gradient, posterior summaries and draws (here on CPU tensors, float64)."""
    leaves = [p["leaf"][k] for k in LEAVES]
    kw = {"outlier": p["eps"], **_transition(p["leaf"])}
    from_numba = chain_log_likelihood(_inputs(p), p["grid"], **kw)
    from_torch, _ = chain._torch_pass(_inputs(p), p["grid"], **kw)
    assert from_torch.item() == pytest.approx(from_numba.item(), rel=1e-10, abs=1e-9)
    g_numba = _grad(from_numba, leaves)
    g_torch = _grad(from_torch, leaves)
    for name, a, b in zip(LEAVES, g_torch, g_numba, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-7, atol=1e-8, err_msg=name)

    fixed = {k: v.detach() for k, v in p["leaf"].items()}
    tr = _transition(fixed)
    n = p["y"].shape[0]
    post = {
        "q": 0.1,
        "thresholds": _thresholds(p["grid"].numpy(), len(p["groups"])),
        "uniforms": np.random.default_rng(n).random((n_draws, n)),
    }
    _, a = chain._torch_pass(_inputs(p, fixed), p["grid"], outlier=p["eps"], post=post, **tr)
    _, _, b = chain._run_numba(
        _inputs(p, fixed), p["grid"], tr["log_stay"].exp(), tr["log_pi"].exp(),
        tr["log_rho"].exp(), p["eps"], False, post,
    )  # fmt: skip
    for key in ("mean", "sd", "prob"):
        np.testing.assert_allclose(  # numba: float32
            np.asarray(a[key]), np.asarray(b[key]), atol=1e-5, err_msg=key
        )
    np.testing.assert_allclose(_marginals_from_tails(a, p["grid"].numpy()).sum(-1), 1.0, atol=1e-9)
    # Quantiles and draws invert the CDF: equal wherever it is not flat at the level asked.
    for key, levels in (("lower", np.full((1, n), 0.1)), ("draws", post["uniforms"])):
        marg = _marginals_from_tails(a, p["grid"].numpy())
        cdf = np.cumsum(marg, -1)  # (bins, groups, grid)
        for s in range(levels.shape[0]):
            got_a = a[key] if key == "lower" else a[key][s]
            got_b = b[key] if key == "lower" else b[key][s]
            clear = (np.abs(cdf - levels[s][:, None, None]) > 1e-4).all(-1)
            np.testing.assert_allclose(got_a[clear], got_b[clear], atol=1e-4, err_msg=key)
