"""chipvi.pp: AnnData -> AnnData preprocessing (scanpy conventions: adata first, ``copy=False``)."""

from ._aggregate import aggregate_bins as aggregate_bins
from ._filter import filter_blacklist as filter_blacklist
from ._filter import filter_chroms as filter_chroms
from ._filter import filter_region as filter_region

__all__ = ["aggregate_bins", "filter_blacklist", "filter_chroms", "filter_region"]
