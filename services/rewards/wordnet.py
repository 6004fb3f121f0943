"""WordNet for nltk without a download: Debian's `wordnet-base` files, copied into crlhf's nltk data dir.

nltk's downloader needs the internet; Debian ships the same WordNet 3.0 database files. They must be
*copied*: nltk 3.10 rejects corpus files that are symlinks pointing outside the corpus root. Debian does not
ship `lexnames`, which nltk's reader needs, so it is generated here.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path

from filelock import FileLock

from services.config.paths import cache_dir

log = logging.getLogger(__name__)

DEBIAN_WORDNET_DIR = Path("/usr/share/wordnet")
REQUIRED_FILES = (
    "data.adj", "data.adv", "data.noun", "data.verb",
    "index.adj", "index.adv", "index.noun", "index.verb", "index.sense",
    "adj.exc", "adv.exc", "noun.exc", "verb.exc",
)  # fmt: skip

# The standard WordNet 3.0 lexicographer files: number, name, syntactic category (1 noun, 2 verb, 3 adj, 4 adv).
LEXNAMES: tuple[tuple[str, int], ...] = (
    ("adj.all", 3), ("adj.pert", 3), ("adv.all", 4),
    *((f"noun.{n}", 1) for n in (
        "Tops", "act", "animal", "artifact", "attribute", "body", "cognition", "communication", "event",
        "feeling", "food", "group", "location", "motive", "object", "person", "phenomenon", "plant",
        "possession", "process", "quantity", "relation", "shape", "state", "substance", "time",
    )),
    *((f"verb.{n}", 2) for n in (
        "body", "change", "cognition", "communication", "competition", "consumption", "contact",
        "creation", "emotion", "motion", "perception", "possession", "social", "stative", "weather",
    )),
    ("adj.ppl", 3),
)  # fmt: skip


def lexnames_text() -> str:
    return "".join(f"{i:02d}\t{name}\t{pos}\n" for i, (name, pos) in enumerate(LEXNAMES))


def nltk_data_dir() -> Path:
    return cache_dir() / "nltk_data"


def ensure_wordnet(source: Path = DEBIAN_WORDNET_DIR) -> Path:
    """Install WordNet under `<cache_dir>/nltk_data/corpora/wordnet` once, and put it on nltk's search path.

    Safe to call from several processes at once: the copy is built in a temporary directory under a file lock
    and renamed into place. Returns the corpus directory.
    """
    import nltk

    data_dir = nltk_data_dir()
    target = data_dir / "corpora" / "wordnet"
    if not _complete(target):
        target.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(target.parent / ".wordnet.lock")):
            if not _complete(target):
                _install(source, target)
    if str(data_dir) not in nltk.data.path:
        nltk.data.path.insert(0, str(data_dir))
    return target


def _complete(target: Path) -> bool:
    return (target / "lexnames").is_file() and all((target / name).is_file() for name in REQUIRED_FILES)


def _install(source: Path, target: Path) -> None:
    missing = [name for name in REQUIRED_FILES if not (source / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"WordNet data not found in {source} (missing: {', '.join(missing)}); METEOR needs it. "
            "Install it with: apt-get install wordnet-base wordnet-sense-index"
        )
    log.info("installing WordNet from %s into %s", source, target)
    staging = Path(tempfile.mkdtemp(prefix=".wordnet-", dir=target.parent))
    try:
        staging.chmod(0o755)  # mkdtemp makes it private
        for path in source.iterdir():
            if path.is_file():
                shutil.copyfile(path, staging / path.name)  # a real copy, never a link
        (staging / "lexnames").write_text(lexnames_text())
        if target.exists():  # an incomplete earlier install
            shutil.rmtree(target)
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
