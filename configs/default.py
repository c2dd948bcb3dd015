"""Default: vanilla conditional GAN + WGAN-GP + MLP generator/critic (the original author's best).

Every other config starts from this one and changes a few fields; `--config.<field>=value`
overrides any field on the command line.
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0                         # initialisation, noise, dropout, shuffling (data_seed: split)
  c.data_seed = -1                   # seed of the train/validation split; -1 = seed
  c.num_seeds = 1                    # K > 1: train K models (seeds seed..seed+K-1) at once, one
                                     # vmapped step, each in <log_path>/seed_<seed+k>

  # Data. An empty data_path uses the embedded synthetic designs (generated once into a cache).
  c.data_path = ''
  c.datashape = 'dropempty'          # original | dropempty
  c.strut_positions = '7,11;5,14'    # (row, col) of each strut pixel in the full layout
  c.durability_values = ''           # '' = infer from the data, else e.g. '1.0,1.1,1.2'
  c.mass_values = ''                 # as durability_values
  c.val_fraction = 0.1               # share of the designs held out for validation
  # Derived from the data; 0 = derive. A non-zero value that contradicts the data is an error.
  c.height = 0                       # rows of the training layout (after datashape)
  c.width = 0                        # its columns
  c.input_dim = 0                    # height * width * 3

  # The three independent choices: 2 x 2 x 3 = 12 combinations.
  c.gan_model = 'vanilla'            # vanilla | infogan                (alias: vanila)
  c.loss_mode = 'wgangp'             # bce | wgan | wgangp              (alias: vanila = bce)
  c.gen_mode = 'mlp'                 # mlp | selfattention              (alias: vanila = mlp)
  c.disc_mode = 'mlp'                # mlp | selfattention              (alias: vanila = mlp)

  # Networks.
  c.zdim = 100                       # generator noise size
  c.class_embed_dim = 32             # durability / mass embedding size in the generator
  c.gen_hidden_dims = (512, 512)     # MLP generator trunk; 0 stands for the image size D
  c.gen_norm = 'layer'               # batch | layer | none (MLP; self-attention: layer only)
  c.gen_dropout = 0.0                # MLP generator only
  c.hidden_dim = 256                 # hidden width of the critic's class heads (Q, aux)
  c.disc_hidden_dims = (256, 256, 256)  # MLP critic body; 0 stands for the image size D
  c.disc_norm = 'layer'              # layer | none (no BatchNorm in a critic: it couples examples)
  c.disc_dropout = 0.0               # MLP critic only
  c.disc_conditioning = 'projection'  # projection (+ fixed pixels) | none (unconditional)
  c.mask_input = True                # feed the strut mask as a pixel channel
  c.embed_dim = 16                   # self-attention token size E; 16 (was 32): 1.5x faster
                                     # per update (gan.bench), still 8 per head
  c.num_heads = 2                    # must divide embed_dim
  c.attention = 'axial'              # axial: half the heads attend along the pixel's row, half
                                     # along its column | full: every head over all pixels
  c.attention_noise = 'token'        # token: each pixel token of the attention generator gets its
                                     # own projection of the noise | shared: only the condition
                                     # vector added to every token (designs hardly varied with z)
  c.attention_features = 256         # attention critic: features = LeakyReLU(dense(all normalised
                                     # tokens)) of this width | 0: the mean of the tokens (E)
  c.num_layers = 2                   # transformer blocks
  c.mlp_ratio = 2                    # transformer MLP width = mlp_ratio * embed_dim

  # Losses.
  c.constraint_lambda = 10.0         # weight of the strut-pixel penalty in the generator loss
  c.lambda_gp = 10.0                 # wgangp
  c.weight_clip = 0.01               # wgan: critic weight matrices clipped to +-weight_clip
  c.critic_iter = 2                  # critic steps per generator step (bce always uses 1); 2 with
                                     # the auxiliary head beat 5 at equal compute
  c.info_lambda = 1.0                # infogan: weight of the code (mutual-information) loss
  # Auxiliary classifier (AC-GAN): a head on the critic's features learns (durability, mass) from
  # real designs in the critic step; the generator is asked to make designs it classifies as
  # requested. 0 = no head.
  c.aux_lambda = 3.0                 # weight of CE(A(G(z, c)), c) in the generator loss
  c.aux_lambda_critic = 1.0          # weight of CE(A(x), labels) in the critic loss
  c.aux_regression = 1.0             # extra squared error on the class index (0 = CE only)

  # Optimisation.
  c.optimizer = 'adam'               # adam | adamw | rmsprop
  c.learning_rate_gen = 2e-4         # initial generator lr (see lr_decay_steps)
  c.learning_rate_disc = 2e-4        # initial critic lr
  c.opt_beta1 = 0.0                  # adam / adamw first-moment decay (rmsprop: unused)
  c.opt_beta2 = 0.9                  # adam / adamw second-moment decay
  c.weight_decay = 0.01              # adamw only
  c.lr_decay_steps = 7000            # generator steps of a linear lr decay (0 = constant lr);
                                     # 7000 = the 200 epochs x 35 batches of the embedded data
                                     # (oracle_exact 0.89 -> 0.94 at 200 epochs)
  c.lr_final_fraction = 0.1          # lr after the decay, as a fraction of the initial lr
  c.ema_decay = 0.999                # sampling weights: EMA of the generator (0 = raw weights)
  c.batch_size = 256                 # designs per step; an epoch drops the partial last batch
  c.epochs = 200                     # about 6 minutes on a 2-core CPU (README, Quick start)
  c.time_budget_min = 0.0            # > 0: stop after the last epoch expected to end, with its
                                     # evaluation and checkpoint, within this many minutes of
                                     # wall-clock (from the start, data loading included); the
                                     # first epoch then also evaluates and checkpoints, to measure
                                     # what that costs

  # Outputs.
  c.log_path = 'runs/default'        # the run directory (logs, TensorBoard, checkpoints)
  c.output_path = ''                 # '' = <log_path>/output
  c.log_every = 1                    # epochs between log lines / TensorBoard scalars
  c.sample_every = 10                # epochs between TensorBoard image grids
  c.checkpoint_every = 10            # epochs between checkpoints (and always at the end)
  c.keep_checkpoints = 3             # newest checkpoints kept in <log_path>/checkpoints
  c.num_output_images = 64           # designs written to output_path/fake and /real at the end

  # Evaluation during training (gan/evaluate.py): every eval_every epochs and at the end.
  c.eval_every = 10                  # 0 = never
  c.eval_per_pair = 10               # generated designs per (durability, mass) pair
  c.best_metric = 'auto'             # kept in <log_path>/best; auto = oracle_exact on the
                                     # synthetic designs, else classifier_accuracy_generated
  return c


def variant(gan_model: str, loss_mode: str) -> ml_collections.ConfigDict:
  """The default config for another model family and loss, logging to runs/<family>_<loss>."""
  c = get_config()
  c.gan_model, c.loss_mode = gan_model, loss_mode
  c.log_path = f'runs/{gan_model}_{loss_mode}'
  return c
