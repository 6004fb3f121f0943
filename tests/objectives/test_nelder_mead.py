"""Ask/tell Nelder–Mead over thresholds (docs/ALGORITHMS.md §7)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from services.objectives.nelder_mead import NelderMead, NelderMeadConfig, thresholds_reached

M0 = (0.2013, 0.4304)  # initial policy's (METEOR, intent)
M_MAX = (0.2481, 0.5283)  # largest observed


def analytic_eval(theta: np.ndarray | tuple[float, ...]) -> float:
    """§7's analytic eval surface, maximised at θ = (0.23, 0.48)."""
    return 1 - ((theta[0] - 0.23) / 0.05) ** 2 - ((theta[1] - 0.48) / 0.1) ** 2


def f(theta: np.ndarray | tuple[float, ...]) -> float:
    return -analytic_eval(theta)


def run(nm: NelderMead, max_unique: int = 500) -> list[tuple[float, ...]]:
    """Drive a search on the analytic surface; returns the θs ask() handed out."""
    asked: list[tuple[float, ...]] = []
    while len(asked) < max_unique and (theta := nm.ask()) is not None:
        asked.append(tuple(theta.tolist()))
        nm.tell(theta, f(theta), iterations=7)
    return asked


def as_set(points: np.ndarray) -> set[tuple[float, ...]]:
    return {tuple(np.round(p, 10)) for p in points}


# --------------------------------------------------------------------------------------------- sanity


def test_section7_sanity_iteration() -> None:
    nm = NelderMead([(0.20, 0.45), (0.22, 0.50), (0.25, 0.44)])
    expected_f = {(0.20, 0.45): -0.55, (0.22, 0.50): -0.92, (0.25, 0.44): -0.68}
    for point, value in expected_f.items():
        theta = nm.ask()
        np.testing.assert_allclose(theta, point)
        assert f(theta) == pytest.approx(value, abs=1e-12)
        nm.tell(theta, f(theta), iterations=10)

    # reflection of the worst point (0.20, 0.45) through the centroid of the two best
    reflected = nm.ask()
    np.testing.assert_allclose(nm.centroid, (0.235, 0.47), atol=1e-12)
    np.testing.assert_allclose(reflected, (0.27, 0.49), atol=1e-12)
    np.testing.assert_allclose(nm.simplex_values, (-0.92, -0.68, -0.55), atol=1e-12)
    assert f(reflected) == pytest.approx(-0.35, abs=1e-12)
    nm.tell(reflected, f(reflected))  # worse than the worst: rejected, contract inside
    assert nm.phase == "contract"

    contracted = nm.ask()
    np.testing.assert_allclose(contracted, (0.2175, 0.46), atol=1e-12)
    assert f(contracted) == pytest.approx(-0.8975, abs=1e-12)
    nm.tell(contracted, f(contracted))  # better than the worst: accepted
    assert as_set(nm.simplex) == as_set(np.array([(0.22, 0.50), (0.25, 0.44), (0.2175, 0.46)]))
    np.testing.assert_allclose(nm.simplex_values, (-0.92, -0.8975, -0.68), atol=1e-12)
    assert nm.phase == "reflect" and nm.iteration == 2
    assert [e.iterations for e in nm.history] == [10, 10, 10, 0, 0]
    assert nm.total_iterations == 30 and nm.n_evaluations == 5


@pytest.mark.parametrize(
    ("mode", "near_hit", "far_hit"),
    [("relative", True, True), ("absolute", True, False)],
)
def test_section7_cache_rules(mode: str, near_hit: bool, far_hit: bool) -> None:
    nm = NelderMead([(0.22, 0.50), (0.30, 0.40), (0.40, 0.30)], NelderMeadConfig(cache_mode=mode))
    theta = nm.ask()
    nm.tell(theta, -0.92)
    assert nm.lookup((0.22, 0.50)) == -0.92  # exact
    assert (nm.lookup((0.2204, 0.4980)) == -0.92) is near_hit
    assert (nm.lookup((0.2300, 0.5000)) == -0.92) is far_hit  # Δ = 0.01: ≤ 5 % of 0.22, > 0.005
    assert nm.lookup((0.2320, 0.5000)) is None  # Δ = 0.012 > 5 % of 0.22 = 0.011


def test_cache_tolerance_is_configurable_and_nearest_match_wins() -> None:
    cfg = NelderMeadConfig(cache_mode="absolute", cache_tol=0.02)
    nm = NelderMead([(0.20, 0.50), (0.23, 0.50), (0.40, 0.30)], cfg)
    for value in (-0.1, -0.2):
        nm.tell(nm.ask(), value)
    assert nm.lookup((0.218, 0.50)) == -0.2  # both stored θs within 0.02; (0.23, 0.50) is closer
    assert nm.lookup((0.212, 0.50)) == -0.1  # both within 0.02; (0.20, 0.50) is closer
    assert nm.lookup((0.255, 0.50)) is None


