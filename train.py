"""Trains a conditional design GAN.

  python train.py --config=configs/infogan_wgan.py [--config.<field>=value ...]

Every local device is used (data parallel). Several processes (hosts) join one run with
  --coordinator_address=HOST:PORT --num_processes=N --process_id=I
(or JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID, or a multi-task SLURM / Open
MPI job, detected by itself); see README "Scaling out".

All logic lives in the gan package (gan/trainer.py: the loop; gan/run_dir.py: what a run
writes); this script only parses flags and reports errors.
"""

import os
import re
import signal
import sys
import threading

from gan import interrupts

# Before the other imports: they take seconds (JAX), and a Ctrl-C among them is then one line, not
# a traceback. _stop_at_first_ctrl_c takes over just before the trainer starts.
interrupts.quiet_while_starting('training')
# pylint: disable=wrong-import-position,wrong-import-order
from absl import app
from absl import flags
from absl import logging as absl_logging
from ml_collections import config_flags

from gan import config as config_lib
from gan.errors import DesignGanError, escape_unencodable_stdout


def _config_error(error: Exception):
  """A config file or field that cannot be used: one line, exit status 1. ml_collections loads
  the file (and applies the --config.<field> overrides) when the flag is defined if --config is
  not given, while flags are parsed if it is, and on first access: all three come here."""
  print(f'error: {config_lib.flag_error_message(sys.argv, error)}', file=sys.stderr)
  sys.exit(1)


# ml_collections logs a get_config() that returned None ('did you forget a return statement?')
# through absl, before flags are parsed: two lines ahead of the one error: line that says so.
# The format string, not getMessage(): formatting raised at the call site of a bad log call.
absl_logging.get_absl_logger().addFilter(
    lambda record: 'did you forget a return statement' not in str(record.msg))
try:
  _CONFIG = config_flags.DEFINE_config_file('config', 'configs/default.py',
                                            'Training config file (see configs/).')
except Exception as e:  # pylint: disable=broad-except  (whatever the config file raises)
  _config_error(e)
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


def parse_flags(argv):
  # A shell expands ~ only at the start of a word: `--config=~/my.py` arrives as it is written.
  # (sys.argv too: the error messages quote it.)
  sys.argv[:] = argv = [re.sub(r'^(--?config=)(~.*)', lambda m: m[1] + os.path.expanduser(m[2]),
                               a) for a in argv]
  try:
    argv = flags.FLAGS(argv)
  except Exception as e:  # pylint: disable=broad-except
    return _config_error(e)
  if len(argv) > 1:
    print(f'error: unexpected arguments: {" ".join(argv[1:])}; give the config as --config=FILE '
          'and fields as --config.<field>=value', file=sys.stderr)
    sys.exit(1)
  return argv


def _stop_at_first_ctrl_c() -> threading.Event:
  """The first Ctrl-C asks the trainer to stop after the epoch in progress (checkpointed); a
  KeyboardInterrupt raised wherever the main thread happens to be could be swallowed (by a
  callback) or leave a TensorBoard writer's thread behind that the exit then waits for. A second
  Ctrl-C interrupts at once: it goes to the handler this one replaces, interrupts.watched()'s
  (call it inside that block), which records it, so that the trainer stops at once also when the
  KeyboardInterrupt landed in a callback that swallowed it (JAX's gc callback)."""
  stop = threading.Event()
  at_once = signal.getsignal(signal.SIGINT)

  def on_sigint(signum, frame):
    if stop.is_set():
      at_once(signum, frame)
    stop.set()
    print('\nCtrl-C: stopping after the epoch in progress (Ctrl-C again to stop at once)',
          file=sys.stderr, flush=True)

  signal.signal(signal.SIGINT, on_sigint)
  return stop


def main(argv):
  del argv  # parse_flags refused any argument that is not a flag
  absl_logging.set_verbosity(absl_logging.WARNING)  # orbax logs every file it writes at INFO
  try:
    config = _CONFIG.value
    config.to_dict()  # a file that failed to load gives an object that raises on first use
  except Exception as e:  # pylint: disable=broad-except
    _config_error(e)
  from gan import parallel  # pylint: disable=import-outside-toplevel  (jax import after flags)
  from gan import resume  # pylint: disable=import-outside-toplevel
  from gan import trainer  # pylint: disable=import-outside-toplevel
  from gan import checkpoints  # pylint: disable=import-outside-toplevel
  checkpoints.silence_abandoned_checkpoint_reads()
  checkpoints.silence_reraised_write_failures()  # a failed write is its one error: line
  try:
    config_lib.check_repeated_tuple_overrides(sys.argv, config)
    # Before anything touches a device: JAX must know every process before it lists devices.
    parallel.initialize_distributed(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
    interrupts.started()  # what watched() puts back at its end: not 'before training started'
    with interrupts.watched():  # a second Ctrl-C that a callback swallowed still stops at once
      stop = _stop_at_first_ctrl_c()
      result = trainer.train(config, stop_requested=stop.is_set)
    interrupts.finished()  # else a Ctrl-C now would end a finished run with 'interrupted:'
    if result['interrupted']:
      print('interrupted: stopped after the epoch in progress, checkpointed; the same command '
            'resumes', file=sys.stderr)
      sys.exit(130)
  except DesignGanError as e:
    print(f'error: {e}', file=sys.stderr)
    if isinstance(e, checkpoints.CheckpointError):
      interrupts.exit_after_error()  # the trainer completed its pending writes
    interrupts.finished()
    sys.exit(1)
  except KeyboardInterrupt:
    interrupts.finished()
    # The trainer has already finished its pending checkpoint writes; rerunning resumes.
    print(_interrupted_line(config, resume.has_checkpoints), file=sys.stderr)
    # At once, without the interpreter's teardown: after a second Ctrl-C during the epoch's
    # compilation it crashed on the XLA work still running ('Fatal Python error: Segmentation
    # fault', exit status 139).
    interrupts.exit_after_error(130)


def _interrupted_line(config, has_checkpoints) -> str:
  """What a Ctrl-C left behind and what the same command will do with it."""
  try:  # the log_path the trainer wrote to: --config.log_path=~/x has its ~ expanded there
    config = config_lib.resolve(config)
  except Exception:  # pylint: disable=broad-except  (interrupted before the trainer checked it)
    pass
  try:
    resumable = has_checkpoints(config)
    best_only = not resumable and has_checkpoints(config, 'best')
  except OSError as e:  # a run directory that cannot be listed: say what is known
    return f'interrupted: could not list the run\'s checkpoints ({e})'
  if resumable:
    return ('interrupted: the checkpoints written so far (every checkpoint_every epochs) are '
            'kept; the same command resumes from the last one')
  if best_only:  # which training afresh there is refused
    return ('interrupted: stopped before the first checkpoint, with best/ holding an evaluated '
            'model; keep it and train under a new --config.log_path, or remove best/ to start '
            'afresh')
  return 'interrupted: stopped before the first checkpoint; the same command starts afresh'


if __name__ == '__main__':
  escape_unencodable_stdout()
  app.run(main, flags_parser=parse_flags)
