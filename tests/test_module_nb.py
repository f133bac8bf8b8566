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
    list_consistency,
    list_covariate_sets,
    list_technical,
    mse_consistency,
    nb_log_prob,
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
    log_gain = torch.tensor([0.0, 0.0, 0.3, -0.3, 1.0])
    groups = ((0, 1), (2, 3), (4,))
    # Equal gains are fully consistent; pairs within a group only; one-library groups add 0.
    assert float(mse_consistency(log_gain, ((0, 1), (4,)))) == 0.0
    assert float(mse_consistency(log_gain, groups)) == pytest.approx(-0.36)


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
    assert set(list_technical()) == {"control_slope", "mu_r", "r_p"}
    assert set(list_consistency()) == {"mse"}
    assert "default" in list_covariate_sets()
