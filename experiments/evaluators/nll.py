"""NLL of held-out data, and the exact NLL gap where the data's density is known; bits/dim of images.

:func:`exact_log_prob_fn` gives the true log-density where it is known (the oracle's Gaussian
mixtures, e.g. 8-Gaussians; the checkerboard, uniform with density 1/32 on its 8 squares).
:func:`nll_summary` reports the model's NLL on held-out points and, with the true log-density at
the same points, the gap ``NLL_model - NLL_true`` (a Monte Carlo estimate of
``KL(p_data || p_model) >= 0``, paired point by point so its standard error is small) and the
entropy estimate ``mean(-log p_true)``. :class:`Evaluator` runs it on an experiment
(``config.eval.nll``; the keys other than ``enabled, num_examples, batch_size,
num_dequantizations`` are ``flowjax.likelihood.log_likelihood`` arguments).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array

from flowjax import likelihood as LL
from flowjax.data import Dataset

if TYPE_CHECKING:
    from experiments.evaluators import Context
    from experiments.experiment import Experiment

__all__ = ["Evaluator", "exact_log_prob_fn", "log_line", "nll_summary"]

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


class Evaluator:
    """NLL (nats) of held-out points and the exact gap where the density is known; images:
    bits/dim. ``likelihood`` are ``flowjax.likelihood.log_likelihood`` arguments."""

    def __init__(
        self,
        exp: Experiment,
        *,
        num_examples: int,
        batch_size: int,
        num_dequantizations: int,
        likelihood: dict[str, Any],
    ):
        self.exp, self.num_examples, self.batch_size = exp, num_examples, batch_size
        self.num_dequantizations, self.likelihood = num_dequantizations, likelihood

    @classmethod
    def from_config(cls, exp: Experiment) -> Evaluator:
        nc = exp.config.eval.nll
        return cls(
            exp,
            num_examples=nc.num_examples,
            batch_size=nc.batch_size,
            num_dequantizations=nc.num_dequantizations,
            likelihood=exp.likelihood_kwargs,
        )

    def _log_probs(self, fn: Any, ref: dict[str, np.ndarray], key: Any):
        """Per-example log p (images: -bits/dim), NFE and success, batch by batch (the last
        batch is the final ``batch_size`` examples, so that every batch has one shape)."""
        exp, n = self.exp, len(ref["x"])
        batch = min(self.batch_size, n)
        lps, nfes, ok = [], [], []
        for i, start in enumerate(range(0, n, batch)):
            stop = min(start + batch, n)
            k = jax.random.fold_in(key, i)
            sl = slice(start, start + batch) if stop - start == batch else slice(n - batch, n)
            cond = {"cond": jnp.asarray(ref["label"][sl])} if exp.num_classes is not None else {}
            if exp.train_ds.is_image:
                bpd, res = LL.image_bits_per_dim(
                    fn,
                    exp.path,
                    ref["levels"][sl],
                    k,
                    num_levels=exp.train_ds.num_levels,
                    data_range=exp.train_ds.value_range,
                    num_dequantizations=int(self.num_dequantizations),
                    **self.likelihood,
                    **cond,
                )
                lp = -np.asarray(bpd, np.float64)  # collected as -bpd, converted below
            else:
                x = jnp.asarray(ref["x"][sl])
                res = LL.log_likelihood(fn, exp.path, x, key=k, **self.likelihood, **cond)
                lp = np.asarray(res.log_prob, np.float64)
            keep = stop - start
            lps.append(lp[-keep:] if sl.start != start else lp[:keep])
            nfes.append(np.asarray(res.nfe)[-keep:])
            ok.append(np.asarray(res.success)[-keep:])
        return np.concatenate(lps), np.concatenate(nfes), bool(np.all(np.concatenate(ok)))

    def run(self, ctx: Context) -> dict[str, Any]:
        from experiments.experiment import reference

        exp = self.exp
        ref = reference(exp, self.num_examples)
        n = len(ref["x"])
        t0 = time.perf_counter()
        values, nfe, ok = self._log_probs(ctx.fn, ref, ctx.keys["nll"])
        settings = {
            **self.likelihood,
            "num_examples": n,
            "split": exp.config.data.eval_split,
            "time_range": list(LL.likelihood_time_range(exp.path, exp.prediction)),
            "prior": "the path's Gaussian prior N(0, beta(t_start)^2 I)",
            "conditional": exp.num_classes is not None,
        }
        out: dict[str, Any] = {
            "settings": settings,
            "nfe_mean": float(nfe.mean()),
            "nfe_max": int(nfe.max()),
            "all_solves_succeeded": ok,
            "seconds": time.perf_counter() - t0,
        }
        if exp.train_ds.is_image:
            bpd = -values
            out.update(
                {
                    "bits_per_dim": float(bpd.mean()),
                    "bits_per_dim_stderr": float(bpd.std(ddof=1) / math.sqrt(n)) if n > 1 else None,
                    "num_examples": n,
                    "num_levels": exp.train_ds.num_levels,
                    "dequantization": "uniform, averaged over num_dequantizations draws",
                }
            )
            return out
        exact_fn = exact_log_prob_fn(exp.eval_ds)
        exact = None
        if exact_fn is not None:
            labels = jnp.asarray(ref["label"]) if exp.num_classes is not None else None
            exact = np.asarray(exact_fn(jnp.asarray(ref["x"]), labels), np.float64)
            out["exact_density"] = (
                "oracle Gaussian mixture"
                if exp.eval_ds.oracle is not None
                else "checkerboard: 1/32"
            )
        out.update(nll_summary(values, exact))
        return out


def log_line(nll: dict[str, Any], image: bool) -> str:
    """The progress line of an NLL result."""
    if image:
        return (
            f"bits/dim {nll['bits_per_dim']:.4f} ± {nll['bits_per_dim_stderr'] or 0:.4f} "
            f"(NFE {nll['nfe_mean']:.0f})"
        )
    msg = f"NLL {nll['nll']:.4f} ± {nll['nll_stderr']:.4f} nats (NFE {nll['nfe_mean']:.0f})"
    if "nll_gap" in nll:
        msg += (
            f"; exact entropy {nll['entropy']:.4f}, NLL gap "
            f"{nll['nll_gap']:.4f} ± {nll['nll_gap_stderr']:.4f} nats"
        )
    return msg
