"""gan/interrupts.py: a Ctrl-C (SIGINT) while a command-line tool starts is one line; one that a
callback swallows still stops the tools before they write, and one that comes while files move in
waits for the move."""

import os
import signal
import subprocess
import sys
import threading

import pytest

from gan import interrupts


def _sigint():
  os.kill(os.getpid(), signal.SIGINT)  # delivered to the main thread before kill returns


class _SwallowsInDel:
  """Gets a Ctrl-C while Python finalises it: the KeyboardInterrupt is unraisable (as in JAX's
  gc callback), reported through sys.unraisablehook and otherwise lost."""

  def __del__(self):
    _sigint()


@pytest.fixture
def reported(monkeypatch):
  """What reaches sys.unraisablehook (Python's default prints 'Exception ignored in ...')."""
  seen = []
  monkeypatch.setattr(interrupts.sys, 'unraisablehook', seen.append)
  return seen


def test_a_swallowed_ctrl_c_is_still_seen_and_not_reported(reported):
  previous = signal.getsignal(signal.SIGINT)
  with interrupts.watched() as received:
    assert not interrupts.interrupted()
    interrupts.raise_if_interrupted()  # nothing came yet
    _SwallowsInDel()  # finalised at once; its KeyboardInterrupt goes nowhere
    assert interrupts.interrupted() and received
    with pytest.raises(KeyboardInterrupt):
      interrupts.raise_if_interrupted()
  assert received  # also after the block
  assert signal.getsignal(signal.SIGINT) is previous
  assert not interrupts.interrupted()  # outside any block
  assert reported == []
  _SwallowsInDel()  # outside a block: the default handler's interrupt is reported as before
  assert [type(u.exc_value) for u in reported] == [KeyboardInterrupt]


def test_a_ctrl_c_inside_the_block_raises_as_usual():
  with pytest.raises(KeyboardInterrupt):
    with interrupts.watched():
      _sigint()


def test_other_unraisable_errors_are_still_reported(reported):
  with interrupts.watched():
    _SwallowsInDel()
    interrupts.sys.unraisablehook(type('Unraisable', (), {'exc_value': ValueError('x')})())
  assert [type(u.exc_value) for u in reported] == [ValueError]


def test_a_held_back_ctrl_c_waits_for_the_block_and_counts_for_the_watch():
  with interrupts.watched() as received:
    with interrupts.held_back() as held:
      _sigint()  # no KeyboardInterrupt here
      done = True
    assert done and held and received
    with pytest.raises(KeyboardInterrupt):
      interrupts.raise_if_interrupted()


def test_a_ctrl_c_held_back_while_the_block_fails_leaves_the_error_standing():
  """_staging's move fails half-way: its error ('cannot write ...') stands and infer.py must not
  turn it into 'interrupted: nothing written' (files did move in)."""
  with interrupts.watched() as received:
    with pytest.raises(OSError), interrupts.held_back() as held:
      _sigint()
      raise OSError('no space left')
    assert held and not received and not interrupts.interrupted()


def test_outside_the_main_thread_nothing_changes():
  results = {}

  def work():
    with interrupts.watched() as received, interrupts.held_back() as held:
      results['handler'] = signal.getsignal(signal.SIGINT)
      results['lists'] = (received, held)

  previous = signal.getsignal(signal.SIGINT)
  thread = threading.Thread(target=work)
  thread.start()
  thread.join()
  assert results['handler'] is previous and results['lists'] == ([], [])


def test_a_hook_installed_within_the_block_stays_installed(reported):
  """infer.py installs checkpoints.silence_abandoned_checkpoint_reads (a Ctrl-C during a restore
  abandons orbax's reads, whose 'Event loop is closed' errors it drops) inside its watched()
  block: the block's end must not remove it, or those errors print as tracebacks."""
  with interrupts.watched():
    inner = interrupts.sys.unraisablehook

    def installed_within(unraisable):
      inner(unraisable)

    interrupts.sys.unraisablehook = installed_within
  assert interrupts.sys.unraisablehook is installed_within
  interrupts.sys.unraisablehook(type('Unraisable', (), {'exc_value': ValueError('x')})())
  assert [type(u.exc_value) for u in reported] == [ValueError]  # the chain still reaches it


