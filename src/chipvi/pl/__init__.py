"""chipvi.pl."""

from ._plots import concordance as concordance
from ._plots import differential as differential
from ._plots import fingerprint as fingerprint
from ._plots import technical_fit as technical_fit
from ._plots import training_history as training_history
from ._profile import heatmap as heatmap
from ._profile import profile as profile
from ._tracks import tracks as tracks

__all__ = [
    "concordance",
    "differential",
    "fingerprint",
    "heatmap",
    "profile",
    "technical_fit",
    "tracks",
    "training_history",
]
