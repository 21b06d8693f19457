"""``get_dataset(name, split)``: config names to sources, default transforms and metadata."""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
from typing import Any

import numpy as np

from flowjax.data._digits import DIGITS_NUM_LEVELS, DIGITS_SPLITS, digits_source
from flowjax.data._iterator import make_iterator
from flowjax.data._tfds import DatasetNotFoundError, tfds_source
from flowjax.data._toy import TOY_DATASETS, toy_dataset, toy_num_classes
from flowjax.data._transforms import IdentityTransform, ImageTransform, Transform
from flowjax.oracle import GaussianMixture, eight_gaussians

__all__ = ["BUILTIN_DATASETS", "TOY_SIZES", "Dataset", "get_dataset"]

BUILTIN_DATASETS = (*TOY_DATASETS, "digits")
TOY_SIZES = {"train": 100_000, "test": 10_000, "validation": 10_000}
IN_MEMORY_MAX_BYTES = 1 << 30
_FLIP_BY_DEFAULT = ("cifar10", "cifar100")


@dataclasses.dataclass(frozen=True)
class Dataset:
    """A source with its default transform and what a model and an evaluation need to know.

    Attributes:
      name, split: as given to :func:`get_dataset` (a GaussianMixture's name is ``"mixture"``).
      source: random access to raw examples (toy: ``{"x", "label"}``; images:
        ``{"image": uint8 levels, "label"}``).
      transform: the default batch transform of :func:`make_iterator` (images: scaling to
        ``value_range``, flips for CIFAR training, optional dequantization).
      eval_transform: deterministic version (no flips, no dequantization; images keep
        ``"levels"``), used by :meth:`as_arrays`.
      shape: shape of one example ``x`` (``(2,)`` or ``(H, W, C)``).
      num_classes: number of labels (None when the set has none).
      num_levels: integer levels of image data (17 for digits, 256 for uint8), None for toys.
      value_range: ``(lo, hi)`` of ``x`` for images (``(-1, 1)``), None for unbounded toy data.
      oracle: the exact GaussianMixture for ``"eight_gaussians"`` and mixtures, else None.
    """

    name: str
    split: str
    source: Any
    transform: Transform
    eval_transform: Transform
    shape: tuple[int, ...]
    num_classes: int | None
    num_levels: int | None
    value_range: tuple[float, float] | None
    oracle: GaussianMixture | None = None

    def __len__(self) -> int:
        return len(self.source)

    @property
    def num_examples(self) -> int:
        return len(self.source)

    @property
    def is_image(self) -> bool:
        return self.num_levels is not None

    def metadata(self) -> dict[str, Any]:
        """JSON-serialisable description (for eval.json and logs)."""
        return {
            "name": self.name,
            "split": self.split,
            "num_examples": self.num_examples,
            "shape": list(self.shape),
            "num_classes": self.num_classes,
            "num_levels": self.num_levels,
            "value_range": None if self.value_range is None else list(self.value_range),
        }

    def as_arrays(self, max_examples: int | None = None) -> dict[str, np.ndarray]:
        """The first ``max_examples`` examples (all by default) in source order, through
        ``eval_transform``: e.g. held-out data for sample-quality metrics."""
        n = self.num_examples if max_examples is None else min(int(max_examples), len(self))
        it = make_iterator(
            self.source,
            global_batch_size=n,
            seed=0,
            shuffle=False,
            process_index=0,
            process_count=1,
            transform=self.eval_transform,
            drop_remainder=True,
        )
        return next(it)


def _toy(name: str | GaussianMixture, split: str, seed: int, num_examples: int | None) -> Dataset:
    if split not in TOY_SIZES:
        raise ValueError(f"unknown toy split {split!r}; valid choices are: {', '.join(TOY_SIZES)}")
    n = TOY_SIZES[split] if num_examples is None else int(num_examples)
    source = toy_dataset(name, n, seed, split)
    oracle: GaussianMixture | None
    if isinstance(name, GaussianMixture):
        label, oracle = "mixture", name
    else:
        label, oracle = name, (eight_gaussians() if name == "eight_gaussians" else None)
    return Dataset(
        name=label,
        split=split,
        source=source,
        transform=IdentityTransform(),
        eval_transform=IdentityTransform(),
        shape=tuple(source.arrays["x"].shape[1:]),
        num_classes=toy_num_classes(name),
        num_levels=None,
        value_range=None,
        oracle=oracle,
    )