def test_after_finished_ctrl_c_is_ignored():
  previous = signal.getsignal(signal.SIGINT)
  try:
    interrupts.finished()
    _sigint()  # would raise KeyboardInterrupt here
  finally:
    signal.signal(signal.SIGINT, previous)


@pytest.mark.parametrize('status', [0, 1, 130])
def test_exit_cli_ends_at_once_only_after_an_error_or_interrupt(status, monkeypatch):
  """The CLIs' one way out: a non-zero status skips the interpreter's teardown (which can crash
  on XLA work a Ctrl-C left running); a zero one ends normally, with Ctrl-C ignored from then."""
  calls = []
  monkeypatch.setattr(interrupts, 'exit_after_error', lambda s: calls.append(('at once', s)))
  monkeypatch.setattr(interrupts, 'finished', lambda: calls.append(('finished',)))
  with pytest.raises(SystemExit) as exited:  # reached after a non-zero status only via the stub
    interrupts.exit_cli(status)
  assert exited.value.code == status
  assert calls[0] == (('at once', status) if status else ('finished',))


# Runs a tool with a SIGINT sent to itself as it imports the module `trigger` (JAX's import alone
# takes a second or more): argv[1] is the trigger, argv[2] the tool (train.py, or a module run as
# python -m), the rest its arguments.
_INTERRUPTED_WHILE_IMPORTING = '''
import os, runpy, signal, sys

class InterruptAtImport:
  def find_spec(self, name, path=None, target=None):
    if name == trigger:
      os.kill(os.getpid(), signal.SIGINT)
    return None

trigger, tool = sys.argv[1], sys.argv[2]
sys.meta_path.insert(0, InterruptAtImport())
sys.argv = [tool] + sys.argv[3:]
if tool.endswith('.py'):
  runpy.run_path(tool, run_name='__main__')
else:
  runpy.run_module(tool, run_name='__main__', alter_sys=True)
'''


@pytest.mark.parametrize('tool, trigger, what', [
    ('train.py', 'gan.trainer', 'training'),  # main() imports the trainer after the flags
    ('gan.evaluate', 'jax', 'the evaluation'),
    ('gan.compare', 'jax', 'the comparison'),
    ('gan.bench', 'jax', 'the benchmark'),
    ('infer.py', 'jax', 'the request'),  # imports JAX after its flags are checked
])
def test_a_ctrl_c_while_a_tool_starts_is_one_line(tool, trigger, what, tmp_path):
  """A Ctrl-C while the tool still imported ended in a KeyboardInterrupt traceback from inside
  the import machinery."""
  out = tmp_path / 'out'
  args = {'train.py': [f'--config.log_path={out}'], 'gan.evaluate': ['--model_path=run'],
          'gan.compare': [f'--out={out}'], 'gan.bench': [],
          'infer.py': ['--model_path=run', f'--gen_img_path={out}']}[tool]
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  proc = subprocess.run([sys.executable, '-c', _INTERRUPTED_WHILE_IMPORTING, trigger, tool]
                        + args, cwd=repo, capture_output=True, text=True, timeout=120,
                        check=False, env=dict(os.environ, JAX_PLATFORMS='cpu'))
  assert proc.returncode == 130, proc.stderr
  assert proc.stderr.strip().splitlines() == [
      f'interrupted: before {what} started; nothing written'], proc.stderr
  assert os.listdir(tmp_path) == []


_INTERRUPTED_IN_A_CALLBACK = '''
import gc, os, signal, sys
from gan import interrupts

interrupts.quiet_while_starting('the work')
def callback(phase, info):
  if phase == 'start':
    gc.callbacks.remove(callback)
    os.kill(os.getpid(), signal.SIGINT)  # its handler runs inside this callback
gc.callbacks.append(callback)
gc.collect()
print('went on')
'''


