"""Training speed: ChIPVI.train (Pyro + scvi-tools + Lightning) vs the same model in plain torch.

Both paths use the same module (technical networks, the exact chain marginal likelihood,
consistency factor), the same runs of consecutive bins as minibatches, the same batch size,
learning rate and objective scale; the plain loop writes the objective out by hand (the
chain's log marginal likelihood plus the consistency factor) and steps one Adam optimiser.
Reported: bins·libraries per second and the overhead ratio, plus the wall time of
``model.train()`` with its defaults on 30 k bins × 2 libraries.

Usage::

    python benchmarks/bench_training.py [--n-bins 30000] [--epochs 10] [--threads 2]
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

warnings.filterwarnings("ignore")
for _name in ("lightning", "lightning.pytorch", "scvi"):
    logging.getLogger(_name).setLevel(logging.ERROR)
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def plain_torch_epochs(model, epochs: int, batch_size: int, lr: float = 2e-2) -> float:
    """Train ``model.module`` for ``epochs`` with a hand-written objective; return seconds."""
    from chipvi.model._chipvi import RUN_START_KEY
    from chipvi.model._dataloader import ContiguousBlockSampler
    from chipvi.module import CONSISTENCY, ChainInputs, ChainMarginal

    module = model.module
    module.train()
    module.n_threads = torch.get_num_threads()
    adata = model.adata
    arrays = [
        torch.as_tensor(np.asarray(a), dtype=torch.float32)
        for a in (
            adata.X,
            adata.layers["control"],
            adata.layers["mapq"],
            adata.layers["control_mapq"],
            adata.obs[[RUN_START_KEY]].to_numpy(),
        )
    ]
    sampler = ContiguousBlockSampler(adata.n_obs, batch_size, shuffle=True)
    opt = torch.optim.Adam(module.parameters(), lr=lr)
    t0 = time.perf_counter()
    for _ in range(epochs):
        for idx in sampler:
            counts, control, mapq, control_mapq, run_start = (
                a[idx[0] : idx[-1] + 1] for a in arrays
            )
            log_mu, log_r = module.technical_parameters(counts, control, mapq, control_mapq)
            weight = module.mappability_weight(counts, control, mapq, control_mapq)
            gain = module.gain()
            starts = module._starts(run_start, counts.shape[0])
            inputs = ChainInputs(counts, log_mu, log_r, weight, gain, module.groups, starts)
            marginal = ChainMarginal(inputs, module.transition(), module.outlier, module.n_threads)
            objective = marginal.log_prob(counts) * module.n_obs / counts.shape[0]
            for name, w in zip(module.consistency_names, module.consistency_weights, strict=True):
                objective = objective + w * CONSISTENCY[name](gain.log(), module.groups)
            loss = -objective / module.n_obs
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(module.parameters(), 10.0)
            opt.step()
    return time.perf_counter() - t0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-bins", type=int, default=30_000)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--skip-defaults",
        action="store_true",
        help="skip timing model.train() with its default epochs",
    )
    parser.add_argument(
        "--write-results",
        action="store_true",
        help="replace the 'Training speed' section of benchmarks/RESULTS.md with this run",
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    import scvi

    from _chipvi_synthetic import make_chip_adata
    from chipvi.model import ChIPVI
    from chipvi.model._chipvi import default_batch_size, default_max_epochs

    scvi.settings.seed = 0
    adata, _ = make_chip_adata(n_bins=args.n_bins, seed=0)
    ChIPVI.setup_anndata(adata)
    n_cells = adata.n_obs * adata.n_vars
    batch = default_batch_size(adata.n_obs)
    rows = []

    model = ChIPVI(adata)
    t0 = time.perf_counter()
    model.train(max_epochs=args.epochs, enable_progress_bar=False, accelerator="cpu")
    t_scvi = time.perf_counter() - t0
    rows.append(("ChIPVI.train (Pyro/scvi-tools/Lightning)", t_scvi))

    plain = ChIPVI(adata)
    t_plain = plain_torch_epochs(plain, args.epochs, batch)
    rows.append(("plain torch loop, same module", t_plain))

    print(
        f"{adata.n_obs} bins x {adata.n_vars} libraries, batch {batch} bins, "
        f"{args.epochs} epochs, {args.threads} threads"
    )
    print(f"{'path':45s} {'seconds':>8s} {'bins*libs/s':>12s}")
    for name, secs in rows:
        print(f"{name:45s} {secs:8.2f} {n_cells * args.epochs / secs:12.0f}")
    print(f"overhead ChIPVI.train / plain torch: {t_scvi / t_plain:.2f}x (target <= 1.3x)")
    table = [(name, secs, n_cells * args.epochs / secs) for name, secs in rows]

    if not args.skip_defaults:
        epochs = default_max_epochs(adata.n_obs, batch)
        model = ChIPVI(adata)
        t0 = time.perf_counter()
        model.train(enable_progress_bar=False)
        secs = time.perf_counter() - t0
        print(
            f"model.train() defaults: {epochs} epochs in {secs:.1f} s "
            f"({n_cells * epochs / secs:.0f} bins*libs/s; target < 60 s)"
        )
        table.append((f"`model.train()` defaults ({epochs} epochs)", secs, n_cells * epochs / secs))
    if args.write_results:
        from _record import write_section

        body = "\n".join(
            [
                f"| path ({adata.n_obs:,} bins × {adata.n_vars} libraries, batch {batch} bins, "
                f"{args.epochs} epochs, {args.threads} threads) | seconds | bins·libraries/s |",
                "|---|---|---|",
                *(f"| {name} | {secs:.2f} | {rate:,.0f} |" for name, secs, rate in table),
                "",
                f"Overhead ChIPVI.train / plain torch {t_scvi / t_plain:.2f}x.",
            ]
        )
        print(f"wrote {write_section('Training speed (bench_training.py)', body)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
