"""Prepare a tensorflow-datasets data set in ArrayRecord format (the format flowjax reads).

Command line (this is the command named by flowjax's "data set not prepared" errors)::

    python -m flowjax.data.prepare --dataset cifar10 --data_dir ~/tensorflow_datasets

runs the tfds builder's ``download_and_prepare`` with ``file_format="array_record"``. It downloads
the raw files once (the only place flowjax downloads anything) and writes the ArrayRecord shards
that ``tfds.data_source`` reads without TensorFlow. Most tfds builders need TensorFlow installed
*for preparation only* (e.g. to encode images); training never imports it.

:func:`prepare_from_arrays` writes NumPy image arrays as a tfds data set in the same format
without TensorFlow or a download (images are PNG-encoded with Pillow): for your own images, and
for tests and benchmarks of the real ArrayRecord reading path.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["main", "prepare", "prepare_from_arrays"]


def _ensure_importlib_resources() -> None:
    """tfds 4.9.10 needs the ``importlib_resources`` backport to locate builder code when it
    prepares a data set, but does not install it; the standard library's ``importlib.resources``
    (Python >= 3.11) has the same API, so use it when the backport is absent."""
    try:
        import importlib_resources  # noqa: F401
    except ImportError:
        import importlib.resources
        import importlib.resources.abc

        sys.modules.setdefault("importlib_resources", importlib.resources)


def prepare(name: str, data_dir: str | None = None, *, download_dir: str | None = None) -> str:
    """Download and prepare tfds data set ``name`` under ``data_dir`` in ArrayRecord format.

    Returns the directory holding the prepared version.
    """
    import tensorflow_datasets as tfds

    _ensure_importlib_resources()
    data_dir = None if data_dir is None else os.path.expanduser(data_dir)
    builder = tfds.builder(name, data_dir=data_dir, file_format="array_record")
    builder.download_and_prepare(download_dir=download_dir)
    return str(builder.data_dir)


def _png(image: np.ndarray) -> bytes:
    from PIL import Image

    img = Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def prepare_from_arrays(
    name: str,
    splits: Mapping[str, tuple[np.ndarray, np.ndarray | None]],
    data_dir: str,
    *,
    num_classes: int | None = None,
    version: str = "1.0.0",
) -> str:
    """Write images as tfds data set ``name`` (ArrayRecord, PNG-encoded) under ``data_dir``.

    Args:
      name: the data set name (snake_case) to pass to ``get_dataset`` / ``tfds.data_source``.
      splits: ``{split: (images uint8 [N, H, W, C] with C in {1, 3, 4}, labels int [N] or None)}``.
      data_dir: output root; the data land in ``data_dir/name/version``.
      num_classes: label count (default: max label + 1).

    Returns:
      The directory of the prepared version. The data set is then read back by name from
      ``data_dir`` (no builder code needed), with record ``i`` of a split equal to example ``i``
      of its arrays.
    """
    import tensorflow_datasets as tfds

    _ensure_importlib_resources()
    if not splits:
        raise ValueError("splits must name at least one split")
    shapes = {k: np.asarray(im).shape[1:] for k, (im, _) in splits.items()}
    if len(set(shapes.values())) != 1:
        raise ValueError(f"all splits must share one image shape; got {shapes}")
    shape = next(iter(shapes.values()))
    if len(shape) != 3 or shape[-1] not in (1, 3, 4):
        raise ValueError(f"images must be [N, H, W, C] with C in 1, 3, 4; got shape {shape}")
    has_labels = {lab is not None for _, lab in splits.values()}
    if len(has_labels) != 1:
        raise ValueError("give labels for every split or for none")
    labelled = has_labels.pop()
    for split, (im, lab) in splits.items():
        if np.asarray(im).dtype != np.uint8:
            raise ValueError(f"split {split!r}: images must be uint8; got {np.asarray(im).dtype}")
        if labelled and np.asarray(lab).shape != (np.asarray(im).shape[0],):
            raise ValueError(
                f"split {split!r}: labels must have shape [N] = ({np.asarray(im).shape[0]},); "
                f"got {np.asarray(lab).shape}"
            )
    if labelled and num_classes is None:
        num_classes = (
            int(max(np.max(lab) for _, lab in splits.values() if lab is not None and len(lab))) + 1
        )

    features: dict[str, Any] = {"image": tfds.features.Image(shape=tuple(shape))}
    if labelled:
        features["label"] = tfds.features.ClassLabel(num_classes=num_classes)

    # tfds's registration metaclass takes skip_registration; its base types do not declare it
    class _ArrayBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):  # type: ignore[call-arg]
        VERSION = tfds.core.Version(version)

        def _info(self):
            return tfds.core.DatasetInfo(
                builder=self,
                features=tfds.features.FeaturesDict(features),
                disable_shuffling=True,  # record i is example i of the arrays
            )

        def _split_generators(self, dl_manager):
            return {split: self._generate_examples(split) for split in splits}

        def _generate_examples(self, split):
            images, labels = splits[split]
            images = np.asarray(images)
            for i in range(images.shape[0]):
                ex: dict[str, Any] = {"image": _png(images[i])}
                if labels is not None:
                    ex["label"] = int(labels[i])
                yield i, ex

    _ArrayBuilder.name = name
    builder = _ArrayBuilder(data_dir=os.path.expanduser(data_dir), file_format="array_record")
    builder.download_and_prepare()
    return str(builder.data_dir)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m flowjax.data.prepare",
        description="Download and prepare a tensorflow-datasets data set in ArrayRecord format.",
    )
    parser.add_argument("--dataset", required=True, help="tfds name, e.g. mnist, cifar10")
    parser.add_argument(
        "--data_dir",
        default=None,
        help="output root (default: $TFDS_DATA_DIR or ~/tensorflow_datasets); "
        "pass the same directory as data_dir to flowjax.data.get_dataset",
    )
    parser.add_argument("--download_dir", default=None, help="where raw downloads are kept")
    args = parser.parse_args(argv)
    path = prepare(args.dataset, args.data_dir, download_dir=args.download_dir)
    print(f"prepared {args.dataset} in ArrayRecord format at {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
