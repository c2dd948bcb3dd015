"""gan.checkpoints helpers that the trainer and CLI tests do not reach directly."""

import logging
import sys
import types

from gan import checkpoints


def test_only_the_abandoned_reads_noise_is_dropped(monkeypatch):
  """The CLIs drop what orbax's abandoned reads of a damaged checkpoint print at random (late
  'Event loop is closed' callback errors, asyncio's 'Task exception was never retrieved') and pass
  on everything else."""
  reached = []
  monkeypatch.setattr(sys, 'unraisablehook', reached.append)
  asyncio_log = logging.getLogger('asyncio')
  monkeypatch.setattr(asyncio_log, 'filters', [])
  checkpoints.silence_abandoned_checkpoint_reads()
  installed = sys.unraisablehook
  checkpoints.silence_abandoned_checkpoint_reads()  # e.g. gan.evaluate.main called again
  assert sys.unraisablehook is installed and len(asyncio_log.filters) == 1
  late = types.SimpleNamespace(exc_value=RuntimeError('Event loop is closed'))
  other_runtime = types.SimpleNamespace(exc_value=RuntimeError('something else'))
  other_type = types.SimpleNamespace(exc_value=ValueError('Event loop is closed'))
  for unraisable in (late, other_runtime, other_type):
    sys.unraisablehook(unraisable)
  assert reached == [other_runtime, other_type]

  def record(msg):
    return asyncio_log.makeRecord('asyncio', logging.ERROR, __file__, 1, msg, (), None)

  assert not asyncio_log.filter(record('Task exception was never retrieved'))
  assert asyncio_log.filter(record('Executing <Task> took 2.0 seconds'))
