"""NB log-likelihood, consistency terms, covariates and registries of chipvi.module."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

from chipvi.module import (
    ALL_COVARIATES,
    CovariateBuilder,
    NegativeBinomialMeanDisp,
    WeightedNegativeBinomial,
    list_consistency,
    list_covariate_sets,
    list_technical,
    mse_consistency,
    nb_log_prob,
    nb_weighted_log_prob,
    pearson_consistency,
)


@pytest.mark.parametrize(
    ("y", "mu", "r"),
    [
        (0, 0.01, 0.001),
        (0, 5.0, 10.0),
        (3, 2.5, 0.5),
        (50, 0.1, 1e-4),  # tiny dispersion, count far from the mean
        (10_000, 9_000.0, 20.0),
        (250_000, 1.0, 5.0),  # huge count
        (7, 7.0, 1e6),  # near-Poisson
    ],
)
def test_nb_log_prob_matches_scipy(y, mu, r):
    ours = nb_log_prob(
        torch.tensor(float(y), dtype=torch.float64),
        torch.tensor(np.log(mu), dtype=torch.float64),
        torch.tensor(np.log(r), dtype=torch.float64),
    ).item()
    ref = stats.nbinom.logpmf(y, r, r / (r + mu))
    assert np.isfinite(ours)
    assert ours == pytest.approx(ref, rel=1e-7, abs=1e-7)


def test_nb_log_prob_float32_is_finite_and_close():
    y = torch.tensor([0.0, 1.0, 40.0, 1e5])
    log_mu = torch.tensor([-3.0, 0.0, 2.0, 11.0])
    log_r = torch.tensor([-6.0, 1.0, 10.0, 0.0])
    ours = nb_log_prob(y, log_mu, log_r).numpy()
    r, mu = np.exp(log_r.double().numpy()), np.exp(log_mu.double().numpy())
    ref = stats.nbinom.logpmf(y.numpy(), r, r / (r + mu))
    assert np.all(np.isfinite(ours))
    np.testing.assert_allclose(ours, ref, rtol=2e-4, atol=2e-3)


def test_nb_distribution_moments_and_support():
    torch.manual_seed(0)
    d = NegativeBinomialMeanDisp(torch.tensor(np.log(6.0)), torch.tensor(np.log(2.0)))
    draws = d.sample((40_000,))
    assert float(draws.mean()) == pytest.approx(6.0, rel=0.03)
    assert float(draws.var()) == pytest.approx(6.0 + 36.0 / 2.0, rel=0.06)
    assert torch.all(draws == draws.round()) and torch.all(draws >= 0)
    assert float(d.log_prob(torch.tensor(3.0))) == pytest.approx(
        stats.nbinom.logpmf(3, 2.0, 2.0 / 8.0), rel=1e-5
    )


def test_consistency_terms():
    a = torch.linspace(0, 2, 50)
    same = torch.stack([a, a], 1)
    noisy = torch.stack([a, a + torch.sin(7 * a)], 1)
    groups = [torch.tensor([0, 1])]
    assert torch.allclose(mse_consistency(same, groups), torch.zeros(50))
    assert float(mse_consistency(noisy, groups).sum()) < 0
    assert float(pearson_consistency(same, groups)[0]) == pytest.approx(1.0, abs=1e-5)
    corr = np.corrcoef(noisy[:, 0], noisy[:, 1])[0, 1]
    assert float(pearson_consistency(noisy, groups)[0]) == pytest.approx(corr, abs=1e-4)


def test_covariates_window_and_standardisation():
    builder = CovariateBuilder(
        depth=torch.tensor([200.0, 100.0]),
        control_depth=torch.tensor([100.0, 0.0]),
        typical_mapq=torch.tensor([40.0, 40.0]),
        typical_control_mapq=torch.tensor([40.0, 40.0]),
    )
    n = 60
    control = torch.zeros(n, 2)
    control[30, 0] = 10.0
    counts = torch.ones(n, 2)
    mapq = torch.full((n, 2), 40.0)
    raw = builder.raw(counts, control, mapq, torch.full((n, 2), 30.0))
    col = {name: i for i, name in enumerate(ALL_COVARIATES)}
    # Control is scaled by the depth ratio (2) and the 1 kb window averages 5 bins.
    assert float(raw[30, 0, col["log_control"]]) == pytest.approx(np.log1p(20.0), rel=1e-6)
    assert float(raw[29, 0, col["log_control_1kb"]]) == pytest.approx(np.log1p(4.0), rel=1e-6)
    # A library without control gets zero control covariates and has_control = 0.
    assert float(raw[:, 1, col["log_control"]].abs().sum()) == 0.0
    assert float(raw[0, 1, col["has_control"]]) == 0.0
    builder.set_statistics(raw)
    z = builder(counts, control, mapq, torch.full((n, 2), 30.0))
    flat = z.reshape(-1, z.shape[-1])
    varying = flat.std(0) > 1e-6
    np.testing.assert_allclose(flat.mean(0)[varying].numpy(), 0.0, atol=1e-5)


def test_registries():
    assert set(list_technical()) == {"mu_r", "r_p"}
    assert set(list_consistency()) == {"mse", "pearson"}
    assert "default" in list_covariate_sets()


def test_weighted_nb_is_the_weighted_sum_of_two_nb_log_likelihoods():
    gen = torch.Generator().manual_seed(0)
    y = torch.poisson(torch.full((50, 2), 8.0), generator=gen)
    log_mu = torch.randn(50, 2, generator=gen) + 2
    log_mu_tech = torch.randn(50, 2, generator=gen) + 2
    log_r = torch.randn(50, 2, generator=gen)
    w = torch.rand(50, 1, generator=gen)
    expected = w * nb_log_prob(y, log_mu, log_r) + (1 - w) * nb_log_prob(y, log_mu_tech, log_r)
    got = nb_weighted_log_prob(y, log_mu, log_mu_tech, log_r, w)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    d = WeightedNegativeBinomial(log_mu, log_mu_tech, log_r, w)
    torch.testing.assert_close(d.log_prob(y), expected, rtol=1e-5, atol=1e-5)
    assert d.expand((3, 50, 2)).log_prob(y).shape == (3, 50, 2)
    # Weight 1 is the plain NB of the first mean.
    torch.testing.assert_close(
        nb_weighted_log_prob(y, log_mu, log_mu_tech, log_r, torch.ones(50, 1)),
        nb_log_prob(y, log_mu, log_r),
    )


def test_library_deviation_ar1_prior_is_the_ar1_density():
    """With library_smoothness, the deviations' prior (site + factor) is the AR(1) density."""
    import pyro
    from pyro import poutine

    from chipvi.module import ChipviModule

    n_bins, n_obs, tau, phi = 6, 60, 0.3, 0.8
    ones = torch.ones(2)
    module = ChipviModule(
        n_obs=n_obs, group_index=torch.tensor([0, 0]), depth=ones * 1e5,
        control_depth=ones * 1e5, typical_mapq=ones * 30, typical_control_mapq=ones * 30,
        log_mean=torch.zeros(2), library_scale=tau, library_smoothness=phi, consistency=(),
        consistency_weight=(),
    )  # fmt: skip
    counts = torch.poisson(torch.full((n_bins, 2), 5.0))
    data = (counts, counts.clone(), torch.full_like(counts, 30.0), torch.full_like(counts, 30.0))
    delta = torch.randn(n_bins, 2) * tau
    conditioned = poutine.condition(
        module.model, data={"delta": delta, "z": torch.zeros(n_bins, 1)}
    )
    trace = poutine.trace(conditioned).get_trace(*data)
    trace.compute_log_prob()
    got = trace.nodes["delta"]["log_prob"].sum() + trace.nodes["delta_ar1"]["log_prob"].sum()
    sd = tau * np.sqrt(1 - phi**2)
    d = delta.numpy().astype(float)
    want = stats.norm(0, tau).logpdf(d[0]).sum() + stats.norm(phi * d[:-1], sd).logpdf(d[1:]).sum()
    # The plate scales every per-bin term by n_obs / n_bins.
    assert float(got) == pytest.approx(want * n_obs / n_bins, rel=1e-4)
    pyro.clear_param_store()


