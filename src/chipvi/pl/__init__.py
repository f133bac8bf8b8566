"""chipvi.pl: matplotlib figures (scanpy conventions: ``show``, ``save``, ``return_fig``).

Names are imported from their module on first use (lazy_loader, as the root package), so
matplotlib loads only when a plot is drawn.
"""

from __future__ import annotations

import lazy_loader as _lazy

__getattr__, __dir__, __all__ = _lazy.attach(
    __name__,
    submod_attrs={
        "_plots": ["concordance", "differential", "fingerprint", "technical_fit",
                   "training_history"],
        "_profile": ["heatmap", "profile"],
        "_tracks": ["tracks"],
    },
)  # fmt: skip
