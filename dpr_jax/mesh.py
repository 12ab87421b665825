"""The one place where the device mesh and the array shardings are made.

dpr-jax is data parallel: a 1-D mesh with axis ``"data"`` over every device of every process. The
global batch is split along its first dimension across that axis; parameters and optimizer state
are replicated. Other modules ask this one for shardings instead of building their own, so a
change of layout (say, adding a model axis) happens here only.
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = "data"


def make_mesh(num_devices: int | None = None) -> Mesh:
    """A 1-D data-parallel mesh over all global devices (or the first ``num_devices`` of them)."""
    devices = jax.devices()
    if num_devices is not None:
        if not 1 <= num_devices <= len(devices):
            from dpr_jax.errors import DprJaxError

            raise DprJaxError(f"asked for {num_devices} devices but {len(devices)} are available")
        devices = devices[:num_devices]
    return Mesh(np.asarray(devices), (DATA_AXIS,))


def data_sharding(mesh: Mesh) -> NamedSharding:
    """Leading dimension split over the data axis (a global batch)."""
    return NamedSharding(mesh, P(DATA_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
    """The same full array on every device (parameters, optimizer state, scalars)."""
    return NamedSharding(mesh, P())


def local_device_count(mesh: Mesh) -> int:
    """How many of the mesh's devices belong to this process."""
    return sum(d.process_index == jax.process_index() for d in mesh.devices.flat)


def round_up_to_devices(n: int, mesh: Mesh) -> int:
    """``n`` rounded up to a multiple of the mesh's device count (a batch every device gets rows of)."""
    devices = mesh.devices.size
    return -(-int(n) // devices) * devices


def global_batch(local_tree, mesh: Mesh):
    """Assemble per-process host arrays (leading dim = this process's share) into global arrays.

    Each process passes only its own slice; the result is a global ``jax.Array`` sharded over the
    data axis, as ``jax.make_array_from_process_local_data`` builds it on one host or many.
    """
    sharding = data_sharding(mesh)
    return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), local_tree)


def replicate(tree, mesh: Mesh):
    """Place a pytree replicated on every device of the mesh."""
    return jax.device_put(tree, replicated(mesh))


def make_local_mesh() -> Mesh:
    """A 1-D data mesh over this process's devices only (independent per-host work: offline encoding)."""
    return Mesh(np.asarray(jax.local_devices()), (DATA_AXIS,))