def test_a_ctrl_c_while_starting_ends_the_tool_also_inside_a_callback():
  """The handler raised SystemExit, which a gc callback (JAX has one) swallows: the tool said
  'nothing written' and went on to do its work."""
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  proc = subprocess.run([sys.executable, '-c', _INTERRUPTED_IN_A_CALLBACK], cwd=repo,
                        capture_output=True, text=True, timeout=60, check=False)
  assert (proc.returncode, proc.stdout) == (130, ''), proc.stderr
  assert proc.stderr.splitlines() == ['interrupted: before the work started; nothing written']


def test_a_ctrl_c_while_starting_ends_the_tool_also_where_its_line_cannot_be_written():
  """`tool 2>&1 | tee log`: the same Ctrl-C ends tee, and the handler's write to stderr failed
  (EPIPE; a closed or full stderr alike) with an OSError raised in its place, which the gc callback
  swallowed: the tool went on to do its work."""
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  read_end, write_end = os.pipe()
  os.close(read_end)  # tee is gone
  try:
    proc = subprocess.run([sys.executable, '-c', _INTERRUPTED_IN_A_CALLBACK], cwd=repo,
                          stdout=subprocess.PIPE, stderr=write_end, text=True, timeout=60,
                          check=False)
  finally:
    os.close(write_end)
  assert (proc.returncode, proc.stdout) == (130, '')


@pytest.mark.parametrize('tool, args', [('gan.compare', ['--minutes=-1']),
                                        ('gan.bench', ['--iters=0'])])
def test_a_tool_started_with_sigint_ignored_keeps_ignoring_it(tool, args, tmp_path):
  """A tool a script starts in the background (`tool &`: SIGINT ignored, as Python keeps it) went
  on through a Ctrl-C meant for the script; its start-up handler made it stop there. Here the
  SIGINT is ignored and the tool reaches its argument check."""
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  # The shell's `trap '' INT` is inherited through exec, as a background job's ignored SIGINT is
  # (a preexec_fn would make subprocess fork this multithreaded JAX process).
  command = [sys.executable, '-c', _INTERRUPTED_WHILE_IMPORTING, 'jax', tool] + args + [
      f'--out={tmp_path / "out"}'] * (tool == 'gan.compare')
  proc = subprocess.run(['sh', '-c', 'trap "" INT; exec "$@"', 'sh'] + command, cwd=repo,
                        capture_output=True, text=True, timeout=120, check=False,
                        env=dict(os.environ, JAX_PLATFORMS='cpu'))
  assert proc.returncode == 1 and proc.stderr.startswith('error: '), proc.stderr


# pytest.main on a few tests of this suite (argv[2:]), in a thread other than the main one or in
# the main thread with SIGINT ignored (argv[1]); then its status and SIGINT's handler.
_SUITE_RUN_BY_PYTEST_MAIN = '''
import signal, sys, threading
import pytest
status = []
if sys.argv[1] == 'ignored':
  signal.signal(signal.SIGINT, signal.SIG_IGN)
  status.append(pytest.main(sys.argv[2:]))
else:
  thread = threading.Thread(target=lambda: status.append(pytest.main(sys.argv[2:])))
  thread.start()
  thread.join()
print(int(status[0]), signal.getsignal(signal.SIGINT) is signal.SIG_IGN)
'''


@pytest.mark.parametrize('how, ignored', [('in a thread', False), ('ignored', True)])
def test_the_suite_leaves_sigint_as_it_found_it_and_runs_in_any_thread(how, ignored):
  """conftest gives a suite started with SIGINT ignored Python's handler, for its Ctrl-C tests, and
  ignores it again at the end. It set the handler back at the end in every case, and only the
  main thread may: pytest.main in another thread (a tool's worker thread) ended with a
  ValueError."""
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  proc = subprocess.run([sys.executable, '-c', _SUITE_RUN_BY_PYTEST_MAIN, how, '-q', '-n', '0',
                         '-p', 'no:cacheprovider', 'tests/test_run_lock.py', '-k', 'empty_lock'],
                        cwd=repo, capture_output=True, text=True, timeout=120, check=False)
  assert proc.stdout.splitlines()[-1:] == [f'0 {ignored}'], proc.stdout + proc.stderr


