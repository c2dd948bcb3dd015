"""Data-parallel training on every device of every process, with JAX's own distributed runtime.

One 1-D `Mesh` (axis 'data') spans `jax.devices()`: every local GPU/CPU device of every process.
The TrainState is replicated on it; the training rows are sharded over it (each process puts
only the rows of its own devices, padded to a multiple of the device count), and the epoch
function constrains every gathered batch to be split over 'data'. XLA's SPMD partitioner then
runs the unchanged update on each device's share of the batch and all-reduces the gradients, so
a step on N devices computes the same global-batch update as on one (equal up to float summation
order; BatchNorm statistics are global-batch statistics). With one device nothing is sharded and
the computation is the single-device one.

Several processes (hosts, or one process per GPU) join through `jax.distributed.initialize`,
configured by `--coordinator_address/--num_processes/--process_id`, the JAX_COORDINATOR_ADDRESS /
JAX_NUM_PROCESSES / JAX_PROCESS_ID environment variables, or auto-detected in a multi-task SLURM
or Open MPI job. Every process then runs the same program; only process 0 writes logs,
TensorBoard and output images, while all of them take part in every computation on the mesh and
in every orbax save and restore (orbax coordinates the writes; the directory must be shared).
"""

import math
import os
from typing import Mapping, Optional

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from gan.errors import ConfigError, DesignGanError

AXIS = 'data'
# Cluster launchers whose variables jax.distributed.initialize() reads by itself: (job marker,
# variable holding the number of tasks).
_CLUSTERS = (('SLURM_JOB_ID', 'SLURM_NTASKS'), ('OMPI_COMM_WORLD_SIZE', 'OMPI_COMM_WORLD_SIZE'))


class DistributedError(DesignGanError):
  """The processes of a multi-process run could not connect."""


def distributed_settings(coordinator_address: str = '', num_processes: int = 0,
                         process_id: int = -1,
                         environ: Optional[Mapping[str, str]] = None) -> Optional[dict]:
  """The keyword arguments for `jax.distributed.initialize`, or None for a single-process run.

  Flags win over the JAX_* environment variables; without either, a SLURM or Open MPI job with
  more than one task is auto-detected (jax reads its variables: empty settings). A plain run,
  or a one-task job, returns None: initialising would only open a port for nobody.
  """
  env = os.environ if environ is None else environ
  address = coordinator_address or env.get('JAX_COORDINATOR_ADDRESS', '')
  count = num_processes or _int_env(env, 'JAX_NUM_PROCESSES', 0)
  index = process_id if process_id != -1 else _int_env(env, 'JAX_PROCESS_ID', -1)
  if count < 0:
    raise ConfigError(f'num_processes={count} (--num_processes or JAX_NUM_PROCESSES) must be '
                      'the number of processes of the run, at least 1 (0: a single-process run)')
  if index < -1:  # -1 alone means not given: another negative one is a mistake, not a default
    raise ConfigError(f'process_id={index} (--process_id or JAX_PROCESS_ID) must be this '
                      'process\'s index, 0 to num_processes - 1 (-1: not given)')
  if address or count > 1 or index >= 0:
    if not address or count < 1 or index < 0:
      raise ConfigError(
          'a multi-process run needs all three of --coordinator_address (host:port of process '
          '0), --num_processes and --process_id (or JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, '
          f'JAX_PROCESS_ID); got address {address or "none"!r}, num_processes {count or "none"}, '
          f'process_id {index if index >= 0 else "none"}')
    if ':' not in address:
      raise ConfigError(f'coordinator_address={address!r} must be host:port (e.g. '
                        '10.0.0.1:12345), the address of process 0')
    if not 0 <= index < count:
      raise ConfigError(f'process_id={index} must be in 0..{count - 1} for num_processes={count}')
    if count == 1:
      return None
    return dict(coordinator_address=address, num_processes=count, process_id=index)
  for marker, tasks in _CLUSTERS:
    if marker in env and _int_env(env, tasks, 1) > 1:
      return {}
  return None


def _int_env(env: Mapping[str, str], name: str, default: int) -> int:
  value = env.get(name, '')
  if not value.strip():
    return default
  try:
    return int(value)
  except ValueError:
    raise ConfigError(f'environment variable {name}={value!r} must be an integer') from None


def initialize_distributed(coordinator_address: str = '', num_processes: int = 0,
                           process_id: int = -1) -> bool:
  """Joins the other processes of a multi-process run (before any JAX computation).

  Returns whether it did; a single-process run leaves JAX untouched.
  """
  settings = distributed_settings(coordinator_address, num_processes, process_id)
  if settings is None:
    return False
  # CPU devices of different processes exchange data through gloo (the default of recent jax;
  # older ones default to no cross-process CPU collectives at all).
  if getattr(jax.config, 'jax_cpu_collectives_implementation', 'gloo') in (None, 'none'):
    jax.config.update('jax_cpu_collectives_implementation', 'gloo')
  try:
    jax.distributed.initialize(**settings)
  except Exception as e:  # connection timeouts and refusals come as several runtime types
    where = settings.get('coordinator_address', 'the address the cluster environment gives')
    reason = str(e).strip().splitlines()[0] if str(e).strip() else repr(e)
    raise DistributedError(f'cannot join the distributed run at {where}: {reason}') from None
  return True


