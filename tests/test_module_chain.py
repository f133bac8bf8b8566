"""The enrichment chain: exact against path enumeration, engines agree, blocks change nothing."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

import chipvi.module._chain as chain
from chipvi.module import ChainInputs, chain_log_likelihood, chain_posterior

N, J, K, G = 5, 2, 2, 3
GRID = torch.tensor([-0.5, 0.0, 1.5], dtype=torch.float64)


def _problem(seed: int, jackpot: bool):
    rng = np.random.default_rng(seed)
    y = torch.tensor(rng.poisson(3, (N, J)), dtype=torch.float64)
    if jackpot:
        y[2, 1] = 40.0
    leaf = {
        "log_mu": torch.tensor(rng.normal(1, 0.3, (N, J)), requires_grad=True),
        "log_r": torch.tensor(rng.normal(1, 0.3, (N, J)), requires_grad=True),
        "gain": torch.tensor([1.0, 0.7], dtype=torch.float64, requires_grad=True),
        "stay_logit": torch.tensor([0.5, 2.0], dtype=torch.float64, requires_grad=True),
        "prior": torch.tensor(rng.normal(0, 1, (K, G)), requires_grad=True),
    }
    w = torch.tensor([1.0, 1.0, 0.3, 1.0, 0.0], dtype=torch.float64)
    return y, w, leaf


def _transition(leaf):
    ls = torch.nn.functional.logsigmoid(leaf["stay_logit"])
    ll = torch.nn.functional.logsigmoid(-leaf["stay_logit"])
    lp = torch.log_softmax(leaf["prior"].flatten(), 0).reshape(K, G)
    lrho = lp - ll[:, None]
    lrho = lrho - torch.logsumexp(lrho.flatten(), 0)
    return {"grid": GRID, "log_stay": ls, "log_leave": ll, "log_pi": lp, "log_rho": lrho}


def _brute_force(y, w, leaf, eps):
    """Sum over all (classes × grid)^N paths: log marginal ratio and posterior means."""
    tr = _transition(leaf)
    lmu, lr, gain = leaf["log_mu"], leaf["log_r"], leaf["gain"]

    def log_p(i, j, mean):
        r = lr[i, j].exp()
        yy = y[i, j]
        lp = (
            torch.lgamma(yy + r) - torch.lgamma(r) - torch.lgamma(yy + 1)
            + yy * torch.log(mean) - (yy + r) * torch.log(r + mean) + r * torch.log(r)
        )  # fmt: skip
        if eps == 0:
            return lp
        lq = np.log(eps) - torch.log((yy + 1) * (yy + 2))
        return torch.logaddexp(np.log1p(-eps) + lp, lq)

    def emission(i, g):
        total = 0.0
        for j in range(J):
            mu = lmu[i, j].exp()
            total = total + w[i] * (
                log_p(i, j, mu * torch.exp(gain[j] * GRID[g])) - log_p(i, j, mu)
            )
        return total

    states = [(k, g) for k in range(K) for g in range(G)]
    log_e = torch.stack([torch.stack([emission(i, g) for g in range(G)]) for i in range(N)])
    log_t = torch.stack(
        [
            torch.stack(
                [
                    torch.log(
                        (tr["log_leave"][s[0]] + tr["log_pi"][t]).exp()
                        + (tr["log_stay"][s[0]].exp() if s == t else 0.0)
                    )
                    for t in states
                ]
            )
            for s in states
        ]
    )
    paths = torch.tensor(list(itertools.product(range(len(states)), repeat=N)))
    klass, point = paths // G, paths % G
    terms = tr["log_rho"][klass[:, 0], point[:, 0]]
    for i in range(N):
        terms = terms + log_e[i, point[:, i]]
        if i:
            terms = terms + log_t[paths[:, i - 1], paths[:, i]]
    weights = torch.softmax(terms, 0).detach()
    mean = (weights[:, None] * GRID[point]).sum(0).numpy()
    return torch.logsumexp(terms, 0), mean


def _inputs(y, w, leaf, **kw):
    return ChainInputs(y, leaf["log_mu"], leaf["log_r"], w, leaf["gain"], ((0, 1),), (0,), **kw)


@pytest.mark.parametrize("eps", [0.0, 0.01])
def test_chain_is_exact_against_path_enumeration(eps):
    y, w, leaf = _problem(0, jackpot=eps > 0)
    exact, mean = _brute_force(y, w, leaf, eps)
    params = list(leaf.values())
    g_exact = torch.autograd.grad(exact, params)
    value = chain_log_likelihood(_inputs(y, w, leaf), outlier=eps, **_transition(leaf))
    assert value.item() == pytest.approx(exact.item(), abs=1e-10)
    for a, b in zip(torch.autograd.grad(value, params), g_exact, strict=True):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-9)
    detached = {k: v.detach() for k, v in _transition(leaf).items()}
    post = chain_posterior(_inputs(y, w, leaf), q=0.05, thresholds=[[0.5]], outlier=eps, **detached)
    np.testing.assert_allclose(post["mean"][:, 0], mean, atol=1e-10)
    assert post["log_z"] == pytest.approx(exact.item(), abs=1e-10)


def test_torch_engine_agrees_with_numba():
    y, w, leaf = _problem(1, jackpot=True)
    params = list(leaf.values())
    tr = _transition(leaf)
    numba_value = chain_log_likelihood(_inputs(y, w, leaf), outlier=1e-3, **tr)
    g_numba = torch.autograd.grad(numba_value, params)
    torch_value, _ = chain._torch_pass(_inputs(y, w, leaf), outlier=1e-3, **_transition(leaf))
    g_torch = torch.autograd.grad(torch_value, params)
    assert torch_value.item() == pytest.approx(numba_value.item(), abs=1e-10)
    for a, b in zip(g_torch, g_numba, strict=True):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-9)
    # Posterior summaries, tail probabilities and draws (same uniforms) agree too.
    detached = {k: v.detach() for k, v in tr.items()}
    fixed = {k: (v.detach() if torch.is_tensor(v) else v) for k, v in leaf.items()}
    inputs = _inputs(y, w, fixed)
    post = {
        "q": 0.05,
        "thresholds": [np.array([0.2, 0.5])],
        "uniforms": np.random.default_rng(0).random((4, N)),
    }
    _, from_torch = chain._torch_pass(inputs, outlier=1e-3, post=post, **detached)
    _, _, from_numba = chain._run_numba(
        inputs, GRID, detached["log_stay"].exp(), detached["log_pi"].exp(),
        detached["log_rho"].exp(), 1e-3, False, post,
    )  # fmt: skip
    for key in ("mean", "sd", "lower", "draws"):
        np.testing.assert_allclose(from_torch[key], from_numba[key], atol=1e-10, err_msg=key)
    np.testing.assert_allclose(from_torch["prob"][0], from_numba["prob"][0], atol=1e-10)
    assert from_numba["prob"][0].shape == (N, 2)


def _flat_transition():
    """Two stay classes (0.7, 0.97), 13 grid points on [-2, 4], flat redraw and first-bin law."""
    pi = torch.full((2, 13), -np.log(26.0), dtype=torch.float64)
    return {
        "grid": torch.linspace(-2, 4, 13, dtype=torch.float64),
        "log_stay": torch.log(torch.tensor([0.7, 0.97], dtype=torch.float64)),
        "log_leave": torch.log(torch.tensor([0.3, 0.03], dtype=torch.float64)),
        "log_pi": pi,
        "log_rho": pi,
    }


def test_blocks_and_threads_change_nothing(monkeypatch):
    """Checkpointed blocks (forward messages recomputed from kept or recomputed emissions) and
    threads give the same result."""
    rng = np.random.default_rng(3)
    n = 700
    y = torch.tensor(rng.poisson(1.0, (n, 3)), dtype=torch.float64)
    y[100:160] += torch.tensor(rng.poisson(4.0, (60, 3)), dtype=torch.float64)
    lmu = torch.zeros((n, 3), dtype=torch.float64, requires_grad=True)
    lr = torch.ones((n, 3), dtype=torch.float64, requires_grad=True)
    gain = torch.ones(3, dtype=torch.float64, requires_grad=True)
    tr = _flat_transition()
    inputs = ChainInputs(
        y, lmu, lr, torch.ones(n, dtype=torch.float64), gain, ((0, 1), (2,)), (0, 350)
    )

    def run(n_threads):
        value = chain_log_likelihood(inputs, outlier=1e-3, n_threads=n_threads, **tr)
        grads = torch.autograd.grad(value, [lmu, lr, gain])
        post = chain_posterior(
            inputs, q=0.05, thresholds=[[0.5], [0.5, 4.5, -3.0]], outlier=1e-3, n_draws=2, seed=0,
            n_threads=n_threads, **tr,
        )  # fmt: skip
        return value.item(), grads, post

    base = run(1)
    monkeypatch.setattr(chain, "BLOCK", 64)
    monkeypatch.setattr(chain, "TRAIN_BLOCK", 50)
    others = [run(1), run(2)]  # blocks recomputed from kept emissions
    monkeypatch.setattr(chain, "EMISSION_CACHE_BYTES", 0)
    others.append(run(2))  # blocks recomputed from the counts
    for other in others:
        assert other[0] == pytest.approx(base[0], abs=1e-9)
        for a, b in zip(other[1], base[1], strict=True):
            np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-9)
        for key in ("mean", "sd", "lower", "draws"):
            # summaries are float32 (and kept emissions too): equal to float32 resolution
            np.testing.assert_allclose(other[2][key], base[2][key], atol=2e-6, err_msg=key)
        for a, b in zip(other[2]["prob"], base[2]["prob"], strict=True):
            np.testing.assert_allclose(a, b, atol=2e-6)
    # The enriched stretch is found, by each group.
    assert base[2]["mean"][100:160].mean(0).min() > 1.0
    assert np.median(base[2]["mean"][400:], axis=0).max() < 0.3
    # Thresholds past the grid's last cell edge (4.25) and below its first (-2.25).
    prob = base[2]["prob"][1]
    assert prob.shape == (n, 3)
    assert (prob[:, 1] == 0).all() and (prob[:, 2] == 1).all()
    assert prob[100:160, 0].mean() > 0.9 > 0.1 > np.median(prob[400:, 0])


def test_shared_emissions_change_nothing(monkeypatch):
    """A group's chain and its libraries' own chains in one posterior call: the own chains
    read the group's per-library emissions (kept as float32) and agree with own chains run
    alone; without room to keep them (no sharing) the same again."""
    rng = np.random.default_rng(5)
    n = 400
    y = torch.tensor(rng.poisson(1.0, (n, 2)), dtype=torch.float64)
    y[50:120, 0] += torch.tensor(rng.poisson(5.0, 70), dtype=torch.float64)
    y[200:260] += torch.tensor(rng.poisson(3.0, (60, 2)), dtype=torch.float64)
    lmu = torch.tensor(rng.normal(0, 0.2, (n, 2)))
    lr = torch.tensor(rng.normal(1, 0.2, (n, 2)))
    w = torch.tensor(rng.uniform(0, 1, n) > 0.05, dtype=torch.float64)
    gain = torch.tensor([1.2, 0.8], dtype=torch.float64)
    tr = _flat_transition()

    def run(groups):
        inputs = ChainInputs(y, lmu, lr, w, gain, groups, (0, 150))
        return chain_posterior(
            inputs, q=0.05, thresholds=[[0.5, 1.0]] * len(groups), outlier=1e-3, n_draws=2,
            seed=0, **tr,
        )  # fmt: skip

    assert [job[2] for job in chain._jobs(_inputs_of(((0, 1), (0,), (1,))), True, 13)] == [
        ((0, 1), (0,), (1,))
    ] * 2
    both, alone = run(((0, 1), (0,), (1,))), run(((0,), (1,)))
    monkeypatch.setattr(chain, "EMISSION_CACHE_BYTES", 250 * 13 * 4)  # one chain, not three
    assert len(chain._jobs(_inputs_of(((0, 1), (0,), (1,))), True, 13)) == 6
    unshared = run(((0, 1), (0,), (1,)))
    for key in ("mean", "sd", "lower", "draws"):
        np.testing.assert_allclose(both[key][..., 1:], alone[key], atol=2e-6, err_msg=key)
        np.testing.assert_allclose(unshared[key], both[key], atol=2e-6, err_msg=key)
    for k in (1, 2):
        np.testing.assert_allclose(both["prob"][k], alone["prob"][k - 1], atol=2e-6)
    assert both["log_z"] == pytest.approx(unshared["log_z"], rel=1e-6)
    # Each library's own evidence finds its own enriched stretch.
    assert both["mean"][50:120, 1].mean() > 1.0 > 0.3 > both["mean"][50:120, 2].mean()


def _inputs_of(groups, n=400):
    z = torch.zeros((n, 2))
    return ChainInputs(z, z, z, z[:, 0], torch.ones(2), groups, (0, 150))


def test_vector_maths_match_libm():
    """The vectorised exp/log of the emission are within 1 ulp of numpy's; the finite sums
    for small counts equal lgamma / digamma differences."""
    import math

    from scipy.special import digamma

    import chipvi.module._chain_numba as kernel

    rng = np.random.default_rng(0)
    x = np.r_[rng.uniform(-700, 700, 5000), rng.uniform(-1, 1, 5000), 0.0, -1e-300]
    out, k = np.empty_like(x), np.empty(x.size, np.int64)
    kernel._vexp(x, out, k)
    assert np.max(np.abs(out - np.exp(x)) / np.spacing(np.exp(x))) <= 1.0
    pos = np.r_[np.exp(rng.uniform(-700, 700, 5000)), 1 + rng.uniform(0, 1, 5000), 1.0, 2.0]
    out = np.empty_like(pos)
    kernel._vlog(pos, out, np.empty(pos.size, np.int64), np.empty_like(pos))
    ref = np.log(pos)
    assert np.max(np.abs(out - ref) / np.spacing(np.maximum(np.abs(ref), 1e-300))) <= 1.0
    for yy in (0.0, 1.0, 3.0, 15.0, 16.0, 2.5, 300.0):
        for r in (1e-3, 0.7, 5.0, 2e4):
            lgam = math.lgamma(yy + r) - math.lgamma(r) - math.lgamma(yy + 1.0)
            assert kernel._log_comb(yy, r) == pytest.approx(lgam, rel=1e-12, abs=1e-9)
            psi = digamma(yy + r) - digamma(r)
            assert kernel._digamma_diff(yy, r) == pytest.approx(psi, rel=1e-9, abs=1e-12)