def test_each_deferred_ctrl_c_reaches_the_handler_before_it_once_the_block_completes():
  """train.py's handler counts: a first Ctrl-C asks for a stop after the epoch, a second stops
  at once. Two that came while designs moved in are both passed on, once the move is done."""
  seen = []

  def handler(signum, frame):
    del frame
    seen.append(signum)

  previous = signal.signal(signal.SIGINT, handler)
  try:
    with interrupts.deferred():
      _sigint()
      _sigint()
      assert seen == []  # held while the block runs
    assert seen == [signal.SIGINT, signal.SIGINT]
    assert signal.getsignal(signal.SIGINT) is handler
  finally:
    signal.signal(signal.SIGINT, previous)


def test_a_ctrl_c_deferred_while_the_block_fails_leaves_the_error_standing():
  """As in held_back: a move that failed half-way reports its own error, not a KeyboardInterrupt
  (which would say nothing of the half-done move)."""
  previous = signal.signal(signal.SIGINT, signal.default_int_handler)
  try:
    with pytest.raises(BaseException) as raised:  # a KeyboardInterrupt must not end the suite
      with interrupts.deferred():
        _sigint()
        raise OSError('no space left')
    assert raised.type is OSError, raised.value
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
  finally:
    signal.signal(signal.SIGINT, previous)


def test_an_unraisable_keyboard_interrupt_without_a_ctrl_c_is_still_reported(reported):
  """Only the KeyboardInterrupt of a Ctrl-C the block recorded is kept quiet: one raised
  otherwise (`raise KeyboardInterrupt` in a finaliser) is not recorded, and would go unseen."""
  with interrupts.watched() as received:
    interrupts.sys.unraisablehook(type('Unraisable', (), {'exc_value': KeyboardInterrupt()})())
    assert not received
  assert [type(u.exc_value) for u in reported] == [KeyboardInterrupt]


def test_a_held_back_ctrl_c_counts_for_the_innermost_watch():
  """Watches may nest: a Ctrl-C held back in the inner one counts for it, the watch that
  interrupted() and raise_if_interrupted() read, not for the outer one."""
  with interrupts.watched() as outer:
    with interrupts.watched() as inner:
      with interrupts.held_back():
        _sigint()
      assert inner and interrupts.interrupted()
    assert not outer and not interrupts.interrupted()


def test_started_gives_ctrl_c_back_to_python_unless_it_was_ignored():
  """After start-up a Ctrl-C raises KeyboardInterrupt again; in a tool started with SIGINT
  ignored (`tool &` in a script) it stays ignored, also past start-up."""
  previous = signal.getsignal(signal.SIGINT)
  try:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    interrupts.started()
    assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    signal.signal(signal.SIGINT, lambda signum, frame: None)  # as quiet_while_starting's
    interrupts.started()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
  finally:
    signal.signal(signal.SIGINT, previous)


def test_exit_after_error_keeps_what_was_printed_to_a_pipe():
  """os._exit skips the interpreter's flush: the error line printed to a pipe (block-buffered)
  was lost, so a script saw exit status 1 with no word of why."""
  code = ('import sys\nfrom gan import interrupts\nprint("out line")\n'
          'print("error: why", file=sys.stderr)\ninterrupts.exit_after_error(3)\n')
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  env = {k: v for k, v in os.environ.items() if k != 'PYTHONUNBUFFERED'}  # as a user's shell
  proc = subprocess.run([sys.executable, '-c', code], cwd=repo, capture_output=True, text=True,
                        timeout=60, check=False, env=env)
  assert (proc.returncode, proc.stdout, proc.stderr) == (3, 'out line\n', 'error: why\n')
