"""Run the benchmarks, merge their results into ``benchmarks.json`` and write ``BENCHMARKS.md``.

    python -m experiments.benchmarks.suite                       # every part, full size
    python -m experiments.benchmarks.suite --quick               # a smoke run of every part
    python -m experiments.benchmarks.suite --only peers.w4       # one part (or "peers": all W*)
    python -m experiments.benchmarks.suite --report-only         # BENCHMARKS.md from the JSON
    python -m experiments.benchmarks.suite --check               # does BENCHMARKS.md match it?

Each part's result is merged into the JSON as soon as the part ends (a part that reports progress,
W4, is saved after every trained model), with its run, its size (full or quick), its wall time and
the load average at its start and end, and the report is rewritten; so a run stopped half-way
leaves the parts it finished, and the report says which run each part comes from. Parts run
separately keep the other parts' earlier results.

The report is computed from the JSON alone: the parts store raw per-round seconds, and every ratio
is the median over rounds of the per-round ratio of two sides timed in the same round (the sides
alternate, the order rotating every round), with its quartiles and range. A target is *met* or
*missed* only when the whole interquartile range of the per-round ratios lies on one side of it;
otherwise it is *not resolved* (W4: the mean +- std over seeds instead). ``--check`` recomputes
every headline from the JSON and fails when BENCHMARKS.md's text differs (CI runs it).

The PyTorch peers are optional (``pip install -r requirements-bench.txt``); without them the
flowjax sides still run and the report says which comparisons are missing.
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

import numpy as np

PARTS = (
    "peers.limit",
    "peers.w1",
    "peers.w2",
    "peers.w3",
    "peers.w4",
    "training",
    "sampling",
    "data",
    "scaling",
    "few_step",
)
# parts that measure quality only (no timing): they may run on a busy machine
QUALITY_PARTS = ("peers.w4", "few_step")
SCHEMA = 2


# ------------------------------------------------------------------------------------ running


def _machine() -> dict[str, Any]:
    import jax

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
        "grain",
        "torch",
        "flow_matching",
        "torchcfm",
        "torchdiffeq",
    ):
        try:
            versions[mod] = getattr(__import__(mod), "__version__", "?")
        except ImportError:
            versions[mod] = "not installed"
    out: dict[str, Any] = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "devices": [str(d) for d in jax.devices()],
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "glibc_tunables": os.environ.get("GLIBC_TUNABLES", ""),
        "versions": versions,
    }
    try:
        import torch

        from experiments.benchmarks.peers_torch import THREADS

        out["torch_threads"] = THREADS
        del torch
    except ImportError:
        pass
    return out


def _git() -> str:
    git = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True)  # fmt: skip
    return git.stdout.strip() + ("+changes" if dirty.stdout.strip() else "")


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def _run_part(
    name: str, quick: bool, progress: Callable[[dict], None], previous: dict | None = None
) -> dict:
    """One part's result (the benchmark modules are imported here: ``--check`` needs none)."""
    if name.startswith("peers."):
        from experiments.benchmarks import bench_peers, peers_torch

        peers = peers_torch.peers()
        workload = name.split(".", 1)[1]
        if workload == "w4":
            # a partial W4 (a run stopped half-way) is resumed: its trained models are kept
            resume = previous["result"] if previous and previous.get("partial") else None
            res = bench_peers.part_w4(quick, peers, progress, resume)
        else:
            res = bench_peers.PARTS[workload](quick, peers)
        return {"peers": bench_peers.describe_peers(peers), **res}
    if name == "training":
        from experiments.benchmarks import bench_training

        return bench_training.run(quick)
    if name == "sampling":
        from experiments.benchmarks import bench_sampling

        return bench_sampling.run(quick)
    if name == "data":
        from experiments.benchmarks import bench_data

        return bench_data.run(quick)
    if name == "scaling":
        from experiments.benchmarks import bench_scaling

        # 7 alternated rounds of shard_map vs jit even in quick mode; 1 process x N devices can
        # stall in XLA's in-process all-reduce on 2 cores (bench_scaling's docstring): skipped
        res = bench_scaling.run(quick, shard_map_rounds=7, configs=[(1, 1), (2, 1), (4, 1)])
        res["table"] = bench_scaling._table(res)
        return res
    if name == "few_step":
        from experiments.benchmarks import bench_few_step

        res = bench_few_step.run(quick)
        res["report_md"] = bench_few_step.report(res)
        return res
    raise ValueError(f"unknown part {name!r}; choose from {PARTS}")


