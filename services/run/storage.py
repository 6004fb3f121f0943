"""Mirror a run directory to durable storage (`run.storage`), so checkpoints and metrics outlive the cluster.

Any URI `pyarrow.fs` understands — `s3://bucket/prefix`, `gs://…`, `hdfs://…`, `file:///abs/path` — or a
plain path (a shared filesystem mounted on the head node). pyarrow.fs is what Ray Train's `storage_path`
uses, and Ray already depends on pyarrow. The local run directory stays the working copy; the mirror is
refreshed after every checkpoint and once at the end, and receives:

- the run's small files (config, metrics, audit log, objective state, summary, report, train.log) every time;
- each checkpoint directory once (a checkpoint never changes after its rename), and pruned ones are
  removed there too, so the mirror keeps what `checkpoint.keep_last` keeps;
- `final/` (the exported model) at the end.

Never the control token: the mirror may be readable by more people than the run directory.
"""

from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger("crlhf")

SECRET_FILES = frozenset({"control.token"})
SCHEMES = ("file", "s3", "gs", "gcs", "hdfs", "viewfs", "abfs", "abfss")


def check_uri(uri: str) -> str:
    """The URI or path, if pyarrow.fs can take it; else a ValueError naming it and the schemes accepted."""
    if "://" in uri:
        scheme = uri.split("://", 1)[0]
        if scheme not in SCHEMES:
            raise ValueError(f"run.storage: '{uri}' has scheme '{scheme}'; use one of {', '.join(SCHEMES)} or a path")
    elif not Path(uri).is_absolute():
        raise ValueError(f"run.storage: '{uri}' is a relative path; give an absolute path (a shared filesystem) or a URI")
    return uri


class RunMirror:
    """The copy of one run directory under `run.storage`/<run name>."""

    def __init__(self, uri: str, run_dir: Path) -> None:
        import pyarrow.fs as pafs

        self.run_dir = run_dir
        if "://" in uri:
            self.fs, base = pafs.FileSystem.from_uri(uri)
        else:
            self.fs, base = pafs.LocalFileSystem(), str(Path(uri))
        self.target = f"{base.rstrip('/')}/{run_dir.name}"
        self.uri = f"{uri.rstrip('/')}/{run_dir.name}"
        self.local = pafs.LocalFileSystem()
        self.fs.create_dir(self.target, recursive=True)
        self._copied: set[str] = set(self._remote_checkpoints())  # a resumed run keeps what is there
        self._final_copied = False

    def _remote_checkpoints(self) -> list[str]:
        import pyarrow.fs as pafs

        info = self.fs.get_file_info(f"{self.target}/checkpoints")
        if info.type != pafs.FileType.Directory:
            return []
        listing = self.fs.get_file_info(pafs.FileSelector(f"{self.target}/checkpoints"))
        return [entry.base_name for entry in listing if entry.type == pafs.FileType.Directory]

    def _copy(self, relative: str) -> None:
        import pyarrow.fs as pafs

        source = self.run_dir / relative
        if source.is_dir():
            self.fs.create_dir(f"{self.target}/{relative}", recursive=True)
        pafs.copy_files(str(source), f"{self.target}/{relative}", source_filesystem=self.local, destination_filesystem=self.fs)

    def sync(self, final: bool = False) -> None:
        """Bring the mirror up to date. A storage failure is logged, not raised: the local copy is intact and
        the next sync retries, so a flaky bucket never costs the run itself."""
        try:
            self._sync(final)
        except OSError as err:
            log.warning("run.storage: could not update %s (%s); the run directory %s is complete", self.uri, err, self.run_dir)

    def _sync(self, final: bool) -> None:
        for path in sorted(self.run_dir.iterdir()):
            if path.is_file() and path.name not in SECRET_FILES and not path.name.startswith("."):
                self._copy(path.name)
        local = self.run_dir / "checkpoints"
        present = {p.name for p in local.iterdir() if p.is_dir() and not p.name.endswith(".partial")} if local.is_dir() else set()
        for name in sorted(present - self._copied):
            self._copy(f"checkpoints/{name}")
            self._copied.add(name)
        for name in sorted(self._copied - present):  # pruned locally (checkpoint.keep_last)
            self.fs.delete_dir(f"{self.target}/checkpoints/{name}")
            self._copied.discard(name)
        if (local / "latest").is_file():
            self._copy("checkpoints/latest")
        if final and not self._final_copied and (self.run_dir / "final").is_dir():
            self._copy("final")
            self._final_copied = True
