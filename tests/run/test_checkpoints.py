"""Checkpoint integrity without Ray: the manifest marks a complete checkpoint, a damaged one is refused naming
the file, the previous one is used, and a run with only damaged ones is told so (never silently restarted)."""

from __future__ import annotations

import json

import pytest
import torch

from services.run import checkpoints


def fake_checkpoint(root, iteration, manifest=True):
    d = root / f"iter_{iteration:06d}"
    (d / "policy").mkdir(parents=True)
    (d / "policy" / "model.safetensors").write_bytes(b"x" * 1000)
    torch.save({"objective": {}, "last_committed": iteration}, d / "coordinator.pt")
    (d / "driver.json").write_text(json.dumps({"iteration": iteration, "sampler": {"position": iteration}}))
    if manifest:
        checkpoints.write_manifest(d)
    return d


def test_the_newest_complete_checkpoint_is_used(tmp_path):
    fake_checkpoint(tmp_path, 1)
    fake_checkpoint(tmp_path, 2)
    (tmp_path / "iter_000003.partial").mkdir()  # a save cut short before its rename
    found = checkpoints.latest(tmp_path)
    assert found.iteration == 2 and found.sampler == {"position": 2} and found.coordinator["last_committed"] == 2


def test_a_truncated_file_is_refused_naming_it_and_the_previous_checkpoint_is_used(tmp_path, caplog):
    fake_checkpoint(tmp_path, 1)
    newest = fake_checkpoint(tmp_path, 2)
    (newest / "policy" / "model.safetensors").write_bytes(b"x" * 10)
    found = checkpoints.latest(tmp_path)
    assert found.iteration == 1
    assert f"{newest / 'policy' / 'model.safetensors'} is truncated or changed (10 bytes, 1000 when written)" in caplog.text
    assert f"using the previous checkpoint {tmp_path / 'iter_000001'}" in caplog.text


def test_a_corrupt_coordinator_state_with_the_right_size_is_refused_when_it_does_not_load(tmp_path, caplog):
    fake_checkpoint(tmp_path, 1)
    newest = fake_checkpoint(tmp_path, 2)
    size = (newest / "coordinator.pt").stat().st_size
    (newest / "coordinator.pt").write_bytes(b"\0" * size)
    assert checkpoints.latest(tmp_path).iteration == 1
    assert f"{newest} does not load" in caplog.text


def test_only_damaged_checkpoints_is_an_error_that_says_what_to_do(tmp_path):
    d = fake_checkpoint(tmp_path, 4)
    (d / "driver.json").unlink()
    with pytest.raises(checkpoints.CheckpointError, match=r"no usable checkpoint .*driver.json is missing.*move .* away"):
        checkpoints.latest(tmp_path)
    assert checkpoints.latest(tmp_path / "nothing-here") is None


def test_trim_metrics_drops_later_records_and_a_line_cut_short(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"iteration": 0}\n{"iteration": 1}\n{"iteration": 2}\n{"itera')
    checkpoints.trim_metrics(path, 1)
    assert path.read_text() == '{"iteration": 0}\n{"iteration": 1}\n'
