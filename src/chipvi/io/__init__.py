"""chipvi.io: sample sheets, BAM binning, BED/bigWig/peak files, run folders, ENCODE (no torch)."""

from . import encode as encode
from ._bed import parse_region as parse_region
from ._bed import read_bed as read_bed
from ._bigwig import read_bigwig_bins as read_bigwig_bins
from ._bigwig import write_bedgraph as write_bedgraph
from ._bigwig import write_bigwig as write_bigwig
from ._binning import read_bam_bins as read_bam_bins
from ._binning import read_bams as read_bams
from ._mudata import to_mudata as to_mudata
from ._peaks import read_regions as read_regions
from ._peaks import write_peaks as write_peaks
from ._runs import load_runs as load_runs
from ._samplesheet import read_samplesheet as read_samplesheet

__all__ = [
    "encode",
    "load_runs",
    "parse_region",
    "read_bam_bins",
    "read_bams",
    "read_bed",
    "read_bigwig_bins",
    "read_regions",
    "read_samplesheet",
    "to_mudata",
    "write_bedgraph",
    "write_bigwig",
    "write_peaks",
]
