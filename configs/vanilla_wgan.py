"""vanilla GAN + wgan loss, MLP generator and critic (every field: configs/default.py)."""

from configs import default


def get_config():
  return default.variant('vanilla', 'wgan')
