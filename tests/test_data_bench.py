"""The data benchmark runs and returns JSON-serialisable, positive throughputs (slow)."""

import json

import chex
import pytest


@pytest.mark.slow
def test_bench_data_quick_run():
    from experiments.benchmarks import bench_data

    out = bench_data.run(quick=True)
    json.dumps(out)
    chex.assert_equal(out["batch_size"], 512)
    expected = {
        "digits/flowjax",
        "digits/grain_batched",
        "digits/grain_per_example",
        "cifar10_mock/in_memory_flip",
        "array_record/records_threads=1",
        "toy/checkerboard_iterator",
        "toy/checkerboard_jit_sampler",
    }
    assert expected <= set(out["results"])
    chex.assert_tree_all_finite(out["results"])
    assert all(v > 0 for v in out["results"].values())
