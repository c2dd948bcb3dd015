"""Trains a conditional design GAN.

  python train.py --config=configs/infogan_wgan.py [--config.<field>=value ...]

All logic lives in gan/trainer.py; this script only parses flags and reports errors.
"""

import sys

from absl import app
from absl import logging as absl_logging
from ml_collections import config_flags

from gan.errors import DesignGanError

_CONFIG = config_flags.DEFINE_config_file('config', 'configs/default.py',
                                          'Training config file (see configs/).')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  absl_logging.set_verbosity(absl_logging.WARNING)  # orbax logs every file it writes at INFO
  from gan import trainer  # pylint: disable=import-outside-toplevel  (jax import after flags)
  try:
    trainer.train(_CONFIG.value)
  except DesignGanError as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(1)


if __name__ == '__main__':
  app.run(main)
