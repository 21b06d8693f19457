"""Evaluation: sample quality with finite-sample floors, NLL gaps, Frechet distances, Inception.

Numbers only; ``experiments.train`` decides what to evaluate and writes ``eval.json``.

* **Low-dimensional data.** :func:`data_floors` and :func:`sample_quality`: energy distance,
  sliced Wasserstein-2 and MMD (``flowjax.distances``) between model samples and held-out data,
  each next to its *finite-sample floor*, the same statistic between two independent samples of
  the data of the same size (mean and standard deviation over repeats). A sampler is as good as
  the data at this sample size when its value lies within the floor's spread.
* **Exact NLL gap.** :func:`exact_log_prob_fn` gives the true log-density where it is known (the
  oracle's Gaussian mixtures, e.g. 8-Gaussians; the checkerboard, uniform with density 1/32 on
  its 8 squares). :func:`nll_summary` reports the model's NLL on held-out points and, with the
  true log-density at the same points, the gap ``NLL_model - NLL_true`` (a Monte Carlo estimate
  of ``KL(p_data || p_model) >= 0``, paired point by point so its standard error is small) and the
  entropy estimate ``mean(-log p_true)``.
* **Images: a classifier's feature space.** :class:`FeatureClassifier` is a small CNN that the
  project trains on the same data set (digits, MNIST; :func:`load_or_train_classifier` caches it
  under a directory); the *classifier Frechet distance* is the Frechet distance between Gaussian
  fits of its penultimate-layer features (128-d) of samples and of held-out data. It is a
  project-internal number: comparable between flowjax runs that use the same classifier (same
  data set, steps and seed: the cache key), not with published FIDs.
* **Images: Inception FID / KID.** :class:`InceptionV3` is the FID variant of Inception-v3
  (pytorch-fid's ``FIDInception*`` blocks: average pools that exclude padding, a max pool in the
  last block), 2048-d pool features of images resized to 299x299. Its weights are read from a local
  file (:func:`load_inception_params`, format below) named by ``config.eval.inception_weights``;
  nothing is downloaded, and without a file the evaluation refuses with
  :class:`InceptionWeightsError`. :func:`frechet_distance` and :func:`kernel_inception_distance`
  are the standard formulas (FID: Heusel et al. 2017; KID: Binkowski et al. 2018, the unbiased
  MMD^2 with the cubic polynomial kernel, averaged over random subsets).

Inception weights file format
-----------------------------
An ``.npz`` file with one float32 array per parameter, keyed by the parameter's path in
:class:`InceptionV3` joined by ``/``, e.g. ``Mixed_5b/branch1x1/conv/kernel`` (a convolution
kernel ``[kh, kw, in, out]``; convolutions have no bias) and ``Mixed_5b/branch1x1/bn/scale``,
``.../bn/bias``, ``.../bn/mean``, ``.../bn/var`` (the batch norm's affine parameters and running
statistics, ``eps = 1e-3``). The module names are torchvision's ``Inception3`` names, so a
PyTorch state dict is accepted as well and converted on load (:func:`convert_torch_state_dict`:
``X.conv.weight [out, in, kh, kw]`` -> ``X/conv/kernel``, ``X.bn.weight/bias/running_mean/
running_var`` -> ``X/bn/scale/bias/mean/var``; ``fc.*``, ``AuxLogits.*`` and
``num_batches_tracked`` are dropped). To use pytorch-fid's FID weights
(``pt_inception-2015-12-05-6726825d.pth``), on a machine with PyTorch::

    python -c "import torch, numpy as np; sd = torch.load('pt_inception-2015-12-05-6726825d.pth', map_location='cpu'); np.savez('pt_inception.npz', **{k: v.numpy() for k, v in sd.items()})"

and pass ``--config.eval.inception=True --config.eval.inception_weights=pt_inception.npz``.
The architecture and the conversion follow pytorch-fid's published code; these numbers have not
been checked against pytorch-fid here (no weights can be fetched on this machine).
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array

from flowjax import distances
from flowjax import training as T
from flowjax.data import Dataset, ImageTransform, make_iterator

__all__ = [
    "STATISTICS",
    "FeatureClassifier",
    "InceptionV3",
    "InceptionWeightsError",
    "classifier_features",
    "convert_torch_state_dict",
    "data_floors",
    "disjoint_subsets",
    "exact_log_prob_fn",
    "flatten_params",
    "frechet_distance",
    "gaussian_stats",
    "inception_features",
    "inception_param_shapes",
    "kernel_inception_distance",
    "load_inception_params",
    "load_or_train_classifier",
    "nll_summary",
    "sample_quality",
    "unflatten_params",
]

#: Sample-quality statistics for low-dimensional data (``config.eval.metrics``).
STATISTICS = ("energy", "sliced_w2", "mmd")


# ============================================================================ sample quality


_energy = jax.jit(distances.energy_distance)
_mmd = jax.jit(distances.mmd)


def median_distance(x: np.ndarray, max_points: int = 1000) -> float:
    """Median pairwise distance of (the first ``max_points`` of) ``x``: the MMD kernel scale."""
    x = np.asarray(x[:max_points], np.float64).reshape(min(len(x), max_points), -1)
    sq = np.sum((x[:, None, :] - x[None, :, :]) ** 2, axis=-1)
    return float(np.sqrt(np.median(sq[np.triu_indices(len(x), 1)])))


_sliced = jax.jit(distances.sliced_wasserstein, static_argnames="num_projections")


def _statistic(
    name: str, *, key: Array, num_projections: int, scale: float | None = None
) -> Callable[[Array, Array], Array]:
    """The statistic as ``fn(a, b)``, compiled once per shape (module-level jitted functions).

    MMD uses a fixed kernel scale (``scale``: the data's median pairwise distance), the same for
    the model and its floor.
    """
    if name == "energy":
        return _energy
    if name == "mmd":
        if scale is None:
            raise ValueError("the MMD statistic needs its kernel scale")
        return lambda a, b: _mmd(a, b, scale=scale)
    if name == "sliced_w2":
        # one fixed set of directions for the model and its floor
        return lambda a, b: _sliced(a, b, key, num_projections=num_projections)
    raise ValueError(f"unknown statistic {name!r}; valid choices are: {', '.join(STATISTICS)}")


def disjoint_subsets(pool: np.ndarray, n: int, key: Array) -> tuple[np.ndarray, np.ndarray]:
    """Two random subsets of ``n`` rows of ``pool`` with no row in common."""
    if len(pool) < 2 * n:
        raise ValueError(
            f"need at least {2 * n} rows for two disjoint subsets of {n}; got {len(pool)}"
        )
    perm = np.asarray(jax.random.permutation(key, len(pool)))
    return pool[perm[:n]], pool[perm[n : 2 * n]]


def data_floors(
    metrics: tuple[str, ...],
    n: int,
    key: Array,
    *,
    sampler: Callable[[Array, int], Array] | None = None,
    pool: np.ndarray | None = None,
    repeats: int = 5,
    num_projections: int = 128,
) -> dict[str, dict[str, float]]:
    """Finite-sample floor of each statistic at sample size ``n``: mean and std over ``repeats``.

    The two samples come from ``sampler(key, n)`` (the data law, e.g. a toy distribution), or, for
    a finite data set, are two disjoint random subsets of ``pool`` (needs ``len(pool) >= 2 n``).
    """
    k_proj, k_floor = jax.random.split(key)
    if sampler is not None:
        scale = median_distance(np.asarray(sampler(jax.random.fold_in(key, 7), n)))
    elif pool is not None:
        scale = median_distance(pool)
    else:
        raise ValueError("data_floors needs a sampler or a pool")
    out = {}
    for name in metrics:
        stat = _statistic(name, key=k_proj, num_projections=num_projections, scale=scale)
        if sampler is not None:
            mean, std = distances.finite_sample_floor(stat, sampler, k_floor, n, repeats)
            vals = None
        else:
            if pool is None or len(pool) < 2 * n:
                raise ValueError(
                    f"the floor at n = {n} needs a sampler or a pool of at least {2 * n} examples"
                )
            vals = []
            for k in jax.random.split(k_floor, repeats):
                a, b = disjoint_subsets(pool, n, k)
                vals.append(float(stat(jnp.asarray(a), jnp.asarray(b))))
            mean, std = np.mean(vals), np.std(vals)
        out[name] = {"floor_mean": float(mean), "floor_std": float(std), "n": int(n)}
        if name == "mmd":
            out[name]["kernel_scale"] = scale
    return out


def sample_quality(
    samples: np.ndarray,
    reference: np.ndarray,
    floors: Mapping[str, Mapping[str, float]],
    key: Array,
    *,
    num_projections: int = 128,
) -> dict[str, dict[str, float]]:
    """Each statistic of ``floors`` between ``samples[:n]`` and ``reference[:n]`` (``n`` = the
    floor's), with the floor beside it and the excess over it in floor standard deviations."""
    k_proj, _ = jax.random.split(key)
    out = {}
    for name, floor in floors.items():
        n = int(floor["n"])
        if len(samples) < n or len(reference) < n:
            raise ValueError(
                f"{name}: need {n} samples and reference points; got {len(samples)} and "
                f"{len(reference)}"
            )
        stat = _statistic(
            name, key=k_proj, num_projections=num_projections, scale=floor.get("kernel_scale")
        )
        value = float(stat(jnp.asarray(samples[:n]), jnp.asarray(reference[:n])))
        mean, std = float(floor["floor_mean"]), float(floor["floor_std"])
        out[name] = {
            "value": value,
            "floor_mean": mean,
            "floor_std": std,
            "n": n,
            # how far above the floor, in floor standard deviations (<= 2: as good as data)
            "excess_in_floor_stds": (value - mean) / std if std > 0 else float("nan"),
        }
    return out


# ============================================================================ exact densities

_CHECKERBOARD_CELLS = np.array([(i, j) for i in range(4) for j in range(4) if (i + j) % 2 == 0])


def _checkerboard_log_prob(x: Array, labels: Array | None = None) -> Array:
    """Uniform density 1/32 on the 8 squares of ``flowjax.data``'s checkerboard (1/4 on the
    labelled square given a label), ``-inf`` outside."""
    x = jnp.asarray(x)
    cell = jnp.floor((x + 4.0) / 2.0).astype(jnp.int32)  # [B, 2], 0..3 inside [-4, 4)^2
    inside = jnp.all((cell >= 0) & (cell <= 3), axis=1) & ((cell[:, 0] + cell[:, 1]) % 2 == 0)
    if labels is None:
        lp = jnp.full(x.shape[:1], -math.log(32.0), x.dtype)
        return jnp.where(inside, lp, -jnp.inf)
    cells = jnp.asarray(_CHECKERBOARD_CELLS, jnp.int32)[jnp.asarray(labels)]
    same = jnp.all(cell == cells, axis=1)
    return jnp.where(inside & same, jnp.full(x.shape[:1], -math.log(4.0), x.dtype), -jnp.inf)


def exact_log_prob_fn(ds: Dataset) -> Callable[..., Array] | None:
    """``log_p(x, labels=None) -> [B]``, the data's true log-density where flowjax knows it.

    The oracle's Gaussian mixtures (``eight_gaussians``, a ``GaussianMixture`` data set) and the
    checkerboard; ``None`` otherwise. With ``labels``, the class-conditional density.
    """
    if ds.oracle is not None:
        oracle = ds.oracle
        return lambda x, labels=None: oracle.data_log_prob(x, labels)
    if ds.name == "checkerboard":
        return _checkerboard_log_prob
    return None


def nll_summary(log_prob: np.ndarray, exact_log_prob: np.ndarray | None = None) -> dict[str, Any]:
    """Mean NLL (nats) with its standard error; with the true log-density at the same points, the
    paired gap ``mean(log p_true - log p_model)`` and the entropy estimate ``mean(-log p_true)``."""
    lp = np.asarray(log_prob, np.float64)
    n = lp.shape[0]
    out: dict[str, Any] = {
        "nll": float(-lp.mean()),
        "nll_stderr": float(lp.std(ddof=1) / math.sqrt(n)) if n > 1 else float("nan"),
        "num_examples": int(n),
        "num_nonfinite": int(np.sum(~np.isfinite(lp))),
    }
    if exact_log_prob is not None:
        ex = np.asarray(exact_log_prob, np.float64)
        gap = ex - lp
        out["entropy"] = float(-ex.mean())
        out["entropy_stderr"] = float(ex.std(ddof=1) / math.sqrt(n)) if n > 1 else float("nan")
        out["nll_gap"] = float(gap.mean())
        out["nll_gap_stderr"] = float(gap.std(ddof=1) / math.sqrt(n)) if n > 1 else float("nan")
    return out


# ============================================================================ FID / KID arithmetic


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


# ============================================================================ parameter files


def flatten_params(tree: Mapping[str, Any], prefix: str = "") -> dict[str, np.ndarray]:
    """A nested dict of arrays (or of any leaves) as ``{"a/b/c": leaf}``."""
    out: dict[str, Any] = {}
    for k, v in tree.items():
        name = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(flatten_params(v, name + "/"))
        else:
            out[name] = v
    return out


def unflatten_params(flat: Mapping[str, Any]) -> dict[str, Any]:
    """Inverse of :func:`flatten_params`."""
    out: dict[str, Any] = {}
    for key, value in flat.items():
        node = out
        *parents, leaf = key.split("/")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return out


def _atomic_savez(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}.npz")
    np.savez(tmp, **arrays)
    tmp.replace(path)


def _atomic_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)


# ============================================================================ feature classifier


class FeatureClassifier(nn.Module):
    """A small CNN classifier whose penultimate layer is the feature space of the classifier FD.

    Three 3x3 convolutions (``widths``; the 2nd and 3rd with stride 2) with GroupNorm and ReLU, a
    global average pool, a dense ``feature_dim`` ReLU layer (the features) and a linear output.
    A measuring instrument of ``experiments/``, not a model of the library.
    """

    num_classes: int
    widths: tuple[int, ...] = (32, 64, 128)
    feature_dim: int = 128

    @nn.compact
    def __call__(self, x: Array, *, features: bool = False) -> Array:
        h = x
        for i, w in enumerate(self.widths):
            h = nn.Conv(w, (3, 3), strides=(1, 1) if i == 0 else (2, 2), padding=1)(h)
            h = nn.relu(nn.GroupNorm(num_groups=min(8, w))(h))
        h = jnp.mean(h, axis=(1, 2))
        f = nn.relu(nn.Dense(self.feature_dim, name="features")(h))
        if features:
            return f
        return nn.Dense(self.num_classes, name="logits")(f)


def default_cache_dir() -> Path:
    """``$FLOWJAX_CACHE`` or ``~/.cache/flowjax``."""
    return Path(os.environ.get("FLOWJAX_CACHE") or Path.home() / ".cache" / "flowjax").expanduser()


def _classifier_key(settings: Mapping[str, Any]) -> str:
    text = json.dumps(dict(settings), sort_keys=True)
    return hashlib.sha1(text.encode()).hexdigest()[:12]


def load_or_train_classifier(
    train_ds: Dataset,
    eval_ds: Dataset,
    *,
    cache_dir: str | Path | None = None,
    num_steps: int = 2000,
    batch_size: int = 128,
    lr: float = 2e-3,
    seed: int = 0,
    log: Callable[[str], None] = print,
) -> tuple[FeatureClassifier, Any, dict[str, Any]]:
    """The feature classifier of a labelled image data set: loaded from the cache, or trained.

    Trained with AdamW (cosine schedule) and cross-entropy on uniformly dequantized images in the
    model range, so that its features see continuous values like a generative model's samples.
    The cache entry ``<cache_dir>/classifiers/<dataset>-<hash>/`` holds ``params.npz`` and
    ``info.json`` (settings, held-out accuracy); the hash covers the data set, its size and every
    training setting, so runs that share it measure in the same feature space.

    Returns ``(module, params, info)``.
    """
    if train_ds.num_classes is None or not train_ds.is_image:
        raise ValueError(
            f"the feature classifier needs a labelled image data set; {train_ds.name!r} has "
            f"num_classes={train_ds.num_classes}, num_levels={train_ds.num_levels}"
        )
    module = FeatureClassifier(num_classes=int(train_ds.num_classes))
    settings = {
        "version": 1,
        "dataset": train_ds.name,
        "train_split": train_ds.split,
        "num_train": train_ds.num_examples,
        "shape": list(train_ds.shape),
        "num_levels": train_ds.num_levels,
        "num_classes": train_ds.num_classes,
        "widths": list(module.widths),
        "feature_dim": module.feature_dim,
        "num_steps": int(num_steps),
        "batch_size": int(batch_size),
        "lr": float(lr),
        "seed": int(seed),
    }
    root = Path(cache_dir) if cache_dir else default_cache_dir() / "classifiers"
    entry = root / f"{train_ds.name}-{_classifier_key(settings)}"
    params_file, info_file = entry / "params.npz", entry / "info.json"
    if params_file.exists() and info_file.exists():
        info = json.loads(info_file.read_text())
        if info.get("settings") == settings:
            with np.load(params_file) as f:
                params = unflatten_params({k: jnp.asarray(f[k]) for k in f.files})
            return module, params, info

    log(f"training the feature classifier for {train_ds.name!r} ({num_steps} steps) -> {entry}")
    t0 = time.perf_counter()
    transform = ImageTransform(
        num_levels=train_ds.num_levels, value_range=train_ds.value_range, dequantize=True
    )
    it = make_iterator(
        train_ds.source,
        global_batch_size=min(batch_size, train_ds.num_examples),
        seed=seed,
        transform=transform,
        process_index=0,
        process_count=1,
    )
    key = jax.random.PRNGKey(seed)
    params = module.init(key, jnp.zeros((1, *train_ds.shape), jnp.float32))["params"]
    opt = T.make_optimizer("adamw", lr, schedule="cosine", total_steps=num_steps, weight_decay=1e-4)

    def loss_fn(p, batch, _key):
        logits = module.apply({"params": p}, batch["x"])
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"]).mean()
        acc = jnp.mean((jnp.argmax(logits, -1) == batch["label"]).astype(jnp.float32))
        return loss, {"accuracy": acc}

    mesh = T.make_mesh(devices=jax.local_devices()[:1])
    state = T.create_train_state(params, opt, key, ema=False)
    step = T.make_train_step(loss_fn, opt, mesh=mesh, ema_decay=None)
    result = T.train_loop(
        state, step, it, num_steps=num_steps, log_every=max(1, num_steps), progress=False
    )
    params = jax.device_get(result.state.params)
    train_acc = float(result.history[-1]["accuracy"]) if result.history else float("nan")

    test = eval_ds.as_arrays()
    logits = _batched_apply(module, params, test["x"], 512, features=False)
    test_acc = float(np.mean(np.argmax(logits, -1) == test["label"]))
    info = {
        "settings": settings,
        "train_accuracy_last_batch": train_acc,
        "eval_split": eval_ds.split,
        "eval_accuracy": test_acc,
        "seconds": time.perf_counter() - t0,
    }
    if jax.process_index() == 0:
        entry.mkdir(parents=True, exist_ok=True)
        _atomic_savez(params_file, {k: np.asarray(v) for k, v in flatten_params(params).items()})
        _atomic_json(info_file, info)
    log(f"feature classifier: held-out accuracy {test_acc:.4f}")
    return module, params, info


def _in_padded_batches(fn: Any, params: Any, x: np.ndarray, batch: int) -> np.ndarray:
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


def _batched_apply(module: nn.Module, params: Any, x: np.ndarray, batch: int, **kw) -> np.ndarray:
    fn = jax.jit(lambda p, xb: module.apply({"params": p}, xb, **kw))
    return _in_padded_batches(fn, params, x, batch)


def classifier_features(
    module: FeatureClassifier, params: Any, images: np.ndarray, *, batch_size: int = 512
) -> np.ndarray:
    """Penultimate-layer features ``[N, feature_dim]`` of images ``[N, H, W, C]`` (model range)."""
    return _batched_apply(module, params, images, batch_size, features=True)


# ============================================================================ Inception-v3 (FID)

INCEPTION_SIZE = 299
_BN_EPS = 1e-3


class InceptionWeightsError(ValueError):
    """Inception FID/KID was asked for without a weights file."""


INCEPTION_WEIGHTS_HELP = (
    "Inception FID/KID needs the Inception-v3 weights as a local file: pass "
    "--config.eval.inception_weights=/path/to/pt_inception.npz (or set config.eval.inception="
    "False). Nothing is downloaded by flowjax; the file format and how to make it from "
    "pytorch-fid's weights are described in experiments/evaluation.py."
)


class _BatchNorm(nn.Module):
    """Inference batch norm with its running statistics as parameters (``scale, bias, mean, var``)."""

    @nn.compact
    def __call__(self, x: Array) -> Array:
        c = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones, (c,))
        bias = self.param("bias", nn.initializers.zeros, (c,))
        mean = self.param("mean", nn.initializers.zeros, (c,))
        var = self.param("var", nn.initializers.ones, (c,))
        mul = scale * jax.lax.rsqrt(var + _BN_EPS)
        shape = (1,) * (x.ndim - 1) + (c,)
        return x * mul.reshape(shape) + (bias - mean * mul).reshape(shape)


