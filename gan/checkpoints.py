"""Orbax checkpoints: the whole TrainState plus the metadata needed to resume and to generate.

Layout: `<log_path>/checkpoints/<epoch>/{state,meta}`. `state` is the TrainState pytree
(StandardSave), `meta` JSON with the resolved config, the DataSpec (vocabularies and layout) and
the epoch. Restoring goes through an abstract target built from the config, so a checkpoint written
on a GPU restores on a CPU and vice versa. Orbax writes each step to a temporary directory and
renames it when complete, so an interrupted save never shadows the last good checkpoint.
"""

import collections
import contextlib
import dataclasses
import logging
import os
import re
import shutil
import sys
from typing import Any, Optional

import jax
import orbax.checkpoint as ocp

from gan.errors import DesignGanError


class CheckpointError(DesignGanError):
  """A checkpoint is missing, corrupt or incompatible."""


def silence_abandoned_checkpoint_reads() -> None:
  """For the CLIs: when orbax gives up on a damaged checkpoint, its other pending tensorstore
  reads are abandoned, and their failures can print tracebacks around the one error line, at
  random: as 'Event loop is closed' RuntimeErrors that their completion callbacks raise
  (unraisable exceptions) and as asyncio's 'Task exception was never retrieved' log records.
  Drops exactly those two; every other unraisable exception and asyncio record passes. Installed
  once however often it is called."""
  _drop_closed_event_loop_errors()
  logging.getLogger('asyncio').addFilter(_not_unretrieved_task)  # a no-op the second time


def silence_reraised_write_failures() -> None:
  """For train.py: orbax logs a checkpoint write that fails in its background threads (a full
  disk) from each thread it passes through, with its traceback (four, about 320 lines before the
  one error line), and raises it again at the next save, `wait_until_finished` or `close`, where
  it becomes one CheckpointError. Drops exactly those records; installed once however often it is
  called."""
  logging.getLogger('absl').addFilter(_not_a_reraised_write_failure)  # a no-op the second time


# What orbax's threads log of an error that is raised again in the main thread: a _SignalingThread
# keeps its exception for its join, the background save thread for the next wait, and
# wait_until_finished raises it after its log line.
_RERAISED = ('_SignalingThread.run() raised an exception', 'in background save thread',
             '[wait_until_finished] Save Finalize thread')


def _not_a_reraised_write_failure(record) -> bool:
  return not (record.levelno >= logging.ERROR and 'orbax' in record.pathname
              and any(text in str(record.msg) for text in _RERAISED))


def _drop_closed_event_loop_errors() -> None:
  """The part of `silence_abandoned_checkpoint_reads` that a library call (`restore_state`)
  installs: asyncio's records are left alone there, since in a notebook (Jupyter runs on
  asyncio) an unretrieved task may be the caller's own."""
  if not getattr(sys.unraisablehook, 'drops_closed_event_loop_errors', False):
    sys.unraisablehook = _dropping_closed_loop_errors(sys.unraisablehook)


def _dropping_closed_loop_errors(previous):
  """An unraisable-exception hook that drops 'Event loop is closed' and passes the rest on."""
  def hook(unraisable):
    error = unraisable.exc_value
    if not (isinstance(error, RuntimeError) and str(error) == 'Event loop is closed'):
      previous(unraisable)

  hook.drops_closed_event_loop_errors = True
  return hook


def _not_unretrieved_task(record) -> bool:
  return not str(record.msg).startswith('Task exception was never retrieved')


# Orbax releases before the option made the directories synchronously (requirements allow 0.11).
_SYNCHRONOUS_DIRECTORIES = (
    ocp.AsyncOptions(create_directories_asynchronously=False)
    if 'create_directories_asynchronously' in {f.name for f in dataclasses.fields(ocp.AsyncOptions)}
    else None)


