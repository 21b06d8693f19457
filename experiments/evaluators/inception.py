"""Inception-v3 (the FID network) in Flax, with weights from a local file only.

:class:`InceptionV3` is the FID variant of Inception-v3 (pytorch-fid's ``FIDInception*`` blocks:
average pools that exclude padding, a max pool in the last block), 2048-d pool features of images
resized to 299x299. Its weights are read from a local file (:func:`load_inception_params`, format
below) named by ``config.eval.inception_weights``; nothing is downloaded, and without a file the
evaluation refuses with :class:`InceptionWeightsError`.

Inception weights file format
-----------------------------
An ``.npz`` file with one float32 array per parameter, keyed by the parameter's path in
:class:`InceptionV3` joined by ``/``, e.g. ``Mixed_5b/branch1x1/conv/kernel`` (a convolution
kernel ``[kh, kw, in, out]``; convolutions have no bias) and ``Mixed_5b/branch1x1/bn/scale``,
``.../bn/bias``, ``.../bn/mean``, ``.../bn/var`` (the batch norm's affine parameters and running
statistics, ``eps = 1e-3``). The module names are torchvision's ``Inception3`` names, so a
PyTorch state dict is accepted as well and converted on load (:func:`convert_torch_state_dict`:
``X.conv.weight [out, in, kh, kw]`` -> ``X/conv/kernel``, ``X.bn.weight/bias/running_mean/
running_var`` -> ``X/bn/scale/bias/mean/var``; ``fc.*``, ``AuxLogits.*`` and
``num_batches_tracked`` are dropped). To use pytorch-fid's FID weights
(``pt_inception-2015-12-05-6726825d.pth``), on a machine with PyTorch::

    python -c "import torch, numpy as np; sd = torch.load('pt_inception-2015-12-05-6726825d.pth', map_location='cpu'); np.savez('pt_inception.npz', **{k: v.numpy() for k, v in sd.items()})"

and pass ``--config.eval.inception=True --config.eval.inception_weights=pt_inception.npz``.
The architecture and the conversion follow pytorch-fid's published code; these numbers have not
been checked against pytorch-fid here (no weights can be fetched on this machine).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array

from experiments.evaluators.features import in_padded_batches
from experiments.io import flatten_params, unflatten_params

__all__ = [
    "INCEPTION_WEIGHTS_HELP",
    "InceptionV3",
    "InceptionWeightsError",
    "check_weights_file",
    "convert_torch_state_dict",
    "flatten_params",
    "inception_features",
    "inception_param_shapes",
    "load_inception_params",
    "unflatten_params",
]


INCEPTION_SIZE = 299
_BN_EPS = 1e-3


class InceptionWeightsError(ValueError):
    """Inception FID/KID was asked for without a weights file."""


INCEPTION_WEIGHTS_HELP = (
    "Inception FID/KID needs the Inception-v3 weights as a local file: pass "
    "--config.eval.inception_weights=/path/to/pt_inception.npz (or set config.eval.inception="
    "False). Nothing is downloaded by flowjax; the file format and how to make it from "
    "pytorch-fid's weights are described in experiments/evaluators/inception.py."
)


def check_weights_file(path: str | Path | None) -> None:
    """Fail early (before training) when the configured weights file is not given or missing."""
    if not path:
        raise InceptionWeightsError(INCEPTION_WEIGHTS_HELP)
    if not Path(path).expanduser().is_file():
        raise FileNotFoundError(
            f"Inception weights file {str(path)!r} (config.eval.inception_weights) does not exist"
        )


class _BatchNorm(nn.Module):
    """Inference batch norm with its running statistics as parameters (``scale, bias, mean, var``)."""

    @nn.compact
    def __call__(self, x: Array) -> Array:
        c = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones, (c,))
        bias = self.param("bias", nn.initializers.zeros, (c,))
        mean = self.param("mean", nn.initializers.zeros, (c,))
        var = self.param("var", nn.initializers.ones, (c,))
        mul = scale * jax.lax.rsqrt(var + _BN_EPS)
        shape = (1,) * (x.ndim - 1) + (c,)
        return x * mul.reshape(shape) + (bias - mean * mul).reshape(shape)


class _Conv(nn.Module):
    """torchvision's ``BasicConv2d``: convolution without bias, batch norm, ReLU."""

    features: int
    kernel: tuple[int, int]
    strides: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)

    @nn.compact
    def __call__(self, x: Array) -> Array:
        ph, pw = self.padding
        x = nn.Conv(
            self.features,
            self.kernel,
            self.strides,
            padding=((ph, ph), (pw, pw)),
            use_bias=False,
            name="conv",
        )(x)
        return nn.relu(_BatchNorm(name="bn")(x))


