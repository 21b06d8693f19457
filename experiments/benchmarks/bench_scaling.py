"""Benchmark: multi-process scaling on CPU, and the memory effect of remat and bfloat16.

Part 1, scaling. The same data-parallel train step (a 3x256 SiLU MLP on 8-Gaussians flow matching,
Adam, global batch 1024) run by 1, 2 and 4 processes joined with ``jax.distributed`` on this
machine (gloo collectives over localhost TCP), 1 CPU device per process, and by 1 process with 2
and 4 devices (XLA's in-process collectives) for comparison. Per configuration: steps/s and
examples/s (median over windows of steps, first step excluded), the time of one all-reduce of a
gradient-sized float32 vector across the devices, and the largest difference of the final
parameters from the 1-process, 1-device run (the configurations compute the same step).

What these figures can show. This machine has 2 CPU cores shared with other work; each
"device" is a share of the same cores, so more devices or processes cannot run faster here. The
figures measure what distribution costs: the collectives (in-process vs gloo across processes),
the per-process dispatch, and oversubscription (4 processes on 2 cores). Real speed-up needs real
accelerators (one per process), which this benchmark was not run on.

Part 2, memory. The compiled train step of a U-Net (``jitted.lower(...).compile()
.memory_analysis()``: temporary buffers, arguments, outputs) for float32 and bfloat16 computation
(float32 parameters) and each remat policy, compiled twice: with XLA's default CPU pipeline, and
with ``--xla_disable_hlo_passes=cse_barrier_expander``. The CPU pipeline removes the optimization
barriers that ``jax.checkpoint`` places before common-subexpression elimination, which merges the
recomputation back into the forward pass, so remat cannot lower CPU memory by default; with the
pass disabled the barriers survive as in the GPU/TPU pipelines (which expand them after
scheduling) and the saving shows. Also: milliseconds per step (median of a few) on CPU, where
bfloat16 arithmetic is emulated and slower.

Part 1 also times the train step with ``parallelism="shard_map"`` (per-device gradients and
explicit collectives) beside the jit step (GSPMD) in every configuration, at global batch 256 and
4096, alternating the two round by round: the per-round ratio (median, quartiles, range).

Run: ``python -m experiments.benchmarks.bench_scaling [--quick] [--parts scaling,memory]
[--shard-map-rounds R] [--configs 1x1,2x1,4x1] [--json FILE]``.

On this 2-core machine (jax 0.10.2) one process with 2 or 4 CPU devices can stop in XLA's
in-process all-reduce ("Termination timeout ... rendezvous") at batch >= 1024, for the jit and the
shard_map step alike; separate processes (gloo) do not: ``--configs 1x1,2x1,4x1`` skips those.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
RESULT = "RESULT "

# ---------------------------------------------------------------------------------------------
# children (run in fresh interpreters: device counts and XLA flags are fixed at start-up)


def _scaling_child(
    pid: int, nproc: int, port: str, steps: int, batch: int, shard_map_rounds: int
) -> dict:
    from flowjax import parallel
    from flowjax import training as T

    if nproc > 1:
        parallel.initialize_distributed(
            f"localhost:{port}",
            nproc,
            pid,
            initialization_timeout=120,
            heartbeat_timeout_seconds=60,
        )
    import jax
    import jax.numpy as jnp
    import numpy as np

    import flowjax as fj
    from experiments.benchmarks.bench_training import spread
    from experiments.benchmarks.common import MLP

    model, path = MLP(width=256, depth=3), fj.CondOT()

    def loss_fn(params, b, key):
        x1 = b["x"]
        k_eps, k_t = jax.random.split(key)
        eps = jax.random.normal(k_eps, x1.shape, x1.dtype)
        t = jax.random.uniform(k_t, (x1.shape[0],), x1.dtype)
        pred = model.apply({"params": params}, path.interpolate(x1, eps, t), t)
        return jnp.mean((pred - path.conditional_target("velocity", x1, eps, t)) ** 2), {}

    params = jax.jit(model.init)(jax.random.PRNGKey(0), jnp.zeros((1, 2)), jnp.zeros((1,)))
    params = params["params"]
    opt = T.make_optimizer("adam", 1e-3)
    mesh = parallel.make_mesh()
    step = T.make_train_step(loss_fn, opt, mesh=mesh, ema_decay=None)
    state = step.place_state(T.create_train_state(params, opt, jax.random.PRNGKey(1), ema=False))
    mix = fj.oracle.eight_gaussians()
    local = batch // nproc
    data = np.asarray(jax.jit(lambda k: mix.sample(k, (steps + 1) * batch))(jax.random.PRNGKey(2)))
    data = data.reshape(steps + 1, batch, 2)[:, pid * local : (pid + 1) * local]
    batches = [step.shard_batch({"x": data[i]}) for i in range(steps + 1)]

    state, m = step(state, batches[0])  # compile
    jax.block_until_ready(m)
    times = []
    window = max(1, steps // 5)
    t0 = time.perf_counter()
    for i in range(1, steps + 1):
        state, m = step(state, batches[i])
        if i % window == 0:
            jax.block_until_ready(m)
            t1 = time.perf_counter()
            times.append((t1 - t0) / window)
            t0 = t1
    # one all-reduce of a gradient-sized vector across all devices
    n_params = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(params))
    n_dev = jax.device_count()
    vec = parallel.shard_batch(
        {"g": np.ones((jax.local_device_count(), n_params), np.float32)},
        parallel.batch_sharding(mesh),
    )["g"]
    reduce = jax.jit(lambda v: jnp.sum(v, axis=0), out_shardings=parallel.replicated(mesh))
    jax.block_until_ready(reduce(vec))
    ar = []
    for _ in range(20):
        t0 = time.perf_counter()
        jax.block_until_ready(reduce(vec))
        ar.append(time.perf_counter() - t0)
    final = [np.asarray(x) for x in jax.tree.leaves(parallel.gather(state.params))]

    # the shard_map step beside the jit step (EMA on, as in training), alternated round by round
    shard_map = {}
    for size in (256, 4096) if shard_map_rounds else ():
        rows = size // nproc
        data = np.asarray(jax.jit(lambda k, n=size: mix.sample(k, n))(jax.random.PRNGKey(3)))
        local_batch = {"x": data[pid * rows : (pid + 1) * rows]}
        window = max(4, 20480 // size)  # steps per timed window: ~20k examples
        variants = {}
        for name in ("jit", "shard_map"):
            vstep = T.make_train_step(loss_fn, opt, mesh=mesh, parallelism=name)
            vstate = vstep.place_state(T.create_train_state(params, opt, jax.random.PRNGKey(1)))
            variants[name] = [vstep, vstate, vstep.shard_batch(local_batch)]
        ms = {name: [] for name in variants}
        for r in range(shard_map_rounds + 1):  # round 0 compiles and warms up
            for name in variants if r % 2 else reversed(variants):
                vstep, vstate, vbatch = variants[name]
                t0 = time.perf_counter()
                for _ in range(window):
                    vstate, m = vstep.jitted(vstate, vbatch)
                jax.block_until_ready(m)
                variants[name][1] = vstate
                if r:
                    ms[name].append(1e3 * (time.perf_counter() - t0) / window)
        shard_map[str(size)] = {
            "jit_ms": statistics.median(ms["jit"]),
            "shard_map_ms": statistics.median(ms["shard_map"]),
            "ratio": spread((np.asarray(ms["shard_map"]) / np.asarray(ms["jit"])).tolist()),
        }
    return {
        "processes": nproc,
        "devices": n_dev,
        "step_s_median": statistics.median(times),
        "steps_per_sec": 1.0 / statistics.median(times),
        "examples_per_sec": batch / statistics.median(times),
        "allreduce_ms_median": 1e3 * statistics.median(ar),
        "n_params": n_params,
        "final_params": [a.tolist() for a in final] if pid == 0 else None,
        "shard_map_vs_jit": shard_map,
    }


def _memory_child(quick: bool) -> list[dict]:
    import jax
    import jax.numpy as jnp
    import numpy as np

    import flowjax as fj
    from flowjax import losses as L
    from flowjax import models as M
    from flowjax import training as T

    if quick:
        base = M.UNet(channels=16, channel_mults=(1, 2), num_res_blocks=1, dropout=0.1)
        shape, batch, reps = (16, 16, 3), 16, 1
        policies = ("none", "blocks")
    else:
        base = M.UNet(channels=32, channel_mults=(1, 2, 2), num_res_blocks=2, dropout=0.1)
        shape, batch, reps = (16, 16, 3), 32, 3
        policies = ("none", "blocks", "dots", "blocks_dots")
    params = M.init(base, jax.random.PRNGKey(0), jnp.zeros((1, *shape)))
    opt = T.make_optimizer("adam", 1e-4)
    mesh = T.make_mesh()
    x = np.asarray(jax.random.normal(jax.random.PRNGKey(1), (batch, *shape)), np.float32)
    out = []
    for precision in ("float32", "bfloat16"):
        model = T.with_precision(base, precision)
        inner = L.make_loss(M.make_apply_fn(model), fj.CondOT())

        def loss_fn(p, b, k, inner=inner):
            value, aux = inner(p, b, k)
            return value, {"mse": aux["mse"]}

        for policy in policies:
            step = T.make_train_step(loss_fn, opt, mesh=mesh, ema_decay=0.999, remat=policy)
            state = step.place_state(T.create_train_state(params, opt, jax.random.PRNGKey(2)))
            b = step.shard_batch({"x": x})
            t0 = time.perf_counter()
            compiled = step.jitted.lower(state, b).compile()
            compile_s = time.perf_counter() - t0
            mem = compiled.memory_analysis()
            ms = []
            for _ in range(reps):
                t0 = time.perf_counter()
                state, m = compiled(state, b)
                jax.block_until_ready(m)
                ms.append(1e3 * (time.perf_counter() - t0))
            out.append(
                {
                    "precision": precision,
                    "remat": policy,
                    "temp_mib": mem.temp_size_in_bytes / 2**20,
                    "argument_mib": mem.argument_size_in_bytes / 2**20,
                    "output_mib": mem.output_size_in_bytes / 2**20,
                    "compile_s": compile_s,
                    "step_ms_median": statistics.median(ms),
                    "loss": float(m["loss"]),
                }
            )
    return [
        {
            "unet": f"channels={base.channels} mults={tuple(base.channel_mults)} "
            f"res_blocks={base.num_res_blocks}",
            "batch": [batch, *shape],
            "params": M.count_params(params),
        },
        *out,
    ]


# ---------------------------------------------------------------------------------------------
# parent


def _env(devices: int, extra_flags: str = "") -> dict:
    env = dict(os.environ)
    env["JAX_PLATFORMS"] = "cpu"
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices} {extra_flags}".strip()
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    return env


def _spawn(args: list[str], env: dict) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "experiments.benchmarks.bench_scaling", "--child", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=str(ROOT),
    )


def _collect(procs: list[subprocess.Popen], timeout: float) -> list[Any]:
    results = []
    try:
        deadline = time.monotonic() + timeout
        for p in procs:
            out, err = p.communicate(timeout=max(1.0, deadline - time.monotonic()))
            if p.returncode != 0:
                raise RuntimeError(f"benchmark child failed ({p.returncode}):\n{out}\n{err}")
            line = next(ln for ln in out.splitlines() if ln.startswith(RESULT))
            results.append(json.loads(line[len(RESULT) :]))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.communicate()
    return results


def _scaling(
    quick: bool,
    shard_map_rounds: int | None = None,
    configs: list[tuple[int, int]] | None = None,
) -> list[dict]:
    import numpy as np
    import portpicker

    steps, batch = (20, 1024) if quick else (100, 1024)
    if shard_map_rounds is None:
        shard_map_rounds = 3 if quick else 7
    if configs is None:
        configs = [(1, 1), (2, 1), (4, 1)] if quick else [(1, 1), (1, 2), (1, 4), (2, 1), (4, 1)]
    rows = []
    ref = None
    for nproc, ndev in configs:
        port = str(portpicker.pick_unused_port())
        procs = [
            _spawn(
                ["scaling", *map(str, (i, nproc, port, steps, batch, shard_map_rounds))],
                _env(ndev),
            )
            for i in range(nproc)
        ]
        res = _collect(procs, timeout=900)[0]
        final = [np.asarray(a) for a in res.pop("final_params")]
        if ref is None:
            ref = final
        res["max_param_diff_vs_1x1"] = float(
            max(np.max(np.abs(a - b)) for a, b in zip(final, ref, strict=True))
        )
        res["global_batch"] = batch
        rows.append(res)
    return rows


def _memory(quick: bool) -> dict:
    out = {}
    for name, flags in (
        ("cpu_default", ""),
        ("barriers_kept", "--xla_disable_hlo_passes=cse_barrier_expander"),
    ):
        res = _collect([_spawn(["memory", str(int(quick))], _env(1, flags))], timeout=1800)[0]
        out[name] = {"flags": flags, "model": res[0], "rows": res[1:]}
    return out


PARTS = ("scaling", "memory")


def run(
    quick: bool = False,
    parts: tuple[str, ...] = PARTS,
    shard_map_rounds: int | None = None,
    configs: list[tuple[int, int]] | None = None,
) -> dict:
    """The ``parts`` (default both); a JSON-serialisable dict (see the module docstring).

    ``shard_map_rounds``: alternated rounds of the shard_map-vs-jit comparison (default 7, quick
    3; 0 skips it). ``configs``: ``(processes, devices per process)`` of part 1 (the first one is
    the reference of the parameter differences).
    """
    import jax

    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        raise ValueError(f"unknown parts {unknown}; valid: {', '.join(PARTS)}")
    return {
        "benchmark": "scaling",
        "device": "cpu (no GPU or TPU in this run)",
        "cpu_count": os.cpu_count(),
        "jax": jax.__version__,
        **({"scaling": _scaling(quick, shard_map_rounds, configs)} if "scaling" in parts else {}),
        **({"memory": _memory(quick)} if "memory" in parts else {}),
    }


def _table(result: dict) -> str:
    lines = []
    if "scaling" in result:
        lines += [
            f"scaling on {result['cpu_count']} CPU cores ({result['device']}), global batch "
            f"{result['scaling'][0]['global_batch']}",
            "procs devs  steps/s  examples/s  allreduce_ms  max|dparam| vs 1x1",
        ]
        for r in result["scaling"]:
            lines.append(
                f"{r['processes']:5d} {r['devices']:4d} {r['steps_per_sec']:8.1f} "
                f"{r['examples_per_sec']:11.0f} {r['allreduce_ms_median']:13.3f} "
                f"{r['max_param_diff_vs_1x1']:.2e}"
            )
        if any(r.get("shard_map_vs_jit") for r in result["scaling"]):
            lines += [
                "\nshard_map step vs jit step (EMA on), per-round ratio over alternated rounds",
                "procs devs  batch   jit_ms  shard_map_ms  ratio median (quartiles; range) rounds",
            ]
            for r in result["scaling"]:
                for size, c in r.get("shard_map_vs_jit", {}).items():
                    q = c["ratio"]
                    lines.append(
                        f"{r['processes']:5d} {r['devices']:4d} {int(size):6d} {c['jit_ms']:8.2f} "
                        f"{c['shard_map_ms']:13.2f}  {q['median']:.3f} ({q['q1']:.3f}-{q['q3']:.3f};"
                        f" {q['min']:.3f}-{q['max']:.3f}) {q['rounds']}"
                    )
    for name, part in result.get("memory", {}).items():
        m = part["model"]
        lines.append(
            f"\nU-Net step memory, {name} {part['flags']}: {m['unet']}, batch {m['batch']}, "
            f"{m['params']:,} params"
        )
        lines.append("precision remat        temp_MiB  args_MiB  step_ms")
        for r in part["rows"]:
            lines.append(
                f"{r['precision']:9s} {r['remat']:11s} {r['temp_mib']:9.1f} "
                f"{r['argument_mib']:9.1f} {r['step_ms_median']:8.0f}"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        kind = sys.argv[2]
        if kind == "scaling":
            pid, nproc, port, steps, batch, rounds = sys.argv[3:9]
            res = _scaling_child(int(pid), int(nproc), port, int(steps), int(batch), int(rounds))
        else:
            res = _memory_child(bool(int(sys.argv[3])))
        print(RESULT + json.dumps(res), flush=True)
        sys.exit(0)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps and configurations")
    parser.add_argument("--json", help="also write the result to this file")
    parser.add_argument("--parts", default=",".join(PARTS), help="comma-separated parts to run")
    parser.add_argument(
        "--shard-map-rounds", type=int, help="rounds of shard_map vs jit (default 7; quick 3)"
    )
    parser.add_argument(
        "--configs",
        help="part 1's processes x devices per process, e.g. 1x1,2x1,4x1 (default: all)",
    )
    args = parser.parse_args()
    result = run(
        quick=args.quick,
        parts=tuple(args.parts.split(",")),
        shard_map_rounds=args.shard_map_rounds,
        configs=[(int(c.split("x")[0]), int(c.split("x")[1])) for c in args.configs.split(",")]
        if args.configs
        else None,
    )
    print(_table(result))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
