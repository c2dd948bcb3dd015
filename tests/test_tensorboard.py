"""Integration test: a short real training run, then a real TensorBoard server reading its event
files, queried over HTTP on 127.0.0.1 only (endpoints as served by tensorboard 2.21):

  GET /data/runs                                       -> ["."]   (events sit in the logdir root)
  GET /data/environment                                -> {"data_location": <logdir>, ...}
  GET /data/plugin/scalars/tags                        -> {run: {tag: {...}}}
  GET /data/plugin/scalars/scalars?run=R&tag=T         -> [[wall_time, step, value], ...]
  GET /data/plugin/images/tags                         -> {run: {tag: {"samples": n, ...}}}
  GET /data/plugin/images/images?run=R&tag=T           -> [{"wall_time", "step", "query"}, ...]
  GET /data/plugin/images/individualImage?<query>      -> image/png bytes
"""

import contextlib
import io
import json
import os
import socket
import subprocess
import sys
import threading
import time
import types
import urllib.error
import urllib.parse
import urllib.request

import numpy as np
import pytest
from PIL import Image
from helpers import tiny_config

from gan import checkpoints
from gan import paths
from gan import run_dir
from gan import summaries
from gan import trainer
from gan.errors import DesignGanError

HOST = '127.0.0.1'
STARTUP_TIMEOUT_S = 60.0
TAGS_TIMEOUT_S = 30.0
POLL_S = 0.5

SCALAR_TAGS = ('train/critic_loss', 'train/gen_loss', 'train/wasserstein',
               'train/gradient_penalty', 'train/strut_error', 'train/samples_per_s')
IMAGE_TAGS = ('fake/designs_by_class', 'real/designs_by_class')

# Never route a request through a proxy from the environment: only 127.0.0.1 is ever contacted.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _free_port() -> int:
  with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
    s.bind((HOST, 0))
    return s.getsockname()[1]


class _Server:
  """A running `tensorboard` subprocess bound to 127.0.0.1:<port>."""

  def __init__(self, proc, port, log_file):
    self.proc, self.port, self.log_file = proc, port, log_file

  def url(self, path: str, **params) -> str:
    query = ('?' + urllib.parse.urlencode(params)) if params else ''
    return f'http://{HOST}:{self.port}{path}{query}'

  def get(self, path: str, **params) -> bytes:
    with _OPENER.open(self.url(path, **params), timeout=10) as response:
      assert response.status == 200, (path, response.status)
      return response.read()

  def get_json(self, path: str, **params):
    return json.loads(self.get(path, **params).decode('utf-8'))

  def log(self) -> str:
    with open(self.log_file, encoding='utf-8', errors='replace') as f:
      return f.read()


def _wait_until_up(server: _Server) -> None:
  deadline = time.monotonic() + STARTUP_TIMEOUT_S
  while True:
    if server.proc.poll() is not None:
      pytest.fail(f'tensorboard exited with code {server.proc.returncode}:\n{server.log()}')
    try:
      server.get('/data/runs')
      return
    except (urllib.error.URLError, ConnectionError, OSError):
      pass
    if time.monotonic() > deadline:
      pytest.fail(f'tensorboard did not answer within {STARTUP_TIMEOUT_S:.0f} s:\n{server.log()}')
    time.sleep(POLL_S)


def _poll_tags(server: _Server, plugin: str, wanted) -> dict:
  """{run: {tag: info}} from /data/plugin/<plugin>/tags once one run holds every wanted tag."""
  deadline = time.monotonic() + TAGS_TIMEOUT_S
  while True:
    by_run = server.get_json(f'/data/plugin/{plugin}/tags')
    if any(set(wanted) <= set(tags) for tags in by_run.values()):
      return by_run
    if time.monotonic() > deadline:
      pytest.fail(f'{plugin} tags never all appeared; wanted {sorted(wanted)}, got {by_run}')
    time.sleep(POLL_S)


@pytest.fixture(name='trained_run', scope='module')
def fixture_trained_run(small_design_dir, tmp_path_factory):
  """A tiny 2-epoch training run: (train() result, log_path)."""
  log_path = str(tmp_path_factory.mktemp('tb_run') / 'log')
  config = tiny_config(small_design_dir, log_path, epochs=2, sample_every=1)
  result = trainer.train(config)
  return result, log_path