class _Conv(nn.Module):
    """torchvision's ``BasicConv2d``: convolution without bias, batch norm, ReLU."""

    features: int
    kernel: tuple[int, int]
    strides: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)

    @nn.compact
    def __call__(self, x: Array) -> Array:
        ph, pw = self.padding
        x = nn.Conv(
            self.features,
            self.kernel,
            self.strides,
            padding=((ph, ph), (pw, pw)),
            use_bias=False,
            name="conv",
        )(x)
        return nn.relu(_BatchNorm(name="bn")(x))


def _avg_pool_3x3(x: Array) -> Array:
    return nn.avg_pool(x, (3, 3), (1, 1), padding=((1, 1), (1, 1)), count_include_pad=False)


def _max_pool_3x3_s2(x: Array) -> Array:
    return nn.max_pool(x, (3, 3), (2, 2), padding="VALID")


class _InceptionA(nn.Module):
    pool_features: int

    @nn.compact
    def __call__(self, x: Array) -> Array:
        b1 = _Conv(64, (1, 1), name="branch1x1")(x)
        b5 = _Conv(48, (1, 1), name="branch5x5_1")(x)
        b5 = _Conv(64, (5, 5), padding=(2, 2), name="branch5x5_2")(b5)
        b3 = _Conv(64, (1, 1), name="branch3x3dbl_1")(x)
        b3 = _Conv(96, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(b3)
        b3 = _Conv(96, (3, 3), padding=(1, 1), name="branch3x3dbl_3")(b3)
        bp = _Conv(self.pool_features, (1, 1), name="branch_pool")(_avg_pool_3x3(x))
        return jnp.concatenate([b1, b5, b3, bp], axis=-1)


class _InceptionB(nn.Module):
    @nn.compact
    def __call__(self, x: Array) -> Array:
        b3 = _Conv(384, (3, 3), strides=(2, 2), name="branch3x3")(x)
        bd = _Conv(64, (1, 1), name="branch3x3dbl_1")(x)
        bd = _Conv(96, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(bd)
        bd = _Conv(96, (3, 3), strides=(2, 2), name="branch3x3dbl_3")(bd)
        return jnp.concatenate([b3, bd, _max_pool_3x3_s2(x)], axis=-1)


class _InceptionC(nn.Module):
    channels_7x7: int

    @nn.compact
    def __call__(self, x: Array) -> Array:
        c7 = self.channels_7x7
        b1 = _Conv(192, (1, 1), name="branch1x1")(x)
        b7 = _Conv(c7, (1, 1), name="branch7x7_1")(x)
        b7 = _Conv(c7, (1, 7), padding=(0, 3), name="branch7x7_2")(b7)
        b7 = _Conv(192, (7, 1), padding=(3, 0), name="branch7x7_3")(b7)
        bd = _Conv(c7, (1, 1), name="branch7x7dbl_1")(x)
        bd = _Conv(c7, (7, 1), padding=(3, 0), name="branch7x7dbl_2")(bd)
        bd = _Conv(c7, (1, 7), padding=(0, 3), name="branch7x7dbl_3")(bd)
        bd = _Conv(c7, (7, 1), padding=(3, 0), name="branch7x7dbl_4")(bd)
        bd = _Conv(192, (1, 7), padding=(0, 3), name="branch7x7dbl_5")(bd)
        bp = _Conv(192, (1, 1), name="branch_pool")(_avg_pool_3x3(x))
        return jnp.concatenate([b1, b7, bd, bp], axis=-1)


class _InceptionD(nn.Module):
    @nn.compact
    def __call__(self, x: Array) -> Array:
        b3 = _Conv(192, (1, 1), name="branch3x3_1")(x)
        b3 = _Conv(320, (3, 3), strides=(2, 2), name="branch3x3_2")(b3)
        b7 = _Conv(192, (1, 1), name="branch7x7x3_1")(x)
        b7 = _Conv(192, (1, 7), padding=(0, 3), name="branch7x7x3_2")(b7)
        b7 = _Conv(192, (7, 1), padding=(3, 0), name="branch7x7x3_3")(b7)
        b7 = _Conv(192, (3, 3), strides=(2, 2), name="branch7x7x3_4")(b7)
        return jnp.concatenate([b3, b7, _max_pool_3x3_s2(x)], axis=-1)


class _InceptionE(nn.Module):
    pool: str  # "avg" (Mixed_7b) or "max" (Mixed_7c), as in pytorch-fid's FIDInceptionE_1/_2

    @nn.compact
    def __call__(self, x: Array) -> Array:
        b1 = _Conv(320, (1, 1), name="branch1x1")(x)
        b3 = _Conv(384, (1, 1), name="branch3x3_1")(x)
        b3 = jnp.concatenate(
            [
                _Conv(384, (1, 3), padding=(0, 1), name="branch3x3_2a")(b3),
                _Conv(384, (3, 1), padding=(1, 0), name="branch3x3_2b")(b3),
            ],
            axis=-1,
        )
        bd = _Conv(448, (1, 1), name="branch3x3dbl_1")(x)
        bd = _Conv(384, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(bd)
        bd = jnp.concatenate(
            [
                _Conv(384, (1, 3), padding=(0, 1), name="branch3x3dbl_3a")(bd),
                _Conv(384, (3, 1), padding=(1, 0), name="branch3x3dbl_3b")(bd),
            ],
            axis=-1,
        )
        if self.pool == "avg":
            pooled = _avg_pool_3x3(x)
        else:
            pooled = nn.max_pool(x, (3, 3), (1, 1), padding=((1, 1), (1, 1)))
        bp = _Conv(192, (1, 1), name="branch_pool")(pooled)
        return jnp.concatenate([b1, b3, bd, bp], axis=-1)


class InceptionV3(nn.Module):
    """Inception-v3's FID variant up to the 2048-d average pool (``pool3``), channels last.

    Input: images ``[B, 299, 299, 3]`` in ``[-1, 1]`` (see :func:`inception_features` for resizing
    and grayscale). Module names are torchvision's ``Inception3`` attribute names.
    """

    @nn.compact
    def __call__(self, x: Array) -> Array:
        x = _Conv(32, (3, 3), strides=(2, 2), name="Conv2d_1a_3x3")(x)
        x = _Conv(32, (3, 3), name="Conv2d_2a_3x3")(x)
        x = _Conv(64, (3, 3), padding=(1, 1), name="Conv2d_2b_3x3")(x)
        x = _max_pool_3x3_s2(x)
        x = _Conv(80, (1, 1), name="Conv2d_3b_1x1")(x)
        x = _Conv(192, (3, 3), name="Conv2d_4a_3x3")(x)
        x = _max_pool_3x3_s2(x)
        x = _InceptionA(32, name="Mixed_5b")(x)
        x = _InceptionA(64, name="Mixed_5c")(x)
        x = _InceptionA(64, name="Mixed_5d")(x)
        x = _InceptionB(name="Mixed_6a")(x)
        x = _InceptionC(128, name="Mixed_6b")(x)
        x = _InceptionC(160, name="Mixed_6c")(x)
        x = _InceptionC(160, name="Mixed_6d")(x)
        x = _InceptionC(192, name="Mixed_6e")(x)
        x = _InceptionD(name="Mixed_7a")(x)
        x = _InceptionE("avg", name="Mixed_7b")(x)
        x = _InceptionE("max", name="Mixed_7c")(x)
        return jnp.mean(x, axis=(1, 2))


def inception_param_shapes() -> dict[str, tuple[int, ...]]:
    """``{"Mixed_5b/branch1x1/conv/kernel": (1, 1, 192, 64), ...}``: every parameter and its shape."""
    return dict(_inception_param_shapes())


@functools.lru_cache(maxsize=1)
def _inception_param_shapes() -> dict[str, tuple[int, ...]]:
    shapes = jax.eval_shape(
        lambda: InceptionV3().init(
            jax.random.PRNGKey(0), jnp.zeros((1, INCEPTION_SIZE, INCEPTION_SIZE, 3))
        )["params"]
    )
    return {k: tuple(v.shape) for k, v in flatten_params(shapes).items()}


_TORCH_BN = {"weight": "scale", "bias": "bias", "running_mean": "mean", "running_var": "var"}


def convert_torch_state_dict(state_dict: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """A torchvision / pytorch-fid ``Inception3`` state dict to this module's flat parameters.

    ``X.conv.weight`` ``[out, in, kh, kw]`` becomes ``X/conv/kernel`` ``[kh, kw, in, out]``; batch
    norm ``weight, bias, running_mean, running_var`` become ``scale, bias, mean, var``. The
    classifier (``fc.*``), the auxiliary head (``AuxLogits.*``) and ``num_batches_tracked`` are
    not part of the feature extractor and are dropped. Other keys raise, naming them.
    """
    out: dict[str, np.ndarray] = {}
    unknown = []
    for key, value in state_dict.items():
        if key.startswith(("fc.", "AuxLogits.")) or key.endswith("num_batches_tracked"):
            continue
        *mods, leaf = key.split(".")
        arr = np.asarray(value, np.float32)
        if mods and mods[-1] == "conv" and leaf == "weight" and arr.ndim == 4:
            out["/".join(mods) + "/kernel"] = np.transpose(arr, (2, 3, 1, 0))
        elif mods and mods[-1] == "bn" and leaf in _TORCH_BN:
            out["/".join(mods) + "/" + _TORCH_BN[leaf]] = arr
        else:
            unknown.append(key)
    if unknown:
        raise ValueError(f"unexpected keys in the Inception state dict: {unknown[:8]}")
    return out


def load_inception_params(path: str | Path | None) -> dict[str, Any]:
    """Read Inception-v3 parameters from a local ``.npz`` (module docstring: the format).

    Raises:
      InceptionWeightsError: no path given (nothing is downloaded).
      FileNotFoundError: the file does not exist.
      ValueError: a parameter is missing, has the wrong shape, or the file holds unknown arrays
        (each named).
    """
    if not path:
        raise InceptionWeightsError(INCEPTION_WEIGHTS_HELP)
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"Inception weights file {str(path)!r} (config.eval.inception_weights) does not exist. "
            + INCEPTION_WEIGHTS_HELP
        )
    with np.load(path) as f:
        arrays = {k: f[k] for k in f.files}
    if arrays and all("/" not in k for k in arrays):
        arrays = convert_torch_state_dict(arrays)
    expected = inception_param_shapes()
    missing = sorted(set(expected) - set(arrays))
    extra = sorted(set(arrays) - set(expected))
    wrong = [
        f"{k}: file {tuple(arrays[k].shape)}, expected {expected[k]}"
        for k in sorted(set(expected) & set(arrays))
        if tuple(arrays[k].shape) != expected[k]
    ]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing (e.g. {missing[:4]})")
    if extra:
        problems.append(f"{len(extra)} unknown (e.g. {extra[:4]})")
    if wrong:
        problems.append(f"{len(wrong)} with the wrong shape (e.g. {wrong[:4]})")
    if problems:
        raise ValueError(
            f"Inception weights {str(path)!r} do not fit InceptionV3: " + "; ".join(problems)
        )
    return unflatten_params({k: jnp.asarray(v, jnp.float32) for k, v in arrays.items()})


def _inception_input(images: Array, size: int) -> Array:
    x = jnp.asarray(images, jnp.float32)
    if x.shape[-1] == 1:
        x = jnp.repeat(x, 3, axis=-1)
    if x.shape[-1] != 3:
        raise ValueError(f"images must have 1 or 3 channels; got shape {x.shape}")
    x = jnp.clip(x, -1.0, 1.0)
    if x.shape[1:3] != (size, size):
        # bilinear without antialiasing, half-pixel centres: torch's interpolate(align_corners=False)
        x = jax.image.resize(x, (x.shape[0], size, size, 3), "bilinear", antialias=False)
    return x


@functools.lru_cache(maxsize=4)
def _inception_fn(size: int) -> Callable[[Any, Array], Array]:
    module = InceptionV3()
    return jax.jit(lambda p, xb: module.apply({"params": p}, _inception_input(xb, size)))


def inception_features(
    params: Any, images: np.ndarray, *, batch_size: int = 50, size: int = INCEPTION_SIZE
) -> np.ndarray:
    """2048-d ``pool3`` features of images ``[N, H, W, C]`` in ``[-1, 1]`` (C = 1 or 3), resized
    to ``size x size`` (299: the standard; smaller sizes >= 75 only for tests)."""
    return _in_padded_batches(_inception_fn(int(size)), params, images, batch_size)
