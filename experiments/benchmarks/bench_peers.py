"""flowjax side by side with the PyTorch peers (facebookresearch/flow_matching, torchcfm).

Workloads (issue 10), 2 threads, fixed seeds, every comparison alternating the sides round by
round and reporting the median of the per-round time ratios (this machine is shared and noisy):

* **W1 training**: 2-D checkerboard; MLP 3 -> 4 x 512 SiLU -> 2 on ``[x, t]``; Adam lr 1e-3;
  CondOT; batch 4096 and 256; steps/s after warm-up. The peers use their own public path/matcher
  APIs (``flow_matching.path.AffineProbPath(CondOTScheduler())``,
  ``torchcfm.ConditionalFlowMatcher(sigma=0)``) and ``torch.optim.Adam``; flowjax uses
  ``flowjax.losses.make_loss`` and ``flowjax.training.make_train_step`` (no EMA, as the peers).
* **W2 sampling**: 10,000 samples from one trained model (flowjax weights copied into the torch
  network): Euler 100, midpoint 50, Dopri5 rtol = atol = 1e-5; wall time, NFE, energy distance and
  sliced W2 against 10,000 fresh data points; latency at batch 1 and 64 with Euler 20. Peers:
  ``flow_matching.solver.ODESolver.sample`` and ``torchdiffeq.odeint`` (torchcfm's examples' way;
  torchdyn is not installed).
* **W3 likelihood**: log p of 2,000 held-out points, exact divergence and Hutchinson, Euler 100 and
  Dopri5 1e-5; wall time and mean NLL. Peer: ``ODESolver.compute_likelihood``.
* **W4 ground truth**: each side trains the model 2,000 steps (batch 4096) on the 8-Gaussians ring
  (radius 4, std 0.5); mean NLL on 2,000 test points minus the true entropy estimate (the oracle's
  mean ``-log p``), all evaluated with one exact likelihood (flowjax, Dopri5 1e-6 in float64) so
  that only training differs.
* **Limit**: the measured float32 matmul rate of this machine (JAX and torch), and W1/W2's achieved
  fraction of it from the MLP's FLOP count.

Peers are optional: without torch the flowjax sides still run and the peer columns say so.
Run: ``python -m experiments.benchmarks.bench_peers [--quick] [--json F]``.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import sys
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import flowjax as fj
from flowjax import likelihood as L
from flowjax import losses, models
from flowjax import training as T

WIDTH, DEPTH = 512, 4
THREADS = 2
# W1: flowjax evaluates the gradient of a large batch in micro-batches of this many examples
# (grad_accum_steps): a [1024, 512] activation is 2 MiB, so each layer's matmul, SiLU and their
# gradients stay in cache, and XLA's per-call buffer stays small. Measured here at batch 4096:
# one pass 147 ms/step, 4 micro-batches 111 ms/step (flow_matching 120 ms/step).
MICROBATCH = 1024


# ----------------------------------------------------------------------------- peers (optional)


def _peers() -> dict[str, Any]:
    """Import the optional peers; returns what is available (and why not, otherwise)."""
    out: dict[str, Any] = {}
    try:
        import torch

        torch.set_num_threads(THREADS)
        out["torch"] = torch
    except ImportError as e:  # pragma: no cover - depends on the environment
        out["missing"] = f"torch not installed ({e}); pip install -r requirements-bench.txt"
        return out
    for name in ("flow_matching", "torchcfm", "torchdiffeq"):
        try:
            out[name] = __import__(name)
        except ImportError as e:  # pragma: no cover
            out.setdefault("missing_parts", []).append(f"{name}: {e}")
    return out


def _torch_mlp(torch, dim: int = 2):
    layers: list[Any] = []
    d_in = dim + 1
    for _ in range(DEPTH):
        layers += [torch.nn.Linear(d_in, WIDTH), torch.nn.SiLU()]
        d_in = WIDTH
    layers.append(torch.nn.Linear(d_in, dim))
    return torch.nn.Sequential(*layers)


def _torch_from_flax(torch, params: Any):
    """A torch copy of the flowjax MLP (Dense kernels [in, out] -> Linear weights [out, in])."""
    dense = _dense_layers(params)
    net = _torch_mlp(torch, dense[-1][0].shape[1])
    linears = [m for m in net if isinstance(m, torch.nn.Linear)]
    assert len(dense) == len(linears)
    with torch.no_grad():
        for lin, (kernel, bias) in zip(linears, dense, strict=True):
            lin.weight.copy_(torch.from_numpy(np.asarray(kernel, np.float32).T.copy()))
            lin.bias.copy_(torch.from_numpy(np.array(bias, np.float32)))
    return net


def _flax_from_torch(net, template: Any) -> Any:
    """flowjax parameters holding a torch network's weights (inverse of :func:`_torch_from_flax`)."""
    import torch

    lin = [
        (m.weight.detach().numpy().T, m.bias.detach().numpy())
        for m in net
        if isinstance(m, torch.nn.Linear)
    ]
    out = {
        "input": {"kernel": jnp.asarray(lin[0][0][:-1]), "bias": jnp.asarray(lin[0][1])},
        "cond_input": {"kernel": jnp.asarray(lin[0][0][-1:])},
        "output": {"kernel": jnp.asarray(lin[-1][0]), "bias": jnp.asarray(lin[-1][1])},
    }
    for i, (k, b) in enumerate(lin[1:-1]):
        out[f"Dense_{i}"] = {"kernel": jnp.asarray(k), "bias": jnp.asarray(b)}
    assert jax.tree.structure(out) == jax.tree.structure(dict(template))
    return out


