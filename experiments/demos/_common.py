"""Shared pieces of the demos: output directory, JSON, training through flowjax.training, digits."""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np

matplotlib.use("Agg")

from flowjax import data as D
from flowjax import training as T


def parse_args(doc: str, name: str, argv: list[str] | None = None) -> argparse.Namespace:
    """``--out-dir`` (default ``/tmp/flowjax_demos/<name>``, created) and ``--quick`` (small run)."""
    p = argparse.ArgumentParser(description=doc.splitlines()[0])
    p.add_argument(
        "--out-dir",
        type=Path,
        default=Path("/tmp/flowjax_demos") / name,
        help="directory for the figures (png) and the numbers (json)",
    )
    p.add_argument("--quick", action="store_true", help="much smaller sizes (a minute or two)")
    p.add_argument(
        "--train-steps",
        type=int,
        default=None,
        help="override the training steps of the demo's models (default: by --quick)",
    )
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    return args


def save_json(path: Path, obj: Any) -> None:
    def default(o):
        if isinstance(o, np.ndarray | jax.Array):
            return np.asarray(o).tolist()
        if isinstance(o, np.floating | np.integer):
            return o.item()
        raise TypeError(type(o))

    path.write_text(json.dumps(obj, indent=2, default=default))
    print(f"wrote {path}")


def without_reserved(loss_fn: Callable) -> Callable:
    """``flowjax.losses.make_loss`` reports ``loss`` in aux, a metric name the train step reserves."""

    def fn(params, batch, key):
        loss, aux = loss_fn(params, batch, key)
        return loss, {k: v for k, v in aux.items() if k != "loss"}

    return fn


def train(
    loss_fn: Callable,
    params: Any,
    arrays: Mapping[str, np.ndarray],
    *,
    steps: int,
    batch_size: int,
    lr: float,
    seed: int,
    ema_decay: float | None = 0.999,
    label: str = "model",
) -> Any:
    """Adam (cosine decay) on shuffled batches of ``arrays`` through flowjax.training; EMA params."""
    opt = T.make_optimizer("adam", lr, schedule="cosine", total_steps=steps, end_lr=0.05 * lr)
    step = T.make_train_step(
        without_reserved(loss_fn), opt, mesh=T.make_mesh(), ema_decay=ema_decay
    )
    state = T.create_train_state(params, opt, jax.random.PRNGKey(seed), ema=ema_decay is not None)
    state = step.place_state(state)
    it = D.make_iterator(D.ArraySource(dict(arrays)), global_batch_size=batch_size, seed=seed)
    t0 = time.time()
    res = T.train_loop(state, step, it, num_steps=steps, log_every=max(1, steps // 4),
                       progress=False, handle_signals=())  # fmt: skip
    last = res.history[-1]
    print(f"[{label}] {steps} steps in {time.time() - t0:.0f}s; last logged: "
          + ", ".join(f"{k}={v:.4g}" for k, v in last.items() if isinstance(v, float)))  # fmt: skip
    return res.state.ema_params if ema_decay is not None else res.state.params


def digits(split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """Digits as float32 ``[N, 64]`` in ``[-1, 1]`` (flattened 8x8) and int32 labels ``[N]``."""
    levels, labels = D.digits_arrays(split)
    x = D.scale_levels(levels, D.DIGITS_NUM_LEVELS)
    return x.reshape(len(x), -1), labels.astype(np.int32)


def digit_classifier():
    """A scikit-learn classifier of clean digits (the evaluator; trained on the train split)."""
    from sklearn.linear_model import LogisticRegression

    x, y = digits("train")
    clf = LogisticRegression(max_iter=2000, C=0.5).fit(x, y)
    xt, yt = digits("test")
    clf.test_accuracy = float(clf.score(xt, yt))
    return clf


def image_grid(ax, images: np.ndarray, rows: int, title: str = "") -> None:
    """Show ``[N, 64]`` images in ``[-1, 1]`` as a ``rows x (N / rows)`` grid of 8x8 tiles."""
    n = images.shape[0]
    cols = int(np.ceil(n / rows))
    canvas = np.zeros((rows * 9 - 1, cols * 9 - 1))  # gray separators
    for i in range(n):
        r, c = divmod(i, cols)
        canvas[r * 9 : r * 9 + 8, c * 9 : c * 9 + 8] = np.clip(images[i].reshape(8, 8), -1, 1)
    ax.imshow(-canvas, cmap="gray", vmin=-1, vmax=1)
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=9)


def as_f32(x: Any) -> np.ndarray:
    return np.asarray(jnp.asarray(x), np.float32)
