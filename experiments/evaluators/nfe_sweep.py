"""Quality against the number of function evaluations (``config.eval.nfe_sweep``).

Each swept sampler runs at several step counts (fixed-step samplers: ``num_steps``) or
tolerances (adaptive ones: ``rtol = atol`` in ``tolerances``), every run from the same key, and
is scored with the sample-quality statistic (low-dimensional data) or the classifier FD (images).

The loop is the library's one NFE sweep, ``flowjax.reflow.nfe_curve``, run with the experiment's
own draw (any configured sampler: SDE, adaptive, guided, as it samples in the run), so that the
sweep's ends match the samplers' numbers.

Reference curves (``oracle_solvers``, toy data with an oracle): the same sweep of ODE samplers of
the data's exact oracle velocity (``oracle_<solver>``), the best any flow-matching teacher of
this data reaches with that solver, against which few-step models are drawn.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import jax
import numpy as np

from experiments import io, samplers
from experiments.experiment import oracle_sampler
from flowjax import sampling as S
from flowjax.reflow import nfe_curve

if TYPE_CHECKING:
    from experiments.evaluators import Context, SweepMetric
    from experiments.experiment import Experiment

__all__ = ["Evaluator"]


class Evaluator:
    """The sweep of ``samplers`` (names of configured samplers)."""

    def __init__(
        self,
        exp: Experiment,
        *,
        samplers: tuple[str, ...],
        num_steps: tuple[int, ...],
        tolerances: tuple[float, ...],
        num_samples: int,
        oracle_solvers: tuple[str, ...] = (),
    ):
        self.exp, self.samplers = exp, tuple(samplers)
        self.num_steps, self.tolerances, self.num_samples = num_steps, tolerances, num_samples
        self.oracle_solvers = tuple(oracle_solvers)

    @property
    def enabled(self) -> bool:
        return bool(self.samplers or self.oracle_solvers)

    @classmethod
    def from_config(cls, exp: Experiment) -> Evaluator:
        return cls(exp, **exp.config.eval.nfe_sweep)

    def _variants(self, kw: dict[str, Any]) -> list[dict[str, Any]]:
        if kw["adaptive"]:
            return [{"rtol": float(tol), "atol": float(tol)} for tol in self.tolerances]
        return [{"num_steps": int(n)} for n in self.num_steps]

    def _valid(self, fn: Any, kw: dict[str, Any], var: dict[str, Any]) -> bool:
        """Whether the sampler accepts the variant (a multistep solver needs more than one step):
        an abstract trace, no computation."""
        key, shape = jax.random.PRNGKey(0), (2, *self.exp.shape)
        options = samplers.sample_options({**kw, **var})
        try:
            jax.eval_shape(lambda: S.sample(fn, self.exp.path, key, shape, **options).samples)
        except ValueError:
            return False
        return True

    def _curve(
        self, name: str, fn: Any, kw: dict[str, Any], metric: SweepMetric, key: Any, as_is: bool
    ) -> list[dict[str, Any]]:
        n = self.num_samples

        def run(**var: Any) -> tuple[Any, float, dict[str, float]]:
            x, _, nfes, secs = samplers.draw(self.exp, fn, {**kw, **var}, n, n, key, as_is=as_is)
            return x, float(np.mean(nfes)), {"seconds": secs}

        variants = self._variants(kw)
        if as_is:  # the reference solvers: the step counts each accepts
            variants = [v for v in variants if self._valid(fn, kw, v)]
        rows = nfe_curve(run, variants, metric.fn, score_name=metric.name)
        io.log(
            f"NFE sweep {name}: "
            + ", ".join(f"NFE {r['nfe']:g}: {metric.name} {r[metric.name]:.4g}" for r in rows)
        )
        return rows

    def run(self, ctx: Context, metric: SweepMetric) -> dict[str, Any]:
        """``{"metric", "num_samples", "floor", "curves": {sampler: [row per setting]}}``, and
        ``"reference_curves": {"oracle_<solver>": rows}`` with ``oracle_solvers``."""
        key = ctx.keys["sweep"]
        curves = {
            name: self._curve(name, ctx.fn, self.exp.samplers[name], metric, key, as_is=False)
            for name in self.samplers
        }
        out = {
            "metric": metric.name,
            "num_samples": self.num_samples,
            "floor": metric.floor,
            "curves": curves,
        }
        if self.oracle_solvers:
            oracle = self.exp.eval_ds.oracle.model_fn(self.exp.path)
            out["reference_curves"] = {
                f"oracle_{s}": self._curve(
                    f"oracle_{s}", oracle, oracle_sampler(s, 1), metric, key, as_is=True
                )
                for s in self.oracle_solvers
            }
            out["reference"] = (
                "the exact oracle velocity of the data (flowjax.oracle), sampled with each ODE "
                "solver at the sweep's step counts"
            )
        return out