def _dense_layers(params: Any) -> list[tuple[Any, Any]]:
    """The flowjax MLP (``time_embedding="none"``) as dense layers on ``[x, t]``: [in, out] kernels.

    Its first layer is ``input`` (x, with bias) plus ``cond_input`` (t, no bias): one Dense on
    ``[x, t]`` with the kernels stacked.
    """
    hidden = sorted(
        (k for k in params if k.startswith("Dense_")), key=lambda n: int(n.split("_")[1])
    )
    first = (
        np.concatenate([params["input"]["kernel"], params["cond_input"]["kernel"]], axis=0),
        params["input"]["bias"],
    )
    return (
        [first]
        + [(params[n]["kernel"], params[n]["bias"]) for n in hidden]
        + [(params["output"]["kernel"], params["output"]["bias"])]
    )


class _TorchVelocity:
    """``u(x, t)`` of the torch MLP on ``[x, t]``, counting its evaluations (NFE)."""

    def __init__(self, torch, net):
        self.torch, self.net, self.calls = torch, net, 0

    def __call__(self, x, t):
        self.calls += 1
        t = self.torch.as_tensor(t, dtype=x.dtype).reshape(-1, 1).expand(x.shape[0], 1)
        return self.net(self.torch.cat([x, t], dim=1))


# ----------------------------------------------------------------------------- flowjax side


def _flowjax_model():
    return models.MLP(hidden=(WIDTH,) * DEPTH, activation="silu", time_embedding="none")


def _flowjax_trainer(
    batch: int,
    *,
    lr_schedule: str = "constant",
    total: int = 0,
    ema=None,
    ema_warmup=False,
    grad_accum_steps: int = 1,
):
    model = _flowjax_model()
    params = models.init(model, jax.random.PRNGKey(0), jnp.zeros((1, 2)))
    loss_fn = losses.make_loss(models.make_apply_fn(model), fj.CondOT(), t_margin=0.0)
    opt = T.make_optimizer(
        "adam", 1e-3, schedule=lr_schedule, total_steps=max(total, 1), warmup_steps=0
    )
    step = T.make_train_step(
        loss_fn,
        opt,
        mesh=T.make_mesh(),
        ema_decay=ema,
        ema_warmup=ema_warmup,
        grad_accum_steps=grad_accum_steps,
    )
    state = step.place_state(
        T.create_train_state(params, opt, jax.random.PRNGKey(1), ema=ema is not None)
    )
    return model, step, state


def _step_runner(step, state, placed: list) -> Callable[[int], None]:
    """``run(n)``: ``n`` train steps cycling through ``placed`` batches, then block."""
    holder = {"state": state}

    def run(n: int) -> None:
        s = holder["state"]
        for i in range(n):
            s, _ = step(s, placed[i % len(placed)])
        jax.block_until_ready(s)
        holder["state"] = s

    return run


