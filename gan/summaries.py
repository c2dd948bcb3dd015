"""What a person looks at: upscaled design grids, BMP dumps, TensorBoard scalars and images."""

import os
import re
import shutil
import sys
import threading
import weakref

import numpy as np

from gan import images as images_lib
from gan import interrupts
from gan import paths
from gan.errors import DesignGanError

GRID_SCALE = 4   # pixels per design cell in grids
GRID_PAD = 2     # grey border between designs, in grid pixels
PAD_VALUE = 96


def design_grid(designs: np.ndarray, scale: int = GRID_SCALE, pad: int = GRID_PAD) -> np.ndarray:
  """(rows, cols, H, W, 3) uint8 designs -> one (rows*(H*s+p)+p, cols*(W*s+p)+p, 3) image."""
  rows, cols, h, w, _ = designs.shape
  big = designs.repeat(scale, axis=2).repeat(scale, axis=3)
  cell_h, cell_w = h * scale + pad, w * scale + pad
  grid = np.full((rows * cell_h + pad, cols * cell_w + pad, 3), PAD_VALUE, np.uint8)
  for r in range(rows):
    for c in range(cols):
      y, x = pad + r * cell_h, pad + c * cell_w
      grid[y:y + h * scale, x:x + w * scale] = big[r, c]
  return grid


def write_designs(directory: str, prefix: str, designs: np.ndarray) -> list[str]:
  """Writes (N, H, W, 3) uint8 designs as `<directory>/<prefix>_<i>.bmp`; returns the paths.

  The designs of an earlier call are replaced, not added to: the new files are written into a
  staging directory first, and only when all are there do `<prefix>_<k>.bmp` files already in
  `directory` go (other files stay) and the new ones move in."""
  parent = os.path.dirname(os.path.abspath(directory))
  os.makedirs(parent, exist_ok=True)
  names = [f'{prefix}_{i}.bmp' for i in range(len(designs))]
  in_the_way = [n for n in names if os.path.isdir(os.path.join(directory, n))]
  if in_the_way:
    raise paths.OutputPathError(f'{directory} holds directories named like the designs it gets '
                                f'({", ".join(in_the_way[:3])}); remove them')
  tmp = paths.staging_dir(directory)
  try:
    for name, image in zip(names, designs):
      images_lib.write_rgb(os.path.join(tmp, name), image, atomic=False)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  # Ctrl-C deferred (train.py's second one raises at once): one between the removal of the
  # earlier designs and the move of the new ones left some of each deleted.
  with interrupts.deferred():
    try:
      if not os.path.isdir(directory):
        os.rename(tmp, directory)
      else:
        ours = re.compile(rf'{re.escape(prefix)}_\d+\.bmp')
        for name in os.listdir(directory):
          if ours.fullmatch(name) and os.path.isfile(os.path.join(directory, name)):
            os.unlink(os.path.join(directory, name))
        for name in names:
          os.replace(os.path.join(tmp, name), os.path.join(directory, name))
    finally:
      shutil.rmtree(tmp, ignore_errors=True)  # gone already after the rename
  return [os.path.join(directory, name) for name in names]


def _summary_writer_class():
  """tensorboardX.SummaryWriter, imported without PyTorch.

  tensorboardX's writer module imports torch wherever it is installed, only to accept torch
  tensors, which this project never passes; GPU machines often have it (the lent H100's image
  does, and a 5 s pause came there just where the trainer first opens the writer, before the
  first epoch's log line). With torch 2.14 installed for a measurement on this project's 2-core CPU
  (it is not a requirement), that import made tensorboardX's 1.6-2.0 s instead of 0.1 s, and it
  loads PyTorch's CUDA libraries into the process beside JAX's. A None in sys.modules makes that
  `import torch` fail as if it were not installed (tensorboardX catches the ImportError), for as
  long as tensorboardX's first import takes; a torch or tensorboardX the process has already
  imported is left alone."""
  if 'torch' in sys.modules or 'tensorboardX' in sys.modules:
    from tensorboardX import SummaryWriter  # pylint: disable=import-outside-toplevel
    return SummaryWriter
  sys.modules['torch'] = None
  try:
    from tensorboardX import SummaryWriter  # pylint: disable=import-outside-toplevel
  finally:
    if 'torch' in sys.modules and sys.modules['torch'] is None:
      del sys.modules['torch']
  return SummaryWriter


# The writer threads of this module's TensorBoard writers, and why each that failed ended
# (`_keep_writer_failures`, its error without the traceback, whose frames would hold the thread);
# a thread no longer referenced elsewhere leaves both.
_watched_threads = weakref.WeakSet()
_writer_failures = weakref.WeakKeyDictionary()


