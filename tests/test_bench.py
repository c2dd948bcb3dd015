"""Tests of the training-speed benchmark CLI (gan/bench.py): tiny sizes, one timed call.

Compilation dominates, so it runs with `jax_disable_most_optimizations` (the tests check what
is reported, not how fast).
"""

import json
import os
import re
import subprocess
import sys
import types

import jax
import numpy as np
import pytest

from gan import bench
from gan import bench_devices

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = '''from configs import default


def get_config():
  c = default.variant('vanilla', 'wgangp')
  c.update(dict(gen_mode='selfattention', disc_mode='mlp', gen_hidden_dims=(16,),
                disc_hidden_dims=(16,), zdim=8, class_embed_dim=4, embed_dim=8, num_heads=2,
                num_layers=1, batch_size=8, critic_iter=2))
  return c
'''


pytestmark = pytest.mark.usefixtures('fast_compilation')


def _run(*args, env=None):
  env = dict(os.environ, JAX_PLATFORMS='cpu', JAX_DISABLE_MOST_OPTIMIZATIONS='1', **(env or {}))
  return subprocess.run([sys.executable, '-m', 'gan.bench', *args], cwd=REPO_ROOT,
                        capture_output=True, text=True, timeout=600, env=env)


def test_cli_ctrl_c_is_one_line_and_writes_no_json(tmp_path, monkeypatch, capsys):
  """Ctrl-C while a row is timed: one 'interrupted:' line, status 130, no traceback, no --json."""
  def interrupted(*args, **kwargs):
    raise KeyboardInterrupt

  monkeypatch.setattr(bench, 'bench_config', interrupted)
  out = tmp_path / 'rows.json'
  assert bench.main(['--configs', 'vanilla_bce_mlp', '--no_matmul', '--no_stream',
                     '--json', str(out)]) == 130
  err = capsys.readouterr().err
  assert [line for line in err.splitlines() if line.strip()] == [
      'interrupted: the rows timed so far are above; a --json file is written only once every '
      'row is timed'], err
  assert os.listdir(tmp_path) == []


@pytest.mark.slow
def test_cli_writes_the_documented_json(tmp_path):
  config = tmp_path / 'tiny.py'
  config.write_text(TINY)
  out = tmp_path / 'bench.json'
  proc = _run('--configs', str(config), '--iters', '1', '--updates', '1', '--matmul_size', '128',
              '--stream_mib', '1', '--num_seeds', '1', '2', '--json', str(out))
  assert proc.returncode == 0, proc.stderr
  rows = json.loads(out.read_text())['rows']
  assert [r['name'] for r in rows] == ['matmul', 'stream', 'tiny', 'tiny x2 seeds']
  matmul, stream, tiny, sweep = rows
  # A sweep row counts the samples, updates, flops and bytes of all its models.
  assert sweep['num_seeds'] == 2 and sweep['gflop_per_update'] == tiny['gflop_per_update']
  assert sweep['gb_per_update'] == tiny['gb_per_update'] > 0
  assert stream['gb_per_s'] > 0 and stream['gflops_per_s'] is None and stream['stream_mib'] == 1
  assert matmul['gb_per_s'] is None
  assert abs(sweep['samples_per_s'] - 8 * sweep['iters_per_s']) < 1e-6 * sweep['samples_per_s']
  assert matmul['gflops_per_s'] > 0 and matmul['compile_s'] > 0
  assert set(bench.COLUMNS) <= set(tiny)
  assert (tiny['gan_model'], tiny['loss_mode'], tiny['gen_mode'], tiny['disc_mode'],
          tiny['batch_size']) == ('vanilla', 'wgangp', 'selfattention', 'mlp', 8)
  for key in ('samples_per_s', 'iters_per_s', 'gflops_per_s', 'gb_per_s', 'compile_s'):
    assert tiny[key] > 0, key
  # gb_per_s is the bytes of an update over the same time as gflops_per_s.
  ratio = tiny['gb_per_s'] / tiny['gflops_per_s']
  assert abs(ratio - tiny['gb_per_update'] / tiny['gflop_per_update']) < 1e-9 * ratio
  assert abs(tiny['samples_per_s'] - 8 * tiny['iters_per_s']) < 1e-6 * tiny['samples_per_s']
  assert tiny['net_gflops_per_s'] == tiny['gflops_per_s']  # no dropout: no masks to leave out
  header = proc.stdout.splitlines()[0].split()
  assert header[-2:] == ['roofline_%', 'stream_%'] and 'gb_per_s' in header  # the table
  assert 'tiny' in proc.stdout and 'stream' in proc.stdout