def _alternate(fns: dict[str, Callable[[], Any]], rounds: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return times


def _median_ratio(times: dict[str, list[float]], num: str, den: str) -> float:
    """Median over rounds of ``time[num] / time[den]`` (paired within each round)."""
    return float(np.median(np.asarray(times[num]) / np.asarray(times[den])))


def _data(name: str, key: jax.Array, n: int) -> np.ndarray:
    return np.asarray(fj.data.toy_sample(name, key, n), np.float32)


# ----------------------------------------------------------------------------- W1 training


def w1_training(peers: dict, batch: int, steps: int, warmup: int, rounds: int) -> dict:
    pool = [_data("checkerboard", jax.random.PRNGKey(100 + i), batch) for i in range(8)]
    fns: dict[str, Callable[[], None]] = {}
    # flowjax computes a large batch's gradient in cache-sized micro-batches (the same update:
    # the mean gradient over all `batch` examples, one Adam step); "flowjax_one_pass" is the same
    # step on the whole batch at once, reported beside it
    accum = max(1, batch // MICROBATCH)
    variants = {"flowjax": accum} | ({"flowjax_one_pass": 1} if accum > 1 else {})
    for name, k in variants.items():
        _, step, state = _flowjax_trainer(batch, grad_accum_steps=k)
        placed = [step.shard_batch({"x": b}) for b in pool]
        run_flowjax = _step_runner(step, state, placed)
        run_flowjax(warmup)
        fns[name] = functools.partial(run_flowjax, steps)
    torch = peers.get("torch")
    if torch is not None:
        tpool = [torch.from_numpy(b.copy()) for b in pool]
        if "flow_matching" in peers:
            from flow_matching.path import AffineProbPath
            from flow_matching.path.scheduler import CondOTScheduler

            fm_path = AffineProbPath(scheduler=CondOTScheduler())
            torch.manual_seed(0)
            net = _torch_mlp(torch)
            opt = torch.optim.Adam(net.parameters(), lr=1e-3)

            def fm_step(x1):
                x0 = torch.randn_like(x1)
                t = torch.rand(x1.shape[0])
                ps = fm_path.sample(t=t, x_0=x0, x_1=x1)
                pred = net(torch.cat([ps.x_t, t[:, None]], dim=1))
                loss = torch.pow(pred - ps.dx_t, 2).mean()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()

            def run_fm(n: int) -> None:
                for i in range(n):
                    fm_step(tpool[i % len(tpool)])

            run_fm(warmup)
            fns["flow_matching"] = lambda: run_fm(steps)
        if "torchcfm" in peers:
            from torchcfm.conditional_flow_matching import ConditionalFlowMatcher

            cfm = ConditionalFlowMatcher(sigma=0.0)
            torch.manual_seed(0)
            net2 = _torch_mlp(torch)
            opt2 = torch.optim.Adam(net2.parameters(), lr=1e-3)

            def cfm_step(x1):
                x0 = torch.randn_like(x1)
                t, xt, ut = cfm.sample_location_and_conditional_flow(x0, x1)
                pred = net2(torch.cat([xt, t[:, None]], dim=1))
                loss = torch.pow(pred - ut, 2).mean()
                opt2.zero_grad(set_to_none=True)
                loss.backward()
                opt2.step()

            def run_cfm(n: int) -> None:
                for i in range(n):
                    cfm_step(tpool[i % len(tpool)])

            run_cfm(warmup)
            fns["torchcfm"] = lambda: run_cfm(steps)
    times = _alternate(fns, rounds)
    out: dict[str, Any] = {
        "batch": batch,
        "flowjax_grad_accum_steps": accum,
        "steps_per_round": steps,
        "steps_per_sec": {k: steps / float(np.median(v)) for k, v in times.items()},
    }
    peer_names = [k for k in fns if not k.startswith("flowjax")]
    out["speedup_vs"] = {p: _median_ratio(times, p, "flowjax") for p in peer_names}
    if peer_names:
        out["speedup_vs_best_peer"] = min(out["speedup_vs"].values())
        if "flowjax_one_pass" in fns:
            out["one_pass_vs_best_peer"] = min(
                _median_ratio(times, p, "flowjax_one_pass") for p in peer_names
            )
    out["gflop_per_step"] = 3 * _mlp_flops(batch) / 1e9
    return out


def _mlp_flops(batch: int) -> float:
    """Multiply-add FLOPs of one forward pass (2 per MAC); backward costs twice the forward."""
    macs = 3 * WIDTH + (DEPTH - 1) * WIDTH * WIDTH + WIDTH * 2
    return 2.0 * batch * macs


# ----------------------------------------------------------------------------- trained model


def train_model(dataset: str, steps: int, batch: int = 4096, *, recipe: str = "plain") -> Any:
    """A flowjax-trained model on ``dataset``: ``plain`` = Adam 1e-3 as the peers; ``best`` adds
    a cosine learning-rate decay and an EMA of the weights (decay 0.999 with warm-up; returned)."""
    accum = max(1, batch // MICROBATCH)
    if recipe == "best":
        model, step, state = _flowjax_trainer(
            batch,
            lr_schedule="cosine",
            total=steps,
            ema=0.999,
            ema_warmup=True,
            grad_accum_steps=accum,
        )
    else:
        model, step, state = _flowjax_trainer(batch, grad_accum_steps=accum)
    key = jax.random.PRNGKey(7)
    sample = jax.jit(lambda k: fj.data.toy_sample(dataset, k, batch))
    for i in range(steps):
        x = np.asarray(sample(jax.random.fold_in(key, i)))
        state, _ = step(state, step.shard_batch({"x": x}))
    params = state.ema_params if recipe == "best" else state.params
    return model, jax.device_get(params)


# ----------------------------------------------------------------------------- W2 sampling


def w2_sampling(peers: dict, model, params, n: int, rounds: int) -> dict:
    path = fj.CondOT()
    fn = models.model_fn(model, params)
    ref = _data("checkerboard", jax.random.PRNGKey(999), n)
    x0 = np.asarray(jax.random.normal(jax.random.PRNGKey(5), (n, 2)), np.float32)
    settings = {
        "euler_100": dict(solver="euler", num_steps=100),
        "midpoint_50": dict(solver="midpoint", num_steps=50),
        "dopri5_1e-5": dict(
            solver="dopri5", adaptive=fj.solvers.Adaptive(rtol=1e-5, atol=1e-5), num_steps=20
        ),
        # the peers' error norm (RMS over the whole batch); flowjax's default bounds every example
        "dopri5_1e-5_rms": dict(
            solver="dopri5",
            adaptive=fj.solvers.Adaptive(rtol=1e-5, atol=1e-5, error_norm="rms"),
            num_steps=20,
        ),
    }
    # flowjax's own fast settings (fewer NFE): a quality-against-time curve
    fast = {f"heun_{k}": dict(solver="heun", num_steps=k) for k in (4, 8, 12, 16, 24)}
    fast |= {f"midpoint_{k}": dict(solver="midpoint", num_steps=k) for k in (8, 16)}
    fast |= {f"euler_{k}": dict(solver="euler", num_steps=k) for k in (25, 50)}

    def fj_run(opts):
        def run():
            return jax.block_until_ready(fj.sample(fn, path, None, None, x_start=x0, **opts))

        return run

    results: dict[str, Any] = {}
    torch = peers.get("torch")
    tnet = _torch_from_flax(torch, params) if torch is not None else None
    xt0 = torch.from_numpy(x0) if torch is not None else None
    for name, opts in settings.items():
        fns = {"flowjax": fj_run(opts)}
        if torch is not None and "flow_matching" in peers:
            fns["flow_matching"] = _fm_sampler(torch, tnet, xt0, name)
        if torch is not None and "torchdiffeq" in peers:
            fns["torchdiffeq"] = _odeint_sampler(torch, tnet, xt0, name)
        outs = {k: f() for k, f in fns.items()}  # warm-up and the samples for quality
        times = _alternate(fns, rounds)
        row: dict[str, Any] = {"ms": {k: 1e3 * float(np.median(v)) for k, v in times.items()}}
        row["speedup_vs"] = {p: _median_ratio(times, p, "flowjax") for p in fns if p != "flowjax"}
        row["nfe"] = {}
        row["energy"] = {}
        row["sliced_w2"] = {}
        for k, o in outs.items():
            samples, nfe = (np.asarray(o.samples), int(o.nfe)) if k == "flowjax" else o
            row["nfe"][k] = nfe
            row["energy"][k] = float(fj.distances.energy_distance(samples, ref))
            row["sliced_w2"][k] = float(
                fj.distances.sliced_wasserstein(samples, ref, jax.random.PRNGKey(0))
            )
        results[name] = row
    floor, spread = fj.distances.finite_sample_floor(
        fj.distances.energy_distance,
        lambda k, m: fj.data.toy_sample("checkerboard", k, m),
        jax.random.PRNGKey(3),
        n,
        repeats=3,
    )
    curve = {}
    for name, opts in fast.items():
        run = fj_run(opts)
        out = run()
        t = float(np.median(_alternate({"x": run}, rounds)["x"]))
        curve[name] = {
            "ms": 1e3 * t,
            "nfe": int(out.nfe),
            "energy": float(fj.distances.energy_distance(np.asarray(out.samples), ref)),
        }
    out: dict[str, Any] = {"n": n, "settings": results, "flowjax_fast": curve}
    out["energy_floor"] = [float(floor), float(spread)]
    peers_best = [
        (row["energy"][p], row["ms"][p], name, p)
        for name, row in results.items()
        for p in row["energy"]
        if p != "flowjax"
    ]
    if peers_best:
        e_best, _, best_setting, best_peer = min(peers_best)
        # the fastest peer run reaching within the floor's spread of the peers' best quality
        target = e_best + 2 * float(spread)
        peer_ms = min(ms for e, ms, _, _ in peers_best if e <= target)
        ours = [(c["ms"], k) for k, c in curve.items() if c["energy"] <= target]
        ours += [
            (r["ms"]["flowjax"], k) for k, r in results.items() if r["energy"]["flowjax"] <= target
        ]
        out["peers_best_quality"] = {
            "energy": e_best,
            "setting": best_setting,
            "peer": best_peer,
            "fastest_peer_ms_at_that_quality": peer_ms,
        }
        if ours:
            ms, which = min(ours)
            out["flowjax_time_to_peers_best_quality"] = {
                "ms": ms,
                "setting": which,
                "speedup": peer_ms / ms,
            }
    out["latency"] = _latency(peers, fn, tnet, rounds)
    return out


def _fm_sampler(torch, net, x0, name: str):
    from flow_matching.solver import ODESolver
    from flow_matching.utils import ModelWrapper

    class Wrapped(ModelWrapper):
        def __init__(self, vel):
            super().__init__(None)
            self.vel = vel

        def forward(self, x, t, **extras):
            return self.vel(x, t)

    method, step = {"euler_100": ("euler", 0.01), "midpoint_50": ("midpoint", 0.02)}.get(
        name, ("dopri5", None)
    )

    def run():
        vel = _TorchVelocity(torch, net)
        solver = ODESolver(velocity_model=Wrapped(vel))
        with torch.no_grad():
            out = solver.sample(
                x_init=x0,
                step_size=step,
                method=method,
                atol=1e-5,
                rtol=1e-5,
                time_grid=torch.tensor([0.0, 1.0]),
            )
        return out.numpy(), vel.calls

    return run


def _odeint_sampler(torch, net, x0, name: str):
    from torchdiffeq import odeint

    method, opts = {
        "euler_100": ("euler", {"step_size": 0.01}),
        "midpoint_50": ("midpoint", {"step_size": 0.02}),
    }.get(name, ("dopri5", {}))

    def run():
        vel = _TorchVelocity(torch, net)
        with torch.no_grad():
            out = odeint(
                lambda t, x: vel(x, t),
                x0,
                torch.tensor([0.0, 1.0]),
                method=method,
                options=opts or None,
                rtol=1e-5,
                atol=1e-5,
            )
        return out[-1].numpy(), vel.calls

    return run


def _latency(peers: dict, fn, tnet, rounds: int) -> dict:
    path = fj.CondOT()
    torch = peers.get("torch")
    out = {}
    reps = 20
    for b in (1, 64):
        x0 = np.asarray(jax.random.normal(jax.random.PRNGKey(b), (b, 2)), np.float32)

        def ours(x0=x0):
            return jax.block_until_ready(
                fj.sample(fn, path, None, None, x_start=x0, solver="euler", num_steps=20).samples
            )

        # the idiomatic JAX pattern for serving: the whole sampler jitted once, no per-call checks
        jitted = jax.jit(
            lambda f, x: fj.sample(f, path, None, None, x_start=x, solver="euler", num_steps=20)
        )

        def ours_jit(x0=x0, jitted=jitted):
            return jax.block_until_ready(jitted(fn, x0).samples)

        fns = {"flowjax": ours, "flowjax_jit": ours_jit}
        if torch is not None and "flow_matching" in peers:
            fns["flow_matching"] = _fm_latency(torch, tnet, torch.from_numpy(x0))
        for f in fns.values():
            f()
        times = _alternate(
            {k: (lambda f=f: [f() for _ in range(reps)]) for k, f in fns.items()}, rounds
        )
        out[f"batch_{b}"] = {
            "us_per_call": {k: 1e6 * float(np.median(v)) / reps for k, v in times.items()},
            "us_per_step": {k: 1e6 * float(np.median(v)) / reps / 20 for k, v in times.items()},
            "speedup_vs": {
                p: _median_ratio(times, p, "flowjax") for p in fns if not p.startswith("flowjax")
            },
            "speedup_jit_vs": {
                p: _median_ratio(times, p, "flowjax_jit")
                for p in fns
                if not p.startswith("flowjax")
            },
        }
    return out


def _fm_latency(torch, net, x0):
    from flow_matching.solver import ODESolver
    from flow_matching.utils import ModelWrapper

    class Wrapped(ModelWrapper):
        def forward(self, x, t, **extras):
            tt = torch.as_tensor(t, dtype=x.dtype).reshape(-1, 1).expand(x.shape[0], 1)
            return self.model(torch.cat([x, tt], dim=1))

    solver = ODESolver(velocity_model=Wrapped(net))

    def run():
        with torch.no_grad():
            return solver.sample(x_init=x0, step_size=0.05, method="euler")

    return run


# ----------------------------------------------------------------------------- W3 likelihood


# W3 at equal accuracy: flowjax's exact-divergence settings with fewer evaluations, each timed and
# scored against a float64 reference; the cheapest one as accurate as a peer's run is compared with it
W3_FAST = (
    {f"heun_{k}": dict(solver="heun", num_steps=k) for k in (4, 8, 16, 32)}
    | {
        f"{s}_{tol:.0e}": dict(solver=s, rtol=tol, atol=tol)
        for s in ("bosh3", "tsit5", "dopri5")
        for tol in (1e-3, 3e-4, 1e-4, 3e-5)
    }
    | {  # one step sequence for the whole batch, chosen on its RMS error (the peers' convention)
        f"{s}_{tol:.0e}_shared": dict(solver=s, rtol=tol, atol=tol, shared_steps=True)
        for s in ("tsit5", "dopri5")
        for tol in (1e-4, 3e-5, 1e-5)
    }
)


def reference_log_prob(model, params, x: np.ndarray) -> np.ndarray:
    """log p(x) of the model with the exact divergence, Dopri5 rtol = atol = 1e-9, float64."""
    with jax.enable_x64(True):
        p64 = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), params)
        fn = models.model_fn(model, p64)
        res = L.log_likelihood(
            fn, fj.CondOT(), jnp.asarray(x, jnp.float64), solver="dopri5", rtol=1e-9, atol=1e-9
        )
        return np.asarray(res.log_prob, np.float64)


def _error(log_prob: np.ndarray, ref: np.ndarray) -> float:
    """Mean absolute error of per-point log-densities (nats)."""
    return float(np.mean(np.abs(np.asarray(log_prob, np.float64) - ref)))


def w3_equal_accuracy(model, params, x: np.ndarray, ref: np.ndarray, table: dict) -> dict:
    """flowjax's cheapest exact-divergence setting at least as accurate as each peer run.

    ``table``: :func:`w3_likelihood`'s result (peer times and errors). flowjax's fast settings are
    timed as the median of 3 runs each (not alternated with the peer, whose time is its row's).
    """
    path = fj.CondOT()
    fn = models.model_fn(model, params)
    fast: dict[str, Any] = {}
    for name, opts in W3_FAST.items():

        def run(opts=opts):
            r = L.log_likelihood(fn, path, x, **opts)
            return np.asarray(jax.block_until_ready(r.log_prob)), int(np.max(np.asarray(r.nfe)))

        lp, nfe = run()
        times = _alternate({"run": run}, 3)["run"]
        fast[name] = {"ms": 1e3 * float(np.median(times)), "nfe": nfe, "error": _error(lp, ref)}
    out: dict[str, Any] = {"fast": fast, "versus": {}}
    for case, row in table.items():
        if not (isinstance(row, dict) and "error" in row and "flow_matching" in row["error"]):
            continue
        if not case.startswith("exact"):
            continue  # Hutchinson's error is its probe noise, the same estimator on both sides
        target = row["error"]["flow_matching"]
        ok = {k: v for k, v in fast.items() if v["error"] <= target}
        ok[f"{case} (same settings)"] = {
            "ms": row["ms"]["flowjax"], "nfe": row["nfe"]["flowjax"],
            "error": row["error"]["flowjax"],
        }  # fmt: skip
        ok = {k: v for k, v in ok.items() if v["error"] <= target}
        if not ok:
            out["versus"][case] = {"peer_error": target, "flowjax": None}
            continue
        best = min(ok, key=lambda k: ok[k]["ms"])
        out["versus"][case] = {
            "peer_error": target,
            "peer_ms": row["ms"]["flow_matching"],
            "flowjax": best,
            "flowjax_ms": ok[best]["ms"],
            "flowjax_error": ok[best]["error"],
            "speedup": row["ms"]["flow_matching"] / ok[best]["ms"],
        }
    return out


def w3_likelihood(
    peers: dict, model, params, x: np.ndarray, rounds: int, cases=None, ref=None
) -> dict:
    """log p(x) with flowjax and flow_matching's ``compute_likelihood`` on the same weights.

    ``ref``: reference log-densities of ``x`` (:func:`reference_log_prob`); each row then reports
    each side's mean absolute error against it.
    """
    path = fj.CondOT()
    fn = models.model_fn(model, params)
    n = x.shape[0]
    torch = peers.get("torch")
    tnet = _torch_from_flax(torch, params) if torch is not None else None
    cases = cases or {
        "exact_euler_100": dict(divergence="exact", solver="euler", num_steps=100),
        "hutchinson_euler_100": dict(divergence="hutchinson", solver="euler", num_steps=100),
        "exact_dopri5_1e-5": dict(divergence="exact", solver="dopri5", rtol=1e-5, atol=1e-5),
        # flowjax with the peer's step convention (shared steps, RMS over the batch)
        "exact_dopri5_1e-5_shared": dict(
            divergence="exact", solver="dopri5", rtol=1e-5, atol=1e-5, shared_steps=True
        ),
        "hutchinson_dopri5_1e-5": dict(
            divergence="hutchinson", solver="dopri5", rtol=1e-5, atol=1e-5
        ),
    }
    out: dict[str, Any] = {"n": n, "dim": int(np.prod(x.shape[1:]))}
    for name, opts in cases.items():

        def ours(opts=opts):
            r = L.log_likelihood(fn, path, x, key=jax.random.PRNGKey(0), **opts)
            return np.asarray(jax.block_until_ready(r.log_prob)), int(np.max(np.asarray(r.nfe)))

        fns = {"flowjax": ours}
        if torch is not None and "flow_matching" in peers:
            fns["flow_matching"] = _fm_likelihood(torch, tnet, torch.from_numpy(x), opts)
        results = {k: f() for k, f in fns.items()}
        times = _alternate(fns, rounds)
        out[name] = {
            "ms": {k: 1e3 * float(np.median(v)) for k, v in times.items()},
            "mean_nll": {k: float(-np.mean(r[0])) for k, r in results.items()},
            "nfe": {k: r[1] for k, r in results.items()},
            "speedup_vs": {p: _median_ratio(times, p, "flowjax") for p in fns if p != "flowjax"},
        }
        if ref is not None:
            out[name]["error"] = {k: _error(r[0], ref) for k, r in results.items()}
    return out


def _fm_likelihood(torch, net, x1, opts: dict):
    from flow_matching.solver import ODESolver
    from flow_matching.utils import ModelWrapper

    vel = _TorchVelocity(torch, net)

    class Wrapped(ModelWrapper):
        def forward(self, x, t, **extras):
            return vel(x, t)

    solver = ODESolver(velocity_model=Wrapped(None))
    exact = opts["divergence"] == "exact"
    method = opts["solver"]
    step = 1.0 / opts["num_steps"] if "num_steps" in opts else None

    def log_p0(z):
        return -0.5 * (z**2).sum(dim=1) - z.shape[1] * 0.5 * math.log(2 * math.pi)

    def run():
        vel.calls = 0
        torch.manual_seed(0)
        _, lp = solver.compute_likelihood(
            x_1=x1,
            log_p0=log_p0,
            step_size=step,
            method=method,
            atol=opts.get("atol", 1e-5),
            rtol=opts.get("rtol", 1e-5),
            exact_divergence=exact,
        )
        return lp.detach().numpy(), vel.calls

    return run


# ----------------------------------------------------------------------------- W4 ground truth


def w4_ground_truth(peers: dict, steps: int, n_test: int) -> dict:
    mix = fj.oracle.eight_gaussians(radius=4.0, std=0.5)
    test = np.asarray(mix.sample(jax.random.PRNGKey(31337), n_test), np.float64)
    entropy = float(-np.mean(np.asarray(mix.data_log_prob(test))))
    out: dict[str, Any] = {"steps": steps, "n_test": n_test, "true_mean_nll": entropy, "gap": {}}
    trained: dict[str, Any] = {}
    t0 = time.perf_counter()
    model, p_best = train_model("eight_gaussians", steps, recipe="best")
    trained["flowjax"] = p_best
    out["train_seconds"] = {"flowjax": time.perf_counter() - t0}
    _, p_plain = train_model("eight_gaussians", steps, recipe="plain")
    trained["flowjax_plain_adam"] = p_plain
    torch = peers.get("torch")
    if torch is not None:
        sampler = jax.jit(lambda k: fj.data.toy_sample("eight_gaussians", k, 4096))
        for peer in ("flow_matching", "torchcfm"):
            if peer not in peers:
                continue
            torch.manual_seed(0)
            net = _torch_mlp(torch)
            opt = torch.optim.Adam(net.parameters(), lr=1e-3)
            if peer == "flow_matching":
                from flow_matching.path import AffineProbPath
                from flow_matching.path.scheduler import CondOTScheduler

                fm_path = AffineProbPath(scheduler=CondOTScheduler())

                def pair(x1, fm_path=fm_path):
                    x0, t = torch.randn_like(x1), torch.rand(x1.shape[0])
                    ps = fm_path.sample(t=t, x_0=x0, x_1=x1)
                    return ps.x_t, t, ps.dx_t
            else:
                from torchcfm.conditional_flow_matching import ConditionalFlowMatcher

                cfm = ConditionalFlowMatcher(sigma=0.0)

                def pair(x1, cfm=cfm):
                    t, xt, ut = cfm.sample_location_and_conditional_flow(torch.randn_like(x1), x1)
                    return xt, t, ut

            t0 = time.perf_counter()
            for i in range(steps):
                x1 = torch.from_numpy(
                    np.asarray(sampler(jax.random.fold_in(jax.random.PRNGKey(7), i)))
                )
                xt, t, target = pair(x1)
                loss = torch.pow(net(torch.cat([xt, t[:, None]], 1)) - target, 2).mean()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            out["train_seconds"][peer] = time.perf_counter() - t0
            trained[peer] = _flax_from_torch(net, jax.device_get(p_best))
    with jax.enable_x64(True):
        path = fj.CondOT()
        for name, params in trained.items():
            p64 = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), params)
            fn = models.model_fn(model, p64)
            res = L.log_likelihood(fn, path, jnp.asarray(test), rtol=1e-6, atol=1e-6)
            out["gap"][name] = float(-np.mean(np.asarray(res.log_prob))) - entropy
    return out