@pytest.fixture(name='tensorboard_server')
def fixture_tensorboard_server(trained_run, tmp_path):
  _, log_path = trained_run
  logdir = os.path.join(log_path, 'tensorboard_records')
  assert os.path.isdir(logdir) and os.listdir(logdir), f'no event files in {logdir}'
  port = _free_port()
  log_file = str(tmp_path / 'tensorboard.log')
  cmd = [sys.executable, '-m', 'tensorboard.main', '--logdir', logdir, '--host', HOST,
         '--port', str(port), '--load_fast=false', '--reload_interval=1']
  with open(log_file, 'wb') as out:
    proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
  server = _Server(proc, port, log_file)
  try:
    _wait_until_up(server)
    yield server
  finally:
    proc.terminate()
    try:
      proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
      proc.kill()
      proc.wait(timeout=10)


def test_tensorboard_serves_training_scalars_and_grids(trained_run, tensorboard_server):
  result, log_path = trained_run
  server = tensorboard_server
  logdir = os.path.join(log_path, 'tensorboard_records')

  env = server.get_json('/data/environment')
  assert os.path.realpath(env['data_location']) == os.path.realpath(logdir)

  # Scalars: every wanted tag, logged once per epoch (log_every=1), last value = final means.
  scalar_tags = _poll_tags(server, 'scalars', SCALAR_TAGS)
  run = next(r for r, tags in scalar_tags.items() if set(SCALAR_TAGS) <= set(tags))
  for tag in SCALAR_TAGS:
    points = server.get_json('/data/plugin/scalars/scalars', run=run, tag=tag)
    assert [p[1] for p in points] == [1, 2], (tag, points)
    assert all(np.isfinite(p[2]) for p in points), (tag, points)
  for name in ('critic_loss', 'gen_loss', 'wasserstein', 'gradient_penalty', 'strut_error'):
    last = server.get_json('/data/plugin/scalars/scalars', run=run, tag='train/' + name)[-1][2]
    np.testing.assert_allclose(last, result['metrics'][name], rtol=1e-5, atol=1e-6)

  # Images: the real grid once, the fake grid every epoch (sample_every=1).
  image_tags = _poll_tags(server, 'images', IMAGE_TAGS)
  image_run = next(r for r, tags in image_tags.items() if set(IMAGE_TAGS) <= set(tags))
  entries = server.get_json('/data/plugin/images/images', run=image_run,
                            tag='fake/designs_by_class')
  assert [e['step'] for e in entries] == [1, 2], entries
  png = server.get(f'/data/plugin/images/individualImage?{entries[0]["query"]}')
  image = Image.open(io.BytesIO(png))
  image.load()
  width, height = image.size
  # 10 durability rows x 12 mass columns of 10x30 designs, upscaled: far bigger than one design.
  assert width > 12 * 30 and height > 10 * 10, image.size
  expected = summaries.design_grid(np.zeros((10, 12, 10, 30, 3), np.uint8)).shape
  assert (height, width) == expected[:2], (image.size, expected)
  assert image.mode == 'RGB'


def test_the_writer_does_not_import_torch_and_leaves_it_importable(tmp_path):
  """tensorboardX's writer imports torch wherever it is installed (seconds, and PyTorch's CUDA
  libraries beside JAX's on a GPU machine). With a stand-in torch on the path that only records
  its import: writing TensorBoard events does not import it, and the program can still do so."""
  fake = tmp_path / 'site' / 'torch'
  fake.mkdir(parents=True)
  (fake / '__init__.py').write_text('import builtins\nbuiltins.torch_imported = True\n')
  code = '\n'.join([
      'import builtins, sys',
      'from gan import summaries',
      f'tb = summaries.TensorBoard({str(tmp_path / "run")!r})',
      'tb.scalars(0, {"x": 1.0})',
      'tb.image("grid", 0, __import__("numpy").zeros((4, 4, 3), "uint8"))',
      'tb.close()',
      'assert "tensorboardX" in sys.modules',
      'assert not hasattr(builtins, "torch_imported"), "the writer imported torch"',
      'import torch',
      'assert builtins.torch_imported',
      'print("ok")'])
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  env = dict(os.environ, PYTHONPATH=str(tmp_path / 'site'))
  result = subprocess.run([sys.executable, '-c', code], cwd=root, env=env, capture_output=True,
                          text=True, timeout=120)
  assert result.returncode == 0 and result.stdout.strip() == 'ok', result.stderr
  assert os.listdir(tmp_path / 'run' / 'tensorboard_records')