def get_dataset(
    name: str | GaussianMixture,
    split: str = "train",
    *,
    data_dir: str | None = None,
    seed: int = 0,
    num_examples: int | None = None,
    in_memory: bool | None = None,
    random_flip: bool | None = None,
    dequantize: bool = False,
    keep_levels: bool = False,
    image_key: str = "image",
    label_key: str | None = "label",
    num_threads: int | None = None,
) -> Dataset:
    """A data set by config name.

    Args:
      name: a toy set (``"checkerboard"``, ``"moons"``, ``"eight_gaussians"``, ``"spirals"``) or a
        :class:`flowjax.oracle.GaussianMixture`; ``"digits"`` (scikit-learn's 8x8 digits); or any
        tensorflow-datasets image data set prepared under ``data_dir`` (``"mnist"``,
        ``"fashion_mnist"``, ``"cifar10"``, ...).
      split: ``"train"`` / ``"test"`` (toys also ``"validation"``, digits also ``"all"``, tfds any
        split expression such as ``"train[:90%]"``).
      data_dir: where tfds data sets are prepared (default: ``$TFDS_DATA_DIR`` or
        ``~/tensorflow_datasets``).
      seed: toy data sets only: the seed of the fixed sample.
      num_examples: toy data sets only: its size (default 100,000 train, 10,000 test/validation).
      in_memory: tfds only: decode the whole split into RAM once (default: when it takes at most
        1 GiB, e.g. MNIST 47 MB, CIFAR-10 154 MB); otherwise records are read and decoded per batch.
      random_flip: images: random left-right flips (default: on for CIFAR-10/100 training).
      dequantize: images: uniform dequantization instead of plain scaling (see
        :mod:`flowjax.data._transforms` for the bits/dim offset).
      keep_levels: images: batches also carry the integer ``"levels"``.
      image_key, label_key: tfds feature names.
      num_threads: tfds read from disk (not in memory): decoding threads per batch.

    Raises:
      DatasetNotFoundError: a tfds set that is not prepared, naming the prepare command.
    """
    if isinstance(name, GaussianMixture) or name in TOY_DATASETS:
        return _toy(name, split, seed, num_examples)
    if not isinstance(name, str):
        raise TypeError(f"name must be a string or a GaussianMixture; got {name!r}")
    if num_examples is not None:
        raise ValueError(f"num_examples applies to toy data sets only, not to {name!r}")
    if name == "digits":
        if split not in DIGITS_SPLITS:
            raise ValueError(
                f"unknown digits split {split!r}; valid choices are: {', '.join(DIGITS_SPLITS)}"
            )
        source: Any = digits_source(split)
        shape, num_classes, num_levels = (8, 8, 1), 10, DIGITS_NUM_LEVELS
    else:
        if not _TFDS_NAME.fullmatch(name):  # tfds would fail parsing it, without the built-ins
            raise _unknown_name(name)
        try:
            source, meta = tfds_source(
                name,
                split,
                data_dir=data_dir,
                image_key=image_key,
                label_key=label_key,
                num_threads=num_threads,
            )
        except DatasetNotFoundError as e:
            raise _dataset_not_found(name, e) from e
        shape, num_classes, num_levels = meta["shape"], meta["num_classes"], meta["num_levels"]
        nbytes = len(source) * math.prod(shape)
        if in_memory if in_memory is not None else nbytes <= IN_MEMORY_MAX_BYTES:
            source = source.to_memory()
    if random_flip is None:
        random_flip = name in _FLIP_BY_DEFAULT and split.startswith("train")
    value_range = (-1.0, 1.0)
    transform = ImageTransform(
        num_levels=num_levels,
        value_range=value_range,
        random_flip=bool(random_flip),
        dequantize=dequantize,
        keep_levels=keep_levels,
    )
    eval_transform = ImageTransform(
        num_levels=num_levels, value_range=value_range, keep_levels=True
    )
    return Dataset(
        name=name,
        split=split,
        source=source,
        transform=transform,
        eval_transform=eval_transform,
        shape=tuple(shape),
        num_classes=num_classes,
        num_levels=num_levels,
        value_range=value_range,
    )


_PREPARED = (
    "A tensorflow-datasets set is 'prepared' when its ArrayRecord files (the random-access format "
    "flowjax reads without TensorFlow) exist under data_dir: `python -m flowjax.data.prepare` "
    "downloads the set once and writes them there."
)


def _dataset_not_found(name: str, err: DatasetNotFoundError) -> DatasetNotFoundError:
    """The error for a name that is neither built in nor a prepared tfds set (says which)."""
    import tensorflow_datasets as tfds

    builtin = f"Built-in data sets (no preparation needed): {', '.join(BUILTIN_DATASETS)}."
    if not isinstance(err.__cause__, tfds.core.registered.DatasetNotFoundError):
        return DatasetNotFoundError(f"{err}\n{_PREPARED}\n{builtin}")
    return _unknown_name(name)


# tensorflow-datasets' builder-name syntax: dataset_name[/config_name][:version][/kwargs]
_TFDS_NAME = re.compile(r"[A-Za-z_]\w*(/[\w.]+)?(:[\w.*]+)?(/.+)?")


def _unknown_name(name: str) -> DatasetNotFoundError:
    """The error for a name that is neither built in nor any tfds builder (close names offered)."""
    import tensorflow_datasets as tfds

    builtin = f"Built-in data sets (no preparation needed): {', '.join(BUILTIN_DATASETS)}."
    known = [*BUILTIN_DATASETS, *tfds.list_builders(with_community_datasets=False)]
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
    hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    return DatasetNotFoundError(
        f"unknown data set name {name!r}: it is neither built in nor a tensorflow-datasets "
        f"name.{hint}\n{builtin}\nAny tensorflow-datasets image set with fixed-size uint8 "
        f"images also works once prepared (e.g. 'mnist', 'fashion_mnist', 'cifar10'). {_PREPARED}"
    )