# ----------------------------------------------------------------------------- limit


def matmul_rate(rounds: int = 5) -> dict:
    """float32 GFLOP/s of a [4096, 512] x [512, 512] matmul (the MLP's hidden layer), JAX and torch."""
    a = jax.random.normal(jax.random.PRNGKey(0), (4096, 512))
    b = jax.random.normal(jax.random.PRNGKey(1), (512, 512))
    reps = 50
    f = jax.jit(lambda a, b: jax.lax.fori_loop(0, reps, lambda i, c: (c @ b) * 1e-3, a))
    jax.block_until_ready(f(a, b))
    fns: dict[str, Callable[[], Any]] = {"jax": lambda: jax.block_until_ready(f(a, b))}
    peers = _peers()
    torch = peers.get("torch")
    if torch is not None:
        ta, tb = torch.from_numpy(np.array(a)), torch.from_numpy(np.array(b))

        def tmm():
            c = ta
            for _ in range(reps):
                c = (c @ tb) * 1e-3
            return c

        tmm()
        fns["torch"] = tmm
    times = _alternate(fns, rounds)
    flops = 2.0 * 4096 * 512 * 512 * reps
    return {k: flops / float(np.min(v)) / 1e9 for k, v in times.items()}


# ----------------------------------------------------------------------------- run


