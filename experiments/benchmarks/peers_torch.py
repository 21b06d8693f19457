"""The PyTorch side of ``bench_peers``: the optional peers, the torch copy of the benchmark MLP,
and the peers' samplers and likelihoods (facebookresearch/flow_matching, torchdiffeq), each
wrapped as a ``run()`` that the benchmark times against flowjax.

The torch network is the benchmark MLP (``[x, t]`` -> ``DEPTH`` x ``WIDTH`` SiLU -> 2) with
weights copied from (or to) flowjax's ``models.MLP(time_embedding="none")``.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

WIDTH, DEPTH = 512, 4
THREADS = 2

__all__ = [
    "DEPTH",
    "THREADS",
    "WIDTH",
    "TorchVelocity",
    "dense_layers",
    "flax_from_torch",
    "fm_latency",
    "fm_likelihood",
    "fm_sampler",
    "odeint_sampler",
    "peers",
    "torch_from_flax",
    "torch_mlp",
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


def fm_sampler(torch, net, x0, name: str):
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
        vel = TorchVelocity(torch, net)
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


def odeint_sampler(torch, net, x0, name: str):
    from torchdiffeq import odeint

    method, opts = {
        "euler_100": ("euler", {"step_size": 0.01}),
        "midpoint_50": ("midpoint", {"step_size": 0.02}),
    }.get(name, ("dopri5", {}))

    def run():
        vel = TorchVelocity(torch, net)
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


def fm_latency(torch, net, x0):
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


def fm_likelihood(torch, net, x1, opts: dict):
    from flow_matching.solver import ODESolver
    from flow_matching.utils import ModelWrapper

    vel = TorchVelocity(torch, net)

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