def test_a_full_disk_under_tensorboard_records_is_an_error_not_a_hang(tmp_path, monkeypatch,
                                                                      capfd):
  """tensorboardX writes events from a thread that a failed write (a full disk) ends; the next
  events then waited forever for room in its queue of 10, and train.py hung after an epoch. Now
  the write after the failure raises an OutputPathError naming the directory and the failure,
  whose traceback the thread no longer prints above it."""
  directory = str(tmp_path / 'records')
  board = summaries.TensorBoard(directory)
  board.scalars(1, {'loss': 1.0})
  _failing_writes(monkeypatch, OSError(28, 'No space left on device'))
  raised = _write_epochs_until_refused(board, 20, 13, timeout=60)
  assert len(raised) == 1 and f'TensorBoard records in {board.directory} (their writer failed: ' \
      '[Errno 28] No space left on device)' in str(raised[0]), raised
  assert 'Traceback' not in capfd.readouterr().err
  board.close()  # nothing left to wait for


def _write_epochs_until_refused(board, epochs, metrics, timeout, after_epoch=lambda step: None):
  """The OutputPathErrors of writing epochs 2.. `epochs` - 1 (`metrics` scalars each, 50 ms
  apart; `after_epoch(step)` after each) from a thread, which must end within `timeout` s."""
  raised = []

  def write_epochs():
    try:
      for step in range(2, epochs):
        board.scalars(step, {f'metric_{i}': float(i) for i in range(metrics)})
        after_epoch(step)
        time.sleep(0.05)
    except paths.OutputPathError as e:
      raised.append(e)

  writer = threading.Thread(target=write_epochs, daemon=True)
  writer.start()
  writer.join(timeout=timeout)
  assert not writer.is_alive(), 'the writes hung'
  return raised


def _failing_writes(monkeypatch, error):
  """tensorboardX's record writes fail with `error` from now on (a full disk: an OSError)."""
  from tensorboardX import record_writer  # pylint: disable=import-outside-toplevel

  def write(self, data):
    raise error

  monkeypatch.setattr(record_writer.RecordWriter, 'write', write)


def test_a_failure_of_the_last_write_at_close_is_an_error_too(tmp_path, monkeypatch, capfd):
  """close() writes the events still queued (the last epoch's): where that write failed, the
  run ended as if its records were complete. Now close() raises the OutputPathError too."""
  board = summaries.TensorBoard(str(tmp_path))
  board.scalars(1, {'loss': 1.0})
  _failing_writes(monkeypatch, OSError(28, 'No space left on device'))
  board.scalars(2, {'loss': 0.5})  # queued (or, if the thread already failed, raising below)
  with pytest.raises(paths.OutputPathError, match=r'\(their writer failed: \[Errno 28\] No space '
                                                  r'left on device\)'):
    board.close()
  assert 'Traceback' not in capfd.readouterr().err


def test_a_full_disk_at_the_final_flush_is_an_error_and_stops_the_writer(tmp_path, monkeypatch,
                                                                         capfd):
  """On a full disk the events often fail where their buffered bytes are flushed, which close()
  does in the caller's thread: an OSError traceback, and the writer thread left running. Now the
  OutputPathError, with the thread stopped."""
  from tensorboardX import record_writer  # pylint: disable=import-outside-toplevel
  board = summaries.TensorBoard(str(tmp_path))
  board.scalars(1, {'loss': 1.0})
  worker = board.writer.file_writer.event_writer._worker  # pylint: disable=protected-access

  def flush(self):
    raise OSError(28, 'No space left on device')

  monkeypatch.setattr(record_writer.RecordWriter, 'flush', flush)
  with pytest.raises(paths.OutputPathError, match=r'\(their writer failed: \[Errno 28\] No space '
                                                  r'left on device\)'):
    board.close()
  worker.join(timeout=60)
  assert not worker.is_alive() and board.writer is None
  assert 'Traceback' not in capfd.readouterr().err