def _keep_writer_failures():
  """Makes threading.excepthook keep the error that ends one of `_watched_threads` (a full disk)
  for `TensorBoard`, which names it in the one error line train.py prints: Python's default hook
  printed the thread's whole traceback above that line. An error other than an OSError (a bug) is
  printed by the hook installed before as well; other threads' errors, a notebook's own
  tensorboardX writers' included, go to that hook only, as ever."""
  previous = threading.excepthook
  if getattr(previous, 'keeps_writer_failures', False):
    return

  def hook(args):
    ours, failure = args.thread in _watched_threads, args.exc_value
    if not (ours and isinstance(failure, OSError)):
      previous(args)
    if ours and isinstance(failure, Exception):
      _writer_failures[args.thread] = failure.with_traceback(None)

  hook.keeps_writer_failures = True
  threading.excepthook = hook


def _worker_thread(writer):
  """(tensorboardX's EventFileWriter of `writer`, the thread that writes its events); None for
  each that another tensorboardX version names otherwise (then nothing is checked)."""
  events = getattr(getattr(writer, 'file_writer', None), 'event_writer', None)
  return events, getattr(events, '_worker', None)


class TensorBoard:
  """tensorboardX writer under `<log_path>/tensorboard_records`, opened at the first write (a
  writer makes its event file when opened: a resumed run would otherwise leave an empty one)."""

  def __init__(self, log_path: str):
    self.directory = os.path.join(log_path, 'tensorboard_records')
    self.purge_step = None
    self.writer = None

  def purge_from(self, step: int):
    """TensorBoard hides the earlier files' events from `step` on: a resumed run replays the
    epochs after its checkpoint, which would otherwise show twice. Call before the first write."""
    assert self.writer is None, 'purge_from after a write'
    self.purge_step = step

  def _writer(self):
    if self.writer is None:
      _keep_writer_failures()
      # An unbounded queue (0): of 10 (the default), the writes after the writer thread ended on
      # a failed write (a full disk) waited for room forever, before `_check_writing` could tell.
      self.writer = _summary_writer_class()(self.directory, purge_step=self.purge_step,
                                            max_queue=0)
      worker = _worker_thread(self.writer)[1]
      if worker is not None:
        _watched_threads.add(worker)
    return self.writer

  def _check_writing(self):
    """An OutputPathError once tensorboardX's writer thread has ended on a failed write (a full
    disk; a DesignGanError where it ended on a bug): it writes the events of its queue from a
    thread that such a write ends, and with a queue of 10 the next events waited for room forever
    (train.py hung after one epoch). The dead writer is marked closed, so that its close (also at
    exit) neither writes nor waits."""
    events, worker = _worker_thread(self._writer())
    if worker is None or worker.is_alive():
      return
    events._closed = True  # pylint: disable=protected-access
    self.writer = None
    raise self._failed(_writer_failures.pop(worker, None))

  def _failed(self, failure) -> DesignGanError:
    """The error of a writer whose write failed with `failure` (None: not known). One not an
    OSError is a bug (its traceback printed above), which no free disk space would mend."""
    if failure is not None and not isinstance(failure, OSError):
      cause = f'{type(failure).__name__}: {failure}' if str(failure) else type(failure).__name__
      return DesignGanError(f'the TensorBoard writer of {self.directory} failed ({cause}; its '
                            'traceback is above); the complete checkpoints are kept')
    cause = str(failure) if failure else 'a full disk or a directory made read-only'
    return paths.OutputPathError(
        f'cannot write the TensorBoard records in {self.directory} (their writer failed: '
        f'{cause}); the complete checkpoints are kept, and the same command resumes from the '
        'latest once it can write there')

  def scalars(self, step: int, values: dict, prefix: str = 'train/'):
    for name, value in values.items():
      self._check_writing()
      self._writer().add_scalar(prefix + name, float(value), step)

  def image(self, tag: str, step: int, image: np.ndarray):
    self._check_writing()
    self._writer().add_image(tag, image, step, dataformats='HWC')

  def close(self):
    """Writes the events still queued and closes the writer; an OutputPathError where that last
    write failed (a full disk), which would otherwise lose the last epoch's records unsaid. The
    file's buffered bytes are flushed here, in this thread: on a full disk that is where the
    write fails, often."""
    if self.writer is not None:
      self._check_writing()
      events, worker = _worker_thread(self.writer)
      writer, self.writer = self.writer, None
      try:
        writer.flush()
        writer.close()
      except OSError as e:  # tensorboardX's close flushes first: its thread is still running
        if worker is not None and worker.is_alive():
          worker.stop()
        if events is not None:  # nothing left to retry at exit
          events._closed = True  # pylint: disable=protected-access
        raise self._failed(e) from None
      if worker is not None and worker in _writer_failures:
        raise self._failed(_writer_failures.pop(worker))


class NoTensorBoard:
  """Stands in for `TensorBoard` where nothing is written (processes other than 0)."""

  def purge_from(self, step: int):
    pass

  def scalars(self, step: int, values: dict, prefix: str = 'train/'):
    pass

  def image(self, tag: str, step: int, image: np.ndarray):
    pass

  def close(self):
    pass
