"""Project exceptions: every error a user can cause is one of these.

The command-line entry points catch `DesignGanError`, print its message on one line and exit
non-zero, so a message must say what was wrong and what is allowed.
"""


class DesignGanError(Exception):
  """Base class of all errors a user can act on."""


class DataError(DesignGanError):
  """A dataset file, directory or label is unusable."""


class LayoutError(DesignGanError):
  """A design layout or strut position is inconsistent."""


class ConfigError(DesignGanError):
  """A configuration value or combination is invalid."""
