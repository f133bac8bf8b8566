"""chipvi.pp: AnnData -> AnnData preprocessing (scanpy conventions: adata first, ``copy=False``).

Names are imported from their module on first use (lazy_loader, as the root package).
"""

from __future__ import annotations

import lazy_loader as _lazy

__getattr__, __dir__, __all__ = _lazy.attach(
    __name__,
    submod_attrs={
        "_aggregate": ["aggregate_bins"],
        "_filter": ["filter_blacklist", "filter_chroms", "filter_region"],
    },
)
