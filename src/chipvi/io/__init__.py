"""chipvi.io."""

from ._bigwig import read_bigwig_bins, write_bedgraph, write_bigwig
from ._peaks import write_peaks
