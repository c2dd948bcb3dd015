"""Tests of gan/errors.py: which errors are called out of memory, where the package's log lines go
while a tool runs, and a stdout a tool cannot reconfigure."""

import io
import logging
import re
import sys

import jax
import pytest

from configs import default
from gan import errors


@pytest.mark.parametrize('error, reason', [
    (MemoryError('Unable to allocate 6.11 TiB'), 'Unable to allocate 6.11 TiB'),
    (MemoryError(), 'MemoryError'),  # numpy's has a message, Python's own none
    (jax.errors.JaxRuntimeError('RESOURCE_EXHAUSTED: Failed to allocate 4.00GiB\nmore'),
     'RESOURCE_EXHAUSTED: Failed to allocate 4.00GiB'),
    (RuntimeError('Out of memory while trying to allocate 8 bytes.'),
     'Out of memory while trying to allocate 8 bytes.'),
])
def test_an_allocation_failure_is_out_of_memory_with_its_first_line(error, reason):
  assert errors.out_of_memory(error) == reason


@pytest.mark.parametrize('error', [
    jax.errors.JaxRuntimeError('INTERNAL: Failed to compile'),
    errors.DataError('/data/out of memory/: data directory does not exist'),
    KeyError('RESOURCE_EXHAUSTED'),
])
def test_another_error_is_not_out_of_memory_even_if_it_quotes_the_words(error):
  """The trainer asks of every error: a project error about a path that says 'out of memory' is
  not an allocation that failed."""
  assert errors.out_of_memory(error) == ''


def test_the_memory_hint_names_config_fields():
  """What the hint tells the user to shrink is what they can set (--config.<name>)."""
  names = re.findall(r'\b[a-z]+(?:_[a-z]+)*\b', errors.MEMORY_HINT)
  fields = [name for name in names if '_' in name or name == 'zdim']
  assert len(fields) == 10, fields
  config = default.get_config()
  assert [name for name in fields if name not in config] == []


class _Lines(logging.Handler):
  """Keeps the message of every record it is given."""

  def __init__(self):
    super().__init__()
    self.lines = []

  def emit(self, record):
    self.lines.append(record.getMessage())


def test_messages_go_to_the_handler_only_and_only_within_the_block(caplog):
  """Within the block a logger's info lines and warnings reach the handler and not the root
  logger's handlers (caplog's here); after it the logger is as it was: the handler gone, its
  level and propagation back."""
  logger = logging.getLogger('gan.test_errors')
  lines = _Lines()
  caplog.set_level(logging.DEBUG)
  with errors.messages_to(lines, logger.name):
    logger.info('an info line')
    logger.warning('warning: a warning')
  assert lines.lines == ['an info line', 'warning: a warning']
  assert caplog.records == []
  logger.warning('after')
  assert lines.lines == ['an info line', 'warning: a warning']
  assert [r.getMessage() for r in caplog.records] == ['after']
  logger.setLevel(logging.ERROR)
  logger.propagate = False
  with errors.messages_to(lines, logger.name):
    logger.info('info')
  assert (logger.level, logger.propagate, logger.handlers) == (logging.ERROR, False, [])
  assert lines.lines[-1] == 'info'


def test_by_default_every_logger_of_the_package_is_sent(caplog):
  lines = _Lines()
  with errors.messages_to(lines):
    logging.getLogger('gan.classifier').info('Trained the evaluation classifier in 1.0 s')
    logging.getLogger('other').warning('not ours')
  assert lines.lines == ['Trained the evaluation classifier in 1.0 s']


def test_a_stdout_without_reconfigure_is_left_as_it_is(monkeypatch):
  """A tool's main run where sys.stdout was replaced (a notebook's, io.StringIO) must not fail
  before it starts."""
  stdout = io.StringIO()
  monkeypatch.setattr(sys, 'stdout', stdout)
  errors.escape_unencodable_stdout()
  assert sys.stdout is stdout


@pytest.mark.parametrize('error', [errors.DataError, errors.LayoutError, errors.ConfigError,
                                   errors.TrainingError, errors.OutOfMemoryError])
def test_every_error_is_one_the_tools_print_as_a_line(error):
  """train.py, infer.py and the gan.<tool> mains catch DesignGanError to print its one line and
  exit 1: an error class outside it (a non-finite loss's) would end in a traceback."""
  assert issubclass(error, errors.DesignGanError)
