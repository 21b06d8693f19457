"""tensorflow-datasets image sources through ``tfds`` data sources (ArrayRecord, no TensorFlow).

``tfds_source(name, split, data_dir=...)`` opens a prepared data set for random access. Records are
decoded by tfds with NumPy/PIL (PNG/JPEG); examples come out as
``{"image": uint8 [H, W, C], "label": int32}``. Nothing is ever downloaded here: a data set that is
not prepared under ``data_dir`` raises :class:`DatasetNotFoundError` naming the command that
prepares it (``python -m flowjax.data.prepare --dataset NAME --data_dir DIR``).
"""

from __future__ import annotations

import itertools
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from flowjax.data._source import ArraySource, stack_examples

__all__ = ["DatasetNotFoundError", "TfdsSource", "tfds_source"]


class DatasetNotFoundError(FileNotFoundError):
    """A tensorflow-datasets data set is not prepared (or not known) under the given data_dir."""


def _default_data_dir() -> str:
    return os.environ.get("TFDS_DATA_DIR", os.path.join("~", "tensorflow_datasets"))


def prepare_command(name: str, data_dir: str | None) -> str:
    """The shell command that prepares ``name`` in ArrayRecord format."""
    return f"python -m flowjax.data.prepare --dataset {name} --data_dir {data_dir or _default_data_dir()}"


def _not_found(name: str, data_dir: str | None, cause: BaseException) -> DatasetNotFoundError:
    first = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
    where = data_dir if data_dir is not None else f"the default data_dir ({_default_data_dir()})"
    return DatasetNotFoundError(
        f"tensorflow-datasets data set {name!r} is not prepared under {where}. Prepare it "
        f"(this downloads it, once) with\n    {prepare_command(name, data_dir)}\n"
        "or pass data_dir=... (config: data.data_dir) pointing to where it is prepared in "
        f"ArrayRecord format. (tfds: {type(cause).__name__}: {first})"
    )


def _batched_reads_work(ds: Any) -> bool:
    """Whether ``ds.__getitems__`` works (the real ArrayRecord reader: one parallel read).

    ``tfds.testing.mock_data`` (tfds 4.9.10) installs an unbound ``__getitems__`` that raises
    TypeError; sources then read one record at a time.
    """
    if not hasattr(ds, "__getitems__") or len(ds) == 0:
        return False
    try:
        out = ds.__getitems__([0])
    except TypeError:
        return False
    return len(out) == 1


