"""The feature classifier of the classifier Frechet distance, and the job that trains it.

:class:`FeatureClassifier` is a small CNN that the project trains on the same data set (digits,
MNIST; :func:`load_or_train_classifier` caches it under a directory); the *classifier Frechet
distance* is the Frechet distance between Gaussian fits of its penultimate-layer features (128-d)
of samples and of held-out data. It is a project-internal number: comparable between flowjax
runs that use the same classifier (same data set, steps and seed: the cache key), not with
published FIDs.
"""

from __future__ import annotations

import hashlib
import json
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

from experiments.evaluators.features import in_padded_batches
from experiments.io import flatten_params, unflatten_params, write_json, write_npz
from flowjax import parallel
from flowjax import training as T
from flowjax.data import Dataset, ImageTransform, make_iterator

__all__ = [
    "FeatureClassifier",
    "classifier_features",
    "default_cache_dir",
    "load_or_train_classifier",
]


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

    mesh = parallel.make_mesh(devices=jax.local_devices()[:1])
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
    write_npz(params_file, {k: np.asarray(v) for k, v in flatten_params(params).items()})
    write_json(info_file, info)
    log(f"feature classifier: held-out accuracy {test_acc:.4f}")
    return module, params, info


def _batched_apply(module: nn.Module, params: Any, x: np.ndarray, batch: int, **kw) -> np.ndarray:
    fn = jax.jit(lambda p, xb: module.apply({"params": p}, xb, **kw))
    return in_padded_batches(fn, params, x, batch)


def classifier_features(
    module: FeatureClassifier, params: Any, images: np.ndarray, *, batch_size: int = 512
) -> np.ndarray:
    """Penultimate-layer features ``[N, feature_dim]`` of images ``[N, H, W, C]`` (model range)."""
    return _batched_apply(module, params, images, batch_size, features=True)
