"""run.storage: a durable mirror of the run directory through pyarrow.fs (real files, a local filesystem)."""

from __future__ import annotations

import pytest

from services.config.overrides import ConfigError, build_config
from services.run.storage import RunMirror


def make_run(root):
    run = root / "run"
    (run / "checkpoints" / "iter_000001").mkdir(parents=True)
    (run / "checkpoints" / "iter_000001" / "policy.bin").write_bytes(b"1" * 100)
    (run / "checkpoints" / "latest").write_text("iter_000001")
    (run / "metrics.jsonl").write_text('{"iteration": 0}\n')
    (run / "control.token").write_text("secret-token-value")
    return run


def test_checkpoints_are_copied_once_and_pruned_ones_removed(tmp_path):
    run = make_run(tmp_path)
    mirror = RunMirror(str(tmp_path / "store"), run)  # a plain absolute path: a shared filesystem
    mirror.sync()
    copy = tmp_path / "store" / "run"
    assert (copy / "checkpoints" / "iter_000001" / "policy.bin").read_bytes() == b"1" * 100
    assert not (copy / "control.token").exists()
    # a new checkpoint, the old one pruned locally (checkpoint.keep_last), more metrics
    (run / "checkpoints" / "iter_000002").mkdir()
    (run / "checkpoints" / "iter_000002" / "policy.bin").write_bytes(b"2")
    (run / "checkpoints" / "iter_000001" / "policy.bin").unlink()
    (run / "checkpoints" / "iter_000001").rmdir()
    (run / "checkpoints" / "latest").write_text("iter_000002")
    (run / "metrics.jsonl").write_text('{"iteration": 0}\n{"iteration": 1}\n')
    (run / "checkpoints" / "iter_000003.partial").mkdir()  # being written: not a checkpoint yet
    mirror.sync()
    assert sorted(p.name for p in (copy / "checkpoints").iterdir()) == ["iter_000002", "latest"]
    assert (copy / "checkpoints" / "latest").read_text() == "iter_000002"
    assert (copy / "metrics.jsonl").read_text().count("\n") == 2


def test_a_resumed_run_finds_what_its_mirror_already_has(tmp_path):
    run = make_run(tmp_path)
    RunMirror(f"file://{tmp_path / 'store'}", run).sync()
    again = RunMirror(f"file://{tmp_path / 'store'}", run)
    assert again._copied == {"iter_000001"}  # not copied a second time


def test_a_storage_failure_is_a_warning_and_the_run_goes_on(tmp_path, caplog):
    run = make_run(tmp_path)
    mirror = RunMirror(str(tmp_path / "store"), run)
    (tmp_path / "store" / "run").rmdir()
    (tmp_path / "store" / "run").write_text("a file where the mirror's directory was")
    mirror.sync()
    assert "could not update" in caplog.text and str(run) in caplog.text


@pytest.mark.parametrize(("value", "message"), [
    ("ftp://host/runs", "scheme 'ftp'"),
    ("relative/dir", "relative path"),
])
def test_a_storage_uri_pyarrow_cannot_take_is_refused_with_the_reason(value, message):
    with pytest.raises(ConfigError, match=message):
        build_config(["preset=smoke", f"run.storage={value}"])


def test_storage_uris_that_work_are_accepted():
    for value in ("s3://bucket/crlhf", "gs://bucket/runs", "file:///mnt/shared/runs", "/mnt/shared/runs"):
        assert build_config(["preset=smoke", f"run.storage={value}"]).run.storage == value
