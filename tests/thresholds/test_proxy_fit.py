"""Proxy-point surface fit ([000] Algorithm 2 phase 1, A.3)."""

from __future__ import annotations

import numpy as np
import pytest

from services.thresholds.proxy_fit import ProxyFitConfig, fit_proxy_points, plot_contour

TRUE_THETA = np.array([0.23, 0.48])  # (METEOR, intent) proxy point of the synthetic surface


def correlated_surface(x: np.ndarray) -> np.ndarray:
    """Peak 0.8 at TRUE_THETA, with a cross term so the rewards interact (as in [000] Fig. 3.1)."""
    d = (x - TRUE_THETA) / np.array([0.05, 0.1])
    return 0.8 - d[:, 0] ** 2 - d[:, 1] ** 2 - 0.8 * d[:, 0] * d[:, 1]


def noisy_sample(seed: int, n: int = 150, noise: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = np.column_stack([rng.uniform(0.18, 0.28, n), rng.uniform(0.40, 0.56, n)])
    return x, correlated_surface(x) + rng.normal(0.0, noise, n)


# Tolerances: |Δθ| ≤ 2 % of the sampled box per axis for degree 2 (box widths 0.10 and 0.16). Over 40
# noise seeds (σ = 0.05 against a 0.8 peak, 150 points) the worst errors observed were (0.0006, 0.0014)
# for degree 2 and (0.0015, 0.0044) for degree 3.
@pytest.mark.parametrize(("degree", "tol"), [(2, (0.002, 0.004)), (3, (0.003, 0.006))])
@pytest.mark.parametrize("seed", range(3))
def test_recovers_the_maximiser_of_a_noisy_surface(degree: int, tol: tuple[float, float], seed: int) -> None:
    x, y = noisy_sample(seed)
    fit = fit_proxy_points(x, y, ProxyFitConfig(degree=degree), names=("meteor", "intent"))
    err = np.abs(fit.theta_star - TRUE_THETA)
    assert err[0] <= tol[0] and err[1] <= tol[1], fit.theta_star
    assert fit.predicted_eval == pytest.approx(0.8, abs=0.03)
    assert fit.r2 > 0.97
    assert fit.mask[tuple(np.argmin(np.abs(ax - t)) for ax, t in zip(fit.axes, fit.theta_star))]
    # ~5 % of the data points fall below the density threshold by construction of the quantile rule
    assert np.mean(fit.supported(x)) == pytest.approx(0.95, abs=0.01)


def test_maximum_in_a_region_without_data_is_not_chosen() -> None:
    # eval = r1 + r2 increases toward (1, 1), but no run ever visited r1 > 0.6 and r2 > 0.6
    rng = np.random.default_rng(0)
    x = rng.uniform(0.0, 1.0, (600, 2))
    x = x[~((x[:, 0] > 0.6) & (x[:, 1] > 0.6))][:300]
    y = x.sum(axis=1) + rng.normal(0.0, 0.05, len(x))
    fit = fit_proxy_points(x, y)

    def in_hole(p: np.ndarray) -> bool:
        return bool(p[0] > 0.6 and p[1] > 0.6)

    unmasked = fit.unmasked_argmax
    assert in_hole(unmasked) and unmasked.sum() > 1.95  # without the mask the fit would pick ≈ (1, 1)
    assert not fit.supported([[0.95, 0.95]])[0] and not fit.supported([[0.75, 0.75]])[0]
    assert not in_hole(fit.theta_star), fit.theta_star
    assert np.min(np.linalg.norm(x - fit.theta_star, axis=1)) < 0.05  # θ* sits among real data
    assert fit.theta_star.sum() > 1.45  # … and still near the best the data supports (1.6)
    assert fit.predicted_eval < float(fit.surface.max()) - 0.3


def test_absolute_density_threshold_and_validation() -> None:
    x, y = noisy_sample(0)
    lax = fit_proxy_points(x, y, ProxyFitConfig(density_threshold=0.0))
    assert lax.mask.all()
    with pytest.raises(ValueError, match="no grid cell"):
        fit_proxy_points(x, y, ProxyFitConfig(density_threshold=1e12))
    with pytest.raises(ValueError, match="coefficients"):
        fit_proxy_points(x[:5], y[:5])
    with pytest.raises(ValueError, match="shape"):
        fit_proxy_points(x, y[:-1])
    with pytest.raises(ValueError, match="vary"):
        fit_proxy_points(np.column_stack([x[:, 0], np.full(len(x), 0.5)]), y)
    with pytest.raises(ValueError, match="density_quantile"):
        ProxyFitConfig(density_quantile=1.0)
    with pytest.raises(ValueError, match="max_grid_points"):
        fit_proxy_points(np.random.default_rng(0).random((60, 3)), np.zeros(60), ProxyFitConfig(grid_size=101))


def test_three_rewards() -> None:
    rng = np.random.default_rng(1)
    x = rng.uniform(0.0, 1.0, (400, 3))
    y = -np.sum((x - np.array([0.5, 0.4, 0.6])) ** 2, axis=1) + rng.normal(0, 0.01, 400)
    fit = fit_proxy_points(x, y)
    assert fit.surface.shape == (62, 62, 62)  # largest n with n**3 <= 250_000 (63**3 = 250_047)
    np.testing.assert_allclose(fit.theta_star, (0.5, 0.4, 0.6), atol=0.04)


def test_plot_contour_writes_a_png(tmp_path) -> None:
    x, y = noisy_sample(0)
    fit = fit_proxy_points(x, y, names=("meteor", "intent"))
    out = plot_contour(fit, tmp_path / "plots" / "proxy.png")
    assert out.exists() and out.stat().st_size > 10_000
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with_path = plot_contour(fit, tmp_path / "path.png", trajectory=[(0.2, 0.4), (0.25, 0.5), (0.23, 0.48)])
    assert with_path.stat().st_size > out.stat().st_size  # the path and its numbers add pixels

    x3 = np.random.default_rng(0).random((80, 3))
    fit3 = fit_proxy_points(x3, -np.sum((x3 - 0.5) ** 2, axis=1), ProxyFitConfig(grid_size=25))
    out3 = plot_contour(fit3, tmp_path / "slice.png", dims=(2, 0))
    assert out3.stat().st_size > 10_000
    with pytest.raises(ValueError, match="distinct"):
        plot_contour(fit3, tmp_path / "bad.png", dims=(1, 1))