def _select(only: list[str] | None) -> list[str]:
    if not only:
        return list(PARTS)
    out = []
    for want in only:
        hits = [p for p in PARTS if p == want or p.startswith(want + ".")]
        if not hits:
            raise SystemExit(f"unknown part {want!r}; choose from {', '.join(PARTS)} (or 'peers')")
        out += [p for p in hits if p not in out]
    return [p for p in PARTS if p in out]


def _save(data: dict, path: str) -> None:
    with open(path + ".tmp", "w") as f:
        json.dump(data, f, indent=1, default=float)
        f.write("\n")
    os.replace(path + ".tmp", path)


def load_results(path: str) -> dict:
    if os.path.exists(path):
        with open(path) as f:
            data = json.load(f)
        if data.get("schema") == SCHEMA:
            return data
        print(f"[suite] {path} has an older layout: starting a new one", file=sys.stderr)
    return {"schema": SCHEMA, "runs": {}, "parts": {}}


def run_parts(args: argparse.Namespace) -> None:
    data = load_results(args.json)
    if args.fresh:
        data = {"schema": SCHEMA, "runs": {}, "parts": {}}
    run_id = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    data["runs"][run_id] = {
        "command": " ".join(["python -m experiments.benchmarks.suite", *sys.argv[1:]]),
        "git": _git(),
        "machine": _machine(),
    }
    for name in _select(args.only):
        quick = args.quick or name in (args.quick_parts or [])
        entry: dict[str, Any] = {
            "run": run_id,
            "quick": quick,
            "started": time.strftime("%H:%M:%S", time.gmtime()),
            "load_start": _load(),
        }
        t0 = time.perf_counter()
        print(f"[suite] {name} ({'quick' if quick else 'full'}) ...", file=sys.stderr, flush=True)

        def progress(partial: dict, entry=entry, name=name, t0=t0) -> None:
            data["parts"][name] = entry | {
                "partial": True,
                "seconds": time.perf_counter() - t0,
                "load_end": _load(),
                "result": partial,
            }
            _save(data, args.json)

        previous = data["parts"].get(name)
        if previous and previous.get("partial") and previous["quick"] == quick:
            entry["resumed_from"] = previous["run"]
        result = _run_part(name, quick, progress, previous if "resumed_from" in entry else None)
        data["parts"][name] = entry | {
            "seconds": time.perf_counter() - t0,
            "load_end": _load(),
            "result": result,
        }
        used = {p["run"] for p in data["parts"].values()}
        data["runs"] = {k: v for k, v in data["runs"].items() if k in used}
        _save(data, args.json)
        try:
            text = report(data)
        except Exception as e:  # the JSON is saved: --report-only writes the report again
            print(f"[suite] report failed: {e!r}", file=sys.stderr)
        else:
            with open(args.out, "w") as f:
                f.write(text)
        print(f"[suite] {name} done in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    print(f"[suite] wrote {args.json} and {args.out}", file=sys.stderr)


# ------------------------------------------------------------------------------------ report
# Everything below reads the JSON only (no benchmark module, no JAX): --check stays fast.


def _stats(values: Any) -> dict[str, float]:
    v = np.asarray(values, np.float64)
    q1, med, q3 = (float(x) for x in np.percentile(v, [25, 50, 75]))
    return {"median": med, "q1": q1, "q3": q3, "min": float(v.min()), "max": float(v.max()),
            "rounds": int(v.size)}  # fmt: skip


def _ratio(times: dict[str, list[float]], num: str, den: str) -> dict[str, float]:
    """Per-round ``times[num] / times[den]`` (the two timed in the same round)."""
    return _stats(np.asarray(times[num], np.float64) / np.asarray(times[den], np.float64))


def _med(values: list[float]) -> float:
    return float(np.median(np.asarray(values, np.float64)))


def _fastest(times: dict[str, list[float]], names: list[str]) -> str | None:
    names = [n for n in names if n in times]
    return min(names, key=lambda n: _med(times[n])) if names else None


def _f(x: float, nd: int = 2) -> str:
    if x != x:
        return "n/a"
    return f"{x:.{nd}f}" if abs(x) >= 10 ** (-nd) or x == 0 else f"{x:.2e}"


def _spread(st: dict[str, float]) -> str:
    return (f"{_f(st['median'])} (IQR {_f(st['q1'])}-{_f(st['q3'])}, range {_f(st['min'])}-"
            f"{_f(st['max'])}, {st['rounds']} rounds)")  # fmt: skip


def _verdict(lo: float, hi: float, target: float, higher: bool) -> str:
    """met / MISSED when the interval [lo, hi] lies on one side of the target, else not resolved."""
    if higher:
        return "met" if lo >= target else "MISSED" if hi < target else "not resolved"
    return "met" if hi <= target else "MISSED" if lo > target else "not resolved"


class _Headlines:
    """The report's headline lines (each recomputed by --check)."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def ratio(self, label: str, st: dict | None, target: float | None, higher: bool = True,
              note: str = "") -> None:  # fmt: skip
        if st is None:
            self.lines.append(f"- {label}: not measured{note}")
            return
        verdict = ""
        if target is not None:
            v = _verdict(st["q1"], st["q3"], target, higher)
            verdict = f": **{v}** (target {'>=' if higher else '<='} {target})"
        self.lines.append(f"- {label}: {_spread(st)}{verdict}{note}")

    def mean_std(self, label: str, values: list[float], target: float, higher: bool,
                 nd: int = 4) -> None:  # fmt: skip
        v = np.asarray(values, np.float64)
        mean, std = float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else float("nan")
        verdict = _verdict(mean - std, mean + std, target, higher) if v.size > 1 else "not resolved"
        self.lines.append(
            f"- {label}: {mean:+.{nd}f} +- {std:.{nd}f} (mean +- std over {v.size} seeds: "
            + ", ".join(f"{x:+.{nd}f}" for x in v)
            + f"): **{verdict}** (target {'>=' if higher else '<='} {target})"
        )


def _part(data: dict, name: str) -> dict | None:
    entry = data["parts"].get(name)
    return entry["result"] if entry else None


def _peak(data: dict) -> tuple[float | None, dict]:
    lim = _part(data, "peers.limit")
    if not lim:
        return None, {}
    rates = {k: lim["gflop_per_call"] / min(v) for k, v in lim["times"].items()}
    return max(rates.values()), rates


PEERS = ("flow_matching", "torchcfm", "torchdiffeq")


def _w1(data: dict, h: _Headlines) -> list[str]:
    w1 = _part(data, "peers.w1")
    if not w1:
        return []
    peak, _ = _peak(data)
    out = [
        "### W1 training",
        "",
        "Checkerboard, MLP [x, t] -> 4 x 512 SiLU -> 2, Adam 1e-3, CondOT; every side steps on the "
        "same batches. *one pass*: the whole batch's gradient at once; *4 x 1024*: the gradient "
        "accumulated over 4 micro-batches of 1024 (flowjax `grad_accum_steps=4`; torch: one "
        "backward per micro-batch, one Adam step), the same update. Ratio: per-round time of the "
        "side over flowjax's in the same mode (above 1: flowjax faster).",
        "",
        "| batch | mode | side | steps/s (median) | ratio to flowjax: median (IQR; range) |",
        "|---|---|---|---|---|",
    ]
    for row in w1["rows"]:
        t, b, acc = row["times"], row["batch"], row["accum"]
        modes = [("one pass", "")] + (
            [(f"{acc} x {row['microbatch']}", f"_accum{acc}")] if acc > 1 else []
        )
        for mode, suffix in modes:
            fj_name = "flowjax" + suffix
            for side in ("flowjax", *PEERS):
                name = side + suffix
                if name not in t:
                    continue
                sps = row["steps_per_round"] / _med(t[name])
                r = "" if side == "flowjax" else _ratio(t, name, fj_name)
                rs = (
                    ""
                    if not r
                    else f"{_f(r['median'])} ({_f(r['q1'])}-{_f(r['q3'])}; {_f(r['min'])}-{_f(r['max'])})"
                )
                out.append(f"| {b} | {mode} | {side} | {_f(sps, 1)} | {rs} |")
            best = _fastest(t, [p + suffix for p in PEERS])
            target = 1.1 if b >= 4096 else 1.5
            label = (f"W1 training, batch {b}, {mode} on every side: flowjax over the fastest peer"
                     f" ({best})")  # fmt: skip
            h.ratio(label, _ratio(t, best, fj_name) if best else None, target)
        if b >= 4096 and peak:
            fj_best = _fastest(t, ["flowjax" + s for _, s in modes])
            frac = _stats(
                row["gflop_per_step"] * row["steps_per_round"] / np.asarray(t[fj_best]) / peak
            )
            h.ratio(
                f"W1 batch {b}: flowjax's fraction of the measured matmul peak ({fj_best})",
                frac,
                0.85,
            )
    out.append("")
    return out


def _w2(data: dict, h: _Headlines) -> list[str]:
    w2 = _part(data, "peers.w2")
    if not w2:
        return []
    floor, fspread = w2["energy_floor"]
    out = [
        "### W2 sampling",
        "",
        f"{w2['n']} samples from the same starting points and the same weights on every side "
        f"(a flowjax model trained {w2['model']['steps']} steps at batch {w2['model']['batch']}, "
        "copied into the torch network). Each side's whole menu of solvers: flowjax through "
        "`fj.sample`, the peers through torchdiffeq's `odeint` and flow_matching's "
        "`ODESolver.sample`. Energy distance and sliced W2 against as many fresh data points "
        f"(energy floor {floor:.4f} +- {fspread:.4f}); flow-map error: RMS of |x - x*| with x* "
        "the float64 Dopri5 1e-10 solution from the same start. ms: median of the sweep's "
        f"{w2['sweep_rounds']} alternated round(s) (used only to choose each side's fastest "
        "setting; the headline pairs are timed again below).",
        "",
        "| side | setting | NFE | energy | sliced W2 | flow-map error | ms (sweep) |",
        "|---|---|---|---|---|---|---|",
    ]
    settings = w2["settings"]
    for _key, r in sorted(settings.items(), key=lambda kv: (kv[1]["side"], kv[1]["setting"])):
        side = r["side"] + (" (flowjax only: no peer solver)" if r["flowjax_only"] else "")
        out.append(
            f"| {side} | {r['setting']} | {r['nfe']} | {r['energy']:.4f} | {r['sliced_w2']:.4f} | "
            f"{r['flow_error']:.2e} | {_med(r['sweep_times']) * 1e3:.1f} |"
        )
    t = w2["euler_100"]["times"]
    out += ["", f"Euler 100 on every side, {t and len(next(iter(t.values())))} alternated rounds: "
            + ", ".join(f"{k} {_med(v) * 1e3:.1f} ms" for k, v in t.items()) + "."]  # fmt: skip
    best = _fastest(t, list(PEERS))
    h.ratio(f"W2 Euler 100, {w2['n']} samples (equal settings and NFE): flowjax over the fastest "
            f"peer ({best})", _ratio(t, best, "flowjax") if best else None, 1.1)  # fmt: skip
    peak, _ = _peak(data)
    if peak and "gflop" in w2["euler_100"]:
        h.ratio("W2 Euler 100: flowjax's fraction of the measured matmul peak",
                _stats(w2["euler_100"]["gflop"] / np.asarray(t["flowjax"]) / peak), 0.85)  # fmt: skip
    bq = w2.get("best_quality")
    if bq:
        ch, tb = bq["chosen"], bq["times"]
        pb = settings[bq["peers_best"]]
        out += [
            "",
            f"Peers' best quality: energy {pb['energy']:.4f} ({bq['peers_best']}); target: energy "
            f"<= {bq['target_energy']:.4f} (2 floor spreads above it). Each side's fastest "
            "setting there (by the sweep), timed again alternated: "
            + ", ".join(f"{k} = {v} ({_med(tb[k]) * 1e3:.1f} ms)" for k, v in ch.items())
            + ".",
        ]
        if "flowjax" in ch and "peer" in ch:
            h.ratio(f"W2 at the peers' best sample quality, each side's fastest setting of its own "
                    f"menu: flowjax ({ch['flowjax'].split('/')[1]}) over the peers "
                    f"({ch['peer']})", _ratio(tb, "peer", "flowjax"), 2.0)  # fmt: skip
        if "flowjax_few_step" in ch and "peer" in ch:
            h.ratio(f"W2 at the same quality, flowjax's few-step solvers (no peer counterpart; a "
                    f"separate row): {ch['flowjax_few_step'].split('/')[1]} over the peers "
                    f"({ch['peer']})", _ratio(tb, "peer", "flowjax_few_step"), 2.0)  # fmt: skip
    lat = w2.get("latency", {})
    if lat:
        out += ["", "Latency, Euler 20 steps (`flowjax`: `fj.sample` called from Python each "
                "time, argument checks included; `flowjax_jit`: the sampler jitted once by the user):",
                "", "| batch | side | us per step (median) |", "|---|---|---|"]  # fmt: skip
    for bkey, row in lat.items():
        b = int(bkey.split("_")[1])
        t = row["times"]
        per = row["calls_per_round"] * row["steps"]
        for k, v in t.items():
            out.append(f"| {b} | {k} | {_med(v) / per * 1e6:.1f} |")
        best = _fastest(t, list(PEERS))
        target = 3.0 if b == 1 else 1.5
        for fj_name, how in (("flowjax", "called from Python"), ("flowjax_jit", "jitted once")):
            h.ratio(f"W2 latency, batch {b}, Euler 20: flowjax ({how}) over the fastest peer "
                    f"({best})", _ratio(t, best, fj_name) if best else None, target)  # fmt: skip
    out.append("")
    return out


def _w3(data: dict, h: _Headlines) -> list[str]:
    w3 = _part(data, "peers.w3")
    if not w3:
        return []
    out = [
        "### W3 likelihood",
        "",
        f"Checkerboard (d = 2), {w3['n']} held-out points, the W2 model; exact divergence. Error: "
        "mean |log p - reference| per point (nats), the reference being flowjax's exact "
        "divergence with Dopri5 1e-9 in float64. Each side's menu: flowjax's `log_likelihood` "
        "(per-point solves; `_shared`: one solve of the batch with the batch-RMS step control, "
        "the peer's convention), flow_matching's `ODESolver.compute_likelihood` (torchdiffeq "
        f"methods). ms: median of the sweep's {w3['sweep_rounds']} alternated round(s).",
        "",
        "| side | setting | NFE | error (nats) | mean NLL | ms (sweep) |",
        "|---|---|---|---|---|---|",
    ]
    for _key, r in sorted(w3["settings"].items(), key=lambda kv: (kv[1]["side"], kv[1]["setting"])):
        out.append(f"| {r['side']} | {r['setting']} | {r['nfe']} | {r['error']:.2e} | "
                   f"{r['mean_nll']:.4f} | {_med(r['sweep_times']) * 1e3:.1f} |")  # fmt: skip
    for target, e in w3["equal_accuracy"].items():
        ch = e["chosen"]
        if "times" not in e:
            h.ratio(f"W3 at equal accuracy (error <= the peer's {target}, {e['target_error']:.2e} "
                    "nats)", None, 3.0, note=f" (no setting reaches it: {ch})")  # fmt: skip
            continue
        h.ratio(f"W3 likelihood at equal accuracy (error <= the peer's {target}, "
                f"{e['target_error']:.2e} nats), each side's fastest setting: flowjax "
                f"({ch['flowjax'].split('/')[1]}) over the peer ({ch['flow_matching'].split('/')[1]})",
                _ratio(e["times"], "flow_matching", "flowjax"), 3.0)  # fmt: skip
    for title, eq in (
        ("checkerboard", w3.get("equal_settings")),
        ("8x8 digits, d = 64", w3.get("digits")),
    ):
        if not eq:
            continue
        out += ["", f"Equal settings on both sides, {title}, {eq['n']} points"
                + (f" ({eq['weights']})" if "weights" in eq else "") + ":", "",
                "| case | flowjax ms | peer ms | ratio: median (IQR; range) | NFE (fj / peer) "
                "| mean NLL (fj / peer) |", "|---|---|---|---|---|---|"]  # fmt: skip
        worst = None
        for case, row in eq["cases"].items():
            t = row["times"]
            if "flow_matching" not in t:
                continue
            r = _ratio(t, "flow_matching", "flowjax")
            if worst is None or r["median"] < worst[1]["median"]:
                worst = (case, r)
            out.append(
                f"| {case} | {_med(t['flowjax']) * 1e3:.1f} | {_med(t['flow_matching']) * 1e3:.1f} | "
                f"{_f(r['median'])} ({_f(r['q1'])}-{_f(r['q3'])}; {_f(r['min'])}-{_f(r['max'])}) | "
                f"{row['nfe']['flowjax']} / {row['nfe']['flow_matching']} | "
                f"{row['mean_nll']['flowjax']:.4f} / {row['mean_nll']['flow_matching']:.4f} |"
            )
        if title == "checkerboard" and worst:
            h.ratio(f"W3 likelihood at equal settings, slowest case ({worst[0]}; for reference)",
                    worst[1], 3.0)  # fmt: skip
    out.append("")
    return out


def _w4(data: dict, h: _Headlines) -> list[str]:
    entry = data["parts"].get("peers.w4")
    if not entry:
        return []
    w4 = entry["result"]
    runs = w4["runs"]
    sides = list(dict.fromkeys(r["side"] for r in runs))
    out = [
        "### W4 NLL gap to the oracle",
        "",
        f"8-Gaussians ring (radius 4, std 0.5); every side trains the same MLP {w4['steps']} steps "
        f"at batch {w4['batch']} from the same initial weights (flowjax's init for the seed, copied "
        "into torch) on the same batches, with each recipe: `plain` = constant Adam 1e-3 (the "
        "peers' recipe), `cosine_ema` = flowjax's recipe (cosine decay to 0 and an EMA 0.999 "
        "with warm-up, written in PyTorch for the peers). NLL gap = mean NLL of "
        f"{w4['n_test']} test points minus the oracle's, every model evaluated by flowjax's exact "
        f"likelihood (Dopri5 {w4.get('eval_tolerance', 1e-6):.0e}, float64). A quality measurement: train seconds are not a "
        f"timing comparison (torch on {w4.get('torch_threads', '?')} thread, a loaded machine). "
        "The training budget is small so that 18 models fit one session (the W4 of commit "
        "8883f54's report trained 2,000 steps at batch 4096 and reached a flowjax gap under "
        "0.01): at this budget every side is far from converged, so the absolute `<= 0.01` "
        "headline measures the budget, not the library; the paired difference between sides is "
        "the like-for-like figure."
        + (
            " **Partial: the run stopped before every model was trained.**"
            if entry.get("partial")
            else ""
        ),
        "",
        "| recipe | side | NLL gap per seed | mean +- std | train s (mean) |",
        "|---|---|---|---|---|",
    ]
    for recipe in w4["recipes"]:
        gaps = {
            s: {r["seed"]: r["gap"] for r in runs if r["recipe"] == recipe and r["side"] == s}
            for s in sides
        }
        for s in sides:
            g = gaps[s]
            if not g:
                continue
            v = np.asarray(list(g.values()))
            secs = [r["train_seconds"] for r in runs if r["recipe"] == recipe and r["side"] == s]
            std = f"{v.std(ddof=1):.4f}" if v.size > 1 else "n/a"
            out.append(f"| {recipe} | {s} | " + ", ".join(f"{x:.4f}" for x in v)
                       + f" | {v.mean():.4f} +- {std} | {np.mean(secs):.0f} |")  # fmt: skip
        fj = gaps.get("flowjax", {})
        if fj:
            h.mean_std(
                f"W4 NLL gap of flowjax, recipe {recipe} (nats; {w4['steps']} steps at batch "
                f"{w4['batch']}: see W4)",
                list(fj.values()),
                0.01,
                False,
            )
        peers = [s for s in sides if s != "flowjax" and gaps[s]]
        if fj and peers:
            best = min(peers, key=lambda s: np.mean(list(gaps[s].values())))
            seeds = sorted(set(fj) & set(gaps[best]))
            h.mean_std(f"W4 flowjax's gap minus the best peer's ({best}), recipe {recipe}, paired "
                       "by seed (nats)", [fj[k] - gaps[best][k] for k in seeds], 0.0, False)  # fmt: skip
    out.append("")
    return out


def _training(data: dict, h: _Headlines) -> list[str]:
    t = _part(data, "training")
    if not t:
        return []
    out = ["## Train-step overhead (bench_training)", "",
           "| batch | variant | ms/step (median) | ratio to bare: median (IQR; range) |",
           "|---|---|---|---|"]  # fmt: skip
    for case in t["cases"]:
        rm = case.get("rounds_ms")
        for name, ms in case["ms"].items():
            r = _ratio(rm, name, "bare") if rm and name != "bare" else None
            rs = (
                f"{_f(r['median'], 3)} ({_f(r['q1'], 3)}-{_f(r['q3'], 3)}; {_f(r['min'], 3)}-{_f(r['max'], 3)})"
                if r
                else ""
            )
            out.append(f"| {case['batch_size']} | {name} | {ms:.3f} | {rs} |")
        h.ratio(f"Train step (Adam + EMA) over a bare jitted forward+backward, batch "
                f"{case['batch_size']}", _ratio(rm, "step", "bare") if rm else None, 1.10,
                higher=False)  # fmt: skip
    out.append("")
    return out


def _sampling(data: dict, h: _Headlines) -> list[str]:
    s = _part(data, "sampling")
    if not s:
        return []
    out = ["## Sampler overhead and quality (bench_sampling)", "",
           "N Euler steps through `sample` (jitted by the user) over N bare model evaluations in "
           "one jitted loop, per-round ratios:", "",
           "| model | method | batch | N | bare ms | scan: median (IQR; range) | diffrax: median (IQR; range) |",
           "|---|---|---|---|---|---|---|"]  # fmt: skip
    for row in s["overhead"]:
        t = row.get("times_ms")
        cells = []
        for k in ("scan", "diffrax"):
            r = _ratio(t, k, "bare") if t else None
            cells.append(
                f"{_f(r['median'], 3)} ({_f(r['q1'], 3)}-{_f(r['q3'], 3)}; {_f(r['min'], 3)}-{_f(r['max'], 3)})"
                if r
                else _f(row[f"{k}_ratio"], 3)
            )
        out.append(f"| {row['model']} | {row['method']} | {row['batch']} | {row['num_steps']} | "
                   f"{row['bare_ms']:.3f} | {cells[0]} | {cells[1]} |")  # fmt: skip
        if row["model"] == "mlp":
            h.ratio(f"Sampler overhead (N Euler steps / N bare evaluations, scan), batch "
                    f"{row['batch']}", _ratio(t, "scan", "bare") if t else None, 1.15,
                    higher=False)  # fmt: skip
    q = s["quality"]
    out += ["", f"Quality against cost on {q['dataset']} (n = {q['n']}; energy floor "
            f"{q['floor_mean']:.4f} +- {q['floor_std']:.4f}):", "",
            "| path | method | NFE | rejected | ms | energy distance |", "|---|---|---|---|---|---|"]  # fmt: skip
    for row in q["rows"]:
        out.append(f"| {row['path']} | {row['method']} | {row['nfe']} | {row['rejected']} | "
                   f"{row['wall_ms']:.1f} | {row['energy_distance']:.4f} |")  # fmt: skip
    out.append("")
    return out


def _data(data: dict) -> list[str]:
    d = _part(data, "data")
    if not d:
        return []
    out = ["## Input pipeline (bench_data)", "",
           f"Examples/s at batch {d['batch_size']}: {d['unit']}.", "",
           "| case | examples/s | note |", "|---|---|---|"]  # fmt: skip
    for k, v in d["results"].items():
        out.append(f"| {k} | {v:,.0f} | {d['notes'].get(k, '')} |")
    t = d.get("digits_times")
    if t:
        out += ["", "flowjax's index sampler against grain on the same in-memory digits source "
                "(alternated rounds; per-round time ratios, above 1: flowjax faster):", ""]  # fmt: skip
        for k in t:
            if k != "digits/flowjax_raw":
                out.append(
                    f"- {k} / digits/flowjax_raw: {_spread(_ratio(t, k, 'digits/flowjax_raw'))}"
                )
    out.append("")
    return out


def _provenance(data: dict) -> list[str]:
    out = ["## Runs and parts", ""]
    for run_id, run in data["runs"].items():
        if "machine" not in run:  # a part carried over from an earlier report
            out.append(f"- run {run_id}: {run['note']}")
            continue
        m = run["machine"]
        out.append(
            f"- run {run_id}: `{run['command']}` (git {run['git']}); {m['cpu']}, {m['cores']} "
            f"cores, devices {m['devices']}, XLA_FLAGS={m['xla_flags']!r}, "
            f"GLIBC_TUNABLES={m.get('glibc_tunables', '')!r}, torch threads "
            f"{m.get('torch_threads', 'n/a')}; "
            + ", ".join(f"{k} {v}" for k, v in m["versions"].items())
        )
    out += ["", "| part | run | size | started (UTC) | wall s | load average at start | at end |",
            "|---|---|---|---|---|---|---|"]  # fmt: skip
    for name in PARTS:
        e = data["parts"].get(name)
        if e is None:
            out.append(f"| {name} | not in benchmarks.json | | | | | |")
            continue
        size = ("quick" if e["quick"] else "full") + (", partial" if e.get("partial") else "")
        if e.get("resumed_from"):
            size += f", resuming the models of run {e['resumed_from']}"
        secs = f"{e['seconds']:.0f}" if "seconds" in e else ""
        out.append(f"| {name} | {e['run']} | {size} | {e.get('started', '')} | {secs} | "
                   f"{e.get('load_start', '')} | {e.get('load_end', '')} |")  # fmt: skip
    cores = {r["machine"]["cores"] for r in data["runs"].values() if "machine" in r}
    out += ["", f"Cores: {', '.join(map(str, sorted(cores))) or '?'}; a load average above the "
            "core count during a timed part means the sides shared the cores with other work (the "
            "per-round ratios, sides alternated, are what to read; their spread shows how much the "
            "load moved them). peers.w4 and few_step measure quality only.", ""]  # fmt: skip
    return out


def _headlines_and_sections(data: dict) -> tuple[list[str], list[str]]:
    h = _Headlines()
    body: list[str] = []
    peer_parts = [_w1(data, h), _w2(data, h), _w3(data, h), _w4(data, h)]
    if any(peer_parts):
        peak, rates = _peak(data)
        body += [
            "## flowjax against the PyTorch peers (issue 10 workloads, like for like: issue 19)",
            "",
        ]
        if rates:
            body += ["Limit: float32 matmul [4096, 512] x [512, 512]: "
                     + ", ".join(f"{k} {v:.0f} GFLOP/s" for k, v in rates.items())
                     + f" (fastest round); peak used below: {peak:.0f} GFLOP/s.", ""]  # fmt: skip
        for sec in peer_parts:
            body += sec
    body += _training(data, h)
    body += _sampling(data, h)
    fs = _part(data, "few_step")
    if fs:
        body += ["## Few-step solvers (bench_few_step)", "", fs["report_md"].rstrip(), ""]
    sc = _part(data, "scaling")
    if sc:
        body += ["## Multi-process scaling, remat and bfloat16 memory (bench_scaling)", "",
                 "On one 2-core CPU every device and process shares the same cores: these rows "
                 "measure what distribution costs (collectives, dispatch, oversubscription), not a "
                 "speed-up.", "", "```", sc["table"], "```", ""]  # fmt: skip
    body += _data(data)
    return h.lines, body


def report(data: dict) -> str:
    """BENCHMARKS.md from the merged results (no benchmark is run, nothing is imported)."""
    headlines, body = _headlines_and_sections(data)
    out = [
        "# Benchmarks",
        "",
        "Written by `python -m experiments.benchmarks.suite` from `benchmarks.json` alone "
        "(`--report-only` rewrites it; `--check` verifies it). Every ratio is flowjax's speed-up "
        "(above 1: flowjax faster; for overheads, below 1 is better): the median over rounds of "
        "the per-round time ratio of two sides timed in the same round, the sides alternated "
        "and the order rotated every round, with the interquartile range (IQR) and the range "
        "of the per-round ratios. A target is **met** or **MISSED** only when the whole IQR lies "
        "on one side of it, otherwise **not resolved** (W4: mean +- std over seeds). No GPU "
        "workload ran (none is implemented in this suite).",
        "",
        *_provenance(data),
        "## Headlines",
        "",
        *headlines,
        "",
        *body,
    ]
    counts = {
        v: sum(f"**{v}**" in ln for ln in headlines) for v in ("met", "MISSED", "not resolved")
    }
    out += [
        "## Closing note",
        "",
        f"{len(headlines)} headline figures: {counts['met']} targets met, {counts['MISSED']} "
        f"missed, {counts['not resolved']} not resolved (the spread crosses the target); "
        + ", ".join(f"{k} from {e['run']}" for k, e in data["parts"].items())
        + ". Each, with its spread:",
        "",
        *headlines,
    ]
    return "\n".join(out).rstrip() + "\n"


def check(data: dict, text: str) -> list[str]:
    """What differs between ``text`` and the report the JSON gives (each headline first)."""
    expected = report(data)
    if text == expected:
        return []
    have = set(text.splitlines())
    headlines, _ = _headlines_and_sections(data)
    problems = [f"headline differs from benchmarks.json; expected: {ln}" for ln in headlines
                if ln not in have]  # fmt: skip
    exp_lines, got = expected.splitlines(), text.splitlines()
    for i, (a, b) in enumerate(zip(exp_lines, got, strict=False)):
        if a != b:
            problems.append(f"line {i + 1} differs: expected {a!r}, found {b!r}")
            break
    else:
        problems.append(f"length differs: expected {len(exp_lines)} lines, found {len(got)}")
    return problems


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="reduced sizes: a smoke run")
    parser.add_argument("--only", nargs="*", help=f"run only these parts ({', '.join(PARTS)}; "
                        "'peers' = every peers.* part); the others keep their earlier results")  # fmt: skip
    parser.add_argument(
        "--quick-parts", nargs="*", default=[], choices=PARTS, help="these parts in quick mode"
    )
    parser.add_argument("--fresh", action="store_true", help="drop the JSON's earlier parts")
    parser.add_argument("--out", default="BENCHMARKS.md")
    parser.add_argument("--json", default="benchmarks.json")
    parser.add_argument("--report-only", action="store_true", help="run nothing: write --out "
                        "from --json")  # fmt: skip
    parser.add_argument("--check", action="store_true", help="run nothing: fail if --out does "
                        "not say what --json's results give")  # fmt: skip
    parser.add_argument("--merge", nargs="*", metavar="JSON", help="run nothing: copy these "
                        "files' parts (and their runs) into --json, then write --out")  # fmt: skip
    args = parser.parse_args()
    if args.merge:
        data = load_results(args.json)
        for path in args.merge:
            other = load_results(path)
            data["parts"].update(other["parts"])
            data["runs"].update(other["runs"])
        used = {p["run"] for p in data["parts"].values()}
        data["runs"] = {k: v for k, v in data["runs"].items() if k in used}
        _save(data, args.json)
        args.report_only = True
    if args.check or args.report_only:
        data = load_results(args.json)
        if args.report_only:
            with open(args.out, "w") as f:
                f.write(report(data))
            print(f"[suite] wrote {args.out} from {args.json}", file=sys.stderr)
            return
        with open(args.out) as f:
            problems = check(data, f.read())
        for p in problems:
            print(f"[suite --check] {p}", file=sys.stderr)
        if problems:
            sys.exit(1)
        print(f"[suite --check] {args.out} agrees with {args.json}", file=sys.stderr)
        return
    from experiments.runtime import reexec_with_cpu_tuning

    reexec_with_cpu_tuning()  # glibc huge pages for XLA's per-call buffers: experiments/runtime.py
    run_parts(args)


if __name__ == "__main__":
    main()
