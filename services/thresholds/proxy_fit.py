"""Proxy points from single-reward runs: the numeric core of [000] Algorithm 2, phase 1 (A.3).

Each single-reward PPO run logs, every few iterations, the vector of component-RM values (r_1..r_N) and
the held-out eval_score. Pooled together, these points trace eval_score as a function of the RMs; the
*proxy point* θ* is where that surface peaks, and it becomes the constraint thresholds for phase 2.
Because the RMs are correlated, θ* differs from the per-RM peaks, hence a joint surface fit.

Recipe (A.3, with the heuristics made configurable):

1. fit a polynomial surface by ridge least squares (the paper used degree 10; we default to 2, the
   smallest degree with an interior maximum, which is far less prone to oscillating between runs);
2. estimate the density of the data points with a Gaussian KDE and mask grid cells whose density is
   below a quantile of the data points' own densities (the paper used a fixed 50/unit²; a quantile is
   scale-free, and an absolute threshold is still available), so the fit is never trusted — and θ* is
   never picked — where there is no data;
3. θ* = argmax of the fitted surface over the unmasked cells of a regular grid spanning the data.

Pure numpy / scipy / scikit-learn; matplotlib is imported only by :func:`plot_contour`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy.stats import gaussian_kde
from sklearn.linear_model import Ridge
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import PolynomialFeatures, StandardScaler

__all__ = ["ProxyFit", "ProxyFitConfig", "fit_proxy_points", "plot_contour"]


@dataclass(frozen=True)
class ProxyFitConfig:
    """Knobs of the surface fit.

    degree:            polynomial degree of the surface (inputs are standardised first).
    ridge_alpha:       L2 penalty on the polynomial coefficients (in standardised units); small, only to
                       keep high degrees well conditioned.
    density_quantile:  grid cells with KDE density below this quantile of the data points' own
                       densities are masked out.
    density_threshold: absolute density threshold instead of the quantile (A.3 used 50 per unit²).
    bandwidth:         ``gaussian_kde`` bw_method ("scott", "silverman" or a scalar factor).
    grid_size:         grid points per axis; None → as many as fit in ``max_grid_points``.
    max_grid_points:   cap on the total grid size (grid_size ** N), which the KDE is evaluated on.
    """

    degree: int = 2
    ridge_alpha: float = 1e-6
    density_quantile: float = 0.05
    density_threshold: float | None = None
    bandwidth: str | float = "scott"
    grid_size: int | None = None
    max_grid_points: int = 250_000

    def __post_init__(self) -> None:
        if self.degree < 1:
            raise ValueError(f"degree must be >= 1, got {self.degree}")
        if self.ridge_alpha < 0:
            raise ValueError(f"ridge_alpha must be >= 0, got {self.ridge_alpha}")
        if not 0.0 <= self.density_quantile < 1.0:
            raise ValueError(f"density_quantile must be in [0, 1), got {self.density_quantile}")
        if self.density_threshold is not None and self.density_threshold < 0:
            raise ValueError(f"density_threshold must be >= 0, got {self.density_threshold}")
        if self.grid_size is not None and self.grid_size < 2:
            raise ValueError(f"grid_size must be >= 2, got {self.grid_size}")

    def grid_points_per_axis(self, dim: int) -> int:
        if self.grid_size is not None:
            n = self.grid_size
        else:  # largest n with n**dim <= cap (guarding against float error in the root), at most 201
            n = min(201, round(self.max_grid_points ** (1 / dim)) + 1)
            while n > 2 and n**dim > self.max_grid_points:
                n -= 1
        if n < 2 or n**dim > self.max_grid_points:
            raise ValueError(
                f"a {n}^{dim} grid exceeds max_grid_points={self.max_grid_points}; lower grid_size or raise the cap"
            )
        return n


@dataclass
class ProxyFit:
    """Result of :func:`fit_proxy_points`.

    theta_star:      argmax of the fitted surface over the unmasked grid, shape (N,).
    predicted_eval:  fitted eval_score at theta_star.
    axes:            N grid axes; ``surface`` / ``density`` / ``mask`` have shape (len(axes[0]), …) with
                     ``indexing="ij"`` (axis k ↔ reward k).
    mask:            True where the surface is trusted (density ≥ density_threshold).
    r2:              in-sample R² of the polynomial fit.
    """

    theta_star: np.ndarray
    predicted_eval: float
    axes: list[np.ndarray]
    surface: np.ndarray
    density: np.ndarray
    mask: np.ndarray
    density_threshold: float
    points: np.ndarray
    scores: np.ndarray
    r2: float
    config: ProxyFitConfig
    names: tuple[str, ...]
    model: Pipeline = field(repr=False)
    kde: gaussian_kde = field(repr=False)

    def predict(self, x: np.ndarray | Sequence[Sequence[float]]) -> np.ndarray:
        """Fitted eval_score at points of shape (M, N)."""
        return self.model.predict(np.atleast_2d(np.asarray(x, dtype=float)))

    def supported(self, x: np.ndarray | Sequence[Sequence[float]]) -> np.ndarray:
        """Whether each point (M, N) lies in the region where the data density passes the mask."""
        pts = np.atleast_2d(np.asarray(x, dtype=float))
        return self.kde(pts.T) >= self.density_threshold

    @property
    def unmasked_argmax(self) -> np.ndarray:
        """Grid argmax of the surface ignoring the mask — what the mask protects against."""
        idx = np.unravel_index(int(np.argmax(self.surface)), self.surface.shape)
        return np.array([ax[i] for ax, i in zip(self.axes, idx, strict=True)])


def fit_proxy_points(
    points: np.ndarray | Sequence[Sequence[float]],
    scores: np.ndarray | Sequence[float],
    config: ProxyFitConfig | None = None,
    names: Sequence[str] | None = None,
) -> ProxyFit:
    """Fit eval_score ≈ f(r_1..r_N) and return θ* = argmax f over the data-supported region.

    points: (K, N) component-RM values logged across the single-reward runs; scores: (K,) eval_score.
    """
    cfg = config or ProxyFitConfig()
    x = np.asarray(points, dtype=float)
    y = np.asarray(scores, dtype=float)
    if x.ndim != 2:
        raise ValueError(f"points must have shape (K, N), got {x.shape}")
    k, dim = x.shape
    if y.shape != (k,):
        raise ValueError(f"scores must have shape ({k},), got {y.shape}")
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        raise ValueError("points and scores must be finite")
    n_terms = math.comb(dim + cfg.degree, cfg.degree)
    if k < max(n_terms, dim + 2):
        raise ValueError(f"a degree-{cfg.degree} surface in {dim}D has {n_terms} coefficients; got only {k} points")
    if np.any(np.ptp(x, axis=0) == 0):
        raise ValueError("every reward must vary across the points (a constant column has no surface to fit)")
    label = tuple(names) if names is not None else tuple(f"r{i + 1}" for i in range(dim))
    if len(label) != dim:
        raise ValueError(f"got {len(label)} names for {dim} rewards")

    model = Pipeline(
        [
            ("scale", StandardScaler()),
            ("poly", PolynomialFeatures(degree=cfg.degree, include_bias=False)),
            ("ridge", Ridge(alpha=cfg.ridge_alpha)),
        ]
    )
    model.fit(x, y)
    residual = y - model.predict(x)
    total = float(np.sum((y - y.mean()) ** 2))
    r2 = 1.0 - float(np.sum(residual**2)) / total if total > 0 else 1.0

    try:
        kde = gaussian_kde(x.T, bw_method=cfg.bandwidth)
    except np.linalg.LinAlgError as exc:  # collinear rewards: the KDE covariance is singular
        raise ValueError("the reward points are (nearly) collinear; the KDE mask is undefined") from exc
    threshold = (
        float(cfg.density_threshold)
        if cfg.density_threshold is not None
        else float(np.quantile(kde(x.T), cfg.density_quantile))
    )

    n = cfg.grid_points_per_axis(dim)
    axes = [np.linspace(lo, hi, n) for lo, hi in zip(x.min(axis=0), x.max(axis=0), strict=True)]
    mesh = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, dim)
    surface = model.predict(mesh).reshape((n,) * dim)
    density = kde(mesh.T).reshape((n,) * dim)
    mask = density >= threshold
    if not mask.any():
        raise ValueError(f"no grid cell passes the density threshold {threshold:g}; lower it")
    flat = int(np.argmax(np.where(mask, surface, -np.inf)))
    theta_star = mesh[flat].copy()

    return ProxyFit(
        theta_star=theta_star,
        predicted_eval=float(surface.reshape(-1)[flat]),
        axes=axes,
        surface=surface,
        density=density,
        mask=mask,
        density_threshold=threshold,
        points=x,
        scores=y,
        r2=r2,
        config=cfg,
        names=label,
        model=model,
        kde=kde,
    )


def plot_contour(
    fit: ProxyFit,
    path: str | Path,
    dims: tuple[int, int] = (0, 1),
    title: str | None = None,
    trajectory: Sequence[Sequence[float]] | None = None,
    trajectory_label: str = "NM-PPO thresholds",
) -> Path:
    """Write a PNG: masked surface contours, the data points coloured by eval_score, and θ* (A.3 / Fig. 3.1).

    For N > 2 the plot is the slice through θ* along the two chosen reward axes. `trajectory` (M, N), if
    given, is drawn as a numbered path over the surface (e.g. the thresholds an NM-PPO run trained on).
    """
    from matplotlib.figure import Figure  # no pyplot: no global backend/state, safe inside a service

    dim = fit.points.shape[1]
    if dim < 2:
        raise ValueError("plot_contour needs at least two rewards")
    i, j = dims
    if i == j or not (0 <= i < dim and 0 <= j < dim):
        raise ValueError(f"dims must be two distinct reward indices in [0, {dim}), got {dims}")
    # index of θ* on every axis, used to slice the other dimensions
    star_idx = [int(np.argmin(np.abs(ax - t))) for ax, t in zip(fit.axes, fit.theta_star, strict=True)]
    sl: list[int | slice] = list(star_idx)
    sl[i] = slice(None)
    sl[j] = slice(None)
    surf = fit.surface[tuple(sl)]
    mask = fit.mask[tuple(sl)]
    if i > j:
        surf, mask = surf.T, mask.T
    masked = np.ma.masked_where(~mask, surf)

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig = Figure(figsize=(6, 5), dpi=100)
    ax = fig.subplots()
    gx, gy = np.meshgrid(fit.axes[i], fit.axes[j], indexing="ij")
    filled = ax.contourf(gx, gy, masked, levels=20, cmap="viridis")
    fig.colorbar(filled, ax=ax, label="fitted eval_score")
    ax.scatter(fit.points[:, i], fit.points[:, j], c=fit.scores, cmap="viridis", norm=filled.norm, s=12,
               edgecolors="k", linewidths=0.3, label="runs")  # fmt: skip
    ax.plot(fit.theta_star[i], fit.theta_star[j], marker="*", color="red", markersize=16,
            markeredgecolor="k", linestyle="none", label=f"θ* ({fit.predicted_eval:.3f})")  # fmt: skip
    if trajectory is not None and len(trajectory):
        path_xy = np.asarray(trajectory, dtype=float)
        ax.plot(path_xy[:, i], path_xy[:, j], "-o", color="white", markeredgecolor="k", markersize=5, linewidth=1,
                label=trajectory_label)  # fmt: skip
        for n, (x, y) in enumerate(zip(path_xy[:, i], path_xy[:, j])):
            ax.annotate(str(n), (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7, color="white")
    ax.set_xlabel(fit.names[i])
    ax.set_ylabel(fit.names[j])
    ax.set_title(title or "proxy point: masked eval_score surface")
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, format="png")
    return path
