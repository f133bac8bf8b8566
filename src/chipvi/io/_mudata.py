"""Bundle ChIP and RNA AnnData objects into one MuData."""

from __future__ import annotations

from anndata import AnnData

from .._errors import ChipviInputError


def to_mudata(*, chip: AnnData, rna: AnnData | None = None, **modalities: AnnData):
    """Put the ChIP AnnData (bins × libraries) and an RNA AnnData in one MuData.

    The modalities keep their own axes (``axis=-1``: neither obs nor var is shared), because ChIP
    observations are genomic bins while RNA observations are samples.

    Parameters
    ----------
    chip
        ChIP AnnData in the chipvi layout; stored as modality ``"chip"``.
    rna
        Expression AnnData, samples × genes: ``obs['group']`` names the ChIP group each sample
        belongs to (or obs names are group names), ``var_names`` are gene ids or names.
        Stored as modality ``"rna"``; read by :func:`chipvi.tl.gene_expression_association`.
    **modalities
        Further AnnData modalities (e.g. a second histone mark).

    Returns
    -------
    mudata.MuData
    """
    import mudata

    mods = {"chip": chip}
    if rna is not None:
        mods["rna"] = rna
    for name, value in modalities.items():
        if name in mods:
            raise ChipviInputError(f"Modality {name!r} given twice.")
        mods[name] = value
    for name, value in mods.items():
        if not isinstance(value, AnnData):
            raise ChipviInputError(
                f"Modality {name!r} must be an AnnData, got {type(value).__name__}."
            )
    # Modalities keep their own columns; do not let MuData pull them into a global table. Every
    # later update of the MuData (copy, write, read back) reads the global option and warns
    # twice (FutureWarning, obs and var) while it is unset: adopt mudata's coming default for
    # the process unless the user chose a value.
    with (as_set := mudata.set_options(pull_on_update=False)):
        mdata = mudata.MuData(mods, axis=-1)
    if as_set.opts["pull_on_update"] is None:  # a user's own choice stands
        mudata.set_options(pull_on_update=False)
    return mdata