def test_own_evidence_posterior_is_exact():
    """stay=0: each bin's grid posterior from its own counts (scipy); stay>0: the exact
    posterior of the piecewise-constant chain, by enumerating every path on a small grid."""
    import itertools

    from chipvi.module._own_evidence import GRID, _forward_backward, own_evidence_posterior

    rng = np.random.default_rng(0)
    n, libs = 6, 2
    counts = rng.poisson(6, (n, libs)).astype(float)
    log_mu = np.log(rng.uniform(2, 8, (n, libs)))
    log_r = np.log(rng.uniform(1, 20, (n, libs)))
    weight = np.array([1, 1, 0.3, 1, 0, 1.0])
    log_prior = stats.norm(0.5, 1.2).logpdf(GRID)

    def log_lik(i, j, grid):
        mean, r = np.exp(log_mu[i, j] + grid), np.exp(log_r[i, j])
        return weight[i] * stats.nbinom(r, r / (r + mean)).logpmf(counts[i, j])

    out = own_evidence_posterior(counts, log_mu, log_r, weight, log_prior, 0.05, stay=0.0)
    for i, j in itertools.product(range(n), range(libs)):
        lp = log_prior + log_lik(i, j, GRID)
        post = np.exp(lp - lp.max())
        post /= post.sum()
        m = (post * GRID).sum()
        assert out["mean"][i, j] == pytest.approx(m, abs=1e-6)
        assert out["sd"][i, j] == pytest.approx(np.sqrt((post * (GRID - m) ** 2).sum()), abs=1e-6)
        assert out["lower"][i, j] == pytest.approx(GRID[(np.cumsum(post) < 0.05).sum()])

    grid, stay, j = np.array([-1.0, 0.0, 0.7, 1.5, 3.0]), 0.6, 1
    prior = np.array([0.1, 0.5, 0.2, 0.15, 0.05])
    paths = np.array(list(itertools.product(range(grid.size), repeat=n)))
    log_p = np.log(prior[paths[:, 0]])
    for i in range(1, n):
        same = paths[:, i] == paths[:, i - 1]
        log_p += np.log(stay * same + (1 - stay) * prior[paths[:, i]])
    for i in range(n):
        log_p += log_lik(i, j, grid)[paths[:, i]]
    p = np.exp(log_p - log_p.max())
    p /= p.sum()
    mean, sd, lower = np.empty(n), np.empty(n), np.empty(n)
    _forward_backward(counts[:, j], log_mu[:, j], log_r[:, j], weight, grid, prior, stay, 0.3,
                      mean, sd, lower)  # fmt: skip
    for i in range(n):
        marginal = np.bincount(paths[:, i], weights=p, minlength=grid.size)
        m = (marginal * grid).sum()
        assert mean[i] == pytest.approx(m, abs=1e-5)
        assert sd[i] == pytest.approx(np.sqrt((marginal * (grid - m) ** 2).sum()), abs=1e-5)
        assert lower[i] == grid[(np.cumsum(marginal) < 0.3).sum()]