def test_only_this_projects_writer_threads_are_kept_quiet(tmp_path, monkeypatch):
  """The excepthook keeps the OSError of this module's writer threads only: a notebook's own
  tensorboardX writer's failure, and a bug (not an OSError) in ours, still reach the hook that
  was there before, with their tracebacks; ours names the bug's type, without the full disk's
  remedy (no free space mends a bug)."""
  seen = []
  monkeypatch.setattr(threading, 'excepthook', lambda args: seen.append(args.exc_type))
  board = summaries.TensorBoard(str(tmp_path / 'ours'))
  board.scalars(1, {'loss': 1.0})  # opens the writer: the hook wraps the one above
  from tensorboardX import SummaryWriter  # pylint: disable=import-outside-toplevel
  theirs = SummaryWriter(str(tmp_path / 'theirs'), max_queue=0)
  _failing_writes(monkeypatch, OSError(28, 'No space left on device'))
  theirs.add_scalar('loss', 1.0, 1)
  theirs.file_writer.event_writer._worker.join(timeout=60)  # pylint: disable=protected-access
  assert seen == [OSError]
  theirs.file_writer.event_writer._closed = True  # pylint: disable=protected-access
  _failing_writes(monkeypatch, KeyError('bug'))
  with pytest.raises(DesignGanError, match=r"TensorBoard writer of .* failed \(KeyError: 'bug'; "
                                           r"its traceback is above\); the complete checkpoints "
                                           r"are kept$"):
    board.scalars(2, {'loss': 0.5})
    board.close()
  assert seen == [OSError, KeyError]


def test_a_tensorboard_failure_at_release_does_not_hide_the_failure_that_stopped_training(
    monkeypatch):
  """Run.release closes a run's event file after training failed (on success Run.finish already
  closed it): on a full disk its close fails too, and its OutputPathError replaced the error that
  stopped training (a CheckpointError, a Ctrl-C), which is the one to report. With nothing else
  on its way out, the close's own error is still raised."""
  class FailingBoard:
    def close(self):
      raise paths.OutputPathError('cannot write the TensorBoard records')

  monkeypatch.setattr(run_dir.checkpoints, 'close', lambda mngr: None)
  run = types.SimpleNamespace(log=run_dir.logging.getLogger('designgan.test_release'),
                              tb=FailingBoard(), mngr=None,
                              evaluator=types.SimpleNamespace(release=lambda: None))
  with pytest.raises(checkpoints.CheckpointError, match='cannot write a checkpoint'):
    with contextlib.ExitStack() as release:  # as trainer.train releases its runs
      release.callback(run_dir.Run.release, run)
      raise checkpoints.CheckpointError('cannot write a checkpoint')
  with pytest.raises(paths.OutputPathError, match='TensorBoard records'):
    run_dir.Run.release(run)


def test_events_queued_while_a_slow_write_fails_never_wait_for_room(tmp_path, monkeypatch):
  """A write that takes a while to fail (a full network disk) holds the writer thread while the
  epoch's events queue up: a queue of 10 (tensorboardX's default) filled, the trainer waited for
  room, and the thread then ended, so it waited forever. Every event is queued at once instead,
  and the write after the failure raises."""
  from tensorboardX import record_writer  # pylint: disable=import-outside-toplevel
  board = summaries.TensorBoard(str(tmp_path))
  board.scalars(1, {'loss': 1.0})
  release = threading.Event()

  def slow_failure(self, data):
    release.wait(timeout=60)
    raise OSError(28, 'No space left on device')

  def after_epoch(step):
    if step == 2:
      release.set()  # all of epoch 2's events queued: the pending write fails now

  monkeypatch.setattr(record_writer.RecordWriter, 'write', slow_failure)
  try:
    raised = _write_epochs_until_refused(board, 200, 20, timeout=30, after_epoch=after_epoch)
  finally:
    release.set()
  assert len(raised) == 1 and 'No space left on device' in str(raised[0]), raised
