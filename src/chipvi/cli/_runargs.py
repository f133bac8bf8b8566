"""Loading a finished run (config, data, trained model) for ``denoise``, ``call`` and ``report``."""

from __future__ import annotations

from pathlib import Path

from .._errors import ChipviInputError
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
