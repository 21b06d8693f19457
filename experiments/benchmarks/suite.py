"""Run every benchmark and write ``BENCHMARKS.md`` and ``benchmarks.json``.

    python -m experiments.benchmarks.suite            # full run (tens of minutes on 2 cores)
    python -m experiments.benchmarks.suite --quick    # a smoke run of every workload

The PyTorch peers are optional (``pip install -r requirements-bench.txt``); without them the flowjax
sides still run and the report says which comparisons are missing. Each comparison alternates the
sides round by round and reports the median of the per-round ratios: this machine is shared, so
absolute times move with its load (recorded below) while the ratios are what to read.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import jax

from experiments.benchmarks import (
    bench_data,
    bench_few_step,
    bench_peers,
    bench_sampling,
    bench_scaling,
    bench_training,
)
from experiments.runtime import reexec_with_cpu_tuning

SUITE: dict[str, Callable[[bool], dict]] = {
    "peers": bench_peers.run,
    "training": bench_training.run,
    "sampling": bench_sampling.run,
    "few_step": bench_few_step.run,
    "data": bench_data.run,
    "scaling": bench_scaling.run,
}


def _machine() -> dict[str, Any]:
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(
                (ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu
            )
    except OSError:
        pass
    versions = {"python": platform.python_version(), "jax": jax.__version__}
    for mod in (
        "jaxlib",
        "flax",
        "optax",
        "diffrax",
        "torch",
        "flow_matching",
        "torchcfm",
        "torchdiffeq",
    ):
        try:
            versions[mod] = getattr(__import__(mod), "__version__", "?")
        except ImportError:
            versions[mod] = "not installed"
    try:
        import torch

        threads = {"torch_threads": torch.get_num_threads()}
    except ImportError:
        threads = {}
    git = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "load_average_at_start": os.getloadavg(),
        "devices": [str(d) for d in jax.devices()],
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "glibc_tunables": os.environ.get("GLIBC_TUNABLES", ""),
        "versions": versions,
        "git": git.stdout.strip(),
        **threads,
    }


def _fmt(x: Any, nd: int = 2) -> str:
    if isinstance(x, float):
        return f"{x:.{nd}f}" if abs(x) >= 10 ** (-nd) or x == 0 else f"{x:.2e}"
    return str(x)


def _check(value: float | None, target: float, *, higher: bool = True) -> str:
    if value is None:
        return "n/a (peer missing)"
    ok = value >= target if higher else value <= target
    return (
        f"{_fmt(value)} ({'met' if ok else 'MISSED'}; target {'>=' if higher else '<='} {target})"
    )


def _peer_section(r: dict) -> list[str]:
    out = ["## flowjax against the PyTorch peers (issue 10 workloads)", ""]
    if r.get("missing"):
        out += [f"Peers missing: {r['missing']}", ""]
    lim = r["limit_gflops"]
    peak = max(lim.values())
    out += [
        "**Limit.** float32 matmul [4096, 512] x [512, 512]: "
        + ", ".join(f"{k} {v:.0f} GFLOP/s" for k, v in lim.items())
        + f"; peak used below: {peak:.0f} GFLOP/s.",
        "",
        "**W1 training** (checkerboard, 4x512 SiLU MLP on [x, t], Adam 1e-3, CondOT; steps/s; "
        "speed-up = median per-round time ratio peer / flowjax). flowjax evaluates a batch's "
        "gradient in micro-batches of at most "
        f"{r.get('w1_microbatch', 1024)} examples (`grad_accum_steps`: the same Adam update on the "
        "mean gradient of the whole batch); *one pass* is the same step on the whole batch at once.",
        "",
        "| batch | flowjax | flowjax one pass | flow_matching | torchcfm | speed-up vs best peer "
        "| one pass vs best peer | fraction of peak (flowjax) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in r["w1"]:
        sps = row["steps_per_sec"]
        one = "flowjax_one_pass" if "flowjax_one_pass" in sps else "flowjax"
        best_peer = min(
            (sps[p] for p in ("flow_matching", "torchcfm") if p in sps), default=float("nan")
        )
        out.append(
            f"| {row['batch']} | {_fmt(sps['flowjax'])} | {_fmt(sps[one])} | "
            f"{_fmt(sps.get('flow_matching', 'n/a'))} | {_fmt(sps.get('torchcfm', 'n/a'))} | "
            f"{_fmt(row.get('speedup_vs_best_peer', 'n/a'))} | "
            f"{_fmt(row.get('one_pass_vs_best_peer', sps[one] / best_peer))} | "
            f"{_fmt(row['fraction_of_peak']['flowjax'])} |"
        )
    w2 = r["w2"]
    out += [
        "",
        f"**W2 sampling** ({w2['n']} samples, same weights in every framework; energy distance "
        f"floor {w2['energy_floor'][0]:.4f} +- {w2['energy_floor'][1]:.4f})",
        "",
        "| setting | side | ms | NFE | energy distance | sliced W2 | speed-up of flowjax |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, row in w2["settings"].items():
        for side in row["ms"]:
            sp = row["speedup_vs"].get(side, "") if side != "flowjax" else ""
            out.append(
                f"| {name} | {side} | {_fmt(row['ms'][side], 1)} | {row['nfe'][side]} | "
                f"{_fmt(row['energy'][side], 4)} | {_fmt(row['sliced_w2'][side], 4)} | {_fmt(sp)} |"
            )
    out += [
        "",
        "flowjax with fewer NFE (quality against time):",
        "",
        "| setting | ms | NFE | energy |",
        "|---|---|---|---|",
    ]
    for name, c in w2["flowjax_fast"].items():
        out.append(f"| {name} | {_fmt(c['ms'], 1)} | {c['nfe']} | {_fmt(c['energy'], 4)} |")
    if "flowjax_time_to_peers_best_quality" in w2:
        pb, fj = w2["peers_best_quality"], w2["flowjax_time_to_peers_best_quality"]
        out += [
            "",
            f"Peers' best quality: energy {pb['energy']:.4f} ({pb['peer']}, {pb['setting']}); the "
            f"fastest peer run within 2 floor-spreads of it took {pb['fastest_peer_ms_at_that_quality']:.0f} ms; "
            f"flowjax reaches it in {fj['ms']:.0f} ms ({fj['setting']}): {fj['speedup']:.1f}x less time.",
        ]
    out += [
        "",
        "Latency, Euler 20 steps:",
        "",
        "flowjax: `fj.sample(...)` called from Python each time (argument checks included);",
        "flowjax jit: the sampler jitted once by the user (`jax.jit(lambda f, x: fj.sample(...))`).",
        "",
        "| batch | flowjax us/step | flowjax jit us/step | flow_matching us/step "
        "| speed-up | speed-up (jit) |",
        "|---|---|---|---|---|---|",
    ]
    for b, row in w2["latency"].items():
        ups = row["us_per_step"]
        out.append(
            f"| {b.split('_')[1]} | {_fmt(ups['flowjax'], 1)} | {_fmt(ups.get('flowjax_jit', 'n/a'), 1)} "
            f"| {_fmt(ups.get('flow_matching', 'n/a'), 1)} "
            f"| {_fmt(row['speedup_vs'].get('flow_matching', 'n/a'))} "
            f"| {_fmt(row.get('speedup_jit_vs', {}).get('flow_matching', 'n/a'))} |"
        )
    for key, title in (
        ("w3", "W3 likelihood (checkerboard, d = 2)"),
        ("w3_digits", "W3 likelihood, 8x8 digits (d = 64)"),
    ):
        if key not in r:
            continue
        w3 = r[key]
        out += [
            "",
            f"**{title}**, {w3['n']} points; peer: flow_matching `ODESolver.compute_likelihood`",
            "",
        ]
        if "weights" in w3:
            out += [f"Weights: {w3['weights']}.", ""]
        out += [
            "| case | flowjax ms | peer ms | speed-up | flowjax mean NLL | peer mean NLL "
            "| NFE (fj / peer) | error, nats (fj / peer) |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for name, row in w3.items():
            if not isinstance(row, dict):
                continue
            ms, nll, nfe = row["ms"], row["mean_nll"], row["nfe"]
            err = row.get("error", {})
            out.append(
                f"| {name} | {_fmt(ms['flowjax'], 1)} | {_fmt(ms.get('flow_matching', 'n/a'), 1)} | "
                f"{_fmt(row['speedup_vs'].get('flow_matching', 'n/a'))} | {nll['flowjax']:.4f} | "
                f"{_fmt(nll.get('flow_matching', 'n/a'), 4)} | {nfe['flowjax']} / {nfe.get('flow_matching', 'n/a')} | "
                f"{_fmt(err.get('flowjax', 'n/a'), 5)} / {_fmt(err.get('flow_matching', 'n/a'), 5)} |"
            )
        if key == "w3" and "w3_equal_accuracy" in r:
            out += _w3_equal_accuracy(r["w3_equal_accuracy"])
    w4 = r["w4"]
    out += [
        "",
        f"**W4 ground truth** (8-Gaussians ring, radius 4, std 0.5; {w4['steps']} steps at batch 4096; "
        f"NLL gap = mean NLL on {w4['n_test']} test points minus the oracle's, all evaluated with "
        "flowjax's exact likelihood, Dopri5 1e-6, float64)",
        "",
        "| trained by | NLL gap (nats) | train seconds |",
        "|---|---|---|",
    ]
    for name, gap in w4["gap"].items():
        out.append(
            f"| {name} | {gap:.4f} | {_fmt(w4['train_seconds'].get(name, float('nan')), 1)} |"
        )
    return out


def _w3_equal_accuracy(eq: dict) -> list[str]:
    out = [
        "",
        "Error = mean |log p - reference| per point, the reference being flowjax's exact divergence "
        "with Dopri5 rtol = atol = 1e-9 in float64 on the same weights. At equal accuracy: flowjax's "
        "cheaper exact-divergence settings (each the median of 3 runs, not alternated with the "
        "peer; the peer's time is its row above):",
        "",
        "| flowjax setting | ms | NFE | error (nats) |",
        "|---|---|---|---|",
    ]
    for name, row in eq["fast"].items():
        out.append(f"| {name} | {_fmt(row['ms'], 1)} | {row['nfe']} | {_fmt(row['error'], 5)} |")
    out += [
        "",
        "| peer run | peer error | peer ms | flowjax's fastest at least as accurate | ms | error "
        "| speed-up |",
        "|---|---|---|---|---|---|---|",
    ]
    for case, v in eq["versus"].items():
        if v.get("flowjax") is None:
            out.append(f"| {case} | {_fmt(v['peer_error'], 5)} | | none in the sweep | | | |")
            continue
        out.append(
            f"| {case} | {_fmt(v['peer_error'], 5)} | {_fmt(v['peer_ms'], 1)} | {v['flowjax']} | "
            f"{_fmt(v['flowjax_ms'], 1)} | {_fmt(v['flowjax_error'], 5)} | {_fmt(v['speedup'])} |"
        )
    return out


def _targets(r: dict) -> list[str]:
    p = r.get("peers")
    if p is None:
        return []
    w1 = {row["batch"]: row for row in p["w1"]}
    w2 = p["w2"]
    e100 = w2["settings"]["euler_100"]["speedup_vs"]
    best_equal_nfe = min(e100.values()) if e100 else None
    fast = w2.get("flowjax_time_to_peers_best_quality", {}).get("speedup")
    lat = w2["latency"]
    w3 = [
        min(row["speedup_vs"].values())
        for row in p["w3"].values()
        if isinstance(row, dict) and row["speedup_vs"]
    ]
    w3_eq_cases = {
        k: v["speedup"]
        for k, v in p.get("w3_equal_accuracy", {}).get("versus", {}).items()
        if v.get("speedup") is not None
    }
    w3_eq = list(w3_eq_cases.values())
    gaps = p["w4"]["gap"]
    peer_gaps = [g for k, g in gaps.items() if k in ("flow_matching", "torchcfm")]
    peak = max(p["limit_gflops"].values())
    lines = [
        "## Targets (flowjax over the best peer, same run)",
        "",
        f"- W1 batch 4096: {_check(w1[4096].get('speedup_vs_best_peer'), 1.1)}",
        f"- W1 batch 256: {_check(w1[256].get('speedup_vs_best_peer'), 1.5)}",
        f"- W2 Euler 100 at equal NFE (10k samples): {_check(best_equal_nfe, 1.1)}",
        f"- W2 peers' best quality in less time: {_check(fast, 2.0)}",
        f"- W2 latency batch 1: {_check(lat['batch_1']['speedup_vs'].get('flow_matching'), 3.0)}"
        f" (sampler jitted once: {_check(lat['batch_1'].get('speedup_jit_vs', {}).get('flow_matching'), 3.0)})",
        f"- W2 latency batch 64: {_check(lat['batch_64']['speedup_vs'].get('flow_matching'), 1.5)}"
        f" (sampler jitted once: {_check(lat['batch_64'].get('speedup_jit_vs', {}).get('flow_matching'), 1.5)})",
        f"- W3 likelihood at equal accuracy (exact divergence, slowest case): "
        f"{_check(min(w3_eq) if w3_eq else None, 3.0)}"
        f" (per case: {', '.join(f'{k} {_fmt(v)}' for k, v in w3_eq_cases.items()) or 'n/a'})",
        f"- W3 likelihood at equal settings (slowest case, for reference): "
        f"{_check(min(w3) if w3 else None, 3.0)}",
        f"- W4 NLL gap under 0.01 nats: {_check(gaps['flowjax'], 0.01, higher=False)}",
        f"- W4 NLL gap no larger than the best peer's ({_fmt(min(peer_gaps), 4) if peer_gaps else 'n/a'}): "
        f"{_check(gaps['flowjax'], min(peer_gaps), higher=False) if peer_gaps else 'n/a'}",
        f"- Limit, W1 at 4096: {_check(w1[4096]['fraction_of_peak']['flowjax'], 0.85)} of the measured {peak:.0f} GFLOP/s",
        f"- Limit, W2 Euler 100 at 10k: {_check(w2['fraction_of_peak_euler_100'].get('flowjax'), 0.85)}",
    ]
    t = r.get("training")
    if t:
        for case in t["cases"]:
            lines.append(
                f"- Train step / bare forward+backward, batch {case['batch_size']}: {_check(case['ratio']['step'], 1.10, higher=False)}"
                + (
                    f" (over a hand-written jitted forward+backward+Adam step: "
                    f"{_fmt(case['ratio_to_bare_adam']['step'])}; that step alone is "
                    f"{_fmt(case['ratio']['bare_adam'])}x the bare forward+backward)"
                    if "ratio_to_bare_adam" in case
                    else ""
                )
            )
    s = r.get("sampling")
    if s:
        for row in s["overhead"]:
            if row["model"] == "mlp":
                lines.append(
                    f"- Sampler overhead (N Euler steps / N bare evaluations), batch {row['batch']}: scan "
                    f"{_check(row['scan_ratio'], 1.15, higher=False)}, diffrax {_fmt(row['diffrax_ratio'])}"
                )
    return lines


def write_report(result: dict, path: str) -> None:
    m = result["machine"]
    lines = [
        "# Benchmarks",
        "",
        f"Generated by `{result['command']}` at {result['date']} (git {m['git']}); "
        f"{'quick smoke run: sizes reduced, figures indicative only' if result['quick'] else 'full run'}.",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, devices {m['devices']}; load average at start "
        f"{tuple(round(x, 2) for x in m['load_average_at_start'])}, at end "
        f"{tuple(round(x, 2) for x in result['load_average_at_end'])}; XLA_FLAGS={m['xla_flags']!r}; "
        f"GLIBC_TUNABLES={m.get('glibc_tunables', '')!r} (experiments/runtime.py); "
        f"torch threads {m.get('torch_threads', 'n/a')}.",
        "",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in m["versions"].items()) + ".",
        "",
        "GPU: none in this session (the workloads at 10x batch, the CIFAR-10 U-Net step and image "
        "latency are for a machine with one).",
        "",
    ]
    lines += [*_targets(result), ""]
    if "peers" in result:
        lines += [*_peer_section(result["peers"]), ""]
    if "training" in result:
        lines += [
            "## Train-step overhead (bench_training)",
            "",
            "| batch | variant | ms/step | ratio to bare | ratio to bare + Adam |",
            "|---|---|---|---|---|",
        ]
        for case in result["training"]["cases"]:
            for name, ms in case["ms"].items():
                to_adam = case.get("ratio_to_bare_adam", {}).get(name, float("nan"))
                lines.append(
                    f"| {case['batch_size']} | {name} | {ms:.3f} | "
                    f"{case['ratio'].get(name, 1.0):.3f} | {to_adam:.3f} |"
                )
        lines.append("")
    if "sampling" in result:
        s = result["sampling"]
        lines += [
            "## Sampler overhead and quality (bench_sampling)",
            "",
            "| model | method | batch | N | bare ms | scan | diffrax |",
            "|---|---|---|---|---|---|---|",
        ]
        for row in s["overhead"]:
            lines.append(
                f"| {row['model']} | {row['method']} | {row['batch']} | {row['num_steps']} | "
                f"{row['bare_ms']:.3f} | {row['scan_ratio']:.3f} | {row['diffrax_ratio']:.3f} |"
            )
        q = s["quality"]
        lines += [
            "",
            f"Quality against cost on {q['dataset']} (n = {q['n']}; energy floor {q['floor_mean']:.4f} +- {q['floor_std']:.4f}):",
            "",
            "| path | method | NFE | rejected | ms | energy distance |",
            "|---|---|---|---|---|---|",
        ]
        for row in q["rows"]:
            lines.append(
                f"| {row['path']} | {row['method']} | {row['nfe']} | {row['rejected']} | "
                f"{row['wall_ms']:.1f} | {row['energy_distance']:.4f} |"
            )
        lines.append("")
    if "few_step" in result:
        lines += [
            "## Few-step solvers (bench_few_step)",
            "",
            bench_few_step.report(result["few_step"]),
            "",
        ]
    if "scaling" in result:
        lines += [
            "## Multi-process scaling, remat and bfloat16 memory (bench_scaling)",
            "",
            "On one 2-core CPU every device and process shares the same cores: these rows measure",
            "what distribution costs (collectives, dispatch, oversubscription), not a speed-up.",
            "",
            "```",
            bench_scaling._table(result["scaling"]),
            "```",
            "",
        ]
    if "data" in result:
        lines += [
            "## Input pipeline (bench_data)",
            "",
            "```",
            json.dumps(result["data"], indent=1)[:4000],
            "```",
            "",
        ]
    with open(path, "w") as f:
        f.write("\n".join(lines))


def main() -> None:
    reexec_with_cpu_tuning()  # glibc huge pages for XLA's per-call buffers: experiments/runtime.py
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="reduced sizes: a smoke run")
    parser.add_argument("--only", nargs="*", choices=list(SUITE), help="run only these parts")
    parser.add_argument(
        "--quick-parts",
        nargs="*",
        default=[],
        choices=list(SUITE),
        help="these parts in quick mode",
    )
    parser.add_argument("--out", default="BENCHMARKS.md")
    parser.add_argument("--json", default="benchmarks.json")
    parser.add_argument(
        "--report-from",
        metavar="JSON",
        help="run nothing: write the report from a JSON file an earlier run wrote",
    )
    args = parser.parse_args()
    if args.report_from:
        with open(args.report_from) as f:
            write_report(json.load(f), args.out)
        print(f"[suite] wrote {args.out} from {args.report_from}", file=sys.stderr)
        return
    result: dict[str, Any] = {
        "command": " ".join(["python -m experiments.benchmarks.suite", *sys.argv[1:]]),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "quick": args.quick,
        "machine": _machine(),
    }
    for name, fn in SUITE.items():
        if args.only and name not in args.only:
            continue
        t0 = time.perf_counter()
        print(f"[suite] {name} ...", file=sys.stderr, flush=True)
        result[name] = fn(args.quick or name in args.quick_parts)
        result.setdefault("seconds", {})[name] = time.perf_counter() - t0
        result["load_average_at_end"] = os.getloadavg()
        with open(args.json, "w") as f:  # after every part: a later failure keeps these
            json.dump(result, f, indent=1, default=float)
    write_report(result, args.out)
    print(f"[suite] wrote {args.out} and {args.json}", file=sys.stderr)


if __name__ == "__main__":
    main()
