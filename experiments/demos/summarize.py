"""Markdown tables of the demos' JSON numbers (for experiments/demos/RESULTS.md).

Usage: ``python -m experiments.demos.summarize [DIR ...]`` where each ``DIR`` holds one demo's
JSON (default: the demos' default output directories under ``/tmp/flowjax_demos``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

DEFAULT = [Path("/tmp/flowjax_demos") / n for n in
           ("guidance_sweep", "mixture_posterior_2d", "reflow_ring", "inpainting_digits")]  # fmt: skip


def _f(x: float) -> str:
    return f"{x:.3g}" if abs(x) < 1e4 else f"{x:.2e}"


def guidance(d: dict) -> list[str]:
    fl = d["energy_distance_floor"]
    out = [
        f"Exact-conditional accuracy (oracle Bayes classifier on exact class draws): "
        f"{d['exact_conditional_accuracy']:.3f}; energy-distance floor (n = {fl['n']}): "
        f"{fl['mean']:.4f} +- {fl['std']:.4f}.",
        "",
    ]
    learned = d["learned"]
    extra = [k[: -len("_accuracy")] for k in learned[0] if k.startswith("cg_start")
             and k.endswith("_accuracy")]  # fmt: skip
    kinds = ["cfg", "cg"]
    head = ["w"] + [f"oracle {k} acc / ED" for k in kinds]
    head += [f"learned {k} acc / ED" for k in kinds + extra]
    out += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for ro, rl in zip(d["oracle"], learned, strict=True):
        cells = [f"{ro['w']:g}"]
        cells += [f"{ro[f'{k}_accuracy']:.3f} / {_f(ro[f'{k}_energy_distance'])}" for k in kinds]
        cells += [
            f"{rl[f'{k}_accuracy']:.3f} / {_f(rl[f'{k}_energy_distance'])}" for k in kinds + extra
        ]
        out.append("| " + " | ".join(cells) + " |")
    out += [
        "",
        f"Digits (10 classes, CFG; reader: logistic regression, test accuracy "
        f"{d['digits_evaluator_test_accuracy']:.3f}; train-split energy-distance floor "
        f"{d['digits_data_floor_energy_distance']:.3f}):",
        "",
        "| w | reader accuracy (ODE) | ED to train (ODE) | reader accuracy (SDE) | ED (SDE) |",
        "|---|---|---|---|---|",
    ]
    for r in d["digits"]:
        acc = r.get("accuracy_sde")
        sde = f"{acc:.3f} | {_f(r['energy_distance_to_train_sde'])}" if acc is not None else "- | -"
        out.append(
            f"| {r['w']:g} | {r['accuracy']:.3f} | {_f(r['energy_distance_to_train'])} | {sde} |"
        )
    return out


def posterior(d: dict) -> list[str]:
    rows = d["results"]
    names = sorted({k.rsplit("_", 1)[0] for r in rows for k in r if k.endswith(("_ode", "_sde"))})
    names = ["exact"] + [n for n in names if n != "exact"]
    head = ["method"] + [f"y={r['y']:g} {s}" for r in rows for s in ("ode", "sde")]
    out = [
        "Energy distance to exact posterior samples (n = "
        f"{d['n']}); floor m +- s and the prior's own distance per y: "
        + "; ".join(
            f"y={r['y']:g}: {r['floor_mean']:.4f} +- {r['floor_std']:.4f}, prior {r['prior']:.3f}"
            for r in rows
        ),
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for n in names:
        cells = [n] + [_f(r[f"{n}_{s}"]) for r in rows for s in ("ode", "sde")]
        out.append("| " + " | ".join(cells) + " |")
    return out


def reflow(d: dict) -> list[str]:
    fl = d["floor"]
    nfes = d["nfes"]
    out = [
        f"Energy distance to data (n = {fl['n']}; floor {fl['mean']:.4f} +- {fl['std']:.4f}) of "
        "Euler samples by NFE, and straightness S:",
        "",
        "| model | S | " + " | ".join(f"NFE {k}" for k in nfes) + " |",
        "|" + "---|" * (len(nfes) + 2),
    ]
    for name, r in d["models"].items():
        cells = [name, f"{r['straightness']:.4f}"] + [_f(p["distance"]) for p in r["euler"]]
        out.append("| " + " | ".join(cells) + " |")
    return out


def inpainting(d: dict) -> list[str]:
    out = []
    for task, t in d["tasks"].items():
        res = t["results"]
        out += [
            f"{task} (noise std {t['noise_std']}, {d['n_images']} test digits; reader test "
            f"accuracy {d['evaluator_test_accuracy']:.3f}):",
            "",
            "| method | MSE | MSE unobserved | mean-of-4 MSE | residual RMS | reader accuracy | "
            "diverged |",
            "|---|---|---|---|---|---|---|",
        ]
        for name, r in res.items():
            m4 = next((val for k, val in r.items() if k.startswith("mean_of_") and k.endswith("mse")),
                      None)  # fmt: skip
            cells = [
                name if name != "baseline" else f"baseline ({r.get('what', '')})",
                _f(r["mse"]),
                _f(r["mse_unobserved"]) if "mse_unobserved" in r else "-",
                _f(m4) if m4 is not None else "-",
                _f(r.get("residual_rms", float("nan"))),
                f"{r['accuracy']:.3f}",
                f"{r['diverged_fraction']:.2f}",
            ]
            out.append("| " + " | ".join(cells) + " |")
        out.append("")
    return out


KINDS = {
    "guidance_sweep.json": guidance,
    "mixture_posterior_2d.json": posterior,
    "reflow_ring.json": reflow,
    "inpainting_digits.json": inpainting,
}


def main(argv: list[str]) -> None:
    dirs = [Path(a) for a in argv] or DEFAULT
    for d in dirs:
        for fname, fn in KINDS.items():
            p = d / fname
            if p.exists():
                data = json.loads(p.read_text())
                print(f"### {p} ({data.get('seconds', float('nan')):.0f} s)\n")
                print("\n".join(fn(data)) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
