"""Image experiments end to end: digits (bundled with scikit-learn) and MNIST under
``tfds.testing.mock_data`` (no data on disk), each through ``train_and_evaluate``.

The configs are the ``local`` variants shrunk further: one Euler sampler of 2 steps, a 2-step
likelihood, a 10-step feature classifier. What is checked is the plumbing (files, shapes, NFE,
finite bits/dim, the classifier Frechet distance and its floor), not sample quality.
"""

from __future__ import annotations

import json
import math

import chex
import numpy as np
import pytest
import tensorflow_datasets as tfds

from experiments import evaluate, io
from experiments.configs import default, digits, mnist
from flowjax import training as T


def tiny_images(cfg, tmp_path, *, classifier: bool):
    cfg.training.num_steps = 4
    cfg.training.checkpoint_every = 2
    cfg.training.log_every = 2
    cfg.sampling.num_samples = cfg.sampling.batch_size = 16
    cfg.sampling.samplers = {"ode_euler": default.sampler(solver="euler", num_steps=2)}
    cfg.eval.num_eval = 16
    cfg.eval.nll.num_examples = cfg.eval.nll.batch_size = 4
    cfg.eval.nfe_sweep.samplers = ()
    cfg.eval.classifier_fd = classifier
    cfg.eval.classifier_steps = 10
    cfg.eval.classifier_dir = str(tmp_path / "classifiers")
    cfg.figures.grid_images = 16
    return cfg


def _check_image_run(wd, result, cfg, shape):
    assert T.Checkpointer(wd / "checkpoints").all_steps() == [2, 4]
    assert json.loads((wd / "eval.json").read_text()) == json.loads(json.dumps(io.jsonable(result)))
    with np.load(wd / "samples" / "ode_euler.npz") as f:
        chex.assert_shape(f["samples"], (16, *shape))
        chex.assert_tree_all_finite(f["samples"])
    chex.assert_equal(result["samplers"]["ode_euler"]["nfe"], 2)
    bpd = result["bits_per_dim"]
    # dequantized data: a density on [-1, 1]^d with 2^(bits) levels, so bits/dim is positive
    assert math.isfinite(bpd["bits_per_dim"]) and bpd["bits_per_dim"] > 0
    figures = {p.name for p in (wd / "figures").glob("*.png")}
    assert {"samples_ode_euler.png", "data.png", "trajectories.png"} <= figures
    for png in (wd / "figures").glob("*.png"):
        settings = json.loads(png.with_suffix(".json").read_text())
        assert settings["checkpoint_step"] == 4 and settings["data"] == cfg.data.name


@pytest.mark.slow  # compiles a U-Net's train step, sampler, likelihood and a classifier
def test_digits_train_and_evaluate_end_to_end(tmp_path):
    cfg = tiny_images(digits.get_config("fm,local"), tmp_path, classifier=True)
    wd = tmp_path / "digits"
    result = evaluate.train_and_evaluate(cfg, wd)
    _check_image_run(wd, result, cfg, (8, 8, 1))
    fd = result["classifier_fd"]
    assert fd["data_floor"] >= 0 and fd["samplers"]["ode_euler"] > fd["data_floor"]
    assert result["samplers"]["ode_euler"]["classifier_fd"] == fd["samplers"]["ode_euler"]


@pytest.mark.slow
def test_mnist_train_and_evaluate_under_tfds_mock_data(tmp_path):
    cfg = tiny_images(mnist.get_config("eps,local"), tmp_path, classifier=False)
    cfg.figures.grid_images = 4
    wd = tmp_path / "mnist"
    with tfds.testing.mock_data(num_examples=32):
        result = evaluate.train_and_evaluate(cfg, wd)
    _check_image_run(wd, result, cfg, (28, 28, 1))
    assert json.loads((wd / "config.json").read_text())["path"]["name"] == "vp_linear"


@pytest.mark.parametrize("mod", [digits, mnist])
def test_local_image_configs_stay_small(mod):
    cfg = mod.get_config("local")
    assert cfg.training.num_steps <= 10 and cfg.model.unet.channels <= 8
