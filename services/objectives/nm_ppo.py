"""`nm_ppo`: ξ-PPO whose thresholds are searched by Nelder–Mead during a single run (docs/ALGORITHMS.md §7, [000] Alg. 3).

The proxy point θ* (the reward targets at which the held-out eval_score peaks) is normally found offline
from single-reward runs (services/thresholds/proxy_points.py, [000] Alg. 2). NM-PPO finds it *inside* one run
instead: the outer loop is the resumable ask/tell `NelderMead` (services/objectives/nelder_mead.py)
minimising f(θ) = −eval_score(θ); "evaluating" a proposed θ means continuing ξ-PPO training of the same
policy, critic and multipliers towards θ (nothing is reset) and reading the next held-out evaluation.

Learner protocol (services/objectives/base.py): the learner calls

    observe_evaluation(k, evaluation)   at the start of update k, whenever the current policy was evaluated
                                        since the previous update (the driver evaluates before every
                                        `evaluation.every`-th update, iteration 0 included);
    build_streams(batch)                once per update; nm_ppo counts the PPO iterations spent on the
                                        current θ here.

Decisions, all made in `observe_evaluation` from `eval/score` and `eval/reward/<name>`:

1. First evaluation (the initial policy): build the initial simplex from the box [low, high] (§7: N + 1
   points, θ_i = low_i + U(0, 1)·(high_i − low_i)); low defaults to the measured reward means m⁰ and high
   to low·(1 + simplex_spread). The paper's high is m^max, the largest value seen in proxy runs; without
   proxy runs the spread is a stand-in, and `simplex_high` takes m^max when you have it. The first
   proposal becomes the ξ-PPO thresholds.
2. Later evaluations, once at least one PPO iteration ran on the current θ: the θ's evaluation window
   closes when it is **reached** (|m_i − θ_i| ≤ reached_tolerance·|θ_i| for every reward) or the
   **cap** is hit (iterations on θ ≥ iterations_per_threshold). Then tell(θ, −eval_score, iterations)
   and ask() the next θ; proposals close to an already-trained θ are answered from the cache inside ask()
   and never trained. Otherwise training on θ continues.
3. When the search converges (ask() → None, §7: std(f) < tol after a shrink) the thresholds are set to
   the best trained θ and ξ-PPO keeps training towards it for the rest of the run (`nm/converged` = 1).

Evaluations happen only every `evaluation.every` iterations, so the cap is effectively rounded up to the
next evaluation (the code's ⌊n_iters/10⌋ cap with eval_every = 5, as in [000]'s code).

**REST threshold changes** (`set_threshold`, e.g. `crlhf set-threshold`): the operator's value replaces
that reward's coordinate of the current target and opens a fresh evaluation window (iteration count 0).
The window closes by the same reached/cap rule; its score is recorded in the history (`source =
"override"`) but is **not** told to Nelder–Mead, because the search can only score the point it proposed
and a score of a different θ would corrupt the simplex. The search then resumes where it stood: the pending
proposal (or, after convergence, the best θ) becomes the target again with a fresh window. A change made
before the first evaluation only sets the thresholds used until that evaluation starts the search.

**Hyperparameter changes mid-run** (`PATCH /v1/objective`): the cap (`iterations_per_threshold`), the
reached tolerance and every ξ-PPO option are read from the spec the coordinator hands out, so a change
applies from the next iteration. The NM coefficients, the cache rule and `simplex_low/high/spread`/`seed`
are the running search's state or only shape its initial simplex: they are frozen after start and refused
with that reason (`NMPPOConfig.frozen_after_start`).

Thresholds (`rewards.*.threshold`) are optional: when set they are what ξ-PPO trains towards before the
first evaluation (normally there is none: the driver evaluates before iteration 0); when unset the
multipliers stay still until the search sets a target.
"""

from __future__ import annotations

import copy
import logging
import math
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np
import torch
from pydantic import Field, model_validator

from services.objectives.base import RolloutTensors, Streams, require_directions
from services.objectives.lagrangian import XiPPO, XiPPOConfig
from services.objectives.nelder_mead import NelderMead, NelderMeadConfig, thresholds_reached
from services.config.names import unknown_name_message

if TYPE_CHECKING:
    from services.rewards.config import RewardConfig

log = logging.getLogger(__name__)

SCORE_KEY = "eval/score"
REWARD_PREFIX = "eval/reward/"


