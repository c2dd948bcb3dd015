"""One training process of tests/test_parallel.py (run as a subprocess, so that each run has its
own device count and, for multi-process runs, its own JAX distributed client).

  python tests/parallel_worker.py --devices=4 --overrides='{"epochs": 2}' --data=D --log=L \
      --out=state.npz [--coordinator_address=127.0.0.1:P --num_processes=2 --process_id=0]
      [--stop_at_epoch=N]

Trains `tests.helpers.tiny_config(data, log, **overrides)` exactly as train.py does (same
distributed initialisation) and writes this process's final TrainState as {leaf path: array}.
With --stop_at_epoch=N this process alone asks to stop after epoch N, as train.py does on Ctrl-C.
"""

import argparse
import json
import os
import sys


def main() -> int:
  parser = argparse.ArgumentParser()
  parser.add_argument('--devices', type=int, default=1)
  parser.add_argument('--overrides', default='{}')
  parser.add_argument('--data', required=True)
  parser.add_argument('--log', required=True)
  parser.add_argument('--out', required=True)
  parser.add_argument('--coordinator_address', default='')
  parser.add_argument('--num_processes', type=int, default=0)
  parser.add_argument('--process_id', type=int, default=-1)
  parser.add_argument('--stop_at_epoch', type=int, default=0)
  args = parser.parse_args()
  # The CPU device count is fixed when jax starts: set it before the first jax import.
  os.environ['XLA_FLAGS'] = f'--xla_force_host_platform_device_count={args.devices}'
  os.environ['JAX_PLATFORMS'] = 'cpu'
  tests_dir = os.path.dirname(os.path.abspath(__file__))
  sys.path[:0] = [os.path.dirname(tests_dir), tests_dir]

  import jax  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  from gan import parallel  # pylint: disable=import-outside-toplevel
  from gan import trainer  # pylint: disable=import-outside-toplevel
  from gan.errors import DesignGanError  # pylint: disable=import-outside-toplevel
  import helpers  # pylint: disable=import-outside-toplevel

  try:
    parallel.initialize_distributed(args.coordinator_address, args.num_processes,
                                    args.process_id)
    config = helpers.tiny_config(args.data, args.log, **json.loads(args.overrides))
    asked = []  # trainer.train asks once per epoch but the last

    def stop_requested() -> bool:
      asked.append(True)
      return len(asked) == args.stop_at_epoch

    result = trainer.train(config, stop_requested=stop_requested)
  except DesignGanError as e:
    print(f'error: {e}', file=sys.stderr)
    return 1
  state = jax.device_get(result['state'])  # replicated: every process holds the whole state
  leaves = {jax.tree_util.keystr(path): np.asarray(leaf)
            for path, leaf in jax.tree_util.tree_leaves_with_path(state._asdict())}
  np.savez(args.out, **leaves)
  print(json.dumps({'process': jax.process_index(), 'devices': jax.device_count(),
                    'start_epoch': result['start_epoch'], 'epochs': result['epochs'],
                    'interrupted': result['interrupted'], 'metrics': result['metrics']}))
  return 0


if __name__ == '__main__':
  sys.exit(main())
