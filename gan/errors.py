"""Project exceptions: every error a user can cause is one of these.

The command-line entry points catch `DesignGanError`, print its message on one line and exit
non-zero, so a message must say what was wrong and what is allowed.
"""

import argparse
import sys


class DesignGanError(Exception):
  """Base class of all errors a user can act on."""


class DataError(DesignGanError):
  """A dataset file, directory or label is unusable."""


class LayoutError(DesignGanError):
  """A design layout or strut position is inconsistent."""


class ConfigError(DesignGanError):
  """A configuration value or combination is invalid."""


class ArgumentParser(argparse.ArgumentParser):
  """argparse's parser for the `python -m gan.<tool>` commands, whose errors (a misspelt option,
  a value of the wrong type, a missing argument) are one `error:` line and exit status 1, as every
  other input error of every tool, instead of argparse's usage block and exit status 2."""

  def error(self, message: str):
    print(f'error: {message} ({self.prog} --help lists the options)', file=sys.stderr)
    sys.exit(1)