def _avg_pool_3x3(x: Array) -> Array:
    return nn.avg_pool(x, (3, 3), (1, 1), padding=((1, 1), (1, 1)), count_include_pad=False)


def _max_pool_3x3_s2(x: Array) -> Array:
    return nn.max_pool(x, (3, 3), (2, 2), padding="VALID")


class _InceptionA(nn.Module):
    pool_features: int

    @nn.compact
    def __call__(self, x: Array) -> Array:
        b1 = _Conv(64, (1, 1), name="branch1x1")(x)
        b5 = _Conv(48, (1, 1), name="branch5x5_1")(x)
        b5 = _Conv(64, (5, 5), padding=(2, 2), name="branch5x5_2")(b5)
        b3 = _Conv(64, (1, 1), name="branch3x3dbl_1")(x)
        b3 = _Conv(96, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(b3)
        b3 = _Conv(96, (3, 3), padding=(1, 1), name="branch3x3dbl_3")(b3)
        bp = _Conv(self.pool_features, (1, 1), name="branch_pool")(_avg_pool_3x3(x))
        return jnp.concatenate([b1, b5, b3, bp], axis=-1)


class _InceptionB(nn.Module):
    @nn.compact
    def __call__(self, x: Array) -> Array:
        b3 = _Conv(384, (3, 3), strides=(2, 2), name="branch3x3")(x)
        bd = _Conv(64, (1, 1), name="branch3x3dbl_1")(x)
        bd = _Conv(96, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(bd)
        bd = _Conv(96, (3, 3), strides=(2, 2), name="branch3x3dbl_3")(bd)
        return jnp.concatenate([b3, bd, _max_pool_3x3_s2(x)], axis=-1)


class _InceptionC(nn.Module):
    channels_7x7: int

    @nn.compact
    def __call__(self, x: Array) -> Array:
        c7 = self.channels_7x7
        b1 = _Conv(192, (1, 1), name="branch1x1")(x)
        b7 = _Conv(c7, (1, 1), name="branch7x7_1")(x)
        b7 = _Conv(c7, (1, 7), padding=(0, 3), name="branch7x7_2")(b7)
        b7 = _Conv(192, (7, 1), padding=(3, 0), name="branch7x7_3")(b7)
        bd = _Conv(c7, (1, 1), name="branch7x7dbl_1")(x)
        bd = _Conv(c7, (7, 1), padding=(3, 0), name="branch7x7dbl_2")(bd)
        bd = _Conv(c7, (1, 7), padding=(0, 3), name="branch7x7dbl_3")(bd)
        bd = _Conv(c7, (7, 1), padding=(3, 0), name="branch7x7dbl_4")(bd)
        bd = _Conv(192, (1, 7), padding=(0, 3), name="branch7x7dbl_5")(bd)
        bp = _Conv(192, (1, 1), name="branch_pool")(_avg_pool_3x3(x))
        return jnp.concatenate([b1, b7, bd, bp], axis=-1)


class _InceptionD(nn.Module):
    @nn.compact
    def __call__(self, x: Array) -> Array:
        b3 = _Conv(192, (1, 1), name="branch3x3_1")(x)
        b3 = _Conv(320, (3, 3), strides=(2, 2), name="branch3x3_2")(b3)
        b7 = _Conv(192, (1, 1), name="branch7x7x3_1")(x)
        b7 = _Conv(192, (1, 7), padding=(0, 3), name="branch7x7x3_2")(b7)
        b7 = _Conv(192, (7, 1), padding=(3, 0), name="branch7x7x3_3")(b7)
        b7 = _Conv(192, (3, 3), strides=(2, 2), name="branch7x7x3_4")(b7)
        return jnp.concatenate([b3, b7, _max_pool_3x3_s2(x)], axis=-1)


class _InceptionE(nn.Module):
    pool: str  # "avg" (Mixed_7b) or "max" (Mixed_7c), as in pytorch-fid's FIDInceptionE_1/_2

    @nn.compact
    def __call__(self, x: Array) -> Array:
        b1 = _Conv(320, (1, 1), name="branch1x1")(x)
        b3 = _Conv(384, (1, 1), name="branch3x3_1")(x)
        b3 = jnp.concatenate(
            [
                _Conv(384, (1, 3), padding=(0, 1), name="branch3x3_2a")(b3),
                _Conv(384, (3, 1), padding=(1, 0), name="branch3x3_2b")(b3),
            ],
            axis=-1,
        )
        bd = _Conv(448, (1, 1), name="branch3x3dbl_1")(x)
        bd = _Conv(384, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(bd)
        bd = jnp.concatenate(
            [
                _Conv(384, (1, 3), padding=(0, 1), name="branch3x3dbl_3a")(bd),
                _Conv(384, (3, 1), padding=(1, 0), name="branch3x3dbl_3b")(bd),
            ],
            axis=-1,
        )
        if self.pool == "avg":
            pooled = _avg_pool_3x3(x)
        else:
            pooled = nn.max_pool(x, (3, 3), (1, 1), padding=((1, 1), (1, 1)))
        bp = _Conv(192, (1, 1), name="branch_pool")(pooled)
        return jnp.concatenate([b1, b3, bd, bp], axis=-1)


class InceptionV3(nn.Module):
    """Inception-v3's FID variant up to the 2048-d average pool (``pool3``), channels last.

    Input: images ``[B, 299, 299, 3]`` in ``[-1, 1]`` (see :func:`inception_features` for resizing
    and grayscale). Module names are torchvision's ``Inception3`` attribute names.
    """

    @nn.compact
    def __call__(self, x: Array) -> Array:
        x = _Conv(32, (3, 3), strides=(2, 2), name="Conv2d_1a_3x3")(x)
        x = _Conv(32, (3, 3), name="Conv2d_2a_3x3")(x)
        x = _Conv(64, (3, 3), padding=(1, 1), name="Conv2d_2b_3x3")(x)
        x = _max_pool_3x3_s2(x)
        x = _Conv(80, (1, 1), name="Conv2d_3b_1x1")(x)
        x = _Conv(192, (3, 3), name="Conv2d_4a_3x3")(x)
        x = _max_pool_3x3_s2(x)
        x = _InceptionA(32, name="Mixed_5b")(x)
        x = _InceptionA(64, name="Mixed_5c")(x)
        x = _InceptionA(64, name="Mixed_5d")(x)
        x = _InceptionB(name="Mixed_6a")(x)
        x = _InceptionC(128, name="Mixed_6b")(x)
        x = _InceptionC(160, name="Mixed_6c")(x)
        x = _InceptionC(160, name="Mixed_6d")(x)
        x = _InceptionC(192, name="Mixed_6e")(x)
        x = _InceptionD(name="Mixed_7a")(x)
        x = _InceptionE("avg", name="Mixed_7b")(x)
        x = _InceptionE("max", name="Mixed_7c")(x)
        return jnp.mean(x, axis=(1, 2))


def inception_param_shapes() -> dict[str, tuple[int, ...]]:
    """``{"Mixed_5b/branch1x1/conv/kernel": (1, 1, 192, 64), ...}``: every parameter and its shape."""
    return dict(_inception_param_shapes())


@functools.lru_cache(maxsize=1)
def _inception_param_shapes() -> dict[str, tuple[int, ...]]:
    shapes = jax.eval_shape(
        lambda: InceptionV3().init(
            jax.random.PRNGKey(0), jnp.zeros((1, INCEPTION_SIZE, INCEPTION_SIZE, 3))
        )["params"]
    )
    return {k: tuple(v.shape) for k, v in flatten_params(shapes).items()}


_TORCH_BN = {"weight": "scale", "bias": "bias", "running_mean": "mean", "running_var": "var"}


def convert_torch_state_dict(state_dict: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """A torchvision / pytorch-fid ``Inception3`` state dict to this module's flat parameters.

    ``X.conv.weight`` ``[out, in, kh, kw]`` becomes ``X/conv/kernel`` ``[kh, kw, in, out]``; batch
    norm ``weight, bias, running_mean, running_var`` become ``scale, bias, mean, var``. The
    classifier (``fc.*``), the auxiliary head (``AuxLogits.*``) and ``num_batches_tracked`` are
    not part of the feature extractor and are dropped. Other keys raise, naming them.
    """
    out: dict[str, np.ndarray] = {}
    unknown = []
    for key, value in state_dict.items():
        if key.startswith(("fc.", "AuxLogits.")) or key.endswith("num_batches_tracked"):
            continue
        *mods, leaf = key.split(".")
        arr = np.asarray(value, np.float32)
        if mods and mods[-1] == "conv" and leaf == "weight" and arr.ndim == 4:
            out["/".join(mods) + "/kernel"] = np.transpose(arr, (2, 3, 1, 0))
        elif mods and mods[-1] == "bn" and leaf in _TORCH_BN:
            out["/".join(mods) + "/" + _TORCH_BN[leaf]] = arr
        else:
            unknown.append(key)
    if unknown:
        raise ValueError(f"unexpected keys in the Inception state dict: {unknown[:8]}")
    return out


def load_inception_params(path: str | Path | None) -> dict[str, Any]:
    """Read Inception-v3 parameters from a local ``.npz`` (module docstring: the format).

    Raises:
      InceptionWeightsError: no path given (nothing is downloaded).
      FileNotFoundError: the file does not exist.
      ValueError: a parameter is missing, has the wrong shape, or the file holds unknown arrays
        (each named).
    """
    if not path:
        raise InceptionWeightsError(INCEPTION_WEIGHTS_HELP)
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"Inception weights file {str(path)!r} (config.eval.inception_weights) does not exist. "
            + INCEPTION_WEIGHTS_HELP
        )
    with np.load(path) as f:
        arrays = {k: f[k] for k in f.files}
    if arrays and all("/" not in k for k in arrays):
        arrays = convert_torch_state_dict(arrays)
    expected = inception_param_shapes()
    missing = sorted(set(expected) - set(arrays))
    extra = sorted(set(arrays) - set(expected))
    wrong = [
        f"{k}: file {tuple(arrays[k].shape)}, expected {expected[k]}"
        for k in sorted(set(expected) & set(arrays))
        if tuple(arrays[k].shape) != expected[k]
    ]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing (e.g. {missing[:4]})")
    if extra:
        problems.append(f"{len(extra)} unknown (e.g. {extra[:4]})")
    if wrong:
        problems.append(f"{len(wrong)} with the wrong shape (e.g. {wrong[:4]})")
    if problems:
        raise ValueError(
            f"Inception weights {str(path)!r} do not fit InceptionV3: " + "; ".join(problems)
        )
    return unflatten_params({k: jnp.asarray(v, jnp.float32) for k, v in arrays.items()})


def _inception_input(images: Array, size: int) -> Array:
    x = jnp.asarray(images, jnp.float32)
    if x.shape[-1] == 1:
        x = jnp.repeat(x, 3, axis=-1)
    if x.shape[-1] != 3:
        raise ValueError(f"images must have 1 or 3 channels; got shape {x.shape}")
    x = jnp.clip(x, -1.0, 1.0)
    if x.shape[1:3] != (size, size):
        # bilinear without antialiasing, half-pixel centres: torch's interpolate(align_corners=False)
        x = jax.image.resize(x, (x.shape[0], size, size, 3), "bilinear", antialias=False)
    return x


@functools.lru_cache(maxsize=4)
def _inception_fn(size: int) -> Callable[[Any, Array], Array]:
    module = InceptionV3()
    return jax.jit(lambda p, xb: module.apply({"params": p}, _inception_input(xb, size)))


def inception_features(
    params: Any, images: np.ndarray, *, batch_size: int = 50, size: int = INCEPTION_SIZE
) -> np.ndarray:
    """2048-d ``pool3`` features of images ``[N, H, W, C]`` in ``[-1, 1]`` (C = 1 or 3), resized
    to ``size x size`` (299: the standard; smaller sizes >= 75 only for tests)."""
    return in_padded_batches(_inception_fn(int(size)), params, images, batch_size)
