"""The original's vanilla GAN + WGAN-GP at its exact network sizes, for speed comparisons.

Generator (reference §3.1): noise Lin(z->D), embeddings 2x32, fixed pixels Lin(D->D), trunk
Lin(2D+64->1024) BN LReLU Drop(0.3), Lin(1024->1024) BN LReLU Drop, Lin(1024->D) BN LReLU Drop,
Lin(D->D) tanh. Critic (§3.2): unconditional, Lin(D->D) LN LReLU Drop, 3 x Lin(->h) LN LReLU Drop,
Lin(h->1) (linear: the original's sigmoid on a WGAN-GP critic was a bug). No mask input: the mask is
constant per layout, which a dense layer absorbs into its bias. Batch 512, critic_iter 5,
Adam(2e-4, betas 0.0, 0.9).
"""

from configs import default


def get_config():
  c = default.get_config()
  c.gan_model = 'vanilla'
  c.loss_mode = 'wgangp'
  c.class_embed_dim = 32
  c.gen_hidden_dims = (1024, 1024, 0)
  c.gen_norm = 'batch'
  c.gen_dropout = 0.3
  c.hidden_dim = 256
  c.disc_hidden_dims = (0, 256, 256, 256)
  c.disc_norm = 'layer'
  c.disc_dropout = 0.3
  c.disc_conditioning = 'none'
  c.mask_input = False
  c.batch_size = 512
  c.critic_iter = 5
  c.aux_lambda = 0.0  # the original had no auxiliary classifier and sampled its raw generator
  c.ema_decay = 0.0
  c.lr_decay_steps = 0  # nor did it decay its learning rates (the default's decay came later)
  c.optimizer = 'adam'
  c.opt_beta1, c.opt_beta2 = 0.0, 0.9
  c.log_path = 'runs/original_vanilla_wgangp'
  return c
