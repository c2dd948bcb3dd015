"""Data-parallel and multi-process training (gan/parallel.py, train.py's distributed flags).

A process's device count is fixed when JAX starts, so every run here is a subprocess
(tests/parallel_worker.py, which trains like train.py and saves the final TrainState): CPU
devices multiplied with XLA_FLAGS=--xla_force_host_platform_device_count, and two processes
joined over 127.0.0.1 with gloo CPU collectives. Compilation uses
JAX_DISABLE_MOST_OPTIMIZATIONS and a persistent compilation cache shared by the runs, for speed
(in every run alike, so results stay comparable).
"""

import json
import os
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from gan import parallel
from gan.errors import ConfigError

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKER = os.path.join(REPO_ROOT, 'tests', 'parallel_worker.py')
TIMEOUT_S = 240
# LayerNorm generator with dropout, WGAN-GP: every parameter gets a real gradient (see the
# BatchNorm test for why that matters), and dropout/noise keys must not depend on the sharding.
# Constant learning rates: with the default's lr decay the scaled Adam steps round differently
# on 4 devices; the runs still agree to 6e-8 after one epoch, but in the second an element with
# a near-zero gradient takes the other sign (the exception `assert_states_close` describes), and
# from then on every gradient, so every Adam moment, differs by a few per cent.
MATCHING = dict(epochs=3, eval_every=0, gen_dropout=0.1, lr_decay_steps=0)
LEARNING_RATE = 2e-4  # configs/default.py, both networks


def _env(devices: int) -> dict:
  # The session's private DESIGNGAN_CACHE and its compilation cache (conftest: runs with the same
  # device layout reuse each other's executables) are inherited through os.environ.
  return dict(os.environ, JAX_PLATFORMS='cpu', JAX_DISABLE_MOST_OPTIMIZATIONS='1',
              XLA_FLAGS=f'--xla_force_host_platform_device_count={devices}')


def _command(devices, overrides, data, log, out, distributed=()):
  return ([sys.executable, WORKER, f'--devices={devices}', f'--overrides={json.dumps(overrides)}',
           f'--data={data}', f'--log={log}', f'--out={out}'] + list(distributed))


def run_all(commands: list) -> list:
  """Runs the (command, devices) pairs at once; returns each one's JSON summary line.

  Concurrent because the processes of a distributed run must meet; a failure, or a process that
  does not finish in TIMEOUT_S, ends them all and fails the test with every stderr.
  """
  procs = [subprocess.Popen(cmd, cwd=REPO_ROOT, env=_env(devices), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True) for cmd, devices in commands]
  outputs, failed = [], False
  for proc in procs:
    try:
      out, err = proc.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
      for other in procs:
        other.kill()
      out, err = proc.communicate()
      failed = True
    outputs.append((proc.returncode, out, err))
    failed |= proc.returncode != 0
  if failed:
    report = '\n'.join(f'--- process {i}: rc {rc}\n{err[-4000:]}'
                       for i, (rc, _, err) in enumerate(outputs))
    pytest.fail(f'a training subprocess failed or timed out:\n{report}')
  return [json.loads(out.strip().splitlines()[-1]) for _, out, _ in outputs]


def load(path: str) -> dict:
  with np.load(path) as f:
    return {k: f[k] for k in f.files}


