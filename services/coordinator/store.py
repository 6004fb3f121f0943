"""Durable, non-blocking persistence of the coordinator's state.

- `audit.jsonl` is the audit log and the write-ahead log: one JSON line per change, appended and fsynced
  before the change is acknowledged. A REST change costs one small append, however long the log is.
- `coordinator.pt` is a snapshot of the core state (objective, queued changes, controls), replaced
  atomically at every commit and wherever the log does not describe a change. It records how many log lines
  it already includes (`audit_length`); on load the lines after that are replayed
  (`services.coordinator.changes.apply`), so a change logged after the last snapshot survives a restart.

Writes happen outside the state's lock (group commit): a change stages a write under the lock, releases it,
then waits until a write at least as new is on disk. Readers never wait for the disk, and changes that
arrive during a write are coalesced into the next one.
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, Any

import torch

from services.coordinator.audit import AUDIT_FILE, append_lines, audit_lines, read_audit

log = logging.getLogger("crlhf.coordinator")


def replace_atomically(path: Path, write: Callable[[IO[Any]], None], binary: bool = True) -> None:
    """Write through `write` to a temporary file in the same directory, fsync, then rename over `path`:
    readers never see half a file, and a crash leaves the old one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb" if binary else "w") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_atomic(obj: Any, path: Path) -> None:
    """torch.save, atomically (`replace_atomically`)."""
    replace_atomically(path, lambda f: torch.save(obj, f))


def load_state(path: Path) -> dict[str, Any]:
    """A persisted state. For a run directory's coordinator.pt the audit log is read back from audit.jsonl:
    `audit` = every complete line, `audit_length` = how many of them the snapshot already includes."""
    state = torch.load(path, weights_only=False)
    if "audit" not in state and "audit_length" in state:
        state["audit"] = read_audit(path.parent / AUDIT_FILE)
        if len(state["audit"]) < state["audit_length"]:
            log.warning("audit log %s has %d of %d entries; the rest was lost", path.parent / AUDIT_FILE,
                        len(state["audit"]), state["audit_length"])
            state["audit_length"] = len(state["audit"])
    return state


@dataclass
class Snapshot:
    """One staged write: the log up to `audit_length`, and optionally a core snapshot."""

    version: int
    core: dict[str, Any] | None  # state without the audit log; None = only the log changed
    core_audit_length: int  # log entries the core already includes
    audit: Sequence[Any]  # the append-only audit list (dataclasses)
    audit_length: int
    epoch: int  # bumped when the audit list is replaced (load); the file is then rewritten


class StateStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.audit_path = path.parent / AUDIT_FILE
        self._write_lock = threading.Lock()  # one writer at a time, in version order
        self._guard = threading.Lock()  # protects _latest/_durable
        self._latest: Snapshot | None = None
        self._durable = 0
        self._file_epoch: int | None = None  # None: rewrite audit.jsonl on the next write
        self._file_length = 0
        self.has_core = path.exists()  # a core snapshot is (or is about to be) on disk

    def submit(self, snapshot: Snapshot) -> None:
        """Stage a snapshot (cheap; call under the state's lock so versions follow the order of changes)."""
        with self._guard:
            self.has_core = self.has_core or snapshot.core is not None
            previous = self._latest
            if previous is not None and snapshot.core is None and previous.core is not None:
                # keep the unwritten core: a log-only write must not drop it
                snapshot = replace(snapshot, core=previous.core, core_audit_length=previous.core_audit_length)
            self._latest = snapshot

    def flush(self, version: int) -> None:
        """Return once a snapshot of at least `version` is on disk (call outside the state's lock)."""
        with self._write_lock:
            with self._guard:
                if self._durable >= version:
                    return
                snapshot, self._latest = self._latest, None
            if snapshot is None:  # pragma: no cover - durable < version implies a staged snapshot
                return
            self._write(snapshot)
            with self._guard:
                self._durable = snapshot.version

    def _write(self, s: Snapshot) -> None:
        if self._file_epoch != s.epoch or s.audit_length < self._file_length:
            lines = audit_lines(s.audit[: s.audit_length])
            replace_atomically(self.audit_path, lambda f: f.writelines(lines), binary=False)
        elif s.audit_length > self._file_length:
            append_lines(self.audit_path, audit_lines(s.audit[self._file_length : s.audit_length]))
        self._file_epoch, self._file_length = s.epoch, s.audit_length
        if s.core is not None:  # after the log: a crash in between only means replaying more of it
            save_atomic({**s.core, "audit_length": s.core_audit_length}, self.path)