class NMPPOConfig(XiPPOConfig):
    """ξ-PPO options plus the Nelder–Mead search (defaults: [000] A.4 and §7)."""
    frozen_after_start: ClassVar[dict[str, str]] = {
        field: "is part of the running Nelder–Mead search's state; start a new run to change it"
        for field in ("alpha", "gamma", "rho", "sigma", "tol", "cache_mode", "cache_tol")
    } | {
        field: "only shapes the initial simplex, which exists from the first evaluation; start a new run"
        for field in ("simplex_low", "simplex_high", "simplex_spread")
    }

    name: Literal["nm_ppo"] = Field(  # type: ignore[assignment]
        "nm_ppo", description="ξ-PPO with Nelder–Mead search over the thresholds in a single run (§7)."
    )
    alpha: float = Field(1.0, gt=0.0, description="NM reflection coefficient α.")
    gamma: float = Field(2.0, gt=1.0, description="NM expansion coefficient γ (> 1).")
    rho: float = Field(0.5, gt=0.0, lt=1.0, description="NM (inside) contraction coefficient ρ.")
    sigma: float = Field(0.5, gt=0.0, lt=1.0, description="NM shrink coefficient σ.")
    tol: float = Field(0.01, gt=0.0, description="Convergence: std of f over the simplex after a shrink below this.")
    cache_mode: Literal["relative", "absolute"] = Field(
        "relative",
        description="Cache rule for proposals near an already-trained θ: 'relative' (paper, ±5 %) or 'absolute' "
        "(code, 0.005). On §7's analytic surface only 'absolute' reaches eval ≥ 0.99 (docs/THRESHOLDS.md).",
    )
    cache_tol: float | None = Field(None, ge=0.0, description="Cache tolerance; None = 0.05 (relative) or 0.005 (absolute).")
    iterations_per_threshold: int | None = Field(
        None,
        gt=0,
        description="Cap on PPO iterations spent on one θ before it is scored anyway; None = ⌊trainer.iterations/10⌋ "
        "(the code's; the paper's is 1/8), at least 1. Effectively rounded up to the next evaluation.",
    )
    reached_tolerance: float = Field(
        0.05, ge=0.0, description="θ counts as reached when |m_i − θ_i| ≤ this·|θ_i| for every reward (held-out means)."
    )
    simplex_low: dict[str, float] | None = Field(
        None, description="Lower corner of the initial-simplex box per reward; missing rewards = the first evaluation's means m⁰."
    )
    simplex_high: dict[str, float] | None = Field(
        None,
        description="Upper corner per reward (the paper's m^max from proxy runs); missing = low + simplex_spread·|low| "
        "(simplex_spread itself when low is 0).",
    )
    simplex_spread: float = Field(0.25, gt=0.0, description="Relative width of the default box when simplex_high is not given.")
    seed: int = Field(0, description="Seed of the initial multiplier draw and of the initial simplex.")

    @model_validator(mode="after")
    def _finite_box(self) -> "NMPPOConfig":
        for field in ("simplex_low", "simplex_high"):
            for reward, value in (getattr(self, field) or {}).items():
                if not math.isfinite(value):
                    raise ValueError(f"{field}.{reward}: must be a finite number, got {value}")
        return self

    def nelder_mead_config(self) -> NelderMeadConfig:
        return NelderMeadConfig(
            alpha=self.alpha, gamma=self.gamma, rho=self.rho, sigma=self.sigma, tol=self.tol,
            cache_mode=self.cache_mode, cache_tol=self.cache_tol,
        )  # fmt: skip

    def complete(self, run: Any) -> None:
        """Default cap from the run's length; reject runs that would never evaluate (the search would not move)."""
        if self.iterations_per_threshold is None:
            self.iterations_per_threshold = max(1, run.trainer.iterations // 10)
        if not run.evaluation.every:
            raise ValueError(
                "objective nm_ppo scores every threshold vector on a held-out evaluation; set evaluation.every=N "
                "(N ≥ 1; [000] evaluates every 5 iterations)"
            )
        if run.data.eval_split is None and run.data.eval_fraction == 0:
            raise ValueError(
                "objective nm_ppo needs a held-out split to evaluate on; set data.eval_fraction > 0 or data.eval_split"
            )

    def validate_rewards(self, rewards: dict[str, "RewardConfig"]) -> None:
        # Thresholds are optional (the search sets them), so the base "threshold required" check is skipped.
        require_directions("nm_ppo", rewards, ("eq",), "nm_ppo searches equality targets with ξ-PPO")
        for field in ("simplex_low", "simplex_high"):
            for reward in getattr(self, field) or {}:
                if reward not in rewards:
                    raise ValueError(f"objective.{field}: " + unknown_name_message("reward", reward, list(rewards)))
        low, high = self.simplex_low or {}, self.simplex_high or {}
        for reward in low.keys() & high.keys():
            if high[reward] < low[reward]:
                raise ValueError(
                    f"objective.simplex_high.{reward} ({high[reward]}) is below simplex_low.{reward} ({low[reward]})"
                )


class NMPPO(XiPPO):
    """ξ-PPO (§6) with the thresholds driven by an ask/tell Nelder–Mead search; see the module docstring.

    State beyond ξ-PPO's: the NM search (`nelder_mead`, None before the first evaluation), the θ being
    trained towards (`target`), PPO iterations spent on it, whether it is an operator override, whether
    the search converged, the initial-simplex box, and a history of closed evaluation windows.
    """

    config_cls = NMPPOConfig

    def __init__(self, config: Any, rewards: dict[str, "RewardConfig"]) -> None:
        super().__init__(config, rewards)
        if config.iterations_per_threshold is None:
            raise ValueError(
                "nm_ppo: iterations_per_threshold is unset; set objective.iterations_per_threshold=N or build the "
                "config through RootConfig, which defaults it to ⌊trainer.iterations/10⌋"
            )
        self.nelder_mead: NelderMead | None = None  # read by the coordinator's Nelder–Mead view
        self.target: list[float] | None = None
        self.iterations_on_threshold = 0
        self.overridden = False
        self.converged = False
        self.bounds: dict[str, list[float]] | None = None
        # One entry per closed evaluation window: thresholds, eval_score, iterations, reached, iteration
        # (the update at which it was judged), source ("proposal" | "override") and told (fed to NM).
        self.history: list[dict[str, Any]] = []

    # --- learner hooks ---------------------------------------------------------------------------
    def build_streams(self, batch: RolloutTensors) -> Streams:
        self.iterations_on_threshold += 1  # one call per PPO iteration
        return super().build_streams(batch)

    def violation(self, estimate: torch.Tensor) -> torch.Tensor:
        # An unset threshold (NaN, only before the first evaluation) leaves its multiplier still.
        return torch.nan_to_num(super().violation(estimate), nan=0.0)

    def observe_evaluation(self, iteration: int, evaluation: dict[str, float]) -> None:
        """Start the search (first call) or judge the current θ's window: reached or capped → tell, ask next.

        Raises ValueError when `eval/score` or an `eval/reward/<name>` is missing or not finite: a search
        step on a broken evaluation would be silently wrong.
        """
        score, means = self._read(evaluation)
        if self.nelder_mead is None:
            self._start_search(iteration, means)
            return
        if self.iterations_on_threshold == 0:
            return  # nothing trained towards the current target since it was set
        if self.converged and not self.overridden:
            return  # exploiting the best θ
        assert self.target is not None
        tol = self.config.reached_tolerance
        reached = thresholds_reached(means, self.target, tol)
        if not reached and self.iterations_on_threshold < self.config.iterations_per_threshold:
            return
        entry = {
            "thresholds": list(self.target),
            "eval_score": score,
            "iterations": self.iterations_on_threshold,
            "reached": reached,
            "iteration": int(iteration),
            "source": "override" if self.overridden else "proposal",
            "told": not self.overridden,
        }
        self.history.append(entry)
        why = "reached" if reached else f"cap of {self.config.iterations_per_threshold} iterations hit"
        if self.overridden:  # the operator's detour is over: back to what the search wants, not told
            self.overridden = False
            resume = self.nelder_mead.best()[0] if self.converged else self.nelder_mead.pending
            assert resume is not None, "while searching, NM always has a pending proposal"
            log.info("nm_ppo @%d: override θ=%s %s, eval %.4f (not told to NM); back to θ=%s",
                     iteration, _fmt(entry["thresholds"]), why, score, _fmt(resume))  # fmt: skip
            self._set_target(resume)
            return
        pending = self.nelder_mead.pending
        assert pending is not None, "a proposal is being trained, so NM has one pending"
        self.nelder_mead.tell(pending, -score, iterations=self.iterations_on_threshold)
        self._advance(iteration, f"θ={_fmt(pending)} {why} after {entry['iterations']} iterations, eval {score:.4f}")

    # --- thresholds ------------------------------------------------------------------------------
    def set_threshold(self, reward: str, value: float) -> None:
        """Operator override of one coordinate of the current target; see the module docstring."""
        super().set_threshold(reward, value)
        if self.target is None:  # before the first evaluation: only the pre-search thresholds
            return
        self.target[self.reward_names.index(reward)] = float(value)
        self.overridden = True
        self.iterations_on_threshold = 0

    # --- state -----------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        nm = {
            "search": None if self.nelder_mead is None else self.nelder_mead.state_dict(),
            "target": None if self.target is None else list(self.target),
            "iterations_on_threshold": self.iterations_on_threshold,
            "overridden": self.overridden,
            "converged": self.converged,
            "bounds": copy.deepcopy(self.bounds),
            "history": copy.deepcopy(self.history),
        }
        return {**super().state_dict(), "nm": nm}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        nm = state["nm"]
        search = nm["search"]
        self.nelder_mead = None if search is None else NelderMead.from_state_dict(search)
        if self.nelder_mead is not None:
            if self.nelder_mead.dim != len(self.reward_names):
                raise ValueError(
                    f"nm_ppo: saved search has {self.nelder_mead.dim} dimensions but the run has "
                    f"{len(self.reward_names)} rewards ({', '.join(self.reward_names)})"
                )
            self.nelder_mead.config = self.config.nelder_mead_config()
        self.target = None if nm["target"] is None else [float(v) for v in nm["target"]]
        self.iterations_on_threshold = int(nm["iterations_on_threshold"])
        self.overridden = bool(nm["overridden"])
        self.converged = bool(nm["converged"])
        self.bounds = copy.deepcopy(nm["bounds"])
        self.history = copy.deepcopy(nm["history"])

    def metrics(self) -> dict[str, float]:
        out = super().metrics()
        nm = self.nelder_mead
        best_theta: np.ndarray | None = None
        best_score = float("nan")
        if nm is not None and nm.n_evaluations:
            best_theta, best_f = nm.best()
            best_score = -best_f
        values = [] if nm is None else [v for v in nm.simplex_values if v is not None]
        out.update({
            "nm/best_score": best_score,
            "nm/evaluations": float(0 if nm is None else nm.n_evaluations),
            "nm/cache_hits": float(0 if nm is None else sum(e.cached for e in nm.history)),
            "nm/simplex_spread": float(np.std(values)) if len(values) >= 2 else float("nan"),
            "nm/iterations_on_threshold": float(self.iterations_on_threshold),
            "nm/total_iterations": float(0 if nm is None else nm.total_iterations),
            "nm/iteration": float(0 if nm is None else nm.iteration),
            "nm/converged": float(self.converged),
            "nm/overridden": float(self.overridden),
        })  # fmt: skip
        for i, name in enumerate(self.reward_names):
            out[f"nm/best/{name}"] = float("nan") if best_theta is None else float(best_theta[i])
        return out

    # --- internals -------------------------------------------------------------------------------
    def _read(self, evaluation: dict[str, float]) -> tuple[float, list[float]]:
        """(eval_score, held-out mean of every reward in config order); clear errors for missing/bad values."""
        keys = [SCORE_KEY] + [REWARD_PREFIX + name for name in self.reward_names]
        missing = [k for k in keys if k not in evaluation]
        if missing:
            raise ValueError(
                f"nm_ppo: the evaluation lacks {', '.join(missing)} (got: {', '.join(sorted(evaluation)) or 'nothing'})"
            )
        values = [float(evaluation[k]) for k in keys]
        bad = [k for k, v in zip(keys, values, strict=True) if not math.isfinite(v)]
        if bad:
            raise ValueError(f"nm_ppo: non-finite evaluation values for {', '.join(bad)}; cannot score the thresholds")
        return values[0], values[1:]

    def _start_search(self, iteration: int, m0: list[float]) -> None:
        cfg = self.config
        given_low, given_high = cfg.simplex_low or {}, cfg.simplex_high or {}
        low = np.array([given_low.get(n, m) for n, m in zip(self.reward_names, m0, strict=True)], dtype=float)
        width = np.where(low != 0, cfg.simplex_spread * np.abs(low), cfg.simplex_spread)
        high = np.array(
            [given_high.get(n, lo + w) for n, lo, w in zip(self.reward_names, low, width, strict=True)], dtype=float
        )
        # The box is what matters: a measured m⁰ above a configured high just swaps the corners.
        lo, hi = np.minimum(low, high), np.maximum(low, high)
        self.bounds = {"low": lo.tolist(), "high": hi.tolist(), "initial_means": [float(v) for v in m0]}
        self.nelder_mead = NelderMead.from_bounds(lo, hi, cfg.nelder_mead_config(), seed=cfg.seed)
        self._advance(iteration, f"initial means {_fmt(m0)}, simplex box {_fmt(lo)} → {_fmt(hi)}")

    def _advance(self, iteration: int, why: str) -> None:
        """Ask for the next θ to train (cache hits are answered inside ask) or, once converged, exploit the best."""
        assert self.nelder_mead is not None
        theta = self.nelder_mead.ask()
        if theta is None:
            self.converged = True
            best, best_f = self.nelder_mead.best()
            log.info("nm_ppo @%d: %s; search converged (%s), training towards the best θ=%s (eval %.4f)",
                     iteration, why, self.nelder_mead.stop_reason, _fmt(best), -best_f)  # fmt: skip
            self._set_target(best)
            return
        log.info("nm_ppo @%d: %s; next θ=%s", iteration, why, _fmt(theta))
        self._set_target(theta)

    def _set_target(self, theta: np.ndarray | list[float]) -> None:
        self.target = [float(v) for v in theta]
        self.thresholds = torch.tensor(self.target, dtype=torch.float32)
        self.iterations_on_threshold = 0


def _fmt(values: Any) -> str:
    return "(" + ", ".join(f"{float(v):.4f}" for v in values) + ")"
