"""The PyTorch side of ``bench_peers``: the optional peers, the torch copy of the benchmark MLP,
the peers' training steps (plain Adam, and flowjax's cosine + EMA recipe written in PyTorch), and
the peers' samplers and likelihoods (facebookresearch/flow_matching, torchdiffeq), each wrapped as a
``run()`` that the benchmark times against flowjax.

The torch network is the benchmark MLP (``[x, t]`` -> ``DEPTH`` x ``WIDTH`` SiLU -> 2) with
weights copied from (or to) flowjax's ``models.MLP(time_embedding="none")``.
"""

from __future__ import annotations

import math
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

WIDTH, DEPTH = 512, 4
# torch's intra-op threads: the machine's 2 cores, as JAX uses them (FLOWJAX_BENCH_TORCH_THREADS
# overrides it, e.g. 1 for smoke runs on a loaded machine, where 2 spinning threads stall)
THREADS = int(os.environ.get("FLOWJAX_BENCH_TORCH_THREADS", "2"))

__all__ = [
    "DEPTH",
    "THREADS",
    "WIDTH",
    "TorchVelocity",
    "dense_layers",
    "flax_from_torch",
    "fm_likelihood",
    "peer_pair",
    "peers",
    "torch_from_flax",
    "torch_latency",
    "torch_mlp",
    "torch_sampler",
    "torch_train_step",
]


def peers() -> dict[str, Any]:
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


def torch_mlp(torch, dim: int = 2):
    layers: list[Any] = []
    d_in = dim + 1
    for _ in range(DEPTH):
        layers += [torch.nn.Linear(d_in, WIDTH), torch.nn.SiLU()]
        d_in = WIDTH
    layers.append(torch.nn.Linear(d_in, dim))
    return torch.nn.Sequential(*layers)


def torch_from_flax(torch, params: Any):
    """A torch copy of the flowjax MLP (Dense kernels [in, out] -> Linear weights [out, in])."""
    dense = dense_layers(params)
    net = torch_mlp(torch, dense[-1][0].shape[1])
    linears = [m for m in net if isinstance(m, torch.nn.Linear)]
    assert len(dense) == len(linears)
    with torch.no_grad():
        for lin, (kernel, bias) in zip(linears, dense, strict=True):
            lin.weight.copy_(torch.from_numpy(np.asarray(kernel, np.float32).T.copy()))
            lin.bias.copy_(torch.from_numpy(np.array(bias, np.float32)))
    return net


def flax_from_torch(net, template: Any) -> Any:
    """flowjax parameters holding a torch network's weights (inverse of :func:`torch_from_flax`)."""
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


def dense_layers(params: Any) -> list[tuple[Any, Any]]:
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


class TorchVelocity:
    """``u(x, t)`` of the torch MLP on ``[x, t]``, counting its evaluations (NFE)."""

    def __init__(self, torch, net):
        self.torch, self.net, self.calls = torch, net, 0

    def __call__(self, x, t):
        self.calls += 1
        t = self.torch.as_tensor(t, dtype=x.dtype).reshape(-1, 1).expand(x.shape[0], 1)
        return self.net(self.torch.cat([x, t], dim=1))


def _fm_wrapper(vel):
    from flow_matching.utils import ModelWrapper

    class Wrapped(ModelWrapper):
        def __init__(self):
            super().__init__(None)

        def forward(self, x, t, **extras):
            return vel(x, t)

    return Wrapped()


def torch_sampler(torch, net, x0, lib: str, method: str, steps: int | None, tol: float | None):
    """``run()`` -> (samples, NFE): the ODE from ``x0`` at t = 0 to t = 1 through ``lib``'s public
    API (``"torchdiffeq"``: ``odeint``; ``"flow_matching"``: ``ODESolver.sample``), with a fixed
    step of ``1 / steps`` (``tol`` None) or torchdiffeq's adaptive control at ``rtol = atol = tol``."""
    from torchdiffeq import odeint

    rtol = atol = tol if tol is not None else 1e-5
    grid = torch.tensor([0.0, 1.0])

    def run():
        vel = TorchVelocity(torch, net)
        with torch.no_grad():
            if lib == "flow_matching":
                from flow_matching.solver import ODESolver

                out = ODESolver(velocity_model=_fm_wrapper(vel)).sample(
                    x_init=x0,
                    step_size=1.0 / steps if steps else None,
                    method=method,
                    atol=atol,
                    rtol=rtol,
                    time_grid=grid,
                )
            else:
                out = odeint(
                    lambda t, x: vel(x, t),
                    x0,
                    grid,
                    method=method,
                    options={"step_size": 1.0 / steps} if steps else None,
                    rtol=rtol,
                    atol=atol,
                )[-1]
        return out.numpy(), vel.calls

    return run