@pytest.mark.slow
def test_the_cli_compiles_every_row_with_a_persistent_compilation_cache_set(tmp_path):
  """compile_s is compilation: with JAX_COMPILATION_CACHE_DIR set (the README suggests it for
  training), a second run loaded the rows' programs from it and reported that as compile_s."""
  config = tmp_path / 'tiny.py'
  config.write_text(TINY)
  cache = tmp_path / 'xla'
  proc = _run('--configs', str(config), '--iters', '1', '--updates', '1', '--matmul_size', '128',
              '--stream_mib', '1', env=dict(JAX_COMPILATION_CACHE_DIR=str(cache),
                                            JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0'))
  assert proc.returncode == 0, proc.stderr
  assert not cache.exists() or not os.listdir(cache)


def test_unknown_config_is_one_error_line():
  proc = _run('--configs', 'vanilla_wgangp_nope', '--iters', '1')
  assert proc.returncode != 0
  assert 'Traceback' not in proc.stderr, proc.stderr
  errors = [line for line in proc.stderr.splitlines() if line.startswith('error: ')]
  assert len(errors) == 1 and 'vanilla_wgangp_nope' in errors[0], proc.stderr
  assert 'vanilla_wgangp_mlp' in errors[0]  # says what is allowed


@pytest.mark.parametrize('content, message', [
    (None, 'a Python file ending in .py'),
    ('def get_config():\n  return 5\n', 'returned an int, not an ml_collections.ConfigDict'),
    ('def get_config():\n  raise ValueError("boom")\n', 'get_config() failed: ValueError: boom'),
    ('import ml_collections\n'
     'def get_config():\n  return ml_collections.ConfigDict({"epochs": 1})\n',
     'the config has no field'),
])
def test_bad_config_files_are_one_error_line_before_timing(tmp_path, capsys, content, message):
  path = tmp_path / ('bad.py' if content else 'not_python.txt')
  path.write_text(content or 'x')
  assert bench.main(['--configs', str(path), '--iters', '1']) == 1
  err = capsys.readouterr().err
  assert err.startswith('error: ') and err.count('\n') == 1 and message in err, err


@pytest.mark.parametrize('value', ['inf', 'nan', '0', '-1'])
def test_a_stream_size_that_is_not_a_positive_number_is_one_error_line(value, capsys):
  """--stream_mib inf ended in an OverflowError traceback when the stream row was built."""
  assert bench.main(['--configs', 'vanilla_bce_mlp', '--stream_mib', value]) == 1
  err = capsys.readouterr().err
  assert err.startswith('error: ') and err.count('\n') == 1 and '--stream_mib' in err, err


def _raise(error):
  def fail(*args, **kwargs):
    raise error
  return fail


@pytest.mark.parametrize('where, error', [
    ('matmul_row', jax.errors.JaxRuntimeError(
        'RESOURCE_EXHAUSTED: Out of memory allocating 4000000000000 bytes.')),
    ('random_batches', MemoryError('Unable to allocate 6.11 TiB'))])
def test_a_size_too_large_for_memory_is_one_error_line(where, error, tmp_path, capsys,
                                                       monkeypatch):
  """--matmul_size 1000000 (XLA: 'Out of memory allocating ...') or --batch_size 1000000000
  (numpy's MemoryError) ended in a traceback. Raised here in place of the allocation: a real one
  of terabytes depends on the machine's overcommit policy."""
  monkeypatch.setattr(bench, where, _raise(error))
  out = tmp_path / 'rows.json'
  assert bench.main(['--configs', 'vanilla_bce_mlp', '--iters', '1', '--updates', '1',
                     '--no_stream', '--json', str(out)]) == 1
  err = capsys.readouterr().err
  assert err.startswith('error: the benchmark ran out of memory') and err.count('\n') == 1, err
  assert '--matmul_size' in err and '--batch_size' in err and os.listdir(tmp_path) == []


def test_another_xla_error_is_not_called_out_of_memory(monkeypatch):
  monkeypatch.setattr(bench, 'matmul_row', _raise(jax.errors.JaxRuntimeError('INTERNAL: other')))
  with pytest.raises(jax.errors.JaxRuntimeError, match='other'):
    bench.main(['--configs', 'vanilla_bce_mlp', '--iters', '1', '--updates', '1', '--no_stream'])


def _child_args() -> str:
  """The --devices child's argument for a run on this process's devices (so it goes on to time)."""
  return json.dumps(dict(config={}, epochs=1, platform=jax.default_backend(),
                         devices=jax.device_count()))


def test_a_devices_run_out_of_memory_is_one_error_line(capsys, monkeypatch):
  """The --devices child (one process per device count) printed a traceback, which the parent
  passed on as 3,000 characters of its error, for what gan.bench's own rows say in one line."""
  args = _child_args()
  monkeypatch.setattr(bench_devices, 'measure', _raise(jax.errors.JaxRuntimeError(
      'RESOURCE_EXHAUSTED: Out of memory allocating 4000000000000 bytes.')))
  assert bench_devices._child_main([args]) == 1
  err = capsys.readouterr().err
  assert err.startswith('error: ran out of memory (RESOURCE_EXHAUSTED') and err.count('\n') == 1
  assert '--batch_size' in err
  monkeypatch.setattr(bench_devices, 'measure', _raise(jax.errors.JaxRuntimeError('INTERNAL: x')))
  with pytest.raises(jax.errors.JaxRuntimeError, match='x'):
    bench_devices._child_main([args])


@pytest.mark.parametrize('error, line', [
    (bench.DesignGanError('batch_size=512 is larger than the training set (216 designs)'),
     'error: batch_size=512 is larger than the training set (216 designs)'),
    (MemoryError('Unable to allocate 6.11 TiB'),
     'error: ran out of memory (Unable to allocate 6.11 TiB); give a smaller --batch_size or '
     'fewer --num_seeds'),
])
def test_a_devices_runs_error_is_one_line_and_a_failed_exit(error, line, capsys, monkeypatch):
  """The child's one `error:` line and non-zero status are what the parent reports; a status 0
  would have it read the child's empty stdout as a result. numpy's MemoryError (a batch too
  large for the host) is said as XLA's RESOURCE_EXHAUSTED is."""
  monkeypatch.setattr(bench_devices, 'measure', _raise(error))
  assert bench_devices._child_main([_child_args()]) == 1
  assert capsys.readouterr() == ('', line + '\n')


def test_a_configs_file_name_is_found_in_configs():
  name, config = bench.row_config('original_vanilla_wgangp.py')
  assert name == 'original_vanilla_wgangp' and config.batch_size == 512


@pytest.mark.parametrize('flag', [['--platform', 'gpu'], ['--epochs', '5'], ['--repeats', '2']])
def test_data_parallel_flags_without_devices_are_refused(flag, capsys):
  """They only mean something with --devices; silently benchmarking on the CPU would mislead."""
  assert bench.main(['--configs', 'vanilla_bce_mlp', *flag]) == 1
  err = capsys.readouterr().err
  assert err.startswith('error: ') and flag[0] in err and '--devices' in err


def _tiny_cost(c, network: bool = False, state: str = 'abstract'):
  """update_cost (and network_flops) of config c shrunk to tiny networks and batch 4, from the
  state's shapes (as bench_config counts) or, with state='arrays', an initialised state."""
  c.update(dict(gen_hidden_dims=(16,), disc_hidden_dims=(16,), zdim=4, batch_size=4))
  resolved = bench.config_lib.resolve(c)
  layout = bench.bench_layout(resolved)
  spec, mask = bench.bench_spec(layout), layout.strut_mask()
  init = bench.step.init if state == 'arrays' else bench.step.abstract_init
  models, state = init(resolved, spec, mask)
  batch = {k: v[0] for k, v in bench.random_batches(0, layout, 1, 4).items()}
  cost = bench.update_cost(resolved, models, state, batch)
  return (cost[0], bench.network_flops(resolved, spec, mask, batch)) if network else cost


def test_cost_of_an_update_counts_every_critic_step():
  """XLA counts a loop body once; update_cost's flops and bytes must scale with critic_iter."""
  _, c = bench.row_config('vanilla_wgan_mlp')
  costs = []
  for n in (1, 3):
    c.critic_iter = n
    costs.append(_tiny_cost(c))
  critic = (costs[1] - costs[0]) / 2
  assert (critic > 0).all() and (costs[0] > critic).all()


def test_a_critic_steps_bytes_count_no_copy_of_the_generators_state():
  """A critic step leaves the generator's parameters, Adam moments and EMA where they are, in the
  timed update (its state donated) as in training. Compiled alone without donation, XLA counted a
  copy of all of them (15% of original_vanilla_wgangp's bytes per update): each byte of
  generator parameters cost 9 bytes (read once by its forward, then 4 arrays read and written)."""

  def critic_bytes(gen_hidden_dims):
    _, c = bench.row_config('vanilla_wgan_mlp')
    c.update(dict(gen_hidden_dims=gen_hidden_dims, disc_hidden_dims=(16,), zdim=4, batch_size=4))
    c = bench.config_lib.resolve(c)
    layout = bench.bench_layout(c)
    models, state = bench.step.abstract_init(c, bench.bench_spec(layout), layout.strut_mask())
    batch = {k: v[0] for k, v in bench.random_batches(0, layout, 1, 4).items()}
    cost = bench.compiled_cost(lambda s, b, k: bench.step.critic_step(c, models, s, b, k)[0],
                               state, batch, bench.jax.random.PRNGKey(0))
    return cost[1], sum(leaf.size * leaf.dtype.itemsize
                        for leaf in bench.jax.tree.leaves(state.gen_params))

  (small, small_params), (large, large_params) = critic_bytes((16,)), critic_bytes((512,))
  assert (large - small) / (large_params - small_params) < 2  # the forward's read, about 1


def test_the_cost_of_an_update_needs_only_the_states_shapes():
  """bench_config counts flops and bytes from step.abstract_init's shapes, not arrays: the
  same counts as from an initialised state."""
  _, c = bench.row_config('vanilla_wgangp_mlp')
  np.testing.assert_array_equal(_tiny_cost(c), _tiny_cost(c, state='arrays'))


def test_network_flops_leave_out_the_dropout_masks():
  """net_gflops_per_s's numerator: the update's flops without the masks' integer work, i.e. the
  count of the same networks built without dropout, and below the count with dropout."""
  _, c = bench.row_config('vanilla_wgangp_mlp')
  counts = []
  for rate in (0.0, 0.3):
    c.gen_dropout = c.disc_dropout = rate
    counts.append(_tiny_cost(c, network=True))
  (plain, plain_net), (dropout, dropout_net) = counts
  assert plain_net == plain == dropout_net
  assert dropout > plain


@pytest.mark.slow
def test_devices_mode_times_epochs_per_device_count(tmp_path):
  """`--devices 1 2`: one row per device count from its own subprocess, with the speed-up."""
  config = tmp_path / 'tiny_mlp.py'
  config.write_text(TINY.replace("gen_mode='selfattention'", "gen_mode='mlp'")
                    .replace('batch_size=8', 'batch_size=512'))
  out = tmp_path / 'devices.json'
  proc = _run('--devices', '1', '2', '--configs', str(config), '--epochs', '1', '--json', str(out))
  assert proc.returncode == 0, proc.stderr
  rows = json.loads(out.read_text())['rows']
  assert [(r['name'], r['devices']) for r in rows] == [('tiny_mlp', 1), ('tiny_mlp', 2)]
  assert rows[0]['speed_up'] == 1.0
  assert abs(rows[1]['speed_up'] - rows[1]['samples_per_s'] / rows[0]['samples_per_s']) < 1e-9
  for row in rows:
    assert row['samples_per_s'] > 0 and row['seconds_per_epoch'] > 0
  assert 'speed-up' in proc.stdout


@pytest.mark.slow
def test_devices_mode_compiles_in_its_subprocesses_with_a_persistent_compilation_cache_set(
    tmp_path):
  """Each device count's subprocess (gan.bench_devices) inherited JAX_COMPILATION_CACHE_DIR (the
  README suggests it for training) and filled the cache: a later run's warm-up s was the time to
  load its epoch, not to compile it."""
  config = tmp_path / 'tiny_mlp.py'
  config.write_text(TINY.replace("gen_mode='selfattention'", "gen_mode='mlp'")
                    .replace('batch_size=8', 'batch_size=512'))
  cache = tmp_path / 'xla'
  proc = _run('--devices', '1', '--configs', str(config), '--epochs', '1',
              env=dict(JAX_COMPILATION_CACHE_DIR=str(cache),
                       JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0'))
  assert proc.returncode == 0, proc.stderr
  assert not cache.exists() or not os.listdir(cache)


@pytest.mark.parametrize('platform, asked, ran, expected', [
    ('gpu', 1, dict(devices=1, platform='cpu'), 'asked for 1 gpu device.*the run had 1 cpu '
                                                'device.*: no GPU is available on this machine; '
                                                'use --platform cpu'),
    ('gpu', 4, dict(devices=2, platform='gpu'), 'asked for 4 gpu device.*the run had 2 gpu '
                                                'device.*: ask for at most 2'),
    ('cpu', 4, dict(devices=2, platform='cpu'), 'asked for 4 cpu device.*the run had 2 cpu '
                                                'device.*: ask for at most 2'),
    ('gpu', 1, dict(devices=2, platform='gpu'), 'asked for 1 gpu device.*the run had 2 gpu '
                                                'device.*: JAX did not use the devices asked for'),
])
def test_devices_mode_refuses_a_run_on_other_devices_than_asked(monkeypatch, platform, asked,
                                                                 ran, expected):
  """--platform gpu without a GPU: JAX falls back to the CPU; timing that as GPUs would mislead.
  The error says what to ask for instead."""
  result = json.dumps(dict(ran, samples_per_s=1.0, seconds_per_epoch=1.0, warmup_s=1.0))
  monkeypatch.setattr(bench_devices.subprocess, 'run', lambda *a, **k: subprocess.CompletedProcess(
      a, 0, stdout=result + '\n', stderr=''))
  _, config = bench.row_config('vanilla_bce_mlp')
  with pytest.raises(bench_devices.DeviceBenchError, match=expected):
    list(bench_devices.device_rows('vanilla_bce_mlp', config, [asked], epochs=1, repeats=1,
                                   platform=platform))


def _children_exit(monkeypatch, returncode: int, stderr: str):
  """Every --devices child ends with `returncode` and `stderr`, printing nothing on stdout."""
  monkeypatch.setattr(bench_devices.subprocess, 'run', lambda *a, **k: subprocess.CompletedProcess(
      a, returncode, stdout='', stderr=stderr))


LONG_TRACEBACK = 'Traceback (most recent call last):\n' + 'x' * 5000 + '\nRuntimeError: boom\n'


@pytest.mark.parametrize('returncode, stderr, expected', [
    (1, 'a log line\nerror: batch_size=512 is larger than the training set (216 designs)\n',
     'vanilla_bce_mlp on 2 device(s): batch_size=512 is larger than the training set (216 '
     'designs)'),
    (-9, '', 'vanilla_bce_mlp on 2 device(s) failed:\n'),  # killed (the OOM killer): no word
    (1, LONG_TRACEBACK, 'vanilla_bce_mlp on 2 device(s) failed:\n' + LONG_TRACEBACK[-3000:]),
])
def test_devices_mode_says_how_a_run_failed(monkeypatch, returncode, stderr, expected):
  """A child's project error is its `error:` line, without the prefix; any other failure the end
  of its stderr (where a traceback names the error), even an empty one: a child killed by a
  signal has a negative status, which is no result to read."""
  _children_exit(monkeypatch, returncode, stderr)
  _, config = bench.row_config('vanilla_bce_mlp')
  with pytest.raises(bench_devices.DeviceBenchError) as raised:
    list(bench_devices.device_rows('vanilla_bce_mlp', config, [2], epochs=1, repeats=1))
  assert str(raised.value) == expected


def test_devices_mode_keeps_the_fastest_run_read_from_the_childs_last_line(monkeypatch):
  """A row is the best of its `repeats` runs, with every run's samples/s; each child's result is
  its last stdout line (a library may print before it)."""
  rates = iter([1.0, 3.0, 2.0])

  def run(args, **kwargs):
    result = dict(devices=1, platform='cpu', num_seeds=1, samples_per_s=next(rates),
                  seconds_per_epoch=1.0, warmup_s=1.0)
    return subprocess.CompletedProcess(args, 0, stdout=f'a library line\n{json.dumps(result)}\n',
                                       stderr='')

  monkeypatch.setattr(bench_devices.subprocess, 'run', run)
  _, config = bench.row_config('vanilla_bce_mlp')
  [row] = bench_devices.device_rows('vanilla_bce_mlp', config, [1], epochs=1, repeats=3)
  assert (row['samples_per_s'], row['all_samples_per_s']) == (3.0, [1.0, 3.0, 2.0])
  assert row['speed_up'] == 1.0


def test_devices_mode_cpu_runs_get_their_device_count_after_the_users_xla_flags(monkeypatch):
  """A --platform cpu run is held to the CPU (JAX would take a GPU first) and split into its
  count of devices; the user's own XLA_FLAGS are kept, before the count."""
  monkeypatch.setenv('JAX_PLATFORMS', 'cuda')
  monkeypatch.setenv('XLA_FLAGS', '--xla_foo=1')
  env = bench_devices._child_env(3, 'cpu')
  assert env['JAX_PLATFORMS'] == 'cpu'
  assert env['XLA_FLAGS'] == '--xla_foo=1 --xla_force_host_platform_device_count=3'
  monkeypatch.delenv('XLA_FLAGS')
  assert bench_devices._child_env(1, 'cpu')['XLA_FLAGS'] == (
      '--xla_force_host_platform_device_count=1')


def test_devices_mode_finds_no_gpu_before_the_timed_run(monkeypatch, tmp_path):
  """--platform gpu without a GPU ran the whole benchmark on the CPU JAX fell back to (a minute
  or more) before saying so. The subprocess now stops before loading the data, which are missing
  here: a timed run would fail on them instead. (No GPU is visible to it on any machine.)"""
  monkeypatch.setenv('CUDA_VISIBLE_DEVICES', '')
  _, config = bench.row_config('vanilla_bce_mlp')
  config.data_path = str(tmp_path / 'missing')
  with pytest.raises(bench_devices.DeviceBenchError, match='asked for 1 gpu device.*the run had '
                     '1 cpu device.*: no GPU is available on this machine; use --platform cpu'):
    list(bench_devices.device_rows('vanilla_bce_mlp', config, [1], epochs=1, repeats=1,
                                   platform='gpu'))


@pytest.mark.parametrize('visible, devices, expected', [
    (None, 2, '0,1'), ('4,5,6,7', 2, '4,5'), ('GPU-a, GPU-b', 4, 'GPU-a,GPU-b'), ('', 1, ''),
    ('2,,3,', 2, '2,3'), (' , 6', 1, '6')])
def test_devices_mode_runs_on_the_first_gpus_of_those_the_user_allowed(monkeypatch, visible,
                                                                      devices, expected):
  """--platform gpu under CUDA_VISIBLE_DEVICES=4,5,6,7 (other jobs on GPUs 0-3) ran on GPUs 0
  and 1; too few listed GPUs leave the run with fewer, which the run's check then reports."""
  if visible is None:
    monkeypatch.delenv('CUDA_VISIBLE_DEVICES', raising=False)
  else:
    monkeypatch.setenv('CUDA_VISIBLE_DEVICES', visible)
  assert bench_devices._child_env(devices, 'gpu')['CUDA_VISIBLE_DEVICES'] == expected


@pytest.mark.parametrize('flag', [['--iters', '5'], ['--updates', '5'], ['--matmul_size', '8'],
                                  ['--no_matmul'], ['--stream_mib', '2'], ['--no_stream']])
def test_benchmark_flags_with_devices_are_refused(flag, capsys):
  assert bench.main(['--devices', '1', '--configs', 'vanilla_bce_mlp', *flag]) == 1
  err = capsys.readouterr().err
  assert err.startswith('error: ') and flag[0] in err and 'does not apply with --devices' in err


def test_devices_mode_reports_a_batch_the_devices_do_not_divide_before_timing(monkeypatch,
                                                                             capsys):
  monkeypatch.setattr(bench_devices, 'device_rows',
                      lambda *a, **k: pytest.fail('timed before the batch size was checked'))
  assert bench.main(['--devices', '1', '3', '--configs', 'vanilla_wgan_mlp', '--batch_size',
                     '256', '--epochs', '1']) == 1
  err = capsys.readouterr().err
  assert err.startswith('error: batch_size=256 must be a multiple of the number of devices, 3 '
                        '(the device count asked for)'), err


def test_devices_mode_refuses_a_batch_larger_than_the_training_set(small_design_dir):
  """It used to time epochs of no batch and end in a ZeroDivisionError traceback."""
  _, config = bench.row_config('vanilla_bce_mlp')
  config.data_path, config.batch_size = small_design_dir, 512  # 216 training designs
  with pytest.raises(bench.DesignGanError, match=r'batch_size=512 is larger than the training '
                     r'set \(216 designs\)'):
    bench_devices.measure(config, epochs=1)


def test_a_config_files_num_seeds_is_timed_unless_num_seeds_is_given(tmp_path, monkeypatch):
  """A sweep's config timed as one model would report the wrong thing without saying so."""
  config = tmp_path / 'sweep.py'
  config.write_text(TINY.replace('critic_iter=2', 'critic_iter=2, num_seeds=3'))
  timed = []
  monkeypatch.setattr(bench, 'bench_config', lambda name, c, **k: timed.append(k['num_seeds']))
  monkeypatch.setattr(bench, 'format_table', lambda *a, **k: 'row')
  args = ['--configs', str(config), 'vanilla_bce_mlp', '--no_matmul', '--no_stream']
  assert bench.main(args) == 0
  assert timed == [3, 1]
  timed.clear()
  assert bench.main(args + ['--num_seeds', '1', '2']) == 0
  assert timed == [1, 2, 1, 2]


def test_devices_mode_times_each_num_seeds_given_else_the_configs_own(tmp_path, monkeypatch):
  """`--devices 1 2 --num_seeds 1 8` times each device count for 1 and for 8 models; `--num_seeds 1`
  was refused with --devices (so was any --num_seeds), leaving a sweep's config untimeable as one
  model."""
  config = tmp_path / 'sweep.py'
  config.write_text(TINY.replace('critic_iter=2', 'critic_iter=2, num_seeds=3'))
  timed = []
  monkeypatch.setattr(bench_devices, 'device_rows',
                      lambda name, c, devices, **k: timed.append((name, c.num_seeds, devices))
                      or [])
  args = ['--devices', '1', '2', '--configs', str(config), 'vanilla_bce_mlp']
  assert bench.main(args) == 0
  assert timed == [('sweep x3 seeds', 3, [1, 2]), ('vanilla_bce_mlp', 1, [1, 2])]
  timed.clear()
  assert bench.main(args + ['--num_seeds', '1', '8']) == 0
  assert timed == [('sweep', 1, [1, 2]), ('sweep x8 seeds', 8, [1, 2]),
                   ('vanilla_bce_mlp', 1, [1, 2]), ('vanilla_bce_mlp x8 seeds', 8, [1, 2])]


def test_devices_mode_refuses_a_seed_too_large_for_the_sweep_before_timing(monkeypatch, capsys):
  monkeypatch.setattr(bench_devices, 'device_rows',
                      lambda *a, **k: pytest.fail('timed before the seeds were checked'))
  status = bench.main(['--devices', '1', '--configs', 'vanilla_bce_mlp', '--num_seeds', '1',
                       str(bench.config_lib.MAX_SEED)])
  assert status == 1
  assert capsys.readouterr().err.startswith('error: seed must be at most ')


def test_devices_mode_times_every_model_of_a_sweeps_config(small_design_dir):
  """It used to time one model of a num_seeds sweep's config (and count its samples only)."""
  _, config = bench.row_config('vanilla_bce_mlp')
  config.data_path, config.batch_size, config.num_seeds = small_design_dir, 64, 2
  config.gen_hidden_dims, config.disc_hidden_dims = (16,), (16,)
  row = bench_devices.measure(config, epochs=1)
  assert row['num_seeds'] == 2
  # 216 training designs: 3 batches of 64 per epoch, for each of the 2 models.
  assert row['samples_per_s'] * row['seconds_per_epoch'] == pytest.approx(2 * 3 * 64)


def test_devices_mode_times_the_epochs_asked_for_after_a_warm_up(small_design_dir,
                                                                  monkeypatch):
  """`epochs` epochs are timed, after one warm-up: seconds_per_epoch is their time over their
  count, so its product with samples_per_s is one epoch's samples."""
  _, config = bench.row_config('vanilla_bce_mlp')
  config.data_path, config.batch_size = small_design_dir, 64
  config.gen_hidden_dims, config.disc_hidden_dims = (16,), (16,)
  calls = []
  compile_epoch = bench_devices.step.compile_epoch

  def counted(*args, **kwargs):
    epoch = compile_epoch(*args, **kwargs)
    return lambda *a: calls.append(1) or epoch(*a)

  monkeypatch.setattr(bench_devices.step, 'compile_epoch', counted)
  row = bench_devices.measure(config, epochs=2)
  assert len(calls) == 1 + 2
  assert (row['num_seeds'], row['devices']) == (1, jax.device_count())
  # 216 training designs: 3 batches of 64 per epoch.
  assert row['samples_per_s'] * row['seconds_per_epoch'] == pytest.approx(3 * 64)


def test_devices_mode_starts_the_clock_once_the_warm_up_epoch_has_run(small_design_dir,
                                                                    monkeypatch):
  """JAX dispatches an epoch asynchronously: the warm-up's result is waited for before the timed
  epochs start, else their time would include the rest of the warm-up (its compilation too)."""
  _, config = bench.row_config('vanilla_bce_mlp')
  config.data_path, config.batch_size = small_design_dir, 64
  config.gen_hidden_dims, config.disc_hidden_dims = (16,), (16,)
  events = []

  class Pending:
    """An epoch's output, ready once waited for."""

    def block_until_ready(self):
      events.append('wait')
      return self

  def epoch(state, data):
    events.append('epoch')
    return Pending(), {}

  monkeypatch.setattr(bench_devices.step, 'compile_epoch', lambda *a, **k: epoch)
  bench_devices.measure(config, epochs=2)
  assert events == ['epoch', 'wait', 'epoch', 'epoch', 'wait'], events


def test_a_row_asked_for_twice_is_timed_once_in_the_order_first_given(tmp_path, monkeypatch):
  """`--configs vanilla_wgangp_mlp vanilla_wgangp_mlp` timed it twice: two rows of one name in
  the table and the JSON. So did a config named two ways, a repeated --num_seeds and, with
  --devices, a repeated device count."""
  timed = []
  monkeypatch.setattr(bench, 'bench_config',
                      lambda name, c, **k: timed.append((name, k['num_seeds'])))
  monkeypatch.setattr(bench, 'format_table', lambda *a, **k: 'row')
  assert bench.main(['--configs', 'vanilla_wgangp_mlp', 'default', 'vanilla_wgangp_mlp',
                     os.path.join(bench.CONFIG_DIR, 'default.py'), 'default.py',
                     '--num_seeds', '2', '1', '2', '--no_matmul', '--no_stream']) == 0
  assert timed == [('vanilla_wgangp_mlp', 2), ('vanilla_wgangp_mlp', 1), ('default', 2),
                   ('default', 1)]
  timed.clear()
  monkeypatch.setattr(bench_devices, 'device_rows',
                      lambda name, c, devices, **k: timed.append((name, devices)) or [])
  assert bench.main(['--devices', '1', '2', '1', '--configs', 'vanilla_bce_mlp',
                     'vanilla_bce_mlp', '--num_seeds', '1', '1']) == 0
  assert timed == [('vanilla_bce_mlp', [1, 2])]


def test_two_different_configs_of_one_row_name_are_refused_before_timing(tmp_path, monkeypatch,
                                                                         capsys):
  """a/tiny.py and b/tiny.py would be two rows named tiny: which is which?"""
  monkeypatch.setattr(bench, 'bench_config',
                      lambda *a, **k: pytest.fail('timed before the names were checked'))
  paths = []
  for folder, batch in (('a', 8), ('b', 16)):
    (tmp_path / folder).mkdir()
    paths.append(tmp_path / folder / 'tiny.py')
    paths[-1].write_text(TINY.replace('batch_size=8', f'batch_size={batch}'))
  assert bench.main(['--configs', *map(str, paths), '--no_matmul', '--no_stream']) == 1
  err = capsys.readouterr().err
  assert err.startswith('error: ') and err.count('\n') == 1, err
  assert f'{paths[0]} and {paths[1]}' in err and "row name 'tiny'" in err, err


def test_rows_printed_as_they_are_timed_have_a_header_and_the_final_tables_columns(monkeypatch,
                                                                                   capsys):
  """The rows on stderr came without a header, each as wide as its own cells: no two lined up,
  nor with the final table. Now a header first, then the final table's lines (less the
  roofline shares, not known until the last sample)."""
  def timed(name, config, **kwargs):
    c = bench.config_lib.resolve(config)
    rate = 12345.6 if c.gen_mode == 'mlp' else 7.5
    return dict(name=name, gan_model=c.gan_model, loss_mode=c.loss_mode, gen_mode=c.gen_mode,
                disc_mode=c.disc_mode, batch_size=c.batch_size, samples_per_s=rate * 256,
                iters_per_s=rate, gflops_per_s=rate / 10, net_gflops_per_s=rate / 10,
                gb_per_s=rate / 100, compile_s=1.5)

  monkeypatch.setattr(bench, 'bench_config', timed)
  assert bench.main(['--configs', 'vanilla_bce_mlp', 'infogan_wgangp_selfattention', '--iters',
                     '1', '--matmul_size', '8', '--stream_mib', '0.001']) == 0
  out, err = capsys.readouterr()
  table, progress = out.splitlines(), err.splitlines()
  assert [line.split()[0] for line in table] == [
      'name', 'matmul', 'stream', 'vanilla_bce_mlp', 'infogan_wgangp_selfattention'], out
  assert len(progress) == 3, err
  for line, final in zip(progress, table[:1] + table[3:]):
    assert final.startswith(line + '  '), (line, final)  # then the roofline_% and stream_%


def test_devices_rows_printed_as_they_are_timed_have_a_header_and_the_final_tables_columns(
    tmp_path, monkeypatch, capsys):
  """With --devices the rows on stderr came without a header, and neither they nor the final
  table lined up (cells joined by two spaces). Now the stderr lines are the final table's, the
  header with the first row, in aligned columns: text left, numbers right. The cells and the
  JSON are as before."""
  def measured(name, config, devices, *, epochs, platform):
    samples = 95.25 if devices == 1 else 123456.7 * config.num_seeds
    return dict(devices=devices, platform=platform, num_seeds=config.num_seeds,
                samples_per_s=samples, seconds_per_epoch=1000 / samples, warmup_s=2.5 * devices)

  monkeypatch.setattr(bench_devices, '_measure_in_subprocess', measured)
  out_json = tmp_path / 'devices.json'
  assert bench.main(['--devices', '1', '2', '--configs', 'vanilla_bce_mlp', '--num_seeds', '1',
                     '2', '--repeats', '2', '--json', str(out_json)]) == 0
  out, err = capsys.readouterr()
  assert err.splitlines() == out.splitlines(), (out, err)
  spans = [[(m.start(), m.end(), m.group()) for m in re.finditer(r'\S+(?: \S+)*', line)]
           for line in out.splitlines()]
  assert [[text for _, _, text in line] for line in spans] == [
      ['config', 'devices', 'samples/s', 's/epoch', 'speed-up', 'warm-up s', 'runs (samples/s)'],
      ['vanilla_bce_mlp', '1', '95', '10.50', '1.00x', '2.5', '[95.2, 95.2]'],
      ['vanilla_bce_mlp', '2', '123457', '0.01', '1296.13x', '5.0', '[123456.7, 123456.7]'],
      ['vanilla_bce_mlp x2 seeds', '1', '95', '10.50', '1.00x', '2.5', '[95.2, 95.2]'],
      ['vanilla_bce_mlp x2 seeds', '2', '246913', '0.00', '2592.27x', '5.0',
       '[246913.4, 246913.4]']], out
  for column in range(7):  # config and runs start, the numbers end, in one place on every line
    edge = 0 if column in (0, 6) else 1
    assert len({line[column][edge] for line in spans}) == 1, (column, out)
  rows = json.loads(out_json.read_text())['rows']
  assert [list(r) for r in rows] == 4 * [['devices', 'platform', 'num_seeds', 'samples_per_s',
                                          'seconds_per_epoch', 'warmup_s', 'name',
                                          'all_samples_per_s', 'speed_up']]
  assert [(r['name'], r['devices'], r['speed_up']) for r in rows] == [
      ('vanilla_bce_mlp', 1, 1.0), ('vanilla_bce_mlp', 2, 123456.7 / 95.25),
      ('vanilla_bce_mlp x2 seeds', 1, 1.0), ('vanilla_bce_mlp x2 seeds', 2, 2 * 123456.7 / 95.25)]


@pytest.mark.parametrize('name', ['matmul', 'stream'])
def test_a_config_named_as_a_reference_row_is_refused_before_timing(name, tmp_path, monkeypatch,
                                                                     capsys):
  """A config file matmul.py or stream.py gave a row of the reference row's name: two rows the
  table and the JSON could not tell apart, and with --no_matmul / --no_stream the config's row
  was taken for the roofline that the others' roofline_% / stream_% are shares of."""
  monkeypatch.setattr(bench, 'bench_config',
                      lambda *a, **k: pytest.fail('timed before the names were checked'))
  config = tmp_path / f'{name}.py'
  config.write_text(TINY)
  assert bench.main(['--configs', str(config), f'--no_{name}']) == 1
  err = capsys.readouterr().err
  assert err.startswith('error: ') and err.count('\n') == 1, err
  assert f"row name {name!r}" in err and str(config) in err, err
  # With --devices there are no reference rows: the name is free.
  monkeypatch.setattr(bench_devices, 'device_rows', lambda *a, **k: [])
  assert bench.main(['--devices', '1', '--configs', str(config)]) == 0, capsys.readouterr().err


def test_a_config_whose_struts_the_benchmark_layout_drops_is_refused_before_timing(
    tmp_path, monkeypatch, capsys):
  """The rows are timed on the training layout (datashape=dropempty keeps columns 0-5, 10-15,
  20-21): a config file with a strut in a dropped column loaded, and failed with a LayoutError
  only when its row came, after every row before it had been timed (and no --json written)."""
  monkeypatch.setattr(bench, 'bench_config',
                      lambda *a, **k: pytest.fail('timed before every config was checked'))
  config = tmp_path / 'tiny.py'
  config.write_text(TINY.replace('critic_iter=2', "critic_iter=2, strut_positions='7,11;5,7'"))
  assert bench.main(['--configs', 'vanilla_bce_mlp', str(config), '--no_matmul',
                     '--no_stream']) == 1
  err = capsys.readouterr().err
  assert err.startswith(f'error: --configs {config}: strut pixel (row 5, col 7) falls in '
                        'column 7') and err.count('\n') == 1, err


def test_benchmark_jitted_reports_rates_over_the_median_timed_call_after_the_warm_up(
    monkeypatch):
  """On a fake clock: compiling takes 5 s (3 s of CPU), the warm-up call 100 s (untimed), the
  three timed calls 1, 2 and 6 s. Every rate is over their median, 2 s (the mean is 3 s), and
  the state is threaded from each call to the next."""
  clock, cpu, durations, states, lowered = [0.0], [0.0], [100.0, 1.0, 2.0, 6.0], [], []

  def compiled(state, batches):
    states.append((state, batches))
    clock[0] += durations.pop(0)
    return state + 1, 'metrics'

  def compile_():
    clock[0], cpu[0] = clock[0] + 5.0, cpu[0] + 3.0
    return compiled

  fn = types.SimpleNamespace(
      lower=lambda *args: lowered.append(args) or types.SimpleNamespace(compile=compile_))
  monkeypatch.setattr(bench, 'time', types.SimpleNamespace(perf_counter=lambda: clock[0],
                                                           process_time=lambda: cpu[0]))
  timing = bench.benchmark_jitted(fn, 0, ('batches',), samples_per_call=96, updates_per_call=12,
                                  flops_per_call=4e9, bytes_per_call=8e9, iters=3)
  assert lowered == [(0, 'batches')] and durations == []
  assert states == [(0, 'batches'), (1, 'batches'), (2, 'batches'), (3, 'batches')]
  assert timing == dict(samples_per_s=48.0, iters_per_s=6.0, gflops_per_s=2.0, gb_per_s=4.0,
                        compile_s=5.0, compile_cpu_s=3.0, seconds_per_call=[1.0, 2.0, 6.0])


def _fake_row_costs(monkeypatch, timed):
  """bench_config with the models' building, the cost analysis and the timing stubbed: an update
  costs 5 GFLOP and moves 7 GB, 4 GFLOP of them the networks' (without dropout); the timing
  (its keyword arguments appended to `timed`) reports 10 GFLOP/s."""
  monkeypatch.setattr(bench.step, 'init', lambda *a: (None, None))
  monkeypatch.setattr(bench.step, 'init_sweep', lambda *a: (None, None))
  monkeypatch.setattr(bench.step, 'abstract_init', lambda *a: (None, None))
  monkeypatch.setattr(bench, 'update_cost', lambda *a: np.array([5e9, 7e9]))
  monkeypatch.setattr(bench, 'network_flops', lambda *a: timed.append('network_flops') or 4e9)
  monkeypatch.setattr(bench, 'benchmark_jitted', lambda fn, state, args, **k: timed.append(k) or
                      dict(samples_per_s=1.0, iters_per_s=1.0, gflops_per_s=10.0, gb_per_s=1.0,
                           compile_s=1.0, compile_cpu_s=1.0, seconds_per_call=[1.0]))


@pytest.mark.parametrize('num_seeds', [1, 3])
@pytest.mark.parametrize('gen_dropout, disc_dropout', [(0.0, 0.0), (0.25, 0.0), (0.0, 0.25)])
def test_a_rows_counts_are_of_every_update_of_every_model(num_seeds, gen_dropout, disc_dropout,
                                                          monkeypatch):
  """One timed call is `--updates` updates of each of num_seeds models on batch_size designs:
  its samples, updates, flops and bytes count all of them, the per-update columns one. The
  networks' share of the flops (net_gflops_per_s) is counted when either network has dropout."""
  timed = []
  _fake_row_costs(monkeypatch, timed)
  _, config = bench.row_config('vanilla_wgan_mlp')
  config.update(dict(batch_size=4, gen_dropout=gen_dropout, disc_dropout=disc_dropout))
  row = bench.bench_config('vanilla_wgan_mlp', config, iters=3, updates=2, num_seeds=num_seeds)
  dropout = gen_dropout or disc_dropout
  assert timed == ['network_flops'] * bool(dropout) + [dict(
      samples_per_call=2 * 4 * num_seeds, updates_per_call=2 * num_seeds,
      flops_per_call=5e9 * 2 * num_seeds, bytes_per_call=7e9 * 2 * num_seeds, iters=3)]
  assert row['gflop_per_update'] == pytest.approx(5.0)
  assert row['gb_per_update'] == pytest.approx(7.0)
  assert row['net_gflops_per_s'] == pytest.approx(10.0 * 4 / 5 if dropout else 10.0)
  assert (row['name'], row['num_seeds'], row['batch_size']) == (
      bench.row_name('vanilla_wgan_mlp', num_seeds), num_seeds, 4)


def test_the_cost_of_an_update_is_critic_iter_critic_steps_and_one_generator_step(monkeypatch):
  """With the steps' costs stubbed: [flops, bytes] = critic_iter x critic's + generator's, each
  compiled from the state, the batch and a key."""
  # A step returns (state, metrics); the cost is of the whole step, compiled for its state.
  monkeypatch.setattr(bench.step, 'critic_step', lambda c, m, s, b, k: (('critic', s, b, k), {}))
  monkeypatch.setattr(bench.step, 'generator_step',
                      lambda c, m, s, b, k: (('generator', s, b, k), {}))

  def cost(fn, *args):
    part, state, batch, key = fn(*args)
    assert (state, batch, key.shape) == ('state', 'batch', (2,))
    return np.array({'critic': [3.0, 30.0], 'generator': [1.0, 1000.0]}[part])

  monkeypatch.setattr(bench, 'compiled_cost', cost)
  config = types.SimpleNamespace(critic_iter=5)
  np.testing.assert_array_equal(bench.update_cost(config, None, 'state', 'batch'),
                                [16.0, 1150.0])


def _fake_samples(monkeypatch, samples):
  """benchmark_jitted stubbed for the reference rows: each call returns the next of `samples`,
  (compile_s, seconds_per_call), and appends its fn, args and keyword arguments to `calls`."""
  calls = []

  def timed(fn, state, args, **kwargs):
    calls.append((fn, args, kwargs))
    compile_s, seconds = samples.pop(0)
    return dict(compile_s=compile_s, seconds_per_call=seconds)

  monkeypatch.setattr(bench, 'benchmark_jitted', timed)
  return calls


def test_a_reference_row_is_the_median_of_all_its_samples(monkeypatch):
  """`matmul` (2 N^3 flops a call) sampled twice, calls of 1 and 3 s, then 2 and 9 s: its rate is
  over the median of all four, 2.5 s (not the last sample's 5.5 s nor the mean, 3.75 s); its
  compile_s is the first sample's (the second found it compiled)."""
  calls = _fake_samples(monkeypatch, [(7.0, [1.0, 3.0]), (0.1, [2.0, 9.0])])
  row = bench.matmul_row(4)
  row.sample(2)
  row.sample(2)
  assert [c[2]['iters'] for c in calls] == [2, 2]
  assert [a.shape for a in calls[0][1]] == [(4, 4), (4, 4)]
  assert row.row() == dict(
      name='matmul', gan_model=None, loss_mode=None, gen_mode=None, disc_mode=None,
      batch_size=None, samples_per_s=None, iters_per_s=None, gflops_per_s=2 * 4**3 / 2.5 / 1e9,
      net_gflops_per_s=None, gb_per_s=None, compile_s=7.0, seconds_per_call=[1.0, 3.0, 2.0, 9.0],
      matmul_size=4)


def test_the_stream_row_counts_two_arrays_read_and_one_written_per_repeat(monkeypatch):
  """`stream` of 1 MiB arrays (2^18 float32), 10 repeats a call: 3 x 1 MiB x 10 a call."""
  calls = _fake_samples(monkeypatch, [(1.0, [2.0])])
  row = bench.stream_row(1.0, repeats=10)
  row.sample(1)
  assert [a.shape for a in calls[0][1]] == [(2**18,), (2**18,)]
  result = row.row()
  assert result['gb_per_s'] == 3 * 2**20 * 10 / 2.0 / 1e9 and result['gflops_per_s'] is None
  assert result['stream_mib'] == 1.0
  # The kernel is x <- x * a + y, `repeats` times.
  x, y = calls[0][1]
  _, out = calls[0][0](0, x, y)
  expected = x
  for _ in range(10):
    expected = expected * 0.5 + y
  np.testing.assert_allclose(out, expected, rtol=1e-6)


def test_the_cli_samples_the_references_around_every_row_and_writes_every_row_to_json(
    tmp_path, monkeypatch, capsys):
  """Each reference row is sampled before every configuration row and after the last, under the
  same load as the rows; --batch_size replaces every config's; the JSON has the reference rows
  first, then the configurations' in the order given, and what the run was asked."""
  events = []

  def timed(name, config, *, iters, updates, num_seeds):
    events.append(name)
    return dict(bench.row_columns(name, bench.config_lib.resolve(config), num_seeds),
                samples_per_s=8.0, iters_per_s=1.0, gflops_per_s=50.0, net_gflops_per_s=50.0,
                gb_per_s=5.0, compile_s=1.0, iters=iters, updates=updates)

  def sampled(fn, state, args, **kwargs):
    events.append('matmul' if len(args[0].shape) == 2 else 'stream')
    return dict(compile_s=1.0, seconds_per_call=kwargs['iters'] * [1.0])

  monkeypatch.setattr(bench, 'bench_config', timed)
  monkeypatch.setattr(bench, 'benchmark_jitted', sampled)
  out = tmp_path / 'rows.json'
  assert bench.main(['--configs', 'vanilla_wgan_mlp', 'vanilla_bce_selfattention', '--iters', '2',
                     '--updates', '3', '--batch_size', '16', '--matmul_size', '8',
                     '--stream_mib', '0.001', '--json', str(out)]) == 0
  assert events == ['matmul', 'stream', 'vanilla_wgan_mlp', 'matmul', 'stream',
                    'vanilla_bce_selfattention', 'matmul', 'stream']
  written = json.loads(out.read_text())
  assert written['meta']['iters'] == 2 and written['meta']['updates_per_call'] == 3
  rows = written['rows']
  assert [r['name'] for r in rows] == ['matmul', 'stream', 'vanilla_wgan_mlp',
                                       'vanilla_bce_selfattention']
  assert [len(r['seconds_per_call']) for r in rows[:2]] == [6, 6]
  assert [(r['batch_size'], r['iters'], r['updates']) for r in rows[2:]] == 2 * [(16, 2, 3)]
  table = capsys.readouterr().out.splitlines()
  assert [line.split()[0] for line in table] == ['name'] + [r['name'] for r in rows]


def test_the_default_rows_are_the_combinations_and_the_presets_or_with_devices_default(
    monkeypatch):
  timed = []
  monkeypatch.setattr(bench, 'bench_config', lambda name, c, **k: timed.append(name))
  monkeypatch.setattr(bench, 'format_table', lambda *a, **k: 'rows')
  assert bench.main(['--no_matmul', '--no_stream']) == 0
  assert timed == list(bench.config_lib.COMBINATIONS) + ['original_vanilla_wgangp']
  assert len(timed) == 13 and len(set(timed)) == 13
  timed.clear()
  monkeypatch.setattr(bench_devices, 'device_rows', lambda name, *a, **k: timed.append(name) or [])
  assert bench.main(['--devices', '1']) == 0
  assert timed == ['default']


@pytest.mark.parametrize('flags', [['--iters', '0'], ['--updates', '0'], ['--matmul_size', '0'],
                                   ['--num_seeds', '2', '0'], ['--batch_size', '-1']])
def test_a_count_that_is_not_positive_is_one_error_line_before_timing(flags, monkeypatch,
                                                                      capsys):
  for name in ('bench_config', 'matmul_row', 'stream_row'):
    monkeypatch.setattr(bench, name, lambda *a, **k: pytest.fail('timed a count < 1'))
  assert bench.main(['--configs', 'vanilla_bce_mlp', *flags]) == 1
  err = capsys.readouterr().err
  assert err.startswith('error: ') and err.count('\n') == 1 and flags[0] in err, err
  assert 'must be positive' in err, err


def test_an_unwritable_json_path_is_one_error_line_before_timing(tmp_path, monkeypatch, capsys):
  """Found only when the rows were to be written, it cost every row's timing."""
  for name in ('bench_config', 'matmul_row', 'stream_row'):
    monkeypatch.setattr(bench, name, lambda *a, **k: pytest.fail('timed before --json checked'))
  out = tmp_path / 'missing' / 'rows.json'
  assert bench.main(['--configs', 'vanilla_bce_mlp', '--json', str(out)]) == 1
  err = capsys.readouterr().err
  assert err.startswith('error: --json ') and err.count('\n') == 1 and 'does not exist' in err
  assert not os.path.exists(out)


def test_devices_mode_refuses_a_device_count_below_one_before_timing(monkeypatch, capsys):
  monkeypatch.setattr(bench_devices, 'device_rows',
                      lambda *a, **k: pytest.fail('timed a device count < 1'))
  assert bench.main(['--devices', '0', '2', '--configs', 'vanilla_bce_mlp']) == 1
  err = capsys.readouterr().err
  assert err == 'error: --devices, --epochs and --repeats must be positive\n', err


def test_the_table_shows_each_rows_share_of_the_matmul_and_stream_rooflines():
  """roofline_% is a row's GFLOP/s over the matmul row's, stream_% its GB/s over the stream
  row's, in percent; numbers of 10 and more have one decimal and thousands separators, smaller
  ones two decimals; the name is left-aligned, the other columns right-aligned."""
  rows = [dict(name='matmul', gflops_per_s=200.0, compile_s=0.5),
          dict(name='stream', gb_per_s=50.0, compile_s=0.25),
          dict(bench.row_columns('tiny', bench.config_lib.resolve(bench.row_config(
              'vanilla_wgangp_mlp')[1]), 2), samples_per_s=12345.6, iters_per_s=10.0,
               gflops_per_s=50.0, net_gflops_per_s=40.0, gb_per_s=5.0, compile_s=9.994)]
  lines = bench.format_table(rows).splitlines()
  spans = [[(m.start(), m.end(), m.group()) for m in re.finditer(r'\S+(?: \S+)*', line)]
           for line in lines]
  assert [[text for _, _, text in line] for line in spans] == [
      list(bench.COLUMNS) + ['roofline_%', 'stream_%'],
      ['matmul'] + 7 * ['-'] + ['200.0', '-', '-', '0.50', '100', '-'],
      ['stream'] + 9 * ['-'] + ['50.0', '0.25', '-', '100'],
      ['tiny x2 seeds', 'vanilla', 'wgangp', 'mlp', 'mlp', '256', '12,345.6', '10.0', '50.0',
       '40.0', '5.00', '9.99', '25', '10']], lines
  for column in range(len(spans[0])):  # the name starts, the others end, in one place
    edge = 0 if column == 0 else 1
    assert len({line[column][edge] for line in spans}) == 1, (column, lines)
