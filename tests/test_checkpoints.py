"""gan.checkpoints helpers that the trainer and CLI tests do not reach directly."""

import sys
import types

from gan import checkpoints


def test_only_closed_event_loop_errors_are_dropped(monkeypatch):
  """The CLIs' unraisable-exception hook drops tensorstore's late 'Event loop is closed' callback
  errors (racy tracebacks beside a damaged checkpoint's one error line) and passes on the rest."""
  reached = []
  monkeypatch.setattr(sys, 'unraisablehook', reached.append)
  checkpoints.ignore_closed_event_loop_callbacks()
  installed = sys.unraisablehook
  checkpoints.ignore_closed_event_loop_callbacks()  # e.g. gan.evaluate.main called again
  assert sys.unraisablehook is installed
  late = types.SimpleNamespace(exc_value=RuntimeError('Event loop is closed'))
  other_runtime = types.SimpleNamespace(exc_value=RuntimeError('something else'))
  other_type = types.SimpleNamespace(exc_value=ValueError('Event loop is closed'))
  for unraisable in (late, other_runtime, other_type):
    sys.unraisablehook(unraisable)
  assert reached == [other_runtime, other_type]
