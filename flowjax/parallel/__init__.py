"""Multi-device and multi-process code: meshes, shardings, the runtime, sharded sampling.

One home for everything that knows about devices; :mod:`flowjax.training` builds on it.

* :func:`make_mesh`, :data:`DATA_AXIS`, :data:`FSDP_AXIS`: the device mesh (data parallelism over
  ``data``; parameter sharding over ``fsdp``).
* :func:`batch_sharding`, :func:`shard_batch`, :func:`global_batch_size`, :func:`batch_layout`,
  :func:`replicated`: placing a global batch (assembled from every process's rows) and replicated
  values.
* :func:`fsdp_sharding`, :func:`fsdp_spec`, :func:`sharded_fraction`: parameters and optimizer
  state split over the ``fsdp`` axis.
* :func:`initialize_distributed`, :func:`is_primary`: joining the multi-process runtime; the
  process that writes files.
* :func:`gather`, :func:`to_host`, :func:`host_arrays`, :func:`local_rows`: global arrays to numpy.
* :func:`sample_sharded`, :func:`log_likelihood_sharded`: :func:`flowjax.sample` and
  :func:`flowjax.likelihood.log_likelihood` over every device of every process.
* :func:`example_keys`: randomness that is a function of the global example index, whatever the
  number of devices; :func:`gather_from_specs`, :func:`to_varying`, :func:`reduce_to_specs`:
  explicit collectives for code inside ``jax.shard_map`` (the ``shard_map`` train step).
"""

from flowjax.parallel._batch import batch_layout, global_batch_size, shard_batch
from flowjax.parallel._collectives import (
    example_keys,
    gather_from_specs,
    reduce_to_specs,
    spec_axes,
    to_varying,
)
from flowjax.parallel._fsdp import fsdp_sharding, fsdp_spec, sharded_fraction
from flowjax.parallel._host import gather, host_arrays, local_rows, to_host
from flowjax.parallel._mesh import (
    DATA_AXIS,
    FSDP_AXIS,
    batch_sharding,
    default_batch_axes,
    make_mesh,
    replicated,
)
from flowjax.parallel._runtime import initialize_distributed, is_primary
from flowjax.parallel._sharded import log_likelihood_sharded, sample_sharded

__all__ = [
    "DATA_AXIS",
    "FSDP_AXIS",
    "batch_layout",
    "batch_sharding",
    "default_batch_axes",
    "example_keys",
    "fsdp_sharding",
    "fsdp_spec",
    "gather",
    "gather_from_specs",
    "global_batch_size",
    "host_arrays",
    "initialize_distributed",
    "is_primary",
    "local_rows",
    "log_likelihood_sharded",
    "make_mesh",
    "reduce_to_specs",
    "replicated",
    "sample_sharded",
    "shard_batch",
    "sharded_fraction",
    "spec_axes",
    "to_host",
    "to_varying",
]
