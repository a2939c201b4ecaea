"""Where dagtrain keeps datasets and stores: a cache directory outside the repository."""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "DAGTRAIN_CACHE"


def cache_dir() -> Path:
    """The cache directory: ``$DAGTRAIN_CACHE`` if set, else ``~/.dagtrain``. Created if missing."""
    root = os.environ.get(CACHE_ENV)
    path = Path(root).expanduser() if root else Path.home() / ".dagtrain"
    path.mkdir(parents=True, exist_ok=True)
    return path
