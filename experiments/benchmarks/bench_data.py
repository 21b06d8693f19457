"""Input-pipeline throughput (examples/s) of flowjax.data, to set against the train step's consumption.

    python -m experiments.benchmarks.bench_data [--quick] [--json PATH]

Cases (global batch 512, one process, default transforms unless named):

* digits (8x8, in memory): the flowjax iterator against grain on the same source, alternated round
  by round (the choice of sampler): grain with batched reads (shuffled indices batched, one gather
  per batch) and grain's per-example ``MapDataset`` (source, shuffle, batch), both with grain's
  advice for in-memory data (``num_threads=0``);
* CIFAR-10 under ``tfds.testing.mock_data``: decoded into memory (the default for data sets up to
  1 GiB) with flips, and read record by record from the mock (whose cost is its random generator);
* a CIFAR-shaped data set written as real ArrayRecord/PNG files by
  :func:`flowjax.data.prepare.prepare_from_arrays`: read and decoded per batch (1 thread and the
  default thread count), and the one-off cost of loading it into memory;
* dequantization of CIFAR-sized batches; the toy sets through the iterator and the jitted sampler.

Each figure is the median over rounds of examples/s; machines with few shared cores are noisy.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

import flowjax.data as fd
from experiments.benchmarks.common import alternate, median
from flowjax.data.prepare import prepare_from_arrays

BATCH = 512


def _median_rate(step: Callable[[], Any], rounds: int, batches: int, batch: int = BATCH) -> float:
    """Median examples/s of ``batches`` calls of ``step`` (one round), after a warm-up round."""
    return _alternate({"step": step}, rounds, batches, batch)["step"]


def _alternate(
    steps: dict[str, Callable[[], Any]], rounds: int, batches: int, batch: int = BATCH
) -> dict[str, float]:
    """:func:`experiments.benchmarks.common.alternate` of rounds of ``batches`` calls, as median
    examples/s."""

    def round_of(step: Callable[[], Any]) -> Callable[[], None]:
        return lambda: [step() for _ in range(batches)]

    times = alternate({k: round_of(s) for k, s in steps.items()}, rounds)
    return {k: batches * batch / median(v) for k, v in times.items()}


def _grain_step(source: Any, seed: int) -> Callable[[], Any]:
    """grain's per-example pipeline: ``MapDataset.source(...).repeat().shuffle().batch()``, read in
    the caller's thread (``ReadOptions(num_threads=0)``: grain's advice for data already in
    memory, where read threads only contend for the GIL)."""
    import grain

    ds = grain.MapDataset.source(source).repeat().shuffle(seed=seed).batch(BATCH)
    options = grain.ReadOptions(num_threads=0, prefetch_buffer_size=0)
    it = iter(ds.to_iter_dataset(options))
    return lambda: next(it)


def _grain_batched_step(source: fd.ArraySource, seed: int) -> Callable[[], Any]:
    """grain with batched reads: the shuffled indices are batched, then one gather per batch
    (``.map(source.get_batch)``), read in the caller's thread as above."""
    import grain

    ds = (
        grain.MapDataset.range(len(source))
        .repeat()
        .shuffle(seed=seed)
        .batch(BATCH)
        .map(lambda idx: source.get_batch(np.asarray(idx)))
    )
    it = iter(ds.to_iter_dataset(grain.ReadOptions(num_threads=0, prefetch_buffer_size=0)))
    return lambda: next(it)


class _PerExample:
    """The digits source seen one example at a time (what grain's MapDataset reads)."""

    def __init__(self, src: fd.ArraySource):
        self.src = src

    def __len__(self) -> int:
        return len(self.src)

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        return self.src[int(i)]