def manager(directory: str, keep: int, create: bool = True, best_fn=None,
            best_mode: str = 'max') -> ocp.CheckpointManager:
  """Keeps the last `keep` checkpoints, or with `best_fn(metrics)` the `keep` best ones.

  A writing manager (`create`) first removes the temporary directories of saves that a killed run
  left unfinished; a reading one leaves them, since a training run may be writing them now.

  A save makes its step's directory before it returns: orbax's default makes it in the
  background, and where that failed (a directory made read-only during training) the save's
  other writers waited five minutes for it, and the process with them, before it could exit."""
  options = ocp.CheckpointManagerOptions(
      max_to_keep=keep, create=create, best_fn=best_fn, best_mode=best_mode,
      cleanup_tmp_directories=create, async_options=_SYNCHRONOUS_DIRECTORIES)
  with _absl_errors_only():  # a step without its metadata file (damaged) warns as it opens
    return ocp.CheckpointManager(os.path.abspath(directory), options=options,
                                 item_names=('state', 'meta'))


def save(mngr: ocp.CheckpointManager, epoch: int, state, meta: dict,
         metrics: Optional[dict] = None) -> None:
  """Starts writing checkpoint `epoch`; orbax completes it in the background. A write that fails
  (a full disk, a directory made read-only) raises a CheckpointError: here, or where it failed in
  the background, at the next save, `wait_until_finished` or `close`."""
  try:
    mngr.save(epoch, args=ocp.args.Composite(state=ocp.args.StandardSave(state._asdict()),
                                             meta=ocp.args.JsonSave(meta)), metrics=metrics)
  except Exception as e:  # pylint: disable=broad-except  (orbax raises many types)
    raise _write_error(mngr, e) from None


def wait_until_finished(mngr: ocp.CheckpointManager) -> None:
  """Waits for the pending writes of `save`; a CheckpointError where one failed."""
  try:
    mngr.wait_until_finished()
  except Exception as e:  # pylint: disable=broad-except
    raise _write_error(mngr, e) from None


def raise_if_a_write_failed(mngr: ocp.CheckpointManager) -> None:
  """The CheckpointError of a write that failed in the background, at once, instead of at the next
  save; returns at once while a write is still in progress (no wait, no device sync). orbax's
  own check_for_errors finds nothing: its finalize thread takes the failure from the checkpointer
  (0.11 and 0.12 alike) and keeps it for the next wait, which, once no save is in progress, joins
  a finished thread and raises it."""
  if not mngr.is_saving_in_progress():
    wait_until_finished(mngr)


def close(mngr: ocp.CheckpointManager) -> None:
  """Closes a manager, waiting for its pending writes; a CheckpointError where one failed, raised
  once everything the manager holds is closed as well."""
  _await_cleanup(mngr)
  try:
    mngr.close()
  except Exception as e:  # pylint: disable=broad-except
    _close_parts(mngr)
    raise _write_error(mngr, e) from None


def _await_cleanup(mngr: ocp.CheckpointManager) -> None:
  """Waits for the removal of unfinished saves that a writing manager starts in a thread as it
  opens, which orbax's close (0.12) leaves running: a run that failed as it opened removed its new,
  empty checkpoints/ under that thread, which then logged a FileNotFoundError traceback (1 in 6
  manager openings, closings and removals in a row). Its own failure is not the caller's: that
  thread only tidies up after an earlier run."""
  wait = getattr(mngr, '_maybe_await_cleanup_tmp_directory', None)  # private; absent: nothing
  if wait is not None:
    with contextlib.suppress(Exception):
      wait()


# What orbax's CheckpointManager.close closes after its wait for the pending writes (0.11 and 0.12
# alike): the checkpointer (its handlers), the two metadata stores (a thread each), the deleter.
_MANAGER_PARTS = ('_checkpointer', '_non_blocking_metadata_store', '_blocking_metadata_store',
                  '_checkpoint_deleter')


def _close_parts(mngr: ocp.CheckpointManager) -> None:
  """Closes what `mngr.close()` skipped: it raises a write's failure from its wait, before it
  closes anything, and a process that goes on (a notebook that calls `train` again) would keep the
  manager's threads. Each part is closed even where one before it fails; their own errors are
  dropped, the failed write's is the one that is reported."""
  for name in _MANAGER_PARTS:
    part = getattr(mngr, name, None)
    if part is not None:
      with contextlib.suppress(Exception):
        part.close()