def is_main() -> bool:
  """Whether this process writes what a person reads (logs, TensorBoard, output images)."""
  return jax.process_index() == 0


def make_mesh() -> Mesh:
  """A 1-D mesh over every device of every process."""
  return Mesh(np.asarray(jax.devices()), (AXIS,))


def check_batch_size(batch_size: int, num_devices: Optional[int] = None,
                     resuming: bool = False) -> None:
  """Each device computes an equal share of every batch: the device count must divide it.

  `resuming`: the run has checkpoints, whose batch_size cannot change, so the way out is another
  device count (or a new run), not the other batch sizes a fresh run could use."""
  devices = jax.device_count() if num_devices is None else num_devices
  if batch_size % devices:
    where = ('the device count asked for' if num_devices is not None
             else f'{jax.process_count()} processes x {jax.local_device_count()} devices'
             if jax.process_count() > 1 else 'all local devices')
    problem = (f'batch_size={batch_size} must be a multiple of the number of devices, '
               f'{devices} ({where}), so that every device gets the same share of a batch')
    if resuming:
      counts = ', '.join(str(n) for n in range(1, batch_size + 1) if batch_size % n == 0)
      raise ConfigError(f'{problem}; this run resumes from checkpoints, whose batch_size cannot '
                        f'change: resume it on a device count that divides {batch_size} '
                        f'({counts}), or train another batch_size under a new '
                        '--config.log_path')
    lower = batch_size // devices * devices
    options = ', '.join(str(b) for b in (lower, lower + devices) if b > 0)
    raise ConfigError(f'{problem}; use e.g. batch_size {options}')


def replicate(mesh: Mesh, tree):
  """The same arrays, one full copy on every device of the mesh (each process puts its own).

  On one device the tree is left as it is: single-device runs place, compile and compute
  exactly as without a mesh (this holds for shard_rows and epoch_options too).
  """
  if mesh.size == 1:
    return tree
  sharding = NamedSharding(mesh, P())
  return jax.tree.map(lambda a: _from_host(np.asarray(a), sharding), tree)


def replicated_like(mesh: Mesh, abstract):
  """ShapeDtypeStructs placed as `replicate(mesh, ...)` places the arrays they describe: a
  restore target (on one device, the default device, as arrays made without a mesh)."""
  return placed_like(abstract, NamedSharding(mesh, P()) if mesh.size > 1
                     else jax.sharding.SingleDeviceSharding(jax.devices()[0]))


def placed_like(abstract, sharding):
  """ShapeDtypeStructs of the tree `abstract` (its shapes and dtypes) placed by `sharding`: a
  restore target orbax puts the arrays where they are to be."""
  return jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sharding),
                      abstract)


def shard_rows(mesh: Mesh, arrays: dict) -> tuple[dict, int]:
  """(arrays split by rows over the mesh, the real number of rows).

  Rows are padded with zeros to a multiple of the device count; the epoch function samples only
  the real rows. Each process transfers only the rows of its own devices.
  """
  n = len(next(iter(arrays.values())))
  if mesh.size == 1:
    return jax.device_put(arrays), n
  padded = math.ceil(n / mesh.size) * mesh.size
  sharding = NamedSharding(mesh, P(AXIS))

  def put(a):
    a = np.asarray(a)
    a = np.concatenate([a, np.zeros((padded - n,) + a.shape[1:], a.dtype)])
    return _from_host(a, sharding)

  return {k: put(v) for k, v in arrays.items()}, n


def _from_host(a: np.ndarray, sharding: NamedSharding) -> jax.Array:
  return jax.make_array_from_callback(a.shape, sharding, lambda index: a[index])


def epoch_options(mesh: Mesh, num_rows: int) -> dict:
  """Keyword arguments of `step.compile_epoch` for a dataset from `shard_rows`: the real row
  count, the batch sharding, and replicated outputs (the state keeps its placement from epoch
  to epoch, so donation and the single compilation hold; metrics are readable on every host).
  Empty on one device: step.compile_epoch(config, models) as ever."""
  if mesh.size == 1:
    return {}
  return dict(num_rows=num_rows, batch_sharding=NamedSharding(mesh, P(AXIS)),
              out_sharding=NamedSharding(mesh, P()))


def host_local(tree):
  """Arrays a single process can compute with alone: unchanged in a single-process run, else
  host copies of the (replicated) arrays, so process-0-only work never waits for the others."""
  if jax.process_count() == 1:
    return tree
  return jax.device_get(tree)


def broadcast_from_main(value: float) -> float:
  """Process 0's value on every process (a no-op with one process)."""
  if jax.process_count() == 1:
    return value
  return float(multihost_utils.broadcast_one_to_all(np.float64(value)))


def max_over_processes(value: int) -> int:
  """The largest of every process's `value`, on every process (a no-op with one process)."""
  if jax.process_count() == 1:
    return value
  return int(np.max(multihost_utils.process_allgather(np.int32(value))))


def describe(mesh: Mesh) -> str:
  """One line for the log: how training is spread."""
  if mesh.size == 1:
    return f'1 device ({mesh.devices.flat[0].platform})'
  return (f'{mesh.size} {mesh.devices.flat[0].platform} devices, data parallel ('
          f'{jax.process_count()} process(es) x {jax.local_device_count()} local device(s))')
