"""Project exceptions: every error a user can cause is one of these.

The command-line entry points catch `DesignGanError`, print its message on one line and exit
non-zero, so a message must say what was wrong and what is allowed.
"""

import argparse
import contextlib
import logging
import sys


class DesignGanError(Exception):
  """Base class of all errors a user can act on."""


class DataError(DesignGanError):
  """A dataset file, directory or label is unusable."""


class LayoutError(DesignGanError):
  """A design layout or strut position is inconsistent."""


class ConfigError(DesignGanError):
  """A configuration value or combination is invalid."""


class TrainingError(DesignGanError):
  """Training cannot go on (a non-finite loss)."""


class OutOfMemoryError(ConfigError):
  """A model, batch or sweep too large for the memory of this machine's devices."""


# What makes a run take more memory, for the message of an OutOfMemoryError.
MEMORY_HINT = ('give smaller networks (gen_hidden_dims, disc_hidden_dims, hidden_dim, zdim, '
               'class_embed_dim; self-attention: embed_dim, num_layers, mlp_ratio), a smaller '
               'batch_size or fewer num_seeds')


def out_of_memory(error: BaseException) -> str:
  """The first line of `error` if it says an allocation failed (numpy's MemoryError, XLA's
  RESOURCE_EXHAUSTED on a CPU or GPU), else ''."""
  reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
  if isinstance(error, MemoryError) or (
      isinstance(error, RuntimeError) and ('out of memory' in reason.lower()
                                           or 'RESOURCE_EXHAUSTED' in reason)):
    return reason
  return ''


class ArgumentParser(argparse.ArgumentParser):
  """argparse's parser for the `python -m gan.<tool>` commands, whose errors (a misspelt option,
  a value of the wrong type, a missing argument) are one `error:` line and exit status 1, as every
  other input error of every tool, instead of argparse's usage block and exit status 2."""

  def error(self, message: str):
    print(f'error: {message} ({self.prog} --help lists the options)', file=sys.stderr)
    sys.exit(1)


@contextlib.contextmanager
def messages_to(handler: logging.Handler, name: str = 'gan'):
  """Within the block, the info lines and warnings of logger `name` (this package's, or one of its
  modules') go to `handler`, and only there: not a second time through the root logger's handler,
  which absl's first log call (orbax logs while it is imported) had set to 'LEVEL:name:message'
  at level WARNING, so that the info lines were lost and a warning read 'WARNING:root:...'."""
  logger = logging.getLogger(name)
  saved = logger.level, logger.propagate
  logger.addHandler(handler)
  logger.setLevel(logging.INFO)
  logger.propagate = False
  try:
    yield
  finally:
    logger.removeHandler(handler)
    logger.setLevel(saved[0])
    logger.propagate = saved[1]


def messages_on_stderr():
  """This package's log lines (a classifier trained or loaded, warnings) on stderr, as plain
  lines, while a `python -m gan.<tool>` command runs (logging.basicConfig could not: see
  `messages_to`)."""
  handler = logging.StreamHandler()  # sys.stderr as it is now
  handler.setFormatter(logging.Formatter('%(message)s'))
  return messages_to(handler)


def escape_unencodable_stdout() -> None:
  """For a command-line tool's start: stdout writes what it cannot encode escaped (\\udcff), as
  Python's stderr always does. A strict UTF-8 stdout (Python's outside the C locales) raised a
  UnicodeEncodeError for a path with non-UTF-8 bytes in a last 'wrote ... to <path>' line: a
  traceback and exit status 1 after the work was done."""
  with contextlib.suppress(AttributeError, ValueError):  # replaced by one without reconfigure()
    sys.stdout.reconfigure(errors='backslashreplace')
