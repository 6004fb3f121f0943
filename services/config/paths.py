"""Where crlhf keeps built assets (converted models, classifier weights, nltk data)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """$CRLHF_CACHE, else ~/.cache/crlhf. Created on first use."""
    path = Path(os.environ.get("CRLHF_CACHE", Path.home() / ".cache" / "crlhf")).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path
