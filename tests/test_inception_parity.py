"""The Flax Inception-v3 (experiments/evaluators/inception.py) against pytorch-fid's ``InceptionV3``.

pytorch-fid builds its FID network from torchvision's Inception-v3 and loads the weights file it
would download; here that loader is handed a seeded random state dict instead (nothing is
downloaded), the same state dict is saved as ``.npz`` and read by the Flax side through
``load_inception_params`` (the real weights file takes the same route), and both networks embed
the same images, resized from 64x64 to 299x299 by each side's own resize. Equal 2048-d ``pool3``
features on random weights mean equal features on the real ones, so FID values are comparable to
pytorch-fid's given the real weights file.

pytorch-fid needs torchvision, and the only torchvision that imports next to a torch on this
machine's disk is 0.29.1 with torch 2.14.1 (a CUDA build, 5.5 GB; the CPU torch 2.13.0 wheel has
no matching torchvision). So torch lives in its own virtual environment and runs in a
subprocess: ``FLOWJAX_FID_PYTHON`` names its interpreter (CI installs it in the background, see
``.ci/run``, and this test waits for it); else ``.venv-fid/bin/python`` of the checkout is used:

    python3 -m venv .venv-fid && .venv-fid/bin/pip install torch==2.14.1 torchvision==0.29.1 pytorch-fid==0.3.0
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from experiments import evaluators as E

ROOT = Path(__file__).resolve().parents[1]

pytestmark = [pytest.mark.slow, pytest.mark.needs_fid]

TORCH_SIDE = r"""
import sys
import numpy as np
import torch
import pytorch_fid.inception as fid

out = sys.argv[1]
images = np.load(sys.argv[2])  # [N, H, W, 3] in [0, 1]


def seeded_state_dict(url, progress=True):
    # the architecture's own parameter names and shapes, with seeded random values
    model = fid._inception_v3(num_classes=1008, aux_logits=False, weights=None)
    rng = np.random.default_rng(0)
    sd = {}
    for key, value in model.state_dict().items():
        shape = tuple(value.shape)
        if key.endswith("num_batches_tracked"):
            sd[key] = value
            continue
        if key.endswith("conv.weight"):
            fan_in = int(np.prod(shape[1:]))
            arr = rng.normal(size=shape) * np.sqrt(2.0 / fan_in)
        elif key.endswith("running_var"):
            arr = rng.uniform(0.5, 1.5, shape)
        elif key.endswith("bn.weight"):
            arr = rng.uniform(0.8, 1.2, shape)
        else:  # biases, running means, the unused classifier
            arr = 0.1 * rng.normal(size=shape)
        sd[key] = torch.from_numpy(arr.astype(np.float32))
    seeded_state_dict.sd = sd
    return sd


fid.load_state_dict_from_url = seeded_state_dict
net = fid.InceptionV3([fid.InceptionV3.BLOCK_INDEX_BY_DIM[2048]]).eval()
with torch.no_grad():
    x = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))
    features = net(x)[0].squeeze(-1).squeeze(-1).numpy()
np.savez(out + "_weights.npz", **{k: v.numpy() for k, v in seeded_state_dict.sd.items()})
np.save(out + "_features.npy", features)
print("torch", torch.__version__, "features", features.shape)
"""


def _fid_python() -> Path:
    """The interpreter with pytorch-fid (waiting for CI's background install), or skip."""
    named = os.environ.get("FLOWJAX_FID_PYTHON")
    if not named:
        local = ROOT / ".venv-fid" / "bin" / "python"
        if not local.exists():
            pytest.skip("pytorch-fid is not installed: see this module's docstring")
        return local
    python = Path(named)
    venv = python.parent.parent
    deadline = time.monotonic() + 1200
    while not (venv / "READY").exists():
        failed = venv.with_name(venv.name + "-FAILED")
        if failed.exists() or time.monotonic() > deadline:
            log = venv.with_name(venv.name + ".log")
            tail = log.read_text()[-3000:] if log.exists() else "(no log)"
            pytest.fail(f"installing pytorch-fid into {venv} failed or timed out:\n{tail}")
        time.sleep(5)
    return python


def test_flax_inception_features_equal_pytorch_fids(tmp_path):
    python = _fid_python()
    rng = np.random.default_rng(1)
    images = rng.uniform(0.0, 1.0, (4, 64, 64, 3)).astype(np.float32)
    np.save(tmp_path / "images.npy", images)
    prefix = str(tmp_path / "torch")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_", "XLA_"))}
    env["CUDA_VISIBLE_DEVICES"] = ""
    proc = subprocess.run(
        [str(python), "-c", TORCH_SIDE, prefix, str(tmp_path / "images.npy")],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    reference = np.load(prefix + "_features.npy")
    params = E.load_inception_params(prefix + "_weights.npz")  # the torch-format route
    ours = E.inception_features(params, 2.0 * images - 1.0, batch_size=4)
    assert ours.shape == reference.shape == (4, 2048)
    scale = float(np.abs(reference).max())
    assert scale > 0.1 and np.mean(reference > 0) > 0.2, "degenerate random network"
    # float32 tolerance: each side sums ~10^3-10^4 products per output in its own order through
    # ~100 layers, a few ulps (6e-8 relative each) per layer: ~1e-6 of the feature scale
    # (measured: 5e-7). 1e-5 leaves a factor 10-20; a wrong layer, a transposed kernel or
    # another pooling changes features by O(scale).
    print(
        f"pytorch-fid parity: max |flax - torch| = {np.abs(ours - reference).max() / scale:.2e} x scale"
    )
    np.testing.assert_allclose(ours, reference, rtol=0, atol=1e-5 * scale)
    # the comparison can fail: one 3x3 kernel transposed moves the features far outside it
    flat = E.flatten_params(params)
    key = "Mixed_7c/branch3x3dbl_2/conv/kernel"
    flat[key] = np.swapaxes(np.asarray(flat[key]), 0, 1)
    broken = E.inception_features(
        E.unflatten_params({k: jax.numpy.asarray(v) for k, v in flat.items()}),
        2.0 * images - 1.0,
        batch_size=4,
    )
    assert np.abs(broken - reference).max() > 1000 * 1e-5 * scale
