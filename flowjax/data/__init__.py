"""Data: toy 2-D sets, scikit-learn's 8x8 digits and tensorflow-datasets images, sharded and resumable.

Batches are dicts of NumPy arrays: ``{"x": float32 [B, ...], "label": int32 [B]}`` (images
``[B, H, W, C]`` in ``[-1, 1]``, 2-D data ``[B, 2]``), with ``"mask"`` when the last batch of an
epoch is padded and ``"levels"`` on request.

    ds = flowjax.data.get_dataset("digits", "train")           # or "cifar10", "checkerboard", ...
    it = flowjax.data.make_iterator(ds, global_batch_size=512, seed=0)
    batch = next(it)                     # this process's rows: 512 // jax.process_count()
    state = it.get_state()               # JSON; it.set_state(state) resumes exactly

Modules: ``_toy`` (jit-able toy samplers and finite toy sets), ``_digits``, ``_tfds`` (ArrayRecord
sources, no TensorFlow), ``_iterator`` (index sampler, sharding, state), ``_transforms`` (scaling,
flips, dequantization and its bits/dim offset), ``prepare`` (``python -m flowjax.data.prepare``).
"""

from flowjax.data._datasets import BUILTIN_DATASETS, TOY_SIZES, Dataset, get_dataset
from flowjax.data._digits import DIGITS_NUM_LEVELS, DIGITS_SPLITS, digits_arrays, digits_source
from flowjax.data._iterator import DataIterator, make_iterator
from flowjax.data._source import ArraySource, Source, fetch_batch
from flowjax.data._tfds import DatasetNotFoundError, TfdsSource, tfds_source
from flowjax.data._toy import (
    TOY_DATASETS,
    toy_dataset,
    toy_num_classes,
    toy_sample,
    toy_sample_with_labels,
)
from flowjax.data._transforms import (
    IdentityTransform,
    ImageTransform,
    Transform,
    dequantize,
    log_bin_width,
    scale_levels,
    to_levels,
)

__all__ = [
    "BUILTIN_DATASETS",
    "DIGITS_NUM_LEVELS",
    "DIGITS_SPLITS",
    "TOY_DATASETS",
    "TOY_SIZES",
    "ArraySource",
    "DataIterator",
    "Dataset",
    "DatasetNotFoundError",
    "IdentityTransform",
    "ImageTransform",
    "Source",
    "TfdsSource",
    "Transform",
    "dequantize",
    "digits_arrays",
    "digits_source",
    "fetch_batch",
    "get_dataset",
    "log_bin_width",
    "make_iterator",
    "scale_levels",
    "tfds_source",
    "to_levels",
    "toy_dataset",
    "toy_num_classes",
    "toy_sample",
    "toy_sample_with_labels",
]
