"""Guards that refuse an update which would put NaN/inf into a parameter, multiplier or weight.

Checked where the value is made, so the message can say which one: the loss and the gradient norm before each
optimiser step (services/ppo/learner.py), the objective's learned state and the trained parameters after the
update (services/ppo/iteration.py). An `UnsafeUpdate` leaves the learner's in-memory state suspect (earlier
minibatches of the iteration may have stepped), so the driver never checkpoints it: the run's last good state
is its last checkpoint (docs/RELIABILITY.md).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import torch


class UnsafeUpdate(ValueError):
    """An update refused because it is not finite; names the quantity."""


FIX = ("the run's state stays at its last checkpoint (resume=RUN_DIR); lower trainer.learning_rate or "
       "trainer.max_grad_norm, or check the rewards' scales")


def require_finite_step(loss: torch.Tensor, grad_norm: torch.Tensor, epoch: int, step: int) -> None:
    """Before an optimiser step: the loss and the gradient norm must be finite."""
    for what, value in (("PPO loss", loss), ("gradient norm", grad_norm)):
        if not bool(torch.isfinite(value).all()):
            raise UnsafeUpdate(f"refused the update: the {what} is {float(value)} (epoch {epoch + 1}, minibatch {step + 1}); {FIX}")


def non_finite_entries(state: Any, prefix: str = "") -> list[str]:
    """Dotted keys of every NaN/inf number or tensor element in a nested state dict."""
    found: list[str] = []
    if isinstance(state, torch.Tensor):
        if state.is_floating_point() and not bool(torch.isfinite(state).all()):
            found.append(prefix or "value")
    elif isinstance(state, float):
        if not math.isfinite(state):
            found.append(prefix or "value")
    elif isinstance(state, Mapping):
        for key, value in state.items():
            found += non_finite_entries(value, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(state, (list, tuple)):
        for i, value in enumerate(state):
            found += non_finite_entries(value, f"{prefix}[{i}]")
    return found


def require_finite_state(state: Mapping[str, Any], what: str, already_unset: Iterable[str] = ()) -> None:
    """After an update: the objective's learned state (multipliers, weights, β …) must be finite.

    NaN is also the state's own marker for "unset": a reward without a threshold, an estimate not measured yet
    (l3m's score EMA before its first constraint step). Entries that were already non-finite before the update
    (`already_unset`, from `non_finite_entries`) are not faults; only what this update made non-finite is."""
    known = set(already_unset)
    bad = [key for key in non_finite_entries(state) if key not in known]
    if bad:
        raise UnsafeUpdate(f"refused the update: the {what} would become non-finite ({', '.join(bad[:5])}); {FIX}")


def require_finite_parameters(parameters: Iterable[torch.Tensor]) -> None:
    """After an update: every trained parameter must be finite."""
    bad = sum(1 for p in parameters if not bool(torch.isfinite(p.detach()).all()))
    if bad:
        raise UnsafeUpdate(f"refused the update: {bad} trained parameter tensor(s) would become non-finite; {FIX}")