def _log(msg: str, t0: float) -> None:
    print(f"[bench_peers {time.perf_counter() - t0:7.1f}s] {msg}", file=sys.stderr, flush=True)


WORKLOADS = ("w1", "w2", "w3", "w4")


def run(quick: bool = False, workloads: tuple[str, ...] = WORKLOADS) -> dict:
    """The peer comparisons (all of ``WORKLOADS`` by default); a JSON-serialisable dict."""
    unknown = set(workloads) - set(WORKLOADS)
    if unknown:
        raise ValueError(f"unknown workloads {sorted(unknown)}; choose from {WORKLOADS}")
    t_start = time.perf_counter()
    peers = _peers()
    cfg = (
        dict(
            steps=5,
            warmup=2,
            rounds=2,
            train=100,
            n=1000,
            n_lik=200,
            w4=100,
            w4_test=200,
            lik_rounds=1,
            n_digits=32,
        )
        if quick
        else dict(
            steps=50,
            warmup=20,
            rounds=5,
            train=2000,
            n=10_000,
            n_lik=2000,
            w4=2000,
            w4_test=2000,
            lik_rounds=3,
            n_digits=128,
        )
    )
    out: dict[str, Any] = {
        "benchmark": "peers",
        "quick": quick,
        "threads": THREADS,
        "peers": {
            k: getattr(v, "__version__", "?")
            for k, v in peers.items()
            if k not in ("missing", "missing_parts")
        },
        "missing": peers.get("missing") or peers.get("missing_parts"),
        "jax": jax.__version__,
        "cpu_count": os.cpu_count(),
    }
    out["w1_microbatch"] = MICROBATCH
    out["limit_gflops"] = matmul_rate(3 if quick else 7)
    _log(f"limit {out['limit_gflops']}", t_start)
    peak = max(out["limit_gflops"].values())
    if "w1" in workloads:
        out["w1"] = [
            w1_training(
                peers, b, cfg["steps"] * (4 if b == 256 else 1), cfg["warmup"], cfg["rounds"]
            )
            for b in (4096, 256)
        ]
        _log("W1 done", t_start)
        for row in out["w1"]:
            row["fraction_of_peak"] = {
                k: row["gflop_per_step"] * sps / peak for k, sps in row["steps_per_sec"].items()
            }
    if "w2" in workloads or "w3" in workloads:
        model, params = train_model("checkerboard", cfg["train"])
        _log("checkerboard model trained", t_start)
    if "w2" in workloads:
        out["w2"] = w2_sampling(peers, model, params, cfg["n"], cfg["rounds"])
        e100 = out["w2"]["settings"]["euler_100"]
        out["w2"]["fraction_of_peak_euler_100"] = {
            k: 100 * _mlp_flops(cfg["n"]) / (ms / 1e3) / 1e9 / peak for k, ms in e100["ms"].items()
        }
        _log("W2 done", t_start)
    if "w3" in workloads:
        x_lik = _data("checkerboard", jax.random.PRNGKey(4242), cfg["n_lik"])
        ref = reference_log_prob(model, params, x_lik)
        out["w3"] = w3_likelihood(peers, model, params, x_lik, cfg["lik_rounds"], ref=ref)
        out["w3_equal_accuracy"] = w3_equal_accuracy(model, params, x_lik, ref, out["w3"])
        # digits: d = 64 (64 JVPs or 64 backward passes per evaluation), same MLP in both frameworks
        digits = fj.data.get_dataset("digits", "test").as_arrays()["x"][: cfg["n_digits"]]
        digits = np.asarray(digits, np.float32).reshape(len(digits), -1)
        dmodel = _flowjax_model()
        dparams = models.init(dmodel, jax.random.PRNGKey(3), jnp.zeros((1, 64)))
        out["w3_digits"] = w3_likelihood(
            peers, dmodel, dparams, digits, cfg["lik_rounds"],
            cases={
                "exact_euler_100": dict(divergence="exact", solver="euler", num_steps=100),
                "hutchinson_euler_100": dict(divergence="hutchinson", solver="euler", num_steps=100),
            },
        )  # fmt: skip
        out["w3_digits"]["weights"] = "untrained (random init): a timing and agreement check"
        _log("W3 done", t_start)
    if "w4" in workloads:
        out["w4"] = w4_ground_truth(peers, cfg["w4"], cfg["w4_test"])
        _log("W4 done", t_start)
    return out


if __name__ == "__main__":
    from experiments.runtime import reexec_with_cpu_tuning

    reexec_with_cpu_tuning()  # huge pages for XLA:CPU's per-call buffers (experiments/runtime.py)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json")
    parser.add_argument("--workloads", nargs="*", choices=WORKLOADS, default=list(WORKLOADS))
    args = parser.parse_args()
    res = run(quick=args.quick, workloads=tuple(args.workloads))
    print(json.dumps(res, indent=1))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=2)
