"""ENCODE portal access: find experiments, build a sample sheet, download verified BAMs.

``search_experiments`` → ``build_samplesheet`` → ``download`` (or ``chipvi download`` on the
command line). The portal URL is ``$CHIPVI_ENCODE_URL`` (default https://www.encodeproject.org).
"""

from ._client import EncodeClient, EncodeError
from ._download import DownloadError, DownloadResult, download
from ._samplesheet import build_samplesheet
from ._search import search_experiments

__all__ = [
    "DownloadError",
    "DownloadResult",
    "EncodeClient",
    "EncodeError",
    "build_samplesheet",
    "download",
    "search_experiments",
]
