"""Training throughput on 1 vs N devices: how much data parallelism buys on this machine.

  python -m gan.benchmark --config=configs/default.py --devices=1,4 --epochs=3 [--repeats=2]

For each device count a fresh subprocess (the device count is fixed when JAX starts; on a CPU,
XLA_FLAGS=--xla_force_host_platform_device_count=N splits the host into N devices) builds the
training exactly as gan/trainer.py does (state replicated, rows sharded over a mesh of all
devices), compiles and runs one warm-up epoch, then times `epochs` epochs. Prints samples/s per
device count and the speed-up over the first. On GPUs pass --devices=1,<gpus> and
--platform=gpu: CUDA_VISIBLE_DEVICES restricts each run to its first devices.
"""

import json
import os
import subprocess
import sys
import time

from absl import app
from absl import flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file('config', 'configs/default.py', 'Training config.')
_DEVICES = flags.DEFINE_list('devices', ['1', '4'], 'Device counts to compare.')
_EPOCHS = flags.DEFINE_integer('epochs', 3, 'Timed epochs per run (after one warm-up epoch).')
_REPEATS = flags.DEFINE_integer('repeats', 1, 'Runs per device count (the best is reported).')
_PLATFORM = flags.DEFINE_enum('platform', 'cpu', ['cpu', 'gpu'], 'Devices to use.')
_CHILD = flags.DEFINE_integer('child', 0, 'Internal: time one run on this many devices.')


def measure(config, epochs: int) -> dict:
  """Samples/s of `epochs` training epochs on every visible device (after a warm-up epoch)."""
  import jax  # pylint: disable=import-outside-toplevel  (after XLA_FLAGS is set)
  from gan import config as config_lib  # pylint: disable=import-outside-toplevel
  from gan import parallel  # pylint: disable=import-outside-toplevel
  from gan import step  # pylint: disable=import-outside-toplevel
  from gan import trainer  # pylint: disable=import-outside-toplevel

  config = config_lib.resolve(config)
  dataset = trainer.load_data(config)
  parallel.check_batch_size(config.batch_size)
  mesh = parallel.make_mesh()
  models, state = step.init(config, dataset.spec, dataset.mask)
  state = parallel.replicate(mesh, state)
  arrays = {k: getattr(dataset.train, k) for k in ('images', 'durability', 'mass', 'fixed')}
  data, num_rows = parallel.shard_rows(mesh, arrays)
  epoch_fn = step.compile_epoch(config, models, **parallel.epoch_options(mesh, num_rows))
  t0 = time.perf_counter()
  state, metrics = jax.block_until_ready(epoch_fn(state, data))
  warmup = time.perf_counter() - t0
  t0 = time.perf_counter()
  for _ in range(epochs):
    state, metrics = epoch_fn(state, data)
  jax.block_until_ready((state, metrics))
  seconds = time.perf_counter() - t0
  samples = epochs * (num_rows // config.batch_size) * config.batch_size
  return dict(devices=jax.device_count(), samples_per_s=samples / seconds,
              seconds_per_epoch=seconds / epochs, warmup_s=warmup)


def _run_child(devices: int, argv: list) -> dict:
  env = dict(os.environ)
  if _PLATFORM.value == 'cpu':
    env.update(JAX_PLATFORMS='cpu', XLA_FLAGS=(env.get('XLA_FLAGS', '') +
                                               f' --xla_force_host_platform_device_count={devices}'))
  else:
    env['CUDA_VISIBLE_DEVICES'] = ','.join(str(i) for i in range(devices))
  proc = subprocess.run([sys.executable, '-m', 'gan.benchmark', f'--child={devices}'] + argv,
                        env=env, capture_output=True, text=True, check=False)
  if proc.returncode:
    sys.exit(f'the run on {devices} device(s) failed:\n{proc.stderr[-3000:]}')
  return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv):
  if _CHILD.value:
    from gan.errors import DesignGanError  # pylint: disable=import-outside-toplevel
    try:
      print(json.dumps(measure(_CONFIG.value, _EPOCHS.value)))
    except DesignGanError as e:
      sys.exit(f'error: {e}')
    return
  passthrough = [a for a in sys.argv[1:] if not a.startswith('--child')]
  del argv
  results = []
  for devices in (int(d) for d in _DEVICES.value):
    runs = [_run_child(devices, passthrough) for _ in range(_REPEATS.value)]
    best = max(runs, key=lambda r: r['samples_per_s'])
    best['all_samples_per_s'] = [round(r['samples_per_s'], 1) for r in runs]
    results.append(best)
    print(f'{devices} device(s): {best["samples_per_s"]:.0f} samples/s '
          f'({best["seconds_per_epoch"]:.2f} s/epoch; runs: {best["all_samples_per_s"]}; '
          f'warm-up incl. compilation {best["warmup_s"]:.1f} s)', flush=True)
  base = results[0]['samples_per_s']
  for r in results[1:]:
    print(f'speed-up {r["devices"]} vs {results[0]["devices"]} device(s): '
          f'{r["samples_per_s"] / base:.2f}x')


if __name__ == '__main__':
  app.run(main)
