"""chipvi.io."""

from ._binning import read_bam_bins as read_bam_bins
from ._binning import read_bams as read_bams
from ._samplesheet import read_samplesheet as read_samplesheet