def torch_train_step(
    torch, net, pair, *, lr: float = 1e-3, recipe: str = "plain", total: int = 1, accum: int = 1
):
    """One training step of ``net`` (a closure ``step(x1)``) and ``weights()``.

    ``pair(x1)`` -> ``(x_t, t, target)`` (the peer's own path API). ``recipe="plain"``: Adam at a
    constant ``lr``; ``"cosine_ema"``: flowjax's recipe in PyTorch: the rate decays as
    ``lr * (1 + cos(pi * k / total)) / 2`` at update ``k`` (``make_schedule("cosine")``) and an EMA of
    the weights is kept with decay ``min(0.999, (1 + k) / (10 + k))`` (``ema_warmup=True``),
    initialised to the initial weights; ``weights()`` is then the EMA. ``accum``: the batch's
    gradient accumulated over that many micro-batches (one Adam update on the mean gradient).
    """
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    sched = None
    ema = None
    if recipe == "cosine_ema":
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda k: 0.5 * (1.0 + math.cos(math.pi * min(k, total) / total))
        )
        ema = [p.detach().clone() for p in net.parameters()]
    elif recipe != "plain":
        raise ValueError(f"unknown recipe {recipe!r}")
    count = {"k": 0}

    def step(x1):
        opt.zero_grad(set_to_none=True)
        for chunk in x1.chunk(accum) if accum > 1 else (x1,):
            xt, t, target = pair(chunk)
            loss = torch.pow(net(torch.cat([xt, t[:, None]], dim=1)) - target, 2).mean()
            (loss / accum if accum > 1 else loss).backward()
        opt.step()
        if sched is not None:
            sched.step()
        if ema is not None:
            k = count["k"]
            d = min(0.999, (1.0 + k) / (10.0 + k))
            with torch.no_grad():
                for e, p in zip(ema, net.parameters(), strict=True):
                    e.add_(p.detach() - e, alpha=1.0 - d)
        count["k"] += 1

    def weights():
        if ema is None:
            return net
        import copy

        out = copy.deepcopy(net)
        with torch.no_grad():
            for q, e in zip(out.parameters(), ema, strict=True):
                q.copy_(e)
        return out

    return step, weights


def peer_pair(torch, peer: str):
    """``pair(x1)`` -> ``(x_t, t, target velocity)`` drawn through ``peer``'s public API (CondOT,
    sigma = 0): ``flow_matching``'s ``AffineProbPath(CondOTScheduler())`` or ``torchcfm``'s
    ``ConditionalFlowMatcher(sigma=0)``; the noise and t from torch's generator."""
    if peer == "flow_matching":
        from flow_matching.path import AffineProbPath
        from flow_matching.path.scheduler import CondOTScheduler

        fm_path = AffineProbPath(scheduler=CondOTScheduler())

        def pair(x1):
            x0, t = torch.randn_like(x1), torch.rand(x1.shape[0])
            ps = fm_path.sample(t=t, x_0=x0, x_1=x1)
            return ps.x_t, t, ps.dx_t

        return pair
    if peer == "torchcfm":
        from torchcfm.conditional_flow_matching import ConditionalFlowMatcher

        cfm = ConditionalFlowMatcher(sigma=0.0)

        def pair_cfm(x1):
            t, xt, ut = cfm.sample_location_and_conditional_flow(torch.randn_like(x1), x1)
            return xt, t, ut

        return pair_cfm
    raise ValueError(f"unknown peer {peer!r}")


def torch_latency(torch, net, x0, lib: str, steps: int = 20):
    """``run()``: Euler ``steps`` from ``x0`` through ``lib`` (``ODESolver.sample`` or ``odeint``),
    the network called directly (no evaluation counter)."""
    from torchdiffeq import odeint

    def vel(t, x):
        tt = torch.as_tensor(t, dtype=x.dtype).reshape(-1, 1).expand(x.shape[0], 1)
        return net(torch.cat([x, tt], dim=1))

    if lib == "flow_matching":
        from flow_matching.solver import ODESolver
        from flow_matching.utils import ModelWrapper

        class Wrapped(ModelWrapper):
            def forward(self, x, t, **extras):
                return vel(t, x)

        solver = ODESolver(velocity_model=Wrapped(net))

        def run():
            with torch.no_grad():
                return solver.sample(x_init=x0, step_size=1.0 / steps, method="euler")

        return run
    grid = torch.tensor([0.0, 1.0])

    def run_odeint():
        with torch.no_grad():
            return odeint(vel, x0, grid, method="euler", options={"step_size": 1.0 / steps})[-1]

    return run_odeint


def fm_likelihood(
    torch, net, x1, divergence: str, method: str, steps: int | None, tol: float | None
):
    """``run()`` -> (log p, NFE) of ``x1`` by ``ODESolver.compute_likelihood`` (exact or
    Hutchinson divergence; a fixed step ``1 / steps`` or adaptive at ``rtol = atol = tol``)."""
    from flow_matching.solver import ODESolver

    vel = TorchVelocity(torch, net)
    solver = ODESolver(velocity_model=_fm_wrapper(vel))
    exact = divergence == "exact"
    tol = tol if tol is not None else 1e-5

    def log_p0(z):
        return -0.5 * (z**2).sum(dim=1) - z.shape[1] * 0.5 * math.log(2 * math.pi)

    def run():
        vel.calls = 0
        torch.manual_seed(0)
        _, lp = solver.compute_likelihood(
            x_1=x1,
            log_p0=log_p0,
            step_size=1.0 / steps if steps else None,
            method=method,
            atol=tol,
            rtol=tol,
            exact_divergence=exact,
        )
        return lp.detach().numpy(), vel.calls

    return run
