"""Adaptive KL coefficient (Ziegler et al. 2019), as in RL4LMs and docs/ALGORITHMS.md §1."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class AdaptiveKLController:
    """β ← β·(1 + η·clip((KL̄ − target)/target, ±0.2)); `target=None` keeps β fixed."""

    beta: float = 0.2
    target: float | None = 0.5
    eta: float = 0.1
    clip: float = 0.2

    def update(self, mean_kl: float) -> float:
        """mean_kl: per-token KL averaged over every token of the rollout. Returns the new β."""
        if self.target is not None:
            error = max(-self.clip, min(self.clip, (mean_kl - self.target) / self.target))
            self.beta *= 1.0 + self.eta * error
        return self.beta

    def state_dict(self) -> dict[str, float | None]:
        return {"beta": self.beta, "target": self.target}

    def load_state_dict(self, state: dict[str, float | None]) -> None:
        self.beta = float(state["beta"])  # type: ignore[arg-type]
        self.target = state["target"]