class TfdsSource:
    """A tfds data source as a flowjax source: ``{"image": uint8 [H, W, C], "label": int32}``.

    ``get_batch(indices)`` reads and decodes the records in ``num_threads`` threads (contiguous
    chunks, one batched read each when the reader supports it) and stacks them in order. Keys
    other than the image and label are dropped.

    Args:
      num_threads: decoding threads per batch (default ``min(8, os.cpu_count())``; 1 = serial).
        PNG decoding partly releases the GIL (BENCHMARKS.md, "Input pipeline": threads=1 against
        the default).
    """

    def __init__(
        self,
        data_source: Any,
        *,
        name: str,
        split: str,
        image_key: str = "image",
        label_key: str | None = "label",
        num_threads: int | None = None,
    ):
        self.data_source = data_source
        self.name, self.split = name, split
        self.image_key, self.label_key = image_key, label_key
        self._len = len(data_source)
        self.batched_reads = _batched_reads_work(data_source)
        self.num_threads = max(1, int(num_threads or min(8, os.cpu_count() or 1)))
        self._pool: ThreadPoolExecutor | None = None

    def __len__(self) -> int:
        return self._len

    def _convert(self, ex: dict[str, Any]) -> dict[str, np.ndarray]:
        out = {"image": np.asarray(ex[self.image_key])}
        if self.label_key is not None:
            out["label"] = np.asarray(ex[self.label_key]).astype(np.int32)
        return out

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        i = int(index)
        if not 0 <= i < self._len:
            raise IndexError(f"index {i} out of range for {self.name}[{self.split}] of {self._len}")
        return self._convert(self.data_source[i])

    def get_batch(self, indices: np.ndarray) -> dict[str, np.ndarray]:
        """The examples at ``indices``, stacked: ``{"image": [B, H, W, C], "label": [B]}``."""
        indices = np.asarray(indices)
        if indices.size and (indices.min() < 0 or indices.max() >= self._len):
            raise IndexError(
                f"indices must lie in [0, {self._len}) for {self.name}[{self.split}]; got "
                f"min {indices.min()}, max {indices.max()}"
            )
        keys = [int(i) for i in indices]
        n = min(self.num_threads, max(1, len(keys) // 16))
        if n == 1:
            return stack_examples(self._read(keys))
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.num_threads, thread_name_prefix="flowjax-data")
        bounds = np.linspace(0, len(keys), n + 1).astype(int)
        chunks = [keys[a:b] for a, b in itertools.pairwise(bounds)]
        return stack_examples([ex for part in self._pool.map(self._read, chunks) for ex in part])

    def _read(self, keys: list[int]) -> list[dict[str, np.ndarray]]:
        if self.batched_reads:
            records = self.data_source.__getitems__(keys)
        else:
            records = [self.data_source[i] for i in keys]
        return [self._convert(ex) for ex in records]

    def to_memory(self, chunk: int = 1024) -> ArraySource:
        """Decode every example once into an :class:`ArraySource` (for data sets that fit in RAM)."""
        parts = [
            self.get_batch(np.arange(s, min(s + chunk, self._len)))
            for s in range(0, self._len, chunk)
        ]
        return ArraySource({k: np.concatenate([p[k] for p in parts]) for k in parts[0]})

    def __repr__(self) -> str:
        return f"TfdsSource({self.name}[{self.split}], {self._len} examples)"


def tfds_source(
    name: str,
    split: str,
    *,
    data_dir: str | None = None,
    image_key: str = "image",
    label_key: str | None = "label",
    num_threads: int | None = None,
) -> tuple[TfdsSource, dict[str, Any]]:
    """Open a prepared tfds image data set for random access (never downloads).

    Returns:
      ``(source, meta)`` with ``meta = {"shape": (H, W, C), "num_classes": int | None,
      "num_levels": 256}``.

    Raises:
      DatasetNotFoundError: ``name`` is not prepared under ``data_dir`` (the message names the
        command that prepares it and the ``data_dir`` option).
      ValueError: the data set has no fixed-size uint8 image under ``image_key``.
    """
    import tensorflow_datasets as tfds

    data_dir = None if data_dir is None else os.fspath(os.path.expanduser(data_dir))
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError as e:
        raise _not_found(name, data_dir, e) from e
    try:
        ds = builder.as_data_source(split=split)
    except Exception as e:
        if not builder.is_prepared():
            raise _not_found(name, data_dir, e) from e
        if "Random access" in str(e):
            raise DatasetNotFoundError(
                f"{name!r} is prepared under {builder.data_dir} in a format without random "
                f"access; prepare it in ArrayRecord format in another data_dir with\n    "
                f"{prepare_command(name, data_dir)}\n(tfds: {e})"
            ) from e
        raise
    features = builder.info.features
    if image_key not in features:
        raise ValueError(
            f"{name!r} has no image feature {image_key!r}; its features are {sorted(features)} "
            "(pass image_key=...)"
        )
    image = features[image_key]
    shape = tuple(image.shape)
    if len(shape) != 3 or any(s is None for s in shape):
        raise ValueError(
            f"{name!r}[{image_key!r}] has image shape {shape}; flowjax.data needs fixed-size "
            "images [H, W, C]"
        )
    if np.dtype(image.np_dtype) != np.uint8:
        raise ValueError(f"{name!r}[{image_key!r}] has dtype {image.np_dtype}; expected uint8")
    num_classes = None
    if label_key is not None and label_key in features:
        num_classes = getattr(features[label_key], "num_classes", None)
    else:
        label_key = None
    source = TfdsSource(
        ds,
        name=name,
        split=split,
        image_key=image_key,
        label_key=label_key,
        num_threads=num_threads,
    )
    return source, {"shape": shape, "num_classes": num_classes, "num_levels": 256}