def _write_error(mngr: ocp.CheckpointManager, error: Exception) -> CheckpointError:
  """The one line for a failed checkpoint write (orbax's own error is a page of traceback), once
  the write's unfinished temporary directory is removed: on a full disk it held the space it had
  written until the next run's manager removed it. With one process only: only a writing manager
  writes, and the run lock keeps every other writer out of its directory, so no one else's write
  is in progress there; with several, the others write their shards into the same directory, and
  may not have failed. Where it is kept, or cannot be removed (a directory made read-only), the
  next writing manager removes it."""
  if jax.process_count() == 1:
    with contextlib.suppress(Exception):
      for tmp in ocp.step.all_temporary_paths(mngr.directory):
        shutil.rmtree(str(tmp.get()), ignore_errors=True)
  return CheckpointError(f'cannot write a checkpoint in {mngr.directory} ({_write_reason(error)}); '
                         'the complete checkpoints are kept, and the same command resumes from '
                         'the latest once it can write there')


def _write_reason(error: Exception) -> str:
  """What the system said, where it can be told: TensorStore's message of a failed write names
  the array and two long paths in the temporary directory before the reason, and one_line would
  cut it off (a full disk: 'No space left on device [os_error_code='28']')."""
  if isinstance(error, OSError) and error.strerror:
    return f'{error.strerror}: {error.filename}' if error.filename else error.strerror
  code = re.search(r"os_error_code='(\d+)'", str(error))
  return os.strerror(int(code.group(1))) if code else one_line(error)


def read_meta(mngr: ocp.CheckpointManager, epoch: Optional[int] = None,
              earlier_hint: Optional[str] = None) -> tuple[int, dict]:
  """(epoch, metadata) of `epoch` or the latest checkpoint. The message of an unreadable one names
  the earlier checkpoints and `earlier_hint` (default CLI_EARLIER_HINT), as `restore_state`'s."""
  epoch = mngr.latest_step() if epoch is None else epoch
  if epoch is None:
    raise CheckpointError(f'no checkpoint in {mngr.directory}')
  try:
    with _absl_errors_only():
      meta = mngr.restore(epoch, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))['meta']
  except Exception as e:  # orbax raises many types for unreadable files
    earlier = _earlier_checkpoints(mngr, epoch, earlier_hint or CLI_EARLIER_HINT)
    raise CheckpointError(f'checkpoint {epoch} in {mngr.directory} is unreadable: '
                          f'{one_line(e).rstrip(".")}{earlier}') from None
  return epoch, meta


# TrainState fields newer than some checkpoints, with how to rebuild them from the restored
# fields: an older run sampled with its raw generator, so its average starts as that generator.
DERIVED_FIELDS = {'gen_ema': lambda restored: jax.tree.map(lambda x: x.copy(),
                                                          restored['gen_params'])}


# How a user reads an earlier checkpoint, in the message of a damaged one ({step}: the newest).
CLI_EARLIER_HINT = ('infer.py and python -m gan.evaluate read one with --step=N, e.g. '
                    '--step={step}')


def restore_state(mngr: ocp.CheckpointManager, epoch: int, abstract_state,
                  earlier_hint: str = CLI_EARLIER_HINT) -> Any:
  """Restores the TrainState onto the shardings/devices of `abstract_state`.

  The stored array shapes are compared with the model's first, so a checkpoint of another model
  is refused with a short message before any array is read. A checkpoint written before a field
  of DERIVED_FIELDS existed restores without it and gets it rebuilt. The message of a damaged
  checkpoint names the earlier checkpoints and `earlier_hint`: how to use one of them.
  """
  # Before reading: the reads orbax abandons on a damaged checkpoint fail in the background,
  # whenever they do, also while this still runs, and in a notebook or anything that goes on after
  # `gan.trainer.train` refused the checkpoint, no CLI has silenced them.
  _drop_closed_event_loop_errors()
  target = jax.tree.map(ocp.utils.to_shape_dtype_struct, abstract_state._asdict())
  where = f'checkpoint {epoch} in {mngr.directory}'
  earlier = _earlier_checkpoints(mngr, epoch, earlier_hint)
  try:
    stored_tree = _stored_tree(os.path.join(mngr.directory, str(epoch), 'state'), where)
  except CheckpointError as e:
    raise CheckpointError(f'{e}{earlier}') from None
  missing_fields = [k for k in DERIVED_FIELDS
                    if isinstance(stored_tree, dict) and k not in stored_tree and k in target]
  for k in missing_fields:
    del target[k]
  stored = sorted((tuple(m.shape), str(m.dtype)) for m in jax.tree.leaves(stored_tree))
  expected = sorted((tuple(x.shape), str(x.dtype)) for x in jax.tree.leaves(target))
  if not stored:
    raise CheckpointError(f'{where} is damaged: its array metadata is unreadable or '
                          f'empty{earlier}')
  if stored != expected:
    # Counted: a model with one more array of a shape it has already differs in that count only.
    have, want = collections.Counter(stored), collections.Counter(expected)
    missing = sorted((want - have) or (have - want))
    raise CheckpointError(f'{where} was written by a different model ({len(stored)} arrays, this '
                          f'config expects {len(expected)}; e.g. shape {missing[:1]} differs); '
                          'restore it with the config it was trained with')
  try:
    restored = mngr.restore(epoch, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(target)))['state']
  except Exception as e:  # a damaged file
    raise CheckpointError(f'{where} is damaged, its arrays cannot be read '
                          f'({one_line(e)}){earlier}') from None
  for k in missing_fields:
    restored[k] = DERIVED_FIELDS[k](restored)
  return type(abstract_state)(**restored)


