"""Loading a finished run (config, data, trained model) for ``denoise``, ``call`` and ``report``."""

from __future__ import annotations

from pathlib import Path

from .._errors import ChipviInputError
from .._posterior import POSTERIOR_KEY
from ..io import RunDir


def load_trained_run(path: Path, *, quiet: bool):
    """``(run_dir, cfg, adata, model)`` of a run whose training finished."""
    import anndata as ad

    from ._config import compose
    from ._data import load_data
    from ._model import import_model_class
    from ._quiet import silence_libraries

    run_dir = RunDir(path).require_existing()
    if not (run_dir.model_dir / "model.pt").is_file():
        raise ChipviInputError(
            f"{path} has no trained model (model/model.pt); the run did not finish training. "
            f"Continue it with `chipvi train --resume {path}`."
        )
    cfg = compose(None, [], run_dir.config_path)
    if run_dir.data_path.is_file():
        adata = ad.read_h5ad(run_dir.data_path)
    else:
        adata, _, _ = load_data(cfg.data, progress=not quiet)
    cls = import_model_class(cfg.model.model_class)
    if quiet:
        silence_libraries()
    model = cls.load(str(run_dir.model_dir), adata=adata)
    return run_dir, cfg, adata, model


def load_posterior(path: Path, *, quiet: bool, batch_size: int | None = None):
    """``(run_dir, adata)`` with the trained model's posterior keys (``model.add_posterior``).

    The run's ``denoised/denoised.h5ad`` when ``chipvi denoise`` wrote it (no second posterior
    pass), else the run's bins with one pass of the trained model; for a run on a bins store,
    the store (its posterior as ``chipvi denoise`` wrote it, or one pass into it).
    """
    import anndata as ad

    from .._posterior import POSTERIOR_KEY

    denoised = Path(path) / "denoised" / "denoised.h5ad"
    if denoised.is_file():
        adata = ad.read_h5ad(denoised)
        if POSTERIOR_KEY in adata.uns:
            return RunDir(path).require_existing(), adata
    from .._posterior import written_by
    from ..io import is_store

    run_dir, _, adata, model = load_trained_run(path, quiet=quiet)
    # A bins store keeps the pass of `chipvi denoise` (when it is this model's).
    if not (is_store(adata) and written_by(adata.uns.get(POSTERIOR_KEY), model)):
        model.add_posterior(adata, batch_size=batch_size)
    return run_dir, adata


def load_run_or_h5ad(source: Path, *, need_denoised: bool = False):
    """``(data, is_run)`` of a run directory (its denoised bins, else its counted bins; for a
    run on a bins store, the store), of an ``.h5ad`` file or of a ``.zarr`` bins store (opened,
    read later a chunk at a time); for the commands that read results rather than the model."""
    import anndata as ad

    from ..io import open_store

    if source.suffix == ".zarr":
        return open_store(source), False
    if source.is_dir():
        run = RunDir(source).require_existing()
        denoised = source / "denoised" / "denoised.h5ad"
        if denoised.is_file():
            return ad.read_h5ad(denoised), True
        if not need_denoised and run.data_path.is_file():
            return ad.read_h5ad(run.data_path), True
        store = _run_store(run)
        if store is not None:
            store = open_store(store)
            if not need_denoised or POSTERIOR_KEY in store.uns:
                return store, True
        raise ChipviInputError(
            f"{source} has no denoised/denoised.h5ad"
            + ("" if need_denoised else " and no data.h5ad")
            + f"; run `chipvi denoise {source}` first (or pass an .h5ad)."
        )
    if source.suffix != ".h5ad" or not source.is_file():
        raise ChipviInputError(
            f"{source} is neither a run directory nor an existing .h5ad file (nor a .zarr bins "
            "store)."
        )
    return ad.read_h5ad(source), False


def _run_store(run: RunDir) -> Path | None:
    """The bins store a run trained on (its config's ``data.h5ad``), or None."""
    from omegaconf import OmegaConf

    h5ad = OmegaConf.select(OmegaConf.load(run.config_path), "data.h5ad")
    return Path(h5ad) if h5ad and Path(h5ad).suffix == ".zarr" else None
