"""vanilla GAN + bce loss, MLP generator and critic (see configs/default.py for every field)."""

from configs import default


def get_config():
  c = default.get_config()
  c.gan_model = 'vanilla'
  c.loss_mode = 'bce'
  c.log_path = 'runs/vanilla_bce'
  return c
