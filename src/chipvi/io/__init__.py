"""chipvi.io: files only: sample sheets, BAM binning, BED/bigWig/peak files, run folders, ENCODE.

No torch; bins themselves (tables, regions, overlaps, signal access) are :mod:`chipvi._bins`.

Names are imported from their submodule on first use (SPEC 1, lazy_loader), so
``from chipvi.io import read_bams`` does not pay for pyBigWig, mudata or the ENCODE client (the
binning path starts fast).
"""

from __future__ import annotations

import lazy_loader as _lazy

__getattr__, __dir__, __all__ = _lazy.attach(
    __name__,
    submodules=["encode"],
    submod_attrs={
        "_bed": ["read_bed"],
        "_bigwig": ["read_bigwig_bins", "write_bedgraph", "write_bigwig"],
        "_binning": ["check_read_params", "read_bam_bins", "read_bams"],
        "_mudata": ["to_mudata"],
        "_peaks": ["read_regions", "write_peaks"],
        "_runs": ["RunDir", "load_runs", "timestamped_name"],
        "_samplesheet": ["read_samplesheet"],
        "_store": ["BinStore", "is_store", "open_store", "store_adder", "store_writer"],
    },
)
