"""Ctrl-C (SIGINT) in the command-line tools: one line while they start, and in the tools that write
their outputs at the end (infer.py, gan.evaluate) noticed even when a callback swallowed it, and
held back while files move in.

Python raises KeyboardInterrupt wherever the main thread is when the signal arrives. Inside a
callback that Python calls and cannot propagate from (JAX's gc callback, a weakref finaliser),
the exception is reported as "Exception ignored in ..." and the work goes on. `watched()` records
every SIGINT, so `raise_if_interrupted()` still stops the run before it writes anything. train.py
stops at the end of the epoch in progress at a first Ctrl-C (gan.trainer's stop_requested), and
hands a second to `watched()`, whose record the trainer checks around each epoch.
"""

import contextlib
import os
import signal
import sys
import threading

_watches: list[list] = []  # the SIGINTs each active watched() block has seen, innermost last


def _in_main_thread() -> bool:
  return threading.current_thread() is threading.main_thread()


@contextlib.contextmanager
def watched():
  """Within the block, Ctrl-C raises KeyboardInterrupt as usual and is also recorded for
  `interrupted` and `raise_if_interrupted`; a swallowed one is not reported as "Exception
  ignored". Yields a list that is non-empty, also after the block, once a Ctrl-C came. Signal
  handlers belong to the main thread: elsewhere the block changes nothing."""
  received = []
  if not _in_main_thread():
    yield received
    return

  def on_sigint(signum, frame):
    received.append(signum)
    signal.default_int_handler(signum, frame)

  def on_unraisable(unraisable):
    if not (received and isinstance(unraisable.exc_value, KeyboardInterrupt)):
      previous_hook(unraisable)

  previous = signal.signal(signal.SIGINT, on_sigint)
  previous_hook = sys.unraisablehook
  sys.unraisablehook = on_unraisable
  _watches.append(received)
  try:
    yield received
  finally:
    _watches.pop()
    # A hook installed within the block (infer.py: checkpoints.silence_abandoned_checkpoint_reads,
    # on top of this one) stays: putting the previous one back would drop it.
    if sys.unraisablehook is on_unraisable:
      sys.unraisablehook = previous_hook
    signal.signal(signal.SIGINT, previous)


def quiet_while_starting(what: str) -> None:
  """Until `started()`, Ctrl-C prints one line, 'interrupted: before <what> started; nothing
  written', and exits with SIGINT's status 130. For a command-line tool's imports (JAX alone takes
  seconds), where a KeyboardInterrupt is a traceback from inside the import machinery. Main
  thread only, as above; an ignored SIGINT stays ignored.

  The process ends in the handler (os._exit: nothing is written before `started()`), without
  raising: a SystemExit raised there was swallowed when the handler ran inside a callback (JAX's
  gc callback, an import lock's weakref callback), so the tool said "nothing written" and went on
  to do its work, and one raised inside a C extension's initialisation aborted the interpreter."""

  def on_sigint(signum, frame):
    del signum, frame
    with contextlib.suppress(OSError):  # a closed stderr, or a pipe whose reader the Ctrl-C ended
      os.write(2, f'interrupted: before {what} started; nothing written\n'.encode())
    os._exit(130)  # pylint: disable=protected-access

  if _in_main_thread() and not _ignored():
    signal.signal(signal.SIGINT, on_sigint)


def started() -> None:
  """The tool's own Ctrl-C handling from here: it raises KeyboardInterrupt again (unless the tool
  was started with SIGINT ignored, which stays ignored)."""
  if _in_main_thread() and not _ignored():
    signal.signal(signal.SIGINT, signal.default_int_handler)


def _ignored() -> bool:
  """Whether SIGINT is ignored: as a process started in the background by a non-interactive shell
  (`tool &` in a script) inherits it, so that a Ctrl-C meant for the script leaves it running.
  Python keeps that at startup; the handlers above must not undo it."""
  return signal.getsignal(signal.SIGINT) is signal.SIG_IGN


def interrupted() -> bool:
  """Whether a Ctrl-C came inside the innermost active `watched()` block."""
  return bool(_watches and _watches[-1])


def raise_if_interrupted() -> None:
  """KeyboardInterrupt if a Ctrl-C came inside the active `watched()` block, also when a callback
  swallowed it: call it before writing outputs, and between the steps of long work (epochs)."""
  if interrupted():
    raise KeyboardInterrupt


@contextlib.contextmanager
def held_back():
  """Within the block, Ctrl-C is held back (for a move into place that must not stop half-way);
  yields a list that is non-empty after the block when one came. It counts for the active
  `watched()` block when this block ends without an exception; an exception stands (a move
  that failed half-way: its error, not 'nothing written'). Main thread only, as above."""
  received = []
  if not _in_main_thread():
    yield received
    return
  previous = signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
  completed = False
  try:
    yield received
    completed = True
  finally:
    signal.signal(signal.SIGINT, previous)
    if completed and _watches:
      _watches[-1].extend(received)


@contextlib.contextmanager
def deferred():
  """Within the block, Ctrl-C waits: each one that came is raised again once the block has
  completed, for the SIGINT handler in place before it (train.py's: a first Ctrl-C asks for a
  stop after the epoch, a second interrupts at once). For a move into place inside work whose
  handler decides what a Ctrl-C means; an exception from the block stands, as in `held_back`.
  Main thread only, as above."""
  if not _in_main_thread():
    yield
    return
  received = []
  previous = signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
  try:
    yield
  finally:
    signal.signal(signal.SIGINT, previous)
  for signum in received:
    signal.raise_signal(signum)


def finished() -> None:
  """The tool has done its work and reported it: from here on Ctrl-C is ignored. It could only
  land in the interpreter's teardown (JAX's and orbax's atexit handlers), printing "Exception
  ignored in atexit callback" and a traceback, or end a finished command with SIGINT's status.
  Main thread only, as above."""
  if _in_main_thread():
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def exit_after_error(status: int = 1):
  """Exits a CLI at once, without the interpreter's teardown, once it has reported an error or an
  interrupt and has nothing left to write. Reading a damaged checkpoint leaves orbax/tensorstore
  reads pending, which at shutdown print 'Event loop is closed' tracebacks after the one-line
  error; interrupted XLA work may still run (gan.evaluate, gan.bench after Ctrl-C)."""
  sys.stdout.flush()
  sys.stderr.flush()
  os._exit(status)  # pylint: disable=protected-access


def exit_cli(status: int):
  """Ends a CLI with main's `status`: after an error or interrupt at once (`exit_after_error`:
  nothing is left to write then, and the interpreter's teardown can crash or print tracebacks
  while XLA or checkpoint reads are still busy), else normally once `finished()`."""
  if status != 0:
    exit_after_error(status)
  finished()
  sys.exit(status)