def assert_states_close(a: dict, b: dict, rtol: float = 1e-4):
  """Same leaves; integers (step, PRNG key) equal; floats equal up to summation order.

  Tight: within rtol of the leaf's largest magnitude. Adam allows rare exceptions: an element
  whose gradient is about 0 in an early step takes its sign from rounding noise, and Adam turns
  that into a learning-rate-sized step that never washes out. So at most 0.1% of the elements
  (at least 1) may be off by at most 5 learning rates. Data parallelism done wrong (per-device
  gradients or statistics, other batches or noise) moves most elements.
  """
  assert a.keys() == b.keys()
  outliers, total = [], 0
  for key in a:
    x, y = a[key], b[key]
    assert x.dtype == y.dtype and x.shape == y.shape, key
    if x.dtype.kind != 'f':
      np.testing.assert_array_equal(x, y, err_msg=key)
      continue
    if not x.size:
      continue
    scale = float(np.abs(x).max())
    diff = np.abs(x.astype(np.float64) - y)
    total += x.size
    off = int(np.sum(diff > rtol * scale + 1e-9))
    if off:
      outliers.append((key, off, float(diff.max()), scale))
    assert diff.max() <= rtol * scale + 5 * LEARNING_RATE, (key, float(diff.max()), scale)
  count = sum(o[1] for o in outliers)
  assert count <= max(1, total // 1000), f'{count} of {total} elements differ: {outliers}'


def assert_states_equal(a: dict, b: dict):
  assert a.keys() == b.keys()
  for key in a:
    np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


@pytest.fixture(scope='module')
def one_device_run(small_design_dir, tmp_path_factory):
  """MATCHING on one CPU device: the reference of the data-parallel runs (final state)."""
  tmp = tmp_path_factory.mktemp('one_device')
  out = str(tmp / 'state.npz')
  run_all([(_command(1, MATCHING, small_design_dir, tmp / 'run', out), 1)])
  return load(out)


# ---------------------------------------------------------------------------------------------
# One process, four devices


@pytest.mark.slow
def test_four_devices_give_the_one_device_parameters(one_device_run, small_design_dir, tmp_path):
  """Same global batches, the update split over 4 devices: every parameter, optimiser moment and
  the PRNG key after 3 epochs equal the one-device run's (to float summation order)."""
  out = str(tmp_path / 'state.npz')
  [summary] = run_all([(_command(4, MATCHING, small_design_dir, tmp_path / 'run', out), 4)])
  assert summary['devices'] == 4
  assert_states_close(load(out), one_device_run)
  log = (tmp_path / 'run' / 'log_summary').read_text()
  assert 'Training on 4 cpu devices, data parallel' in log


@pytest.mark.slow
def test_batchnorm_uses_global_batch_statistics(small_design_dir, tmp_path):
  """With a BatchNorm generator the 4-device losses equal the one-device ones, which per-device
  statistics (8 examples each) would not give; so do the critic's parameters.

  The generator's pre-BatchNorm biases are not compared: BatchNorm cancels them, so their exact
  gradient is 0 and what they get is float rounding noise, which Adam scales up to full
  learning-rate steps (with any device count; two GPUs would differ alike).
  """
  overrides = dict(MATCHING, epochs=1, gen_norm='batch')
  outs = [str(tmp_path / f'{d}.npz') for d in (1, 4)]
  one, four = run_all([(_command(d, overrides, small_design_dir, tmp_path / f'run{d}', out), d)
                       for d, out in zip((1, 4), outs)])
  for name, value in one['metrics'].items():
    assert four['metrics'][name] == pytest.approx(value, rel=1e-4, abs=1e-5), name
  critic = lambda state: {k: v for k, v in state.items() if k.startswith("['critic_")}
  assert_states_close(critic(load(outs[1])), critic(load(outs[0])))


# What the four-device test run prints: how gan.parallel places rows, a state and a restore
# target on the mesh, and what it says about the mesh.
_PLACEMENT = '''
import json
import jax
import numpy as np
from gan import parallel
from gan.errors import ConfigError
mesh = parallel.make_mesh()
rows, n = parallel.shard_rows(mesh, {'x': np.arange(20, dtype=np.float32).reshape(10, 2),
                                     'y': np.arange(1, 11, dtype=np.int32)})
state = parallel.replicate(mesh, {'w': np.ones((3, 5), np.float32)})
target = parallel.replicated_like(mesh, {'w': jax.ShapeDtypeStruct((3, 5), np.float32)})
options = parallel.epoch_options(mesh, n)
try:
  parallel.check_batch_size(30)
except ConfigError as e:
  refusal = str(e)
print(json.dumps(dict(
    n=n, x=np.asarray(rows['x']).tolist(), y=np.asarray(rows['y']).tolist(),
    y_dtype=str(rows['y'].dtype),
    row_shards=sorted([s.index[0].start, s.index[0].stop] for s in rows['x'].addressable_shards),
    w_shards=[list(s.data.shape) for s in state['w'].addressable_shards],
    w_replicated=state['w'].sharding.is_fully_replicated,
    target=[target['w'].sharding.is_fully_replicated, len(target['w'].sharding.device_set)],
    options=sorted(options), num_rows=options['num_rows'],
    specs=[list(options[k].spec) for k in ('batch_sharding', 'out_sharding')],
    describe=parallel.describe(mesh), refusal=refusal)))
'''


def test_four_devices_get_a_quarter_of_the_padded_rows_and_a_whole_state_each():
  """On 4 CPU devices (a subprocess, in seconds): 10 rows are padded with zeros to 12 and split
  3 to a device; the state and a restore target are whole on every device; the epoch options
  carry the real row count and split batches; the log line and a refusal name the 4 devices."""
  proc = subprocess.run([sys.executable, '-c', _PLACEMENT], cwd=REPO_ROOT, env=_env(4),
                        capture_output=True, text=True, timeout=TIMEOUT_S)
  assert proc.returncode == 0, proc.stderr
  got = json.loads(proc.stdout.strip().splitlines()[-1])
  assert got['n'] == 10 and got['num_rows'] == 10
  assert got['x'] == [[2 * i, 2 * i + 1] for i in range(10)] + [[0, 0]] * 2
  assert got['y'] == list(range(1, 11)) + [0, 0] and got['y_dtype'] == 'int32'
  assert got['row_shards'] == [[0, 3], [3, 6], [6, 9], [9, 12]]
  assert got['w_shards'] == [[3, 5]] * 4 and got['w_replicated']
  assert got['target'] == [True, 4]
  assert got['options'] == ['batch_sharding', 'num_rows', 'out_sharding']
  assert got['specs'] == [['data'], []]
  assert got['describe'] == '4 cpu devices, data parallel (1 process(es) x 4 local device(s))'
  assert 'number of devices, 4 (all local devices)' in got['refusal'], got['refusal']


def test_on_one_device_nothing_is_placed_sharded_or_gathered():
  """A single-device run computes as without a mesh: its trees come back as they went in, rows
  unpadded, no epoch options, a restore target on the default device; the multi-process helpers
  return their input."""
  mesh = jax.sharding.Mesh(np.asarray(jax.devices()[:1]), (parallel.AXIS,))
  tree = {'w': np.ones((3, 5), np.float32)}
  assert parallel.replicate(mesh, tree) is tree
  rows, n = parallel.shard_rows(mesh, {'x': np.arange(5, dtype=np.float32)})
  assert n == 5 and rows['x'].shape == (5,)
  assert parallel.epoch_options(mesh, n) == {}
  target = parallel.replicated_like(mesh, {'w': jax.ShapeDtypeStruct((3, 5), np.float32)})
  assert target['w'].sharding == jax.sharding.SingleDeviceSharding(jax.devices()[0])
  assert parallel.describe(mesh) == f'1 device ({jax.devices()[0].platform})'
  assert parallel.is_main() and parallel.host_local(tree) is tree
  assert parallel.broadcast_from_main(2.5) == 2.5 and parallel.max_over_processes(3) == 3


def _train_py(devices: int, data_path, log_path, *flags) -> subprocess.CompletedProcess:
  """train.py on `devices` CPU devices, the default config with `flags` on top."""
  return subprocess.run(
      [sys.executable, 'train.py', '--config=configs/default.py', f'--config.data_path={data_path}',
       f'--config.log_path={log_path}', *flags], cwd=REPO_ROOT, env=_env(devices),
      capture_output=True, text=True, timeout=TIMEOUT_S)


def test_batch_size_the_device_count_does_not_divide_is_refused(small_design_dir, tmp_path):
  """One `error:` line naming the device count and batch sizes that work; nothing compiled."""
  proc = _train_py(4, small_design_dir, tmp_path / 'run', '--config.batch_size=30')
  assert proc.returncode == 1, proc.stderr
  assert 'Traceback' not in proc.stderr, proc.stderr
  errors = [line for line in proc.stderr.splitlines() if line.startswith('error: ')]
  assert len(errors) == 1, proc.stderr
  assert 'batch_size=30' in errors[0] and 'number of devices, 4' in errors[0]
  assert 'batch_size 28, 32' in errors[0]
  assert not os.path.exists(tmp_path / 'run' / 'checkpoints')


def test_resuming_on_a_device_count_the_batch_size_does_not_divide_names_device_counts(
    small_design_dir, tmp_path):
  """A run with checkpoints keeps its batch_size (resume refuses another), so the error names
  the device counts it can resume on, not batch sizes that would then be refused."""
  run = tmp_path / 'run'
  (run / 'checkpoints' / '2').mkdir(parents=True)  # what makes it a resume; read only later
  proc = _train_py(3, small_design_dir, run, '--config.batch_size=32')
  assert proc.returncode == 1, proc.stderr
  errors = [line for line in proc.stderr.splitlines() if line.startswith('error: ')]
  assert len(errors) == 1, proc.stderr
  assert 'batch_size=32' in errors[0] and 'number of devices, 3' in errors[0]
  assert 'device count that divides 32 (1, 2, 4, 8, 16, 32)' in errors[0], errors[0]
  assert 'use e.g. batch_size' not in errors[0], errors[0]
  assert sorted(os.listdir(run)) == ['checkpoints']
  # Resumed with another batch_size: that is the error (it named 32's divisors, where the run's
  # batch_size, which resuming keeps, was 30).
  tiny = ('--config.gen_hidden_dims=(32,)', '--config.disc_hidden_dims=(32,)',
          '--config.eval_every=0')
  trained = _train_py(1, small_design_dir, tmp_path / 'other', '--config.epochs=1',
                      '--config.batch_size=30', *tiny)
  assert trained.returncode == 0, trained.stderr
  proc = _train_py(3, small_design_dir, tmp_path / 'other', '--config.epochs=2',
                   '--config.batch_size=32', *tiny)
  assert proc.returncode == 1 and 'cannot change on resume (batch_size: 30 -> 32)' in proc.stderr


def test_check_batch_size_message():
  parallel.check_batch_size(32, num_devices=4)
  with pytest.raises(ConfigError, match=r'batch_size=6 .* 4 \(the device count asked for\), .*'
                     r'batch_size 4, 8'):
    parallel.check_batch_size(6, num_devices=4)
  with pytest.raises(ConfigError, match=r'batch_size 8$'):
    parallel.check_batch_size(3, num_devices=8)
  with pytest.raises(ConfigError, match=r'divides 6 \(1, 2, 3, 6\), or train another'):
    parallel.check_batch_size(6, num_devices=4, resuming=True)


# ---------------------------------------------------------------------------------------------
# Two processes


@pytest.mark.slow
def test_two_processes_agree_checkpoint_and_resume(one_device_run, small_design_dir, tmp_path):
  """2 processes x 2 CPU devices on 127.0.0.1: a run of 3 epochs that process 1 alone asks to
  stop after epoch 2 (as on a Ctrl-C) stops on both, checkpointed; the same command resumes from
  that checkpoint to epoch 3 (with the evaluation, whose best checkpoint all processes write).
  Both processes hold the same state, and it is the uninterrupted one-device run's."""
  run = tmp_path / 'run'

  def train(eval_every: int, stop_process_1_at: int = 0) -> list:
    port = free_port()
    overrides = dict(MATCHING, epochs=3, eval_every=eval_every)
    outs = [str(tmp_path / f'stop{stop_process_1_at}_p{i}.npz') for i in range(2)]
    summaries = run_all([(_command(2, overrides, small_design_dir, run, outs[i], [
        f'--coordinator_address=127.0.0.1:{port}', '--num_processes=2', f'--process_id={i}',
        f'--stop_at_epoch={stop_process_1_at if i == 1 else 0}']), 2) for i in range(2)])
    assert [s['process'] for s in summaries] == [0, 1]
    assert all(s['devices'] == 4 for s in summaries)
    states = [load(out) for out in outs]
    assert_states_equal(states[0], states[1])
    return summaries, states[0]

  summaries, _ = train(eval_every=0, stop_process_1_at=2)
  assert all(s['start_epoch'] == 0 and s['epochs'] == 2 and s['interrupted'] for s in summaries)
  assert sorted(os.listdir(run / 'checkpoints')) == ['2']
  summaries, resumed = train(eval_every=3)
  assert all(s['start_epoch'] == 2 and not s['interrupted'] for s in summaries)
  assert_states_close(resumed, one_device_run)
  assert sorted(os.listdir(run / 'checkpoints')) == ['2', '3']
  assert os.listdir(run / 'best') == ['3']
  log = (run / 'log_summary').read_text()
  assert log.count('epoch 3/3 ') == 1 and log.count('eval epoch 3 ') == 1  # process 0 only
  assert 'Resumed from the checkpoint of epoch 2' in log
  assert len(os.listdir(run / 'output' / 'fake')) == 4


# ---------------------------------------------------------------------------------------------
# Distributed settings from flags and the environment


def test_a_plain_run_does_not_initialize_distributed():
  """Nor does a run of one process, however it is given: flags, blank JAX_* variables (as
  unset), a one-task cluster job, or one that does not say its task count."""
  assert parallel.distributed_settings(environ={}) is None
  assert parallel.distributed_settings(environ={'SLURM_JOB_ID': '7', 'SLURM_NTASKS': '1'}) is None
  assert parallel.distributed_settings(environ={'SLURM_JOB_ID': '7'}) is None
  assert parallel.distributed_settings(num_processes=1, environ={}) is None
  assert parallel.distributed_settings('10.0.0.1:1234', 1, 0, environ={}) is None
  blank = {'JAX_COORDINATOR_ADDRESS': '', 'JAX_NUM_PROCESSES': ' ', 'JAX_PROCESS_ID': ''}
  assert parallel.distributed_settings(environ=blank) is None


def test_flags_give_the_distributed_settings_and_win_over_the_environment():
  env = {'JAX_COORDINATOR_ADDRESS': 'other:1', 'JAX_NUM_PROCESSES': '8', 'JAX_PROCESS_ID': '5'}
  assert parallel.distributed_settings('10.0.0.1:1234', 4, 2, environ=env) == dict(
      coordinator_address='10.0.0.1:1234', num_processes=4, process_id=2)
  assert parallel.distributed_settings(environ=env) == dict(
      coordinator_address='other:1', num_processes=8, process_id=5)


def test_a_multi_task_cluster_job_is_detected_by_jax():
  assert parallel.distributed_settings(environ={'SLURM_JOB_ID': '7', 'SLURM_NTASKS': '4'}) == {}
  assert parallel.distributed_settings(environ={'OMPI_COMM_WORLD_SIZE': '2'}) == {}


@pytest.mark.parametrize('args,expected', [
    (('10.0.0.1:1234', 2, -1), 'needs all three'),
    (('', 2, 0), 'needs all three'),
    (('10.0.0.1:1234', 0, -1), 'needs all three'),  # any one of the three asks for the others
    (('', 2, -1), 'needs all three'),
    (('', 0, 0), 'needs all three'),
    (('10.0.0.1:1234', 0, 0), 'needs all three'),
    (('10.0.0.1', 2, 0), 'host:port'),
    (('10.0.0.1:1234', 2, 2), 'process_id=2 must be in 0..1'),
    (('10.0.0.1:1234', -2, 0),
     r'num_processes=-2 \(--num_processes or JAX_NUM_PROCESSES\) must be the number'),
    (('10.0.0.1:1234', -1, 0), r'num_processes=-1 \(--num_processes'),
])
def test_incomplete_distributed_settings_are_refused(args, expected):
  with pytest.raises(ConfigError, match=expected):
    parallel.distributed_settings(*args, environ={})


@pytest.mark.parametrize('process_id, environ', [
    (-5, {'JAX_PROCESS_ID': '1'}), (-5, {}), (-1, {'JAX_PROCESS_ID': '-2'})])
def test_a_negative_process_id_is_refused_not_taken_for_unset(process_id, environ):
  """--process_id=-5 under JAX_PROCESS_ID=1 joined as process 1 (a flag that loses to the
  environment), and without it the error said 'process_id none'; -1 alone means not given."""
  with pytest.raises(ConfigError, match=r'process_id=-[25] \(--process_id or JAX_PROCESS_ID\) '
                     r'must be this process\'s index, 0 to num_processes - 1'):
    parallel.distributed_settings('10.0.0.1:1234', 2, process_id, environ=environ)


def test_a_non_integer_environment_variable_is_refused():
  with pytest.raises(ConfigError, match='JAX_NUM_PROCESSES'):
    parallel.distributed_settings(environ={'JAX_COORDINATOR_ADDRESS': 'h:1',
                                           'JAX_NUM_PROCESSES': 'two'})


@pytest.fixture
def no_distributed_environment(monkeypatch):
  """os.environ without the variables distributed_settings reads."""
  for name in ('JAX_COORDINATOR_ADDRESS', 'JAX_NUM_PROCESSES', 'JAX_PROCESS_ID', 'SLURM_JOB_ID',
               'SLURM_NTASKS', 'OMPI_COMM_WORLD_SIZE'):
    monkeypatch.delenv(name, raising=False)


@pytest.mark.usefixtures('no_distributed_environment')
def test_initialize_distributed_joins_a_multi_process_run_only(monkeypatch):
  """A plain run (or a one-process one) leaves jax.distributed alone and says so; a
  multi-process one joins with its settings."""
  joined = []
  monkeypatch.setattr(jax.distributed, 'initialize', lambda **kwargs: joined.append(kwargs))
  assert parallel.initialize_distributed() is False
  assert parallel.initialize_distributed('10.0.0.1:1234', 1, 0) is False
  assert joined == []
  assert parallel.initialize_distributed('10.0.0.1:1234', 2, 1) is True
  assert joined == [dict(coordinator_address='10.0.0.1:1234', num_processes=2, process_id=1)]


@pytest.mark.parametrize('error, said', [
    (RuntimeError('DEADLINE_EXCEEDED: Barrier timed out\n  id: 1\n'),
     'DEADLINE_EXCEEDED: Barrier timed out'),
    (ConnectionRefusedError(), 'ConnectionRefusedError()')])
@pytest.mark.usefixtures('no_distributed_environment')
def test_a_failed_join_is_one_line_naming_the_coordinator(error, said, monkeypatch):
  """Whatever type jax's connection error has, it becomes a DistributedError of one line: where
  the run was to be joined and the error's first line, as it is (it was quoted: the `!r` meant
  for an empty message applied to the first line too), or its repr when it has no message."""
  def refuse(**kwargs):
    raise error

  monkeypatch.setattr(jax.distributed, 'initialize', refuse)
  with pytest.raises(parallel.DistributedError) as raised:
    parallel.initialize_distributed('10.0.0.1:1234', 2, 1)
  assert str(raised.value) == f'cannot join the distributed run at 10.0.0.1:1234: {said}'
  monkeypatch.setenv('SLURM_JOB_ID', '7')
  monkeypatch.setenv('SLURM_NTASKS', '2')
  with pytest.raises(parallel.DistributedError) as raised:
    parallel.initialize_distributed()
  assert str(raised.value) == ('cannot join the distributed run at the address the cluster '
                               f'environment gives: {said}')
