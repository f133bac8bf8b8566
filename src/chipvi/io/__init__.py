"""chipvi.io: files only: sample sheets, BAM binning, BED/bigWig/peak files, run folders, ENCODE.

No torch; bins themselves (tables, regions, overlaps, signal access) are :mod:`chipvi._bins`.

Names are imported from their submodule on first use, so ``from chipvi.io import read_bams``
does not pay for pyBigWig, mudata or the ENCODE client (the binning path starts fast).
"""

from __future__ import annotations

import importlib

#: Public name -> submodule that defines it.
_SOURCES = {
    "encode": None,  # a submodule itself
    "load_runs": "_runs",
    "RunDir": "_runs",
    "timestamped_name": "_runs",
    "read_bam_bins": "_binning",
    "read_bams": "_binning",
    "read_bed": "_bed",
    "read_bigwig_bins": "_bigwig",
    "read_regions": "_peaks",
    "read_samplesheet": "_samplesheet",
    "to_mudata": "_mudata",
    "write_bedgraph": "_bigwig",
    "write_bigwig": "_bigwig",
    "write_peaks": "_peaks",
}

__all__ = sorted(_SOURCES)


def __getattr__(name: str):
    if name not in _SOURCES:
        raise AttributeError(f"module 'chipvi.io' has no attribute {name!r}")
    source = _SOURCES[name]
    if source is None:
        value = importlib.import_module(f".{name}", __name__)
    else:
        value = getattr(importlib.import_module(f".{source}", __name__), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_SOURCES))
