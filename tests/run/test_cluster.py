"""Choosing the Ray cluster before ray.init: a dead address never hangs a launch."""

from __future__ import annotations

import socket

import pytest

from services.run.cluster import ClusterUnreachable, choose, reachable


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens on it once closed


def test_a_stale_current_cluster_file_is_reported_and_a_local_cluster_chosen(tmp_path, monkeypatch):
    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path))
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    port = closed_port()
    (tmp_path / "ray").mkdir()
    (tmp_path / "ray" / "ray_current_cluster").write_text(f"127.0.0.1:{port}")  # what a killed `ray start` leaves
    choice = choose(None)
    assert choice.address is None
    assert f"127.0.0.1:{port}" in choice.warning and "ray_current_cluster" in choice.warning and "stale" in choice.warning


def test_an_explicit_dead_address_is_an_error_naming_it_and_its_source(monkeypatch):
    address = f"127.0.0.1:{closed_port()}"
    monkeypatch.setenv("RAY_ADDRESS", address)
    with pytest.raises(ClusterUnreachable, match=rf"{address} \(from RAY_ADDRESS\)"):
        choose(None)
    with pytest.raises(ClusterUnreachable, match=r"from run.ray_address"):
        choose(address)


def test_a_live_address_is_joined():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        address = f"127.0.0.1:{server.getsockname()[1]}"
        assert reachable(address)
        assert choose(address).address == address
    assert choose("local").address is None