def test_cache_hits_are_answered_inside_the_search() -> None:
    # the second initial point lies within 5 % of the first: it is never handed out for training
    nm = NelderMead([(0.22, 0.50), (0.221, 0.501), (0.25, 0.44)])
    first = nm.ask()
    nm.tell(first, -0.92, iterations=10)
    third = nm.ask()
    np.testing.assert_allclose(third, (0.25, 0.44))
    cached = nm.history[-1]
    assert cached.cached and cached.f == -0.92 and cached.iterations == 0
    assert cached.thresholds == (0.221, 0.501) and cached.phase == "init"
    assert nm.n_evaluations == 1
    np.testing.assert_array_equal(nm.ask(), third)  # idempotent until tell()


def test_section7_reached_test() -> None:
    assert thresholds_reached((0.236, 0.47), (0.23, 0.48))
    assert not thresholds_reached((0.25, 0.47), (0.23, 0.48))  # |Δ| = 0.02 > 0.0115
    assert not thresholds_reached((0.23, 0.45), (0.23, 0.48))  # |Δ| = 0.03 > 0.024
    with pytest.raises(ValueError):
        thresholds_reached((0.2,), (0.2, 0.4))


# ------------------------------------------------------------------------------------ other branches


def test_expansion_accepted_and_rejected() -> None:
    # f(θ) = θ0 + θ1: reflection (0, 0) beats the best, expansion (−0.5, −0.5) beats it again
    nm = NelderMead([(1.0, 1.0), (1.0, 0.0), (0.0, 1.0)], NelderMeadConfig(cache_tol=0.0))
    for _ in range(3):
        theta = nm.ask()
        nm.tell(theta, float(theta.sum()))
    np.testing.assert_allclose(nm.ask(), (0.0, 0.0))
    nm.tell((0.0, 0.0), 0.0)
    np.testing.assert_allclose(nm.ask(), (-0.5, -0.5))
    nm.tell((-0.5, -0.5), -1.0)
    assert as_set(nm.simplex) == {(1.0, 0.0), (0.0, 1.0), (-0.5, -0.5)}

    # g(θ) = (θ0 + θ1)²: expansion scores 1.0, not < f_best = 1.0, so the reflection is kept
    nm = NelderMead([(1.0, 1.0), (1.0, 0.0), (0.0, 1.0)], NelderMeadConfig(cache_tol=0.0))
    for _ in range(3):
        theta = nm.ask()
        nm.tell(theta, float(theta.sum() ** 2))
    nm.tell(nm.ask(), 0.0)
    expanded = nm.ask()
    nm.tell(expanded, float(expanded.sum() ** 2))
    assert as_set(nm.simplex) == {(1.0, 0.0), (0.0, 1.0), (0.0, 0.0)}


def test_shrink_then_convergence_test() -> None:
    nm = NelderMead([(0.0, 0.0), (1.0, 0.0), (0.0, 1.0)], NelderMeadConfig(cache_tol=0.0))
    for value in (0.0, 1.0, 2.0):
        nm.tell(nm.ask(), value)
    nm.tell(nm.ask(), 5.0)  # reflection worse than worst
    np.testing.assert_allclose(nm.ask(), (0.25, 0.5))  # c = (0.5, 0), inside contraction toward (0, 1)
    nm.tell((0.25, 0.5), 5.0)  # contraction fails → shrink toward the best (0, 0)
    assert nm.phase == "shrink"
    np.testing.assert_allclose(nm.ask(), (0.5, 0.0))
    nm.tell((0.5, 0.0), 0.001)
    np.testing.assert_allclose(nm.ask(), (0.0, 0.5))
    nm.tell((0.0, 0.5), 0.002)  # std(0, 0.001, 0.002) = 0.00082 < 0.01
    assert nm.ask() is None and nm.converged and nm.stop_reason == "std<tol"
    np.testing.assert_allclose(nm.best()[0], (0.0, 0.0))

    # the same shrink with a spread-out simplex keeps going with a new reflection
    nm = NelderMead([(0.0, 0.0), (1.0, 0.0), (0.0, 1.0)], NelderMeadConfig(cache_tol=0.0))
    for value in (0.0, 1.0, 2.0, 5.0, 5.0, 0.5, 0.9):
        nm.tell(nm.ask(), value)
    assert nm.phase == "reflect" and not nm.converged and nm.iteration == 2


def test_initial_simplex_from_bounds_is_seeded() -> None:
    nm = NelderMead.from_bounds(M0, M_MAX, seed=0)
    u = np.random.default_rng(0).random((3, 2))
    np.testing.assert_allclose(nm.simplex, np.array(M0) + u * (np.array(M_MAX) - np.array(M0)))
    assert np.all(nm.simplex >= M0) and np.all(nm.simplex <= M_MAX)
    np.testing.assert_array_equal(nm.simplex, NelderMead.from_bounds(M0, M_MAX, seed=0).simplex)
    assert not np.array_equal(nm.simplex, NelderMead.from_bounds(M0, M_MAX, seed=1).simplex)


