"""Data-parallel speed-up: training epochs on 1 vs N devices (`python -m gan.bench --devices 1 4`).

For each device count a fresh subprocess (the device count is fixed when JAX starts; on a CPU,
XLA_FLAGS=--xla_force_host_platform_device_count=N splits the host into N devices) builds the
training exactly as gan/trainer.py does (state replicated, rows sharded over a mesh of all
devices) on the training data, compiles and runs one warm-up epoch, then times `epochs` epochs.
On GPUs pass `--platform gpu`: CUDA_VISIBLE_DEVICES restricts each run to the first N GPUs of
those this process may use (of the CUDA_VISIBLE_DEVICES it was started with, if any).
"""

import json
import os
import subprocess
import sys
import time
from typing import Iterator, Sequence

import jax
import ml_collections

from gan import config as config_lib
from gan import data
from gan import parallel
from gan import step
from gan import trainer
from gan.errors import DesignGanError, out_of_memory


class DeviceBenchError(DesignGanError):
  """A timed run on some number of devices failed."""


def measure(config, epochs: int) -> dict:
  """Samples/s of `epochs` training epochs on every visible device (after a warm-up epoch); of
  all num_seeds models together for a sweep's config, trained as train.py trains it."""
  config = config_lib.resolve(config)
  parallel.check_batch_size(config.batch_size)
  dataset = data.load_for_config(config)
  trainer.check_batch_fits(config, dataset)  # else no batch is timed (0 samples/s)
  mesh = parallel.make_mesh()
  seeds = range(config.seed, config.seed + config.num_seeds)
  models, state = (step.init_sweep(config, dataset.spec, dataset.mask, seeds)
                   if config.num_seeds > 1 else step.init(config, dataset.spec, dataset.mask))
  state = parallel.replicate(mesh, state)
  arrays = {k: getattr(dataset.train, k) for k in ('images', 'durability', 'mass', 'fixed')}
  device_data, num_rows = parallel.shard_rows(mesh, arrays)
  epoch_fn = step.compile_epoch(config, models, config.num_seeds,
                                **parallel.epoch_options(mesh, num_rows))
  t0 = time.perf_counter()
  state, metrics = jax.block_until_ready(epoch_fn(state, device_data))
  warmup = time.perf_counter() - t0
  t0 = time.perf_counter()
  for _ in range(epochs):
    state, metrics = epoch_fn(state, device_data)
  jax.block_until_ready((state, metrics))
  seconds = time.perf_counter() - t0
  samples = epochs * (num_rows // config.batch_size) * config.batch_size * config.num_seeds
  return dict(devices=jax.device_count(), platform=jax.default_backend(),
              num_seeds=config.num_seeds,
              samples_per_s=samples / seconds, seconds_per_epoch=seconds / epochs,
              warmup_s=warmup)


def _child_env(devices: int, platform: str) -> dict:
  env = dict(os.environ)
  if platform == 'cpu':
    flag = f'--xla_force_host_platform_device_count={devices}'
    env.update(JAX_PLATFORMS='cpu', XLA_FLAGS=f'{env.get("XLA_FLAGS", "")} {flag}'.strip())
  else:  # the first N of the GPUs this process may use: those the user listed, else all
    visible = env.get('CUDA_VISIBLE_DEVICES')
    ids = ([i.strip() for i in visible.split(',') if i.strip()] if visible is not None
           else [str(i) for i in range(devices)])
    env['CUDA_VISIBLE_DEVICES'] = ','.join(ids[:devices])
  return env


def _measure_in_subprocess(name: str, config, devices: int, *, epochs: int,
                           platform: str) -> dict:
  args = json.dumps(dict(config=config.to_dict(), epochs=epochs, platform=platform,
                         devices=devices))
  proc = subprocess.run([sys.executable, '-m', 'gan.bench_devices', args],
                        env=_child_env(devices, platform), capture_output=True, text=True,
                        check=False)
  if proc.returncode:
    lines = proc.stderr.strip().splitlines()
    if lines and lines[-1].startswith('error: '):  # a project error: its one line says it all
      raise DeviceBenchError(f'{name} on {devices} device(s): {lines[-1][len("error: "):]}')
    raise DeviceBenchError(f'{name} on {devices} device(s) failed:\n{proc.stderr[-3000:]}')
  result = json.loads(proc.stdout.strip().splitlines()[-1])
  if (result['platform'], result['devices']) != (platform, devices):
    # e.g. --platform gpu without a GPU: JAX falls back to the CPU and would time that instead
    found = f'{result["devices"]} {result["platform"]} device(s)'
    hint = ('no GPU is available on this machine; use --platform cpu'
            if platform == 'gpu' and result['platform'] != 'gpu' else
            f'ask for at most {result["devices"]}'
            if result['platform'] == platform and result['devices'] < devices else
            'JAX did not use the devices asked for')
    raise DeviceBenchError(f'{name}: asked for {devices} {platform} device(s), but the run had '
                           f'{found}: {hint}')
  return result


def device_rows(name: str, config, devices: Sequence[int], *, epochs: int, repeats: int,
                platform: str = 'cpu') -> Iterator[dict]:
  """Row `name` (gan.bench.row_name) on each device count, yielded as soon as it is timed (for
  gan.bench to print): the best of `repeats` runs, with the speed-up over the first count."""
  first = None
  for n in devices:
    runs = [_measure_in_subprocess(name, config, n, epochs=epochs, platform=platform)
            for _ in range(repeats)]
    row = dict(max(runs, key=lambda r: r['samples_per_s']), name=name,
               all_samples_per_s=[round(r['samples_per_s'], 1) for r in runs])
    first = first or row
    row['speed_up'] = row['samples_per_s'] / first['samples_per_s']
    yield row


def _child_main(argv: Sequence[str]) -> int:
  """`python -m gan.bench_devices '{"config": {...}, "epochs": N, "platform": P, "devices": D}'`:
  one run on the visible devices, printed as one JSON line (the parent sets the device count in
  the environment). On other devices than asked for (e.g. no GPU: JAX falls back to the CPU)
  only those found are printed, for the parent's error, without the minutes of a timed run."""
  args = json.loads(argv[0])
  found = dict(devices=jax.device_count(), platform=jax.default_backend())
  if (found['platform'], found['devices']) != (args['platform'], args['devices']):
    print(json.dumps(found))
    return 0
  try:
    print(json.dumps(measure(ml_collections.ConfigDict(args['config']), args['epochs'])))
  except DesignGanError as e:
    print(f'error: {e}', file=sys.stderr)
    return 1
  except (MemoryError, jax.errors.JaxRuntimeError) as e:  # as gan.bench's own rows
    if not (reason := out_of_memory(e)):
      raise
    print(f'error: ran out of memory ({reason}); give a smaller --batch_size or fewer '
          '--num_seeds', file=sys.stderr)
    return 1
  return 0


if __name__ == '__main__':
  # warmup_s includes the epoch's compilation: the environment this child inherits may enable a
  # persistent compilation cache for training (JAX_COMPILATION_CACHE_DIR, see the README), from
  # which a later run would load it instead (as gan.bench's own __main__).
  jax.config.update('jax_enable_compilation_cache', False)
  sys.exit(_child_main(sys.argv[1:]))
