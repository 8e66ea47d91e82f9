"""A T5X partitioner whose CPU mesh has the model-parallel size asked for.

On CPU, T5X's `PjitPartitioner` puts every local device on the 'model' axis
whatever `num_partitions` says (a layout for its own tests). This one lays
CPU devices out as (devices / num_partitions) x num_partitions over
('data', 'model'), as T5X does for GPUs, so data and model parallelism can be
checked on a host with several (XLA-forced) CPU devices; on GPU and TPU it is
T5X's mesh.
"""

import functools

import jax
import numpy as np
from jax.sharding import Mesh
from t5x import partitioning


class HostMeshPartitioner(partitioning.PjitPartitioner):

    @functools.cached_property
    def mesh(self) -> Mesh:
        devices = jax.devices()
        if devices[0].platform != "cpu" or not self._num_partitions:
            return super().mesh
        return Mesh(np.asarray(devices).reshape(-1, self._num_partitions), ("data", "model"))
