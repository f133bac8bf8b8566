"""The minibatch objective does not depend on batch_size or on the number of threads.

Each training minibatch scores its bins conditioned on the bins before it (``_overlap``) and
sees the full covariate windows around it, so at fixed parameters the sum over one epoch's
minibatches of the objective and of its gradient equals the whole-data objective (one
minibatch holding every bin: the exact chain, broken only at chromosome starts and gaps).

Tolerances (float noise): the objective is summed in float32 (each minibatch's technical term
over rows × libraries, the chain's float64 log-likelihood rounded to float32), so the sums
agree to about 1e-7 of the objective (measured up to 1.1e-7); ``OBJ_TOL`` is 2e-6 of it. The
gradients, accumulated in float32 over the rows, agree to a few 1e-6 of each parameter's
largest gradient entry (measured up to 3.3e-6); ``GRAD_TOL`` is 2e-5. The truncation error
of the overlap itself is far below both (benchmarks/bench_overlap.py). Without the overlap
(each piece started from the stationary law) the sums are off by 2.4e-3 of the objective and
24 % of the gradient (measured): far outside both.
"""

from __future__ import annotations

import numpy as np
import pyro
import pytest
import torch

from _chipvi_synthetic import make_two_chromosome_adata
from chipvi.io import open_store, store_writer
from chipvi.model import ChIPVI
from chipvi.model._dataloader import ContiguousBlockLoader, StoreBlockLoader
from chipvi.model._store_data import StoreSource

OBJ_TOL = 2e-6
GRAD_TOL = 2e-5
#: High enough that a piece started from the stationary law is visibly wrong, as on real data
#: (a broad class near 0.99).
STAY = (0.95, 0.995)


@pytest.fixture(scope="module")
def model():
    torch.set_num_threads(1)
    adata = make_two_chromosome_adata(6000)
    ChIPVI.setup_anndata(adata)
    model = ChIPVI(adata)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        # Away from the initial values (whose last technical layer is zero, so the hidden
        # layers would have no gradient): every parameter has a gradient to compare.
        for p in model.module.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=generator))
        stay = torch.tensor(STAY)
        model.module.stay_logit.copy_(torch.log(stay) - torch.log1p(-stay))
    return model


@pytest.fixture(scope="module")
def whole(model):
    """Objective and gradient with one minibatch holding every bin."""
    return _memory_epoch(model, 10**9, 1)


def _epoch(module, loader) -> tuple[float, dict[str, np.ndarray]]:
    """Objective (the observed site, unscaled) and its gradient, summed over an epoch."""
    total, grads = 0.0, {}
    for batch in loader:
        args, kwargs = module._get_fn_args_from_batch(batch)
        site = pyro.poutine.trace(module.model).get_trace(*args, **kwargs).nodes["y"]
        value = site["fn"].log_prob(site["value"])
        module.zero_grad()
        value.backward()
        total += float(value.detach())
        for name, p in module.named_parameters():
            if p.grad is not None:
                grads[name] = grads.get(name, 0.0) + p.grad.double().numpy()
    return total, grads


def _memory_epoch(model, batch_size, n_threads, overlap=None):
    module = model.module
    module.n_threads = n_threads
    if overlap is not None:
        module.overlap = overlap
    torch.manual_seed(batch_size)
    loader = ContiguousBlockLoader(model.adata_manager, batch_size=batch_size, shuffle=True)
    try:
        return _epoch(module, loader)
    finally:
        module.n_threads, module.overlap = 1, None


def _errors(whole, got) -> tuple[float, float]:
    """Relative error of the objective and the largest relative gradient error (per
    parameter, against its largest entry) of ``got`` against ``whole``."""
    (whole, whole_grads), (total, grads) = whole, got
    assert set(grads) == set(whole_grads)
    grad_err = max(np.abs(grads[k] - g).max() / np.abs(g).max() for k, g in whole_grads.items())
    return abs(total - whole) / abs(whole), grad_err


@pytest.mark.parametrize(("batch_size", "n_threads"), [(500, 1), (900, 2), (1700, 3), (2500, 2)])
def test_epoch_sum_is_the_whole_data_objective(model, whole, batch_size, n_threads):
    obj_err, grad_err = _errors(whole, _memory_epoch(model, batch_size, n_threads))
    assert obj_err < OBJ_TOL, obj_err
    assert grad_err < GRAD_TOL, grad_err


def test_without_overlap_the_sum_is_not_the_whole(model, whole):
    obj_err, grad_err = _errors(whole, _memory_epoch(model, 900, 2, overlap=0))
    assert obj_err > 100 * OBJ_TOL, obj_err
    assert grad_err > 100 * GRAD_TOL, grad_err


def test_store_minibatches_are_the_memory_ones(model, tmp_path):
    """From a bins store the same rows, flags and windows arrive (so the same objective)."""
    adata = model.adata
    path = tmp_path / "bins.zarr"
    with store_writer(path, chunk=256) as writer:
        writer.append(
            adata.obs[["chrom", "start", "end"]], np.asarray(adata.X),
            {k: adata.layers[k] for k in ("control", "mapq", "control_mapq")},
        )  # fmt: skip
        writer.finish(adata.var, {"chipvi": {"bin_size": 200}})
    source = StoreSource(open_store(path))
    torch.manual_seed(1)
    in_memory = list(ContiguousBlockLoader(model.adata_manager, batch_size=900, shuffle=True))
    torch.manual_seed(1)
    from_store = list(StoreBlockLoader(source, batch_size=900, shuffle=True))
    assert len(in_memory) == len(from_store) > 5
    for a, b in zip(in_memory, from_store, strict=True):
        for key in ("X", "control", "mapq", "control_mapq", "run_start", "window"):
            np.testing.assert_array_equal(
                np.asarray(a[key], dtype=float).reshape(-1),
                np.asarray(b[key], dtype=float).reshape(-1),
            )
