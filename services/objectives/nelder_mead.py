"""Ask/tell Nelder–Mead over constraint-threshold vectors, the outer loop of NM-PPO (docs/ALGORITHMS.md §7).

NM-PPO searches for the proxy points θ (one threshold per constrained reward) during a single run: each
proposed θ is "evaluated" by continuing ξ-PPO training towards it and reading the held-out eval_score.
An evaluation therefore costs PPO iterations, lives in another process, and must survive restarts, so
the optimiser is an explicit state machine rather than a blocking ``scipy.optimize`` call:

    nm = NelderMead.from_bounds(m0, m_max, seed=0)
    while (theta := nm.ask()) is not None:          # None once converged
        f, iters = train_xi_ppo_towards(theta)      # f = −eval_score
        nm.tell(theta, f, iterations=iters)
        persist(json.dumps(nm.state_dict()))

Semantics follow §7 / ConstrainedRL4LMs ``NelderMeadTrainer`` (minimise f = −eval; α=1, γ=2, ρ=0.5, σ=0.5;
reflection accepted if f_best ≤ f_r < f_second-worst; expansion keeps the better of x_e/x_r judged against
f_best; contraction is always *inside*; shrink toward the best; convergence is tested only after a shrink,
as std(f over the simplex) < tol).

**Cache.** Every evaluated θ is cached. Before a candidate is handed out, it is looked up: an exact match,
or any stored θ' with every |θ_i − θ'_i| ≤ tol·|θ'_i| (``relative``, paper) or ≤ tol (``absolute``, code).
A hit is answered *inside the search* with the stored f (no training) and recorded in the history with
``cached=True``; ``ask()`` only ever returns θs that need training. When several stored θ's match, the
closest one (smallest worst-coordinate deviation in tolerance units; earliest on ties) is used. The point
stays in the simplex at the *proposed* θ, with the cached f, exactly as in the reference code.

Caveat (measured, see tests): the paper's relative ±5 % cache is coarse next to the eval surface's width,
so near the optimum proposals get answered with a neighbour's score and the simplex converges early, often
before any *trained* θ scores ≥ 0.99 on the §7 analytic surface; the code's absolute 0.005 rule does not.

Budget and the final step are the caller's: stop asking when ``total_iterations`` reaches the PPO budget,
then evaluate ``best()[0]`` once more (§7).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np

__all__ = ["Evaluation", "NelderMead", "NelderMeadConfig", "thresholds_reached"]

Phase = Literal["init", "reflect", "expand", "contract", "shrink", "converged"]
_PHASES: tuple[str, ...] = ("init", "reflect", "expand", "contract", "shrink", "converged")
_STATE_VERSION = 1
_MAX_CONSECUTIVE_CACHE_HITS = 10_000


def thresholds_reached(
    metrics: Sequence[float] | np.ndarray, thresholds: Sequence[float] | np.ndarray, rel_tol: float = 0.05
) -> bool:
    """§7 step 3: θ counts as reached when |m_i − θ_i| ≤ rel_tol·|θ_i| for every constrained metric.

    When this holds, NM-PPO stops training on θ early and reports the current eval score.
    """
    m = np.asarray(metrics, dtype=float)
    t = np.asarray(thresholds, dtype=float)
    if m.shape != t.shape or m.ndim != 1:
        raise ValueError(f"metrics {m.shape} and thresholds {t.shape} must be equal-length vectors")
    return bool(np.all(np.abs(m - t) <= rel_tol * np.abs(t)))


@dataclass(frozen=True)
class NelderMeadConfig:
    """Coefficients of [000] A.4 (untuned in the paper) and the cache rule.

    cache_mode "relative" (paper, ±5 %) or "absolute" (code, 0.005); cache_tol=None picks the mode's default.
    """

    alpha: float = 1.0
    gamma: float = 2.0
    rho: float = 0.5
    sigma: float = 0.5
    tol: float = 0.01
    cache_mode: Literal["relative", "absolute"] = "relative"
    cache_tol: float | None = None

    def __post_init__(self) -> None:
        if self.alpha <= 0:
            raise ValueError(f"alpha must be > 0, got {self.alpha}")
        if self.gamma <= 1:
            raise ValueError(f"gamma must be > 1 (expansion goes beyond the reflection), got {self.gamma}")
        if not 0 < self.rho < 1:
            raise ValueError(f"rho must be in (0, 1), got {self.rho}")
        if not 0 < self.sigma < 1:
            raise ValueError(f"sigma must be in (0, 1), got {self.sigma}")
        if self.tol <= 0:
            raise ValueError(f"tol must be > 0, got {self.tol}")
        if self.cache_mode not in ("relative", "absolute"):
            raise ValueError(f"cache_mode must be 'relative' or 'absolute', got {self.cache_mode!r}")
        if self.cache_tol is not None and self.cache_tol < 0:
            raise ValueError(f"cache_tol must be >= 0, got {self.cache_tol}")

    @property
    def effective_cache_tol(self) -> float:
        if self.cache_tol is not None:
            return self.cache_tol
        return 0.05 if self.cache_mode == "relative" else 0.005


@dataclass(frozen=True)
class Evaluation:
    """One answered candidate: ``iterations`` PPO iterations were spent on it (0 for a cache hit)."""

    thresholds: tuple[float, ...]
    f: float
    iterations: int
    cached: bool
    phase: str


def _vec(x: Sequence[float] | np.ndarray, n: int | None, what: str) -> np.ndarray:
    arr = np.array(x, dtype=float)
    if arr.ndim != 1 or (n is not None and arr.shape[0] != n):
        raise ValueError(f"{what} must be a vector of length {n}, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{what} must be finite, got {arr.tolist()}")
    return arr


class NelderMead:
    """Resumable ask/tell Nelder–Mead minimiser of f(θ) = −eval_score(θ) with an evaluation cache."""

    def __init__(
        self,
        initial_simplex: Sequence[Sequence[float]] | np.ndarray,
        config: NelderMeadConfig | None = None,
        rng: np.random.Generator | None = None,
    ) -> None:
        """Start from explicit points (N+1 of them, each of length N). Prefer :meth:`from_bounds`."""
        simplex = np.array(initial_simplex, dtype=float)
        if simplex.ndim != 2 or simplex.shape[1] < 1 or simplex.shape[0] != simplex.shape[1] + 1:
            raise ValueError(f"initial simplex must have shape (N+1, N), got {simplex.shape}")
        if not np.all(np.isfinite(simplex)):
            raise ValueError("initial simplex must be finite")
        self.config = config or NelderMeadConfig()
        self.dim = simplex.shape[1]
        self._rng = rng if rng is not None else np.random.default_rng()
        self._x = simplex  # (N+1, N); kept sorted best→worst from the first full iteration on
        self._f: list[float | None] = [None] * (self.dim + 1)
        self._phase: Phase = "init"
        self._index = 0  # init: next point to evaluate; shrink: next shrunk point (1..N)
        self._centroid: np.ndarray | None = None
        self._xr: np.ndarray | None = None
        self._fr: float | None = None
        self._candidate: np.ndarray | None = None  # x_e or x_c while expanding/contracting
        self._pending: np.ndarray | None = None  # handed out by ask(), awaiting tell()
        self._cache: list[tuple[np.ndarray, float]] = []
        self._history: list[Evaluation] = []
        self._iteration = 0  # completed-or-started NM iterations (reflections proposed)
        self._stop_reason: str | None = None

    @classmethod
    def from_bounds(
        cls,
        m0: Sequence[float] | np.ndarray,
        m_max: Sequence[float] | np.ndarray,
        config: NelderMeadConfig | None = None,
        seed: int | np.random.Generator | None = 0,
    ) -> NelderMead:
        """§7 initial simplex: N+1 points θ_i = m0_i + U(0,1)·(mmax_i − m0_i).

        m0 is the initial policy's score per constrained metric, m_max the largest observed. Starting near
        the pretrained policy keeps proposals feasible ([000] A.4). Draws are one ``rng.random((N+1, N))``.
        """
        lo = _vec(m0, None, "m0")
        hi = _vec(m_max, lo.shape[0], "m_max")
        if np.any(hi < lo):
            raise ValueError(f"m_max must be >= m0 elementwise, got m0={lo.tolist()}, m_max={hi.tolist()}")
        rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
        u = rng.random((lo.shape[0] + 1, lo.shape[0]))
        return cls(lo + u * (hi - lo), config=config, rng=rng)

    # ------------------------------------------------------------------------------------------- public

    @property
    def phase(self) -> Phase:
        return self._phase

    @property
    def converged(self) -> bool:
        return self._phase == "converged"

    @property
    def stop_reason(self) -> str | None:
        """None while running; "std<tol" (§7 convergence after a shrink) or "cache_stall" (safety net:
        more than 10,000 consecutive steps answered by the cache, which only a degenerate cache can cause)."""
        return self._stop_reason

    @property
    def centroid(self) -> np.ndarray | None:
        """Centroid of the N best points of the current iteration (None during the initial simplex)."""
        return None if self._centroid is None else self._centroid.copy()

    @property
    def iteration(self) -> int:
        """Number of NM iterations started (one per reflection proposed)."""
        return self._iteration

    @property
    def history(self) -> list[Evaluation]:
        return list(self._history)

    @property
    def n_evaluations(self) -> int:
        """Unique (trained, non-cached) evaluations so far."""
        return sum(1 for e in self._history if not e.cached)

    @property
    def total_iterations(self) -> int:
        """PPO iterations spent across all evaluations; the caller compares this with its budget."""
        return sum(e.iterations for e in self._history)

    @property
    def simplex(self) -> np.ndarray:
        return self._x.copy()

    @property
    def simplex_values(self) -> list[float | None]:
        return list(self._f)

    @property
    def pending(self) -> np.ndarray | None:
        return None if self._pending is None else self._pending.copy()

    def best(self) -> tuple[np.ndarray, float]:
        """Best (θ, f) among real (non-cached) evaluations so far."""
        real = [e for e in self._history if not e.cached]
        if not real:
            raise RuntimeError("nothing has been evaluated yet")
        e = min(real, key=lambda ev: ev.f)  # first on ties
        return np.array(e.thresholds), e.f

    def ask(self) -> np.ndarray | None:
        """The next θ that needs training, or None once converged.

        Idempotent until :meth:`tell`. Cache hits are resolved here without returning.
        """
        if self._pending is not None:
            return self._pending.copy()
        hits = 0
        while self._phase != "converged":
            candidate = self._current_candidate()
            hit = self._lookup(candidate)
            if hit is None:
                self._pending = candidate
                return candidate.copy()
            self._history.append(Evaluation(tuple(candidate.tolist()), hit, 0, True, self._phase))
            self._consume(hit)
            hits += 1
            if hits >= _MAX_CONSECUTIVE_CACHE_HITS and self._phase != "converged":
                self._phase = "converged"
                self._stop_reason = "cache_stall"
                self._clear_step()
        return None

    def tell(self, theta: Sequence[float] | np.ndarray, f: float, iterations: int = 0) -> None:
        """Report f(θ) = −eval_score for the θ returned by the last :meth:`ask`."""
        if self._pending is None:
            raise RuntimeError("tell() without a pending ask(); call ask() first")
        th = _vec(theta, self.dim, "theta")
        if not np.allclose(th, self._pending, rtol=0.0, atol=1e-12):
            raise ValueError(f"tell() got θ={th.tolist()} but the pending θ is {self._pending.tolist()}")
        f = float(f)
        if not np.isfinite(f):
            raise ValueError(f"f must be finite, got {f}")
        if int(iterations) < 0:
            raise ValueError(f"iterations must be >= 0, got {iterations}")
        x = self._pending
        self._pending = None
        self._cache.append((x.copy(), f))
        self._history.append(Evaluation(tuple(x.tolist()), f, int(iterations), False, self._phase))
        self._consume(f)

    def lookup(self, theta: Sequence[float] | np.ndarray) -> float | None:
        """The cached f for θ under the configured tolerance rule, or None."""
        return self._lookup(_vec(theta, self.dim, "theta"))

    # ---------------------------------------------------------------------------------- state machine

    def _current_candidate(self) -> np.ndarray:
        if self._phase in ("init", "shrink"):
            return self._x[self._index].copy()
        if self._phase == "reflect":
            assert self._xr is not None
            return self._xr.copy()
        assert self._candidate is not None
        return self._candidate.copy()

    def _consume(self, f: float) -> None:
        """Advance the search with the value of the current candidate."""
        cfg = self.config
        n = self.dim
        if self._phase == "init":
            self._f[self._index] = f
            self._index += 1
            if self._index > n:
                self._start_iteration()
            return

        fs: list[float] = [v for v in self._f if v is not None]  # all set outside "init"
        if self._phase == "reflect":
            assert self._xr is not None and self._centroid is not None
            self._fr = f
            if fs[0] <= f < fs[n - 1]:
                self._replace_worst(self._xr, f)
            elif f < fs[0]:
                self._candidate = self._centroid + cfg.gamma * (self._xr - self._centroid)
                self._phase = "expand"
            else:
                self._candidate = self._centroid + cfg.rho * (self._x[n] - self._centroid)
                self._phase = "contract"
        elif self._phase == "expand":
            assert self._candidate is not None and self._xr is not None and self._fr is not None
            if f < fs[0]:
                self._replace_worst(self._candidate, f)
            else:
                self._replace_worst(self._xr, self._fr)
        elif self._phase == "contract":
            assert self._candidate is not None
            if f < fs[n]:
                self._replace_worst(self._candidate, f)
            else:
                best = self._x[0].copy()
                self._x[1:] = best + cfg.sigma * (self._x[1:] - best)
                for j in range(1, n + 1):
                    self._f[j] = None
                self._index = 1
                self._phase = "shrink"
                self._candidate = None
        elif self._phase == "shrink":
            self._f[self._index] = f
            self._index += 1
            if self._index > n:
                if float(np.std(np.array(self._f, dtype=float))) < cfg.tol:
                    self._phase = "converged"
                    self._stop_reason = "std<tol"
                    self._clear_step()
                else:
                    self._start_iteration()
        else:  # pragma: no cover - ask() never consumes once converged
            raise RuntimeError(f"cannot consume a value in phase {self._phase!r}")

    def _replace_worst(self, x: np.ndarray, f: float) -> None:
        self._x[self.dim] = x
        self._f[self.dim] = f
        self._start_iteration()

    def _start_iteration(self) -> None:
        """Sort best→worst (stable), then propose the reflection of the worst point."""
        order = np.argsort(np.array(self._f, dtype=float), kind="stable")
        self._x = self._x[order]
        self._f = [self._f[i] for i in order]
        n = self.dim
        self._centroid = self._x[:n].mean(axis=0)
        self._xr = self._centroid + self.config.alpha * (self._centroid - self._x[n])
        self._fr = None
        self._candidate = None
        self._index = 0
        self._phase = "reflect"
        self._iteration += 1

    def _clear_step(self) -> None:
        self._centroid = self._xr = self._candidate = None
        self._fr = None
        self._index = 0

    def _lookup(self, theta: np.ndarray) -> float | None:
        tol = self.config.effective_cache_tol
        best: tuple[float, float] | None = None  # (deviation in tolerance units, f)
        for stored, f in self._cache:
            if np.array_equal(stored, theta):
                return f
            diff = np.abs(theta - stored)
            scale = tol * np.abs(stored) if self.config.cache_mode == "relative" else np.full_like(stored, tol)
            if np.all(diff <= scale):
                with np.errstate(divide="ignore", invalid="ignore"):
                    dev = float(np.max(np.where(scale > 0, diff / scale, 0.0)))
                if best is None or dev < best[0]:
                    best = (dev, f)
        return None if best is None else best[1]

    # ------------------------------------------------------------------------------------ persistence

    def state_dict(self) -> dict[str, Any]:
        """A JSON-serialisable snapshot; :meth:`from_state_dict` resumes the identical search."""

        def arr(a: np.ndarray | None) -> list[float] | None:
            return None if a is None else [float(v) for v in a]

        return {
            "version": _STATE_VERSION,
            "config": asdict(self.config),
            "dim": self.dim,
            "phase": self._phase,
            "index": self._index,
            "iteration": self._iteration,
            "stop_reason": self._stop_reason,
            "simplex": [[float(v) for v in row] for row in self._x],
            "values": [None if v is None else float(v) for v in self._f],
            "centroid": arr(self._centroid),
            "reflected": arr(self._xr),
            "reflected_value": None if self._fr is None else float(self._fr),
            "candidate": arr(self._candidate),
            "pending": arr(self._pending),
            "cache": [{"thresholds": arr(x), "f": float(f)} for x, f in self._cache],
            "history": [asdict(e) | {"thresholds": list(e.thresholds)} for e in self._history],
            "rng": self._rng.bit_generator.state,
        }

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Any]) -> NelderMead:
        """Rebuild a search from :meth:`state_dict` output (possibly after a JSON round trip)."""
        if state.get("version") != _STATE_VERSION:
            raise ValueError(f"unsupported NelderMead state version {state.get('version')!r}")
        if state["phase"] not in _PHASES:
            raise ValueError(f"unknown phase {state['phase']!r}")
        rng_state = dict(state["rng"])
        bit_gen_cls = getattr(np.random, rng_state["bit_generator"], None)
        if bit_gen_cls is None:
            raise ValueError(f"unknown bit generator {rng_state['bit_generator']!r}")
        bit_gen = bit_gen_cls()
        bit_gen.state = rng_state
        self = cls(np.array(state["simplex"], dtype=float), NelderMeadConfig(**state["config"]),
                   np.random.Generator(bit_gen))  # fmt: skip
        if self.dim != state["dim"]:
            raise ValueError(f"state dim {state['dim']} does not match its simplex ({self.dim})")

        def arr(a: Sequence[float] | None) -> np.ndarray | None:
            return None if a is None else np.array(a, dtype=float)

        self._f = [None if v is None else float(v) for v in state["values"]]
        self._phase = state["phase"]
        self._index = int(state["index"])
        self._iteration = int(state["iteration"])
        self._stop_reason = state.get("stop_reason")
        self._centroid = arr(state["centroid"])
        self._xr = arr(state["reflected"])
        self._fr = None if state["reflected_value"] is None else float(state["reflected_value"])
        self._candidate = arr(state["candidate"])
        self._pending = arr(state["pending"])
        self._cache = [(np.array(c["thresholds"], dtype=float), float(c["f"])) for c in state["cache"]]
        self._history = [
            Evaluation(tuple(float(v) for v in e["thresholds"]), float(e["f"]), int(e["iterations"]),
                       bool(e["cached"]), str(e["phase"]))  # fmt: skip
            for e in state["history"]
        ]
        return self