def run(quick: bool = False) -> dict[str, Any]:
    """Measure every case; returns a JSON-serialisable dict (``results``: name -> examples/s)."""
    rounds, batches = (3, 5) if quick else (7, 20)
    results: dict[str, float] = {}
    notes: dict[str, str] = {}

    # --- digits: flowjax sampler against grain on the same raw source (alternated) -------------
    digits = fd.get_dataset("digits", "train")
    raw_it = fd.make_iterator(digits.source, global_batch_size=BATCH, seed=0, process_count=1)
    full_it = fd.make_iterator(digits, global_batch_size=BATCH, seed=0, process_count=1)
    contenders = {
        "digits/flowjax_raw": lambda: next(raw_it),
        "digits/grain_batched": _grain_batched_step(digits.source, 0),
        "digits/grain_per_example": _grain_step(_PerExample(digits.source), 0),
    }
    digits_times = alternate(
        {k: (lambda s=s: [s() for _ in range(batches)]) for k, s in contenders.items()}, rounds
    )
    alt = {k: batches * BATCH / median(v) for k, v in digits_times.items()}
    results.update(alt)
    results["digits/flowjax"] = _median_rate(lambda: next(full_it), rounds, batches)
    notes["digits/flowjax"] = "1,500 train images, scaled to [-1, 1]"
    notes["digits/flowjax_raw"] = "index sampler + batched gather, no transform"
    notes["digits/grain_batched"] = (
        "grain MapDataset range.shuffle.batch, then one gather per batch; num_threads=0"
    )
    notes["digits/grain_per_example"] = (
        "grain MapDataset source.shuffle.batch (a read per example); num_threads=0"
    )
    deq_it = fd.make_iterator(
        fd.get_dataset("digits", "train", dequantize=True),
        global_batch_size=BATCH,
        seed=0,
        process_count=1,
    )
    results["digits/flowjax_dequantize"] = _median_rate(lambda: next(deq_it), rounds, batches)

    # --- CIFAR-10 under tfds.testing.mock_data ------------------------------------------------
    import tensorflow_datasets as tfds

    n_mock = 2048 if quick else 8192
    with tfds.testing.mock_data(num_examples=n_mock):
        t0 = time.perf_counter()
        mem = fd.get_dataset("cifar10", "train")
        load_s = time.perf_counter() - t0
        it = fd.make_iterator(mem, global_batch_size=BATCH, seed=0, process_count=1)
        results["cifar10_mock/in_memory_flip"] = _median_rate(lambda: next(it), rounds, batches)
        notes["cifar10_mock/in_memory_flip"] = (
            f"{n_mock} mock examples decoded into memory in {load_s:.2f} s"
        )
        deq = fd.get_dataset("cifar10", "train", dequantize=True)
        it_d = fd.make_iterator(deq, global_batch_size=BATCH, seed=0, process_count=1)
        results["cifar10_mock/in_memory_flip_dequantize"] = _median_rate(
            lambda: next(it_d), rounds, batches
        )
        rec = fd.get_dataset("cifar10", "train", in_memory=False)
        it_r = fd.make_iterator(rec, global_batch_size=BATCH, seed=0, process_count=1)
        results["cifar10_mock/records"] = _median_rate(lambda: next(it_r), max(1, rounds // 2), 2)
        notes["cifar10_mock/records"] = "mock records: cost of tfds's random example generator"

    # --- real ArrayRecord files (PNG), written locally ----------------------------------------
    n_real = 2048 if quick else 4096
    rng = np.random.default_rng(0)
    # blocky 32x32x3 images (PNG sizes between noise and natural images)
    base = rng.integers(0, 256, (n_real, 8, 8, 3), dtype=np.uint8)
    images = np.repeat(np.repeat(base, 4, axis=1), 4, axis=2)
    labels = rng.integers(0, 10, n_real)
    with tempfile.TemporaryDirectory() as root:
        t0 = time.perf_counter()
        prepare_from_arrays("bench_cifar_shaped", {"train": (images, labels)}, root)
        notes["array_record/prepare"] = (
            f"wrote {n_real} PNG records in {time.perf_counter() - t0:.1f} s"
        )
        for threads in (1, None):
            ds = fd.get_dataset(
                "bench_cifar_shaped", "train", data_dir=root, in_memory=False, num_threads=threads
            )
            it = fd.make_iterator(ds, global_batch_size=BATCH, seed=0, process_count=1)
            label = f"array_record/records_threads={ds.source.num_threads}"
            results[label] = _median_rate(lambda it=it: next(it), max(1, rounds // 2), 2)
        t0 = time.perf_counter()
        fd.get_dataset("bench_cifar_shaped", "train", data_dir=root, in_memory=True)
        results["array_record/load_into_memory"] = n_real / (time.perf_counter() - t0)
        notes["array_record/load_into_memory"] = "one-off decode of the split (default <= 1 GiB)"

    # --- toy sets ------------------------------------------------------------------------------
    for name in ("checkerboard", "eight_gaussians"):
        ds = fd.get_dataset(name, "train")
        it = fd.make_iterator(ds, global_batch_size=BATCH, seed=0, process_count=1)
        results[f"toy/{name}_iterator"] = _median_rate(lambda it=it: next(it), rounds, batches)
    sample = jax.jit(lambda k: fd.toy_sample("checkerboard", k, BATCH))
    keys = iter(jax.random.split(jax.random.PRNGKey(0), 10_000))
    results["toy/checkerboard_jit_sampler"] = _median_rate(
        lambda: sample(next(keys)).block_until_ready(), rounds, batches
    )
    notes["toy/checkerboard_jit_sampler"] = "on the default JAX device, one dispatch per batch"

    return {
        "benchmark": "bench_data",
        "quick": quick,
        "batch_size": BATCH,
        "unit": "examples/s (median over rounds)",
        "machine": {
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "jax_backend": jax.default_backend(),
        },
        "results": {k: round(v, 1) for k, v in results.items()},
        # seconds per round of ``batches`` batches, alternated: the report's per-round ratios
        "digits_times": digits_times,
        "notes": notes,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds and examples")
    parser.add_argument("--json", default=None, help="also write the results to this file")
    args = parser.parse_args()
    out = run(quick=args.quick)
    width = max(len(k) for k in out["results"])
    print(f"flowjax.data input throughput, batch {BATCH} ({out['unit']})")
    for k, val in out["results"].items():
        note = out["notes"].get(k, "")
        print(f"  {k:<{width}}  {val:>14,.0f}  {note}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)


if __name__ == "__main__":
    main()
