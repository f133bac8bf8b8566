"""A long chain in pieces (forward messages carried in, backward messages from a backward
sweep) gives the whole-chain posterior, on both engines."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import chipvi.module._chain as chain
from chipvi.module import ChainInputs, chain_backward

GROUPS = ((0, 1), (0,), (1,), (2,))
THRESHOLDS = [np.array([0.5, 1.0]), np.array([0.3]), np.array([0.5]), np.array([0.5, -1.0])]


def _problem(n=500, seed=2):
    rng = np.random.default_rng(seed)
    y = rng.poisson(1.0, (n, 3)).astype(np.float64)
    y[60:140, :2] += rng.poisson(4.0, (80, 2))
    y[300:330, 0] += rng.poisson(6.0, 30)
    y[410:470, 2] += rng.poisson(3.0, 60)
    lmu = torch.tensor(rng.normal(0, 0.2, (n, 3)))
    lr = torch.tensor(rng.normal(1, 0.2, (n, 3)))
    w = torch.tensor(np.where(rng.random(n) < 0.05, 0.0, 1.0))
    gain = torch.tensor([1.2, 0.8, 1.0], dtype=torch.float64)
    pi = torch.full((2, 13), -np.log(26.0), dtype=torch.float64)
    tr = {
        "grid": torch.linspace(-2, 4, 13, dtype=torch.float64),
        "log_stay": torch.log(torch.tensor([0.7, 0.97], dtype=torch.float64)),
        "log_leave": torch.log(torch.tensor([0.3, 0.03], dtype=torch.float64)),
        "log_pi": pi,
        "log_rho": pi,
    }
    return torch.tensor(y), lmu, lr, w, gain, tr


def _post(uniforms, a, b):
    return {"q": 0.05, "thresholds": THRESHOLDS, "uniforms": np.ascontiguousarray(uniforms[:, a:b])}


def _pass(engine, inputs, tr, post, alpha_in=None, beta_in=None):
    """Summaries and log_z of one call of either engine (the same uniforms for draws)."""
    if engine == "numba":
        log_z, _, out = chain._run_numba(
            inputs, tr["grid"], tr["log_stay"].exp(), tr["log_pi"].exp(), tr["log_rho"].exp(),
            1e-3, False, post, 2, alpha_in, beta_in,
        )  # fmt: skip
    else:
        log_z, out = chain._torch_pass(inputs, outlier=1e-3, post=post, alpha_in=alpha_in,
                                       beta_in=beta_in, **tr)  # fmt: skip
    return float(log_z), out


def _in_pieces(engine, data, starts, bounds, uniforms):
    """The posterior of runs ``starts`` computed in the pieces ``bounds`` (cut anywhere):
    backward sweep over pieces that continue a chain, then pieces in order."""
    y, lmu, lr, w, gain, tr = data
    n = len(y)

    def sub(a, b, runs):
        return ChainInputs(y[a:b], lmu[a:b], lr[a:b], w[a:b], gain, GROUPS, tuple(runs))

    pieces = list(zip(bounds[:-1], bounds[1:], strict=True))
    betas = {}  # beta_in of the piece ending at the key
    for a, b in reversed(pieces):
        if a in starts:
            continue
        end = min([s for s in starts if s > a] + [n, b])
        beta_in = betas.get(b) if end == b else None
        inputs = sub(a, end, (0,))
        if engine == "numba":
            betas[a] = chain_backward(inputs, outlier=1e-3, beta_in=beta_in, n_threads=2, **tr)
        else:
            betas[a] = chain._torch_backward(inputs, tr["grid"], tr["log_stay"], tr["log_leave"],
                                             tr["log_pi"], 1e-3, beta_in)  # fmt: skip
    outs, log_z, alpha = [], 0.0, None
    for a, b in pieces:
        runs = sorted({0} | {s - a for s in starts if a < s < b})
        lz, out = _pass(
            engine, sub(a, b, runs), tr, _post(uniforms, a, b),
            alpha if a not in starts else None, betas.get(b) if b < n else None,
        )  # fmt: skip
        log_z += lz
        outs.append(out)
        alpha = out["alpha_out"]
    return log_z, outs


@pytest.mark.parametrize("engine", ["numba", "torch"])
@pytest.mark.parametrize(
    "bounds",
    [
        (0, 37, 200, 201, 380, 500),  # pieces of 1 bin and pieces across a run start (200)
        (0, 64, 128, 192, 256, 320, 384, 448, 500),
        (0, 250, 500),
    ],
)
def test_pieces_equal_the_whole_chain(engine, bounds, monkeypatch):
    data = _problem()
    y, lmu, lr, w, gain, tr = data
    starts = (0, 200)
    uniforms = np.random.default_rng(0).random((2, len(y)))
    inputs = ChainInputs(y, lmu, lr, w, gain, GROUPS, starts)
    whole_z, whole = _pass(engine, inputs, tr, _post(uniforms, 0, len(y)))
    monkeypatch.setattr(chain, "BLOCK", 16)  # checkpointed blocks inside pieces too
    log_z, outs = _in_pieces(engine, data, starts, list(bounds), uniforms)
    assert log_z == pytest.approx(whole_z, abs=1e-8)
    tol = 2e-6 if engine == "numba" else 1e-9  # numba: float32 summaries and kept emissions
    for key in ("mean", "sd", "lower"):
        got = np.concatenate([o[key] for o in outs])
        np.testing.assert_allclose(got, whole[key], atol=tol, err_msg=key)
    got = np.concatenate([o["draws"] for o in outs], axis=1)
    np.testing.assert_allclose(got, whole["draws"], atol=tol)
    for k in range(len(GROUPS)):
        got = np.concatenate([o["prob"][k] for o in outs])
        np.testing.assert_allclose(got, whole["prob"][k], atol=tol)
    # The enriched stretches are found (a real posterior, not an empty one).
    assert whole["mean"][60:140, 0].mean() > 1.0 > 0.3 > np.median(whole["mean"][150:290, 0])
    assert whole["mean"][300:330, 1].mean() > 1.0 > whole["mean"][300:330, 2].mean()


def test_backward_messages_agree_between_engines():
    y, lmu, lr, w, gain, tr = _problem()
    inputs = ChainInputs(y[:150], lmu[:150], lr[:150], w[:150], gain, GROUPS, (0,))
    beta_in = np.random.default_rng(1).random((len(GROUPS), 2, 13)) + 0.1
    beta_in /= beta_in.sum((1, 2), keepdims=True)
    a = chain_backward(inputs, outlier=1e-3, beta_in=beta_in, **tr)
    b = chain._torch_backward(inputs, tr["grid"], tr["log_stay"], tr["log_leave"],
                              tr["log_pi"], 1e-3, beta_in)  # fmt: skip
    np.testing.assert_allclose(a, b, rtol=1e-10)
    np.testing.assert_allclose(a.sum((1, 2)), 1.0)
    assert np.ptp(a[0]) > 1e-3  # the counts moved the message away from flat
    with pytest.raises(ValueError, match="one run"):
        chain_backward(ChainInputs(y, lmu, lr, w, gain, GROUPS, (0, 50)), **tr)
    with pytest.raises(ValueError, match="alpha_in needs shape"):
        chain._run_numba(inputs, tr["grid"], tr["log_stay"].exp(), tr["log_pi"].exp(),
                         tr["log_rho"].exp(), 0.0, False, None, alpha_in=beta_in)  # fmt: skip
