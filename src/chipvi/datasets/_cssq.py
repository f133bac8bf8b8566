"""The bundled real data set: ENCODE H3K4me3 ChIP-seq on a slice of chr19 (from Bioconductor CSSQ)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import anndata as ad

_FOLDER = "cssq_h3k4me3_chr19"
#: The slice of chr19 the bundled reads were taken from (reads lie in 1,237,143-1,408,567).
CSSQ_REGION = "chr19:1,236,000-1,410,000"


def _data_dir() -> Path:
    # Package data sits in the installed package (wheel or source tree), never zipped.
    return Path(str(resources.files("chipvi.datasets") / "data" / _FOLDER))


def cssq_chr19_samplesheet() -> Path:
    """Path of the sample sheet of the bundled H3K4me3 data set.

    Four ChIP libraries (H1-hESC ``HESC`` and skeletal muscle myoblasts ``HSMM``, two biological
    replicates each) with their whole-cell-extract inputs: single-end 36 bp reads on hg19
    chr19:1.23-1.41 Mb, coordinate-sorted and indexed. The ``depth`` and ``control_depth``
    columns hold the aligned-read totals of the full libraries, so depth covariates describe
    the libraries rather than this slice. Source: Bioconductor CSSQ ``inst/extdata``
    (Artistic-2.0; ENCODE public data); see ``SOURCE.md`` next to the sheet.

    Returns
    -------
    pathlib.Path
        ``samplesheet.csv`` (columns ``sample,bam,control,target,group,replicate,depth,
        control_depth``; BAM paths relative to its folder).
    """
    return _data_dir() / "samplesheet.csv"


def cssq_chr19(bin_size: int = 200, *, region: str | None = CSSQ_REGION, **kwargs) -> ad.AnnData:
    """Bin the bundled H3K4me3 data set into an AnnData.

    Runs :func:`chipvi.read_bams` on :func:`cssq_chr19_samplesheet` with ``region=`` the
    sequenced slice (the BAM headers list every hg19 contig but all reads lie in this slice of
    chr19): outside it neither ChIP nor input has reads because the reads were never extracted
    there, which is no evidence of absence. The bins stay on the genome-wide grid, so
    :func:`chipvi.pp.aggregate_bins` works on the result.

    Parameters
    ----------
    bin_size
        Bin width in bp.
    region
        Bins to keep; default the slice the reads come from (``chr19:1,236,000-1,410,000``),
        ``None`` keeps all of chr19.
    **kwargs
        Passed to :func:`chipvi.read_bams` (e.g. ``min_mapq``, ``fragment_length``,
        ``progress``).

    Returns
    -------
    anndata.AnnData
        Bins of the chr19 slice x the four ChIP libraries, in the layout of
        :func:`chipvi.read_bams`.

    Examples
    --------
    >>> adata = chipvi.datasets.cssq_chr19()  # doctest: +SKIP
    >>> adata.var[["group", "replicate", "depth"]]  # doctest: +SKIP
    """
    from .. import read_bams  # imported on use: binning pulls in numba

    kwargs.setdefault("progress", False)
    if region is None:
        kwargs.setdefault("chroms", ["chr19"])
    return read_bams(cssq_chr19_samplesheet(), bin_size=bin_size, region=region, **kwargs)
