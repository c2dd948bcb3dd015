"""vanilla GAN + bce loss, MLP generator and critic (every field: configs/default.py)."""

from configs import default


def get_config():
  return default.variant('vanilla', 'bce')
