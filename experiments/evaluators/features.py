"""Feature-space distances of images: Gaussian statistics, the Frechet distance, KID.

:func:`frechet_distance` and :func:`kernel_inception_distance` are the standard formulas (FID:
Heusel et al. 2017; KID: Binkowski et al. 2018, the unbiased MMD^2 with the cubic polynomial
kernel, averaged over random subsets); the features come from :mod:`.classifier` or
:mod:`.inception`.
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
import numpy as np

__all__ = ["frechet_distance", "gaussian_stats", "in_padded_batches", "kernel_inception_distance"]


def gaussian_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean ``[d]`` and covariance ``[d, d]`` (``N - 1`` normalisation) of features ``[N, d]``, float64."""
    f = np.asarray(features, np.float64)
    if f.ndim != 2 or f.shape[0] < 2:
        raise ValueError(f"features must have shape [N, d] with N >= 2; got {f.shape}")
    return f.mean(axis=0), np.cov(f, rowvar=False)


def _numerical_zero(w: np.ndarray) -> float:
    """Eigenvalues of a symmetric PSD matrix below this are rounding noise (numerical rank)."""
    return float(np.max(np.abs(w), initial=0.0)) * w.size * np.finfo(np.float64).eps


def _psd_eigvals(s: np.ndarray) -> np.ndarray:
    """Eigenvalues of a symmetric PSD matrix, with those at the rounding-noise level set to 0.

    A covariance of fewer samples than dimensions is singular; its null space holds eigenvalues
    of order ``eps * |S|`` of either sign, whose square roots (``~1e-8`` each) would add up over
    thousands of dimensions. They are zero to the matrix's precision.
    """
    w = np.linalg.eigvalsh((s + s.T) / 2)
    return np.where(w > _numerical_zero(w), w, 0.0)


def _psd_sqrt(s: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((s + s.T) / 2)
    w = np.where(w > _numerical_zero(w), w, 0.0)
    return (v * np.sqrt(w)) @ v.T


def frechet_distance(
    mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray
) -> float:
    """``|mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1 S2)^{1/2})`` between two Gaussians.

    ``tr (S1 S2)^{1/2}`` is computed as ``sum sqrt(eig(S1^{1/2} S2 S1^{1/2}))`` (a symmetric PSD
    matrix with the same eigenvalues as ``S1 S2``), which needs no complex matrix square root.
    Eigenvalues at the rounding-noise level count as 0, so singular covariances (fewer samples
    than features) give ``frechet_distance(mu, S, mu, S) ~ eps * tr S``, not ``sqrt(eps)``.
    """
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    s1, s2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != (mu1.size, mu1.size):
        raise ValueError(
            f"shapes do not match: mu {mu1.shape}, {mu2.shape}; sigma {s1.shape}, {s2.shape}"
        )
    r = _psd_sqrt(s1)
    m = r @ s2 @ r
    tr_sqrt = float(np.sum(np.sqrt(_psd_eigvals(m))))
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * tr_sqrt)


def kernel_inception_distance(
    f1: np.ndarray,
    f2: np.ndarray,
    *,
    subset_size: int = 1000,
    num_subsets: int = 100,
    seed: int = 0,
) -> tuple[float, float]:
    """KID: mean and std over random subsets of the unbiased MMD^2 with ``k(x, y) = (x.y/d + 1)^3``.

    Each subset draws ``m = min(subset_size, N1, N2)`` rows of each set without replacement.
    """
    f1, f2 = np.asarray(f1, np.float64), np.asarray(f2, np.float64)
    if f1.ndim != 2 or f2.ndim != 2 or f1.shape[1] != f2.shape[1]:
        raise ValueError(f"features must be [N, d] with the same d; got {f1.shape}, {f2.shape}")
    d = f1.shape[1]
    m = min(subset_size, f1.shape[0], f2.shape[0])
    if m < 2:
        raise ValueError(
            f"KID needs at least 2 examples in each set; got {f1.shape[0]}, {f2.shape[0]}"
        )
    rng = np.random.default_rng(seed)
    vals = []
    for _ in range(num_subsets):
        x = f1[rng.choice(f1.shape[0], m, replace=False)]
        y = f2[rng.choice(f2.shape[0], m, replace=False)]
        kxx = (x @ x.T / d + 1.0) ** 3
        kyy = (y @ y.T / d + 1.0) ** 3
        kxy = (x @ y.T / d + 1.0) ** 3
        mmd = (
            (kxx.sum() - np.trace(kxx)) / (m * (m - 1))
            + (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
            - 2.0 * kxy.mean()
        )
        vals.append(mmd)
    return float(np.mean(vals)), float(np.std(vals))


def in_padded_batches(fn: Any, params: Any, x: np.ndarray, batch: int) -> np.ndarray:
    """``fn(params, xb)`` over ``x`` in batches of ``batch`` (the last one padded by repeating its
    final row, so one compiled shape serves all), concatenated: ``[N, ...]``."""
    outs = []
    for i in range(0, len(x), batch):
        xb = np.asarray(x[i : i + batch], np.float32)
        pad = batch - len(xb) if len(x) > batch else 0
        if pad:
            xb = np.concatenate([xb, np.repeat(xb[-1:], pad, axis=0)])
        out = np.asarray(fn(params, jnp.asarray(xb)))
        outs.append(out[: len(out) - pad] if pad else out)
    return np.concatenate(outs)
