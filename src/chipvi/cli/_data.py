"""Turning the ``data`` part of a run config into an AnnData, with fingerprints of every input."""

from __future__ import annotations

from pathlib import Path

from .._errors import ChipviInputError
from ._config import BUNDLED_PREFIX
from ._rundir import sha256_file

_BUNDLED = {"cssq_chr19": "cssq_chr19_samplesheet"}
# Inputs above this size are fingerprinted from their first and last MiB plus size: hashing
# whole multi-GB BAMs would cost more than binning them.
FULL_HASH_LIMIT = 256 << 20


def resolve_samplesheet(value: str) -> Path:
    """A sample-sheet path, or the bundled sheet named by ``bundled:<name>``."""
    if value.startswith(BUNDLED_PREFIX):
        name = value[len(BUNDLED_PREFIX) :]
        if name not in _BUNDLED:
            raise ChipviInputError(
                f"config key 'data.samplesheet': unknown bundled data set {name!r}; "
                f"known: {', '.join(BUNDLED_PREFIX + k for k in _BUNDLED)}."
            )
        from .. import datasets

        return Path(getattr(datasets, _BUNDLED[name])())
    return Path(value).expanduser().resolve()


def check_data_inputs(data) -> None:
    """Fail early (before a run directory exists) on data inputs that cannot work."""
    if (data.samplesheet is None) == (data.h5ad is None):
        raise ChipviInputError(
            "config: set exactly one of 'data.samplesheet' (BAMs to bin) and 'data.h5ad' "
            f"(bins from `chipvi bin`); got samplesheet={data.samplesheet!r}, h5ad={data.h5ad!r}. "
            "Set the other one to null, e.g. `data.samplesheet=null data.h5ad=bins.h5ad`."
        )
    if data.h5ad is not None and Path(data.h5ad).suffix == ".zarr":
        from ..io import open_store

        open_store(Path(data.h5ad).expanduser())  # refuses an incomplete or foreign store
        if data.region is not None:
            raise ChipviInputError(
                "config key 'data.region' crops bins in memory; crop a store with "
                "chipvi.pp.filter_region(store, region, out=...) and train on that."
            )
    elif data.h5ad is not None and not Path(data.h5ad).expanduser().is_file():
        raise ChipviInputError(f"config key 'data.h5ad': file {data.h5ad} does not exist.")
    if data.samplesheet is not None:
        sheet = resolve_samplesheet(data.samplesheet)
        if not sheet.is_file():
            raise ChipviInputError(f"config key 'data.samplesheet': file {sheet} does not exist.")
    if data.region is not None:
        from .._bins import parse_region

        parse_region(data.region, what="config key 'data.region'")


def fingerprint(path: str | Path) -> dict:
    """``{"path", "bytes", "sha256"}``; ``sha256`` covers head+tail MiB for large files."""
    path = Path(path).resolve()
    size = path.stat().st_size
    if size <= FULL_HASH_LIMIT:
        return {"path": str(path), "bytes": size, "sha256": sha256_file(path)}
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as fh:
        h.update(fh.read(1 << 20))
        fh.seek(-(1 << 20), 2)
        h.update(fh.read(1 << 20))
    return {"path": str(path), "bytes": size, "sha256_head_tail": h.hexdigest()}


def load_data(data, *, progress: bool = True):
    """AnnData and input fingerprints for the ``data`` part of a run config.

    Returns
    -------
    adata, fingerprints, binned
        ``binned`` is True when the bins were counted from BAMs here (worth caching).
    """
    import anndata as ad

    check_data_inputs(data)
    prints: list[dict] = []
    if data.h5ad is not None and Path(data.h5ad).suffix == ".zarr":
        from ..io import open_store

        store = open_store(Path(data.h5ad).expanduser().resolve())
        # A store is read in blocks, never whole; its completion marker identifies it.
        prints.append({"path": str(store.path), "store": store.marker})
        return store, prints, False
    if data.h5ad is not None:
        path = Path(data.h5ad).expanduser().resolve()
        prints.append(fingerprint(path))
        adata = ad.read_h5ad(path)
        binned = cropped = False
    else:
        import chipvi

        sheet = resolve_samplesheet(data.samplesheet)
        prints.append(fingerprint(sheet))
        from omegaconf import OmegaConf

        from ._schema import call_kwargs, parameters

        # The data keys are read_bams' arguments (the config schema is its signature).
        accepted = {p.name for p in parameters(chipvi.read_bams)} - {"samplesheet", "progress"}
        values = OmegaConf.to_container(data, resolve=True) if OmegaConf.is_config(data) else data
        values = {k: v for k, v in dict(values).items() if k in accepted}
        adata = chipvi.read_bams(sheet, progress=progress, **call_kwargs(values, chipvi.read_bams))
        cropped = "region" in values
        bams = []
        for column in ("bam", "control_bam"):
            if column in adata.var:
                bams += [b for b in adata.var[column].astype(str) if b]
        prints += [fingerprint(b) for b in dict.fromkeys(bams)]
        binned = True
    if data.region is not None and not cropped:
        from ..pp import filter_region

        filter_region(adata, data.region)
    return adata, prints, binned