def test_input_validation() -> None:
    nm = NelderMead.from_bounds(M0, M_MAX, seed=0)
    with pytest.raises(RuntimeError, match="ask"):
        nm.tell((0.2, 0.4), -0.5)
    theta = nm.ask()
    with pytest.raises(ValueError, match="pending"):
        nm.tell(theta + 0.01, -0.5)
    with pytest.raises(ValueError, match="finite"):
        nm.tell(theta, float("nan"))
    with pytest.raises(ValueError, match="shape"):
        NelderMead([(0.2, 0.4), (0.3, 0.5)])
    with pytest.raises(ValueError, match="m_max"):
        NelderMead.from_bounds((0.3, 0.5), (0.2, 0.6))
    with pytest.raises(ValueError, match="cache_mode"):
        NelderMeadConfig(cache_mode="fuzzy")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="rho"):
        NelderMeadConfig(rho=1.5)


# ------------------------------------------------------------------------------------------ persistence


@pytest.mark.parametrize("mode", ["relative", "absolute"])
def test_restored_search_replays_identically(mode: str) -> None:
    cfg = NelderMeadConfig(cache_mode=mode)
    reference = NelderMead.from_bounds(M0, M_MAX, cfg, seed=3)
    expected = run(reference)
    assert reference.converged and len(expected) >= 5

    for cut in range(len(expected)):
        for pending in (False, True):  # interrupt between tell and ask, or with a θ handed out
            nm = NelderMead.from_bounds(M0, M_MAX, cfg, seed=3)
            asked = run(nm, max_unique=cut)
            if pending:
                asked.append(tuple(nm.ask().tolist()))
            restored = NelderMead.from_state_dict(json.loads(json.dumps(nm.state_dict())))
            if pending:
                theta = restored.ask()
                assert tuple(theta.tolist()) == asked[-1]
                restored.tell(theta, f(theta), iterations=7)
            asked += run(restored)
            assert asked == expected  # bit-for-bit identical proposals
            assert restored.state_dict() == reference.state_dict()

    # the generator state travels too
    nm = NelderMead.from_bounds(M0, M_MAX, cfg, seed=3)
    restored = NelderMead.from_state_dict(json.loads(json.dumps(nm.state_dict())))
    assert restored._rng.random() == nm._rng.random()


def test_state_dict_rejects_unknown_versions() -> None:
    state = NelderMead.from_bounds(M0, M_MAX, seed=0).state_dict()
    with pytest.raises(ValueError, match="version"):
        NelderMead.from_state_dict(state | {"version": 99})


# ------------------------------------------------------------------------------------------- behaviour

SEEDS = range(5)
# Observed with the default cache (relative ±5 %): best eval among *trained* θs and unique evaluations
# until convergence, per seed. The cache answers proposals near the optimum with a neighbour's score, so
# the simplex collapses (std(f) = 0 after a shrink) before a trained θ reaches 0.99 — §7's claim fails.
OBSERVED_RELATIVE = {0: (0.9896, 8), 1: (0.9898, 7), 2: (0.9834, 5), 3: (0.9636, 5), 4: (0.9837, 5)}


def best_eval_within(nm: NelderMead, budget: int) -> tuple[float, int]:
    asked = run(nm, max_unique=budget)
    return max(analytic_eval(t) for t in asked), len(asked)


@pytest.mark.parametrize("seed", SEEDS)
def test_behaviour_absolute_cache_reaches_optimum(seed: int) -> None:
    """§7 behavioural claim with the code's cache rule (absolute 0.005): holds for seeds 0–4."""
    nm = NelderMead.from_bounds(M0, M_MAX, NelderMeadConfig(cache_mode="absolute"), seed=seed)
    best, unique = best_eval_within(nm, budget=15)
    assert best >= 0.99, (seed, best, unique)
    assert nm.n_evaluations == unique <= 15


@pytest.mark.parametrize("seed", SEEDS)
def test_behaviour_relative_cache_observed(seed: int) -> None:
    """Pins what the default (paper) cache rule actually does on §7's surface."""
    nm = NelderMead.from_bounds(M0, M_MAX, seed=seed)
    best, unique = best_eval_within(nm, budget=15)
    assert nm.converged and nm.stop_reason == "std<tol"
    assert (round(best, 4), unique) == OBSERVED_RELATIVE[seed]
    # the best *proposal* (trained or answered from the cache) does lie in the ≥ 0.99 region
    assert max(analytic_eval(e.thresholds) for e in nm.history) >= 0.99


@pytest.mark.xfail(strict=True, reason="§7 claim does not hold with the relative ±5 % cache; see OBSERVED_RELATIVE")
def test_behaviour_spec_claim_with_default_cache() -> None:
    for seed in SEEDS:
        best, _ = best_eval_within(NelderMead.from_bounds(M0, M_MAX, seed=seed), budget=15)
        assert best >= 0.99, (seed, best)
