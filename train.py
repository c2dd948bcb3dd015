"""Trains a conditional design GAN.

  python train.py --config=configs/infogan_wgan.py [--config.<field>=value ...]

Every local device is used (data parallel). Several processes (hosts) join one run with
  --coordinator_address=HOST:PORT --num_processes=N --process_id=I
(or JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID, or a multi-task SLURM / Open
MPI job, detected by itself); see README "Scaling out".

All logic lives in gan/trainer.py; this script only parses flags and reports errors.
"""

import sys

from absl import app
from absl import flags
from absl import logging as absl_logging
from ml_collections import config_flags

from gan.errors import DesignGanError

_CONFIG = config_flags.DEFINE_config_file('config', 'configs/default.py',
                                          'Training config file (see configs/).')
# Multi-process settings describe a launch, not a model: flags, not config fields.
_COORDINATOR = flags.DEFINE_string(
    'coordinator_address', '', 'host:port of process 0 in a multi-process run '
    '(default: $JAX_COORDINATOR_ADDRESS, or auto-detected under SLURM / Open MPI).')
_NUM_PROCESSES = flags.DEFINE_integer(
    'num_processes', 0, 'Number of processes in a multi-process run (default: '
    '$JAX_NUM_PROCESSES or the cluster\'s; 0/1 = single process).')
_PROCESS_ID = flags.DEFINE_integer(
    'process_id', -1, 'This process\'s index 0..num_processes-1 (default: $JAX_PROCESS_ID or '
    'the cluster\'s).')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  absl_logging.set_verbosity(absl_logging.WARNING)  # orbax logs every file it writes at INFO
  from gan import parallel  # pylint: disable=import-outside-toplevel  (jax import after flags)
  from gan import trainer  # pylint: disable=import-outside-toplevel
  try:
    # Before anything touches a device: JAX must know every process before it lists devices.
    parallel.initialize_distributed(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
    trainer.train(_CONFIG.value)
  except DesignGanError as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(1)


if __name__ == '__main__':
  app.run(main)