def _earlier_checkpoints(mngr: ocp.CheckpointManager, epoch: int, hint: str) -> str:
  """'; earlier checkpoints ... are kept ...' for the message of a damaged checkpoint, or ''."""
  try:
    earlier = sorted(s for s in mngr.all_steps() if s < epoch)
  except Exception:  # pylint: disable=broad-except  (an unreadable directory: say nothing)
    return ''
  if not earlier:
    return ''
  listed = ', '.join(map(str, earlier))
  if len(earlier) > 6:  # the first and the last five ('0, ..., 1, 2, 3, 4, 5' hid nothing)
    listed = f'{earlier[0]}, ..., {", ".join(map(str, earlier[-5:]))}'
  note = (f'; the earlier checkpoint {listed} is kept' if len(earlier) == 1
          else f'; the earlier checkpoints {listed} are kept')
  return f'{note} ({hint.replace("{step}", str(earlier[-1]))})'  # not format: paths may hold {}


def _stored_tree(state_dir: str, where: str):
  """The metadata tree (shape and dtype of every array) of a saved state, read without arrays."""
  try:
    with _absl_errors_only(), ocp.StandardCheckpointer() as checkpointer:
      metadata = checkpointer.metadata(state_dir)  # orbax warns: the item dir has no step metadata
    tree = getattr(metadata, 'item_metadata', metadata)
    return getattr(tree, 'tree', tree)
  except Exception as e:  # missing or unreadable metadata
    raise CheckpointError(f'{where} is damaged or incomplete: {one_line(e)}') from None


@contextlib.contextmanager
def _absl_errors_only():
  """orbax's warnings (absl's logger) dropped within the block: about a damaged checkpoint, the
  one-line error says what matters."""
  absl_logger = logging.getLogger('absl')
  level = absl_logger.level
  absl_logger.setLevel(logging.ERROR)
  try:
    yield
  finally:
    absl_logger.setLevel(level)


def one_line(error: Exception, limit: int = 200) -> str:
  """The first line of an error's message, shortened: orbax errors can run to pages. TensorStore
  wraps a failed read in an error that names only the array index and then dumps its whole spec:
  the first line of the underlying cause (what is wrong with which file) replaces it."""
  if 'See full TensorStore details' in str(error):
    cause = error
    while cause.__cause__ is not None or (cause.__context__ is not None
                                          and not cause.__suppress_context__):
      cause = cause.__cause__ or cause.__context__
    if cause is not error:
      error = cause
  text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
  text = text.split(' See full TensorStore details')[0]
  text = re.sub(r' in OCDBT database at local file "[^"]*"', '', text)  # the checkpoint's path
  # Python object reprs (tensorstore's errors quote bound methods) say nothing to a user.
  text = re.sub(r'<(bound method|built-in method|function) (?:[^<>]|<[^<>]*>)*>', '...', text)
  return text if len(text) <= limit else text[:limit] + '...'
