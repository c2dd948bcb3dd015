"""Validation of training configs: every error is one line saying what is allowed, before any
compilation. `resolve` returns a copy with aliases replaced by canonical names."""

import difflib
import importlib.machinery
import importlib.util
import math
import os
import re
from typing import Sequence

import ml_collections
from absl import flags

from configs import default as default_config
from gan import paths
from gan.errors import ConfigError, LayoutError
from gan.layout import parse_strut_positions

CHOICES = {
    'gan_model': ('vanilla', 'infogan'),
    'loss_mode': ('bce', 'wgan', 'wgangp'),
    'gen_mode': ('mlp', 'selfattention'),
    'disc_mode': ('mlp', 'selfattention'),
    'optimizer': ('adam', 'adamw', 'rmsprop'),
    'datashape': ('original', 'dropempty'),
    'gen_norm': ('batch', 'layer', 'none'),
    'disc_norm': ('layer', 'none'),
    'disc_conditioning': ('projection', 'none'),
    'attention': ('axial', 'full'),
    'attention_noise': ('token', 'shared'),
}
# The 12 combinations: three independent choices (model family x loss x network, the generator
# and critic of one kind), named <gan_model>_<loss_mode>_<network>; see `combination_config`.
COMBINATIONS = tuple(f'{g}_{l}_{n}' for g in CHOICES['gan_model'] for l in CHOICES['loss_mode']
                     for n in CHOICES['gen_mode'])
# The original's spellings: 'vanila' meant the plain choice of each field.
ALIASES = {
    'gan_model': {'vanila': 'vanilla'},
    'loss_mode': {'vanila': 'bce', 'vanilla': 'bce'},
    'gen_mode': {'vanila': 'mlp', 'vanilla': 'mlp'},
    'disc_mode': {'vanila': 'mlp', 'vanilla': 'mlp'},
}
# Metrics a `best` checkpoint can be chosen by, and whether higher is better.
BEST_METRICS = {'auto': True, 'oracle_exact': True, 'oracle_within1': True,
                'classifier_accuracy_generated': True, 'fd': False}
POSITIVE_INTS = ('zdim', 'class_embed_dim', 'hidden_dim', 'embed_dim', 'num_heads', 'num_layers',
                 'mlp_ratio', 'critic_iter', 'batch_size', 'epochs', 'log_every', 'sample_every',
                 'checkpoint_every', 'keep_checkpoints', 'eval_per_pair', 'num_seeds',
                 'num_output_images')
POSITIVE_FLOATS = ('learning_rate_gen', 'learning_rate_disc', 'weight_clip')
NON_NEGATIVE_FLOATS = ('constraint_lambda', 'lambda_gp', 'info_lambda', 'weight_decay',
                       'time_budget_min', 'aux_lambda', 'aux_lambda_critic', 'aux_regression')
# Fields that define the model: a checkpoint can only be resumed with the same values.
MODEL_FIELDS = ('gan_model', 'loss_mode', 'gen_mode', 'disc_mode', 'zdim', 'class_embed_dim',
                'gen_hidden_dims', 'gen_norm', 'gen_dropout', 'hidden_dim', 'disc_hidden_dims',
                'disc_norm', 'disc_dropout', 'disc_conditioning', 'mask_input', 'embed_dim',
                'attention', 'attention_noise', 'attention_features', 'num_heads', 'num_layers',
                'mlp_ratio', 'optimizer', 'datashape', 'strut_positions', 'seed', 'data_seed',
                'val_fraction', 'batch_size')
# The model fields only the self-attention networks read.
ATTENTION_FIELDS = ('embed_dim', 'num_heads', 'attention', 'attention_noise',
                    'attention_features', 'num_layers', 'mlp_ratio')
# Fields added after checkpoints were first written, with the value that reproduces what the code
# did before them: a saved config without the field takes this value, not today's default (an
# older run has no auxiliary head; its generator was never averaged).
LEGACY_VALUES = {'aux_lambda': 0.0, 'aux_lambda_critic': 0.0, 'aux_regression': 0.0,
                 'ema_decay': 0.0, 'lr_decay_steps': 0, 'lr_final_fraction': 0.1,
                 'attention': 'full', 'attention_noise': 'shared', 'attention_features': 0}
# The largest seed (gan.prng.seed_key takes 64-bit signed seeds, each its own key); a larger one
# raised an OverflowError once the data had loaded.
MAX_SEED = 2**63 - 1
# The largest optimiser step count (optax counts steps in int32).
MAX_STEPS = 2**31 - 1


def with_legacy_values(saved: dict) -> dict:
  """A saved config dict with the fields it predates filled in from LEGACY_VALUES, and the norm
  and dropout of an attention network (which never had either, and `resolve` now refuses
  instead of ignoring) set to the values that say so."""
  saved = {**LEGACY_VALUES, **saved}
  for network in ('gen', 'disc'):
    if saved.get(f'{network}_mode') == 'selfattention':
      saved.update({f'{network}_dropout': 0.0, f'{network}_norm': 'layer'})
  return saved


def combination_config(name: str) -> ml_collections.ConfigDict:
  """The default config of combination `name` (of COMBINATIONS): the model family and loss of
  `default.variant`, the generator and the critic both of the named network."""
  if name not in COMBINATIONS:
    raise ConfigError(f'unknown combination {name!r}; choose from: {", ".join(COMBINATIONS)}')
  gan_model, loss_mode, network = name.split('_')
  config = default_config.variant(gan_model, loss_mode)
  config.gen_mode = config.disc_mode = network
  return config


def resolve(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Checks every field and returns a copy with canonical choice names and expanded paths. The
  checks run in this order, so a config's first problem is the one reported."""
  c = ml_collections.ConfigDict(config.to_dict())
  _check_field_names(c)
  _canonicalise_choices(c)
  _check_numbers(c)
  _check_networks(c)
  _check_seeds(c)
  _check_schedule(c)
  _resolve_paths(c)
  return c


def _check_field_names(c) -> None:
  """Every field of configs/default.py, and no other."""
  fields = default_config.get_config().keys()
  missing = [k for k in fields if k not in c]
  if missing:
    more = f' and {len(missing) - 4} more' if len(missing) > 5 else ''
    raise ConfigError(f'the config has no field {", ".join(missing[:4 if more else 5])}{more}; '
                      'start a config file from configs/default.py (c = default.get_config(), '
                      'then change fields)')
  # A config file's misspelt field (c.gen_hiden_dims = ...) is a new field nothing reads: the run
  # trained with the default instead.
  unknown = [k for k in c.keys() if k not in fields]
  if unknown:
    close = difflib.get_close_matches(unknown[0], fields, 1)
    hint = f' (did you mean {close[0]}?)' if close else ''
    raise ConfigError(f'the config has a field {unknown[0]!r} that nothing reads{hint}; the fields '
                      'and their defaults are in configs/default.py')


def _canonicalise_choices(c) -> None:
  """CHOICES' fields as their canonical lower-case names (the original's aliases accepted)."""
  for field, allowed in CHOICES.items():
    value = str(c[field]).strip().lower()
    value = ALIASES.get(field, {}).get(value, value)
    if value not in allowed:
      raise ConfigError(f'{field}={c[field]!r} is not allowed; choose one of: '
                        f'{", ".join(allowed)}')
    c[field] = value


def _check_numbers(c) -> None:
  """Sizes, weights, learning rates and fractions in their ranges."""
  for field in POSITIVE_INTS:
    if not isinstance(c[field], int) or isinstance(c[field], bool) or c[field] < 1:
      raise ConfigError(f'{field} must be a positive integer, got {c[field]!r}')
  if not _integer(c.attention_features) or c.attention_features < 0:
    raise ConfigError(f'attention_features must be an integer >= 0 (0: the mean of the tokens), '
                      f'got {c.attention_features!r}')
  if c.critic_iter > 1000:  # optimiser step counts (critic_iter x generator steps) are int32
    raise ConfigError(f'critic_iter must be at most 1000 critic steps per generator step, got '
                      f'{c.critic_iter}')
  # A weight or learning rate of inf (or a non-number) passed these checks and failed only after
  # compilation, as a non-finite loss (or a TypeError traceback).
  for field in POSITIVE_FLOATS:
    if not _finite(c[field]) or not c[field] > 0:
      raise ConfigError(f'{field} must be a finite number > 0, got {c[field]!r}')
  for field in NON_NEGATIVE_FLOATS:
    if not _finite(c[field]) or not c[field] >= 0:
      raise ConfigError(f'{field} must be a finite number >= 0, got {c[field]!r}')
  for field in ('gen_dropout', 'disc_dropout', 'opt_beta1', 'opt_beta2', 'ema_decay',
                'val_fraction'):
    if not _finite(c[field]) or not 0 <= c[field] < 1:
      raise ConfigError(f'{field} must be in [0, 1), got {c[field]!r}')


def _check_networks(c) -> None:
  """What the chosen networks read: attention sizes, dropout and norm, trunk widths."""
  # ATTENTION_FIELDS: an MLP model reads none of them, so it is not refused for theirs
  attention = 'selfattention' in (c.gen_mode, c.disc_mode)
  if attention and c.embed_dim % c.num_heads:
    raise ConfigError(f'embed_dim={c.embed_dim} must be divisible by num_heads={c.num_heads}; '
                      f'allowed num_heads: {_divisors(c.embed_dim)}')
  if attention and c.attention == 'axial' and c.num_heads < 2:
    raise ConfigError(f'attention=axial needs num_heads >= 2 (half the heads attend along rows, '
                      f'half along columns), got num_heads={c.num_heads}; or set attention=full')
  for network, mode in (('gen', c.gen_mode), ('disc', c.disc_mode)):
    # The attention networks have no dropout and always use LayerNorm: refused, not ignored.
    dropout, norm = f'{network}_dropout', f'{network}_norm'
    ignored = ([f'{dropout}={c[dropout]!r}'] if c[dropout] else []) + (
        [f'{norm}={c[norm]!r}'] if c[norm] != 'layer' else [])
    if mode == 'selfattention' and ignored:
      raise ConfigError(f'{" and ".join(ignored)} would be ignored: {network}_mode=selfattention '
                        f'has no dropout and always uses LayerNorm; set {dropout}=0 and '
                        f'{norm}=layer, or {network}_mode=mlp')
  for field in ('gen_hidden_dims', 'disc_hidden_dims'):
    dims = c[field]
    if (not isinstance(dims, (tuple, list)) or not dims
        or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in dims)):
      raise ConfigError(f'{field} must be a non-empty list of widths (0 = image size), '
                        f'got {dims!r}')
  if not isinstance(c.mask_input, bool):  # None or 'no' read as False or True
    raise ConfigError(f'mask_input must be True or False, got {c.mask_input!r}')


def _check_seeds(c) -> None:
  """seed (with num_seeds: every seed a run draws fits in 64 bits) and data_seed."""
  if not isinstance(c.seed, int) or isinstance(c.seed, bool) or c.seed < 0:
    raise ConfigError(f'seed must be a non-negative integer, got {c.seed!r}')
  # A run draws from seeds up to seed + num_seeds + 1 (each model's, its grid's and outputs').
  if c.seed > MAX_SEED - c.num_seeds - 1:
    raise ConfigError(f'seed must be at most {MAX_SEED - c.num_seeds - 1} with num_seeds='
                      f'{c.num_seeds} (JAX seeds are 64-bit integers, and a run also uses seed + '
                      f'1 ... seed + num_seeds + 1), got {c.seed}')
  if not _integer(c.data_seed) or c.data_seed < -1:
    raise ConfigError(f'data_seed must be -1 (use seed) or a non-negative integer, '
                      f'got {c.data_seed!r}')


def _check_schedule(c) -> None:
  """The learning-rate decay, loss weights that need each other (bce: critic_iter set to 1),
  evaluation and the data's size."""
  if not _integer(c.lr_decay_steps) or c.lr_decay_steps < 0:
    raise ConfigError(f'lr_decay_steps must be 0 (constant lr) or a positive number of generator '
                      f'steps, got {c.lr_decay_steps!r}')
  if not _finite(c.lr_final_fraction) or not 0 < c.lr_final_fraction <= 1:
    raise ConfigError(f'lr_final_fraction must be in (0, 1], got {c.lr_final_fraction!r}')
  if c.aux_lambda > 0 and not c.aux_lambda_critic > 0:
    raise ConfigError(f'aux_lambda={c.aux_lambda} needs aux_lambda_critic > 0 (the auxiliary '
                      'classifier learns the labels in the critic step); or set aux_lambda=0')
  if c.loss_mode == 'bce':
    c.critic_iter = 1  # one discriminator step per generator step for the non-saturating GAN
  # optax counts the critic's steps in int32: a longer decay raised an OverflowError (a traceback)
  # once the data had loaded.
  if c.lr_decay_steps * c.critic_iter > MAX_STEPS:
    raise ConfigError(f'lr_decay_steps must be at most {MAX_STEPS // c.critic_iter} with '
                      f'critic_iter={c.critic_iter} (optimiser step counts are 32-bit integers, '
                      f'and the critic decays over lr_decay_steps x critic_iter of its steps), '
                      f'got {c.lr_decay_steps}')
  if not _integer(c.eval_every) or c.eval_every < 0:
    raise ConfigError(f'eval_every must be 0 (never) or a positive number of epochs, '
                      f'got {c.eval_every!r}')
  if c.best_metric not in BEST_METRICS:
    raise ConfigError(f'best_metric={c.best_metric!r} is not allowed; choose one of: '
                      f'{", ".join(BEST_METRICS)}')
  for field in ('height', 'width', 'input_dim'):
    if not _integer(c[field]) or c[field] < 0:
      raise ConfigError(f'{field} must be 0 (derive from the data) or a positive integer, '
                        f'got {c[field]!r}')


def _resolve_paths(c) -> None:
  """log_path and output_path with ~ expanded, data_path absolute."""
  if not str(c.log_path).strip():
    raise ConfigError('log_path is empty; name the directory a run writes to, e.g. '
                      '--config.log_path=runs/my_run')
  # `--config.log_path=~/runs/x` reaches Python unexpanded (the shell expands a ~ only at the
  # start of a word): it made a directory named '~' in the working directory, while data_path
  # expanded it.
  for field in ('log_path', 'output_path'):
    if c[field]:
      c[field] = os.path.expanduser(str(c[field]))
  if not paths.utf8_name(c.log_path):  # failed at the first checkpoint save, as a damaged write
    raise ConfigError(f'log_path {c.log_path!a} has a name that is not UTF-8, under which orbax '
                      '(TensorStore) cannot write checkpoints; give a UTF-8 name')
  if c.data_path:  # absolute, so gan.evaluate and resuming find the data from any directory
    c.data_path = os.path.abspath(os.path.expanduser(str(c.data_path)))


def load_config_file(path: str) -> ml_collections.ConfigDict:
  """get_config() of a config file given by path (its imports resolve from the repo root, as for
  --config); a ConfigError saying what is wrong with the file otherwise."""
  name = os.path.splitext(os.path.basename(path))[0]
  # A source loader whatever the file's extension, as ml_collections loads --config: from the
  # extension alone, importlib finds no loader for README.md and gives no spec.
  loader = importlib.machinery.SourceFileLoader(f'_designgan_config_{name}', path)
  spec = importlib.util.spec_from_loader(loader.name, loader)
  module = importlib.util.module_from_spec(spec)
  try:
    spec.loader.exec_module(module)
  except Exception as e:  # pylint: disable=broad-except  (a broken file: say which and why)
    raise ConfigError(f'config file {path} cannot be loaded: {type(e).__name__}: {e}') from None
  if not hasattr(module, 'get_config'):
    raise ConfigError(f'config file {path} has no get_config()')
  try:
    config = module.get_config()
  except Exception as e:  # pylint: disable=broad-except
    raise ConfigError(f'config file {path}: get_config() failed: {type(e).__name__}: '
                      f'{e}') from None
  if not isinstance(config, ml_collections.ConfigDict):
    raise NotAConfigDictError(path, config)
  return config


class NotAConfigDictError(ConfigError):
  """A config file's get_config() returned something other than a ConfigDict."""

  def __init__(self, path: str, returned):
    name = type(returned).__name__
    what = ('None (a missing return statement?)' if returned is None
            else f'{"an" if name[0] in "aeiou" else "a"} {name}')
    self.reason = (f'get_config() returned {what}, not an ml_collections.ConfigDict (start from '
                   'configs/default.py: c = default.get_config(), then change fields)')
    super().__init__(f'config file {path}: {self.reason}')


def check_against_data(config: ml_collections.ConfigDict, layout) -> None:
  """height / width / input_dim, when given, must agree with the data's training layout."""
  derived = {'height': layout.height, 'width': layout.width,
             'input_dim': layout.height * layout.width * 3}
  for field, value in derived.items():
    if config[field] and config[field] != value:
      raise ConfigError(f'{field}={config[field]} contradicts the data: datashape='
                        f'{config.datashape} gives {field} {value} (set it to 0 to derive it)')


def from_saved(saved: dict) -> ml_collections.ConfigDict:
  """The resolved config of a checkpoint's metadata; fields added since it was written take their
  LEGACY_VALUES (what the code did before them), or else their defaults, so older checkpoints
  load and resume as they were trained."""
  full = default_config.get_config().to_dict()
  full.update(with_legacy_values(saved))
  return resolve(ml_collections.ConfigDict(full))


def output_dir(config) -> str:
  """Where a run writes its output BMPs: output_path, or <log_path>/output when it is empty."""
  return config.output_path or os.path.join(config.log_path, 'output')


def data_seed(config) -> int:
  """The seed of the train/validation split: data_seed, or seed when it is -1 (a ConfigDict or a
  dict of its fields)."""
  return config['seed'] if config['data_seed'] < 0 else config['data_seed']


def model_fields(config) -> dict:
  """The fields a resumed run must share with its checkpoint, plus which optional heads the
  critic has (their weights may change, their presence may not)."""
  config = with_legacy_values(dict(config))
  fields = {f: _plain(config[f]) for f in MODEL_FIELDS}
  if 'selfattention' not in (config['gen_mode'], config['disc_mode']):
    # No MLP network reads them: an MLP run saved before `attention` existed (legacy 'full') or
    # when embed_dim was 32 resumes with today's defaults.
    fields.update({f: None for f in ATTENTION_FIELDS})
  # Nor may the widths no network reads: an attention network's hidden dims, the class head's
  # width where there is no Q or auxiliary head.
  for network in ('gen', 'disc'):
    if config[f'{network}_mode'] != 'mlp':
      fields[f'{network}_hidden_dims'] = None
  if config['gen_mode'] != 'selfattention':  # only the attention generator reads it
    fields['attention_noise'] = None
  if config['disc_mode'] != 'selfattention':  # only the attention critic reads it
    fields['attention_features'] = None
  if config['gan_model'] != 'infogan' and not config['aux_lambda'] > 0:
    fields['hidden_dim'] = None
  fields['aux_head'] = config['aux_lambda'] > 0
  fields['aux_regression_head'] = fields['aux_head'] and config['aux_regression'] > 0
  fields['lr_decay'] = config['lr_decay_steps'] > 0  # adds a step count to the optimiser states
  fields['data_seed'] = data_seed(config)  # the split it draws: -1 (the seed's) is <seed>
  try:  # the pixels, not their spelling: '7,11; 5,14' is the run's '7,11;5,14'
    fields['strut_positions'] = [list(p) for p in parse_strut_positions(fields['strut_positions'])]
  except LayoutError:  # compared as written; the data loader says what is wrong with it
    pass
  return fields


def changed_settings(old, new) -> list[str]:
  """'field: old -> new' for every field other than the model's and `epochs` that differs
  between two resolved configs (what a resumed run now does differently); a model field no
  network of the run reads (`model_fields` None) is one of them."""
  skip = {f for f, v in model_fields(new).items() if v is not None} | {'epochs'}
  return [f'{k}: {old[k]!r} -> {new[k]!r}' for k in sorted(new.keys())
          if k not in skip and k in old and _plain(old[k]) != _plain(new[k])]


def _integer(v) -> bool:
  """An int, not a bool (True is an int to Python: a config file's `c.data_seed = True` trained
  with data_seed 1, and `c.height = True` was reported as contradicting the data)."""
  return isinstance(v, int) and not isinstance(v, bool)


def _finite(v) -> bool:
  """A real number (int or float, not a bool, None or a string) that is finite."""
  return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _plain(v):
  return list(v) if isinstance(v, (tuple, list)) else v


def _divisors(n: int) -> str:
  return ', '.join(str(d) for d in range(1, n + 1) if n % d == 0)


def check_repeated_tuple_overrides(argv: Sequence[str], config) -> None:
  """ml_collections appends a repeated --config.<field> of a tuple field to the earlier value
  ((64,) then (32,) gives (64, 32)) instead of replacing it: refused, with the field named."""
  seen = set()
  for arg in argv:
    if arg == '--':  # absl parses no flag after it
      break
    # absl also takes `--config.<field> value` (the value the next argument)
    match = re.match(r'--config\.(\w+)(=|$)', arg)
    if not match or not isinstance(config.get(match.group(1)), tuple):
      continue
    if match.group(1) in seen:
      raise ConfigError(f'--config.{match.group(1)} is given more than once; a tuple field is '
                        'set by one --config.<field>=(a,b,...)')
    seen.add(match.group(1))


def flag_error_message(argv: Sequence[str], error: Exception) -> str:
  """One line for a `--config=FILE` / `--config.<field>=VALUE` command line that absl and
  ml_collections could not apply (their own messages span lines or name no field)."""
  files = [a.split('=', 1)[1] for a in argv if a.startswith('--config=')]
  config_file = files[-1] if files else 'configs/default.py'
  overrides = [m.group(1) for m in (re.match(r'--config\.([\w.]+)', a) for a in argv) if m]
  raw = str(error).strip()
  text = ' '.join(raw.split())
  nameless = [a for a in argv if re.match(r'--config\.(=|$)', a)]
  if nameless:  # ml_collections' "Could not parse ''" read as a fault of the config file
    return (f'{nameless[0]}: no field name after --config.; give --config.<field>=value (the '
            'fields and their defaults are in configs/default.py)')
  if 'Traceback (most recent call last)' in raw:  # get_config() itself raised
    last = raw.splitlines()[-1].strip()
    # ml_collections passes what follows a ':' in --config=FILE:ARG to get_config(ARG)
    path, colon, arg = config_file.partition(':')
    if colon and 'get_config() takes 0 positional arguments but 1 was given' in last:
      return (f'--config={config_file}: get_config() of {path} takes no argument, and '
              f'":{arg}" gives it one; give --config={path}')
    if re.search(r'get_config\(\) missing \d+ required positional argument', last):
      return (f'--config={config_file}: get_config() needs an argument ({last}); give it after a '
              f'colon, --config={path}:VALUE')
    return f'--config={config_file}: get_config() failed: {last}'
  if isinstance(error, AttributeError) and 'get_config' in text:
    return f'--config={config_file} has no get_config() function returning a ConfigDict'
  if os.path.isfile(config_file):  # a get_config() that returns no ConfigDict fails anywhere
    try:
      load_config_file(config_file)
    except NotAConfigDictError as e:
      return f'--config={config_file}: {e.reason}'
    except ConfigError:
      pass  # what else is wrong with the file, the checks below name
  fields = default_config.get_config()
  wrong_type = _wrong_type_message(error, fields, argv)
  if wrong_type:
    return wrong_type
  parts = [f for f in overrides if '.' in f and f.split('.')[0] in fields]
  if parts and isinstance(error, (AttributeError, KeyError, TypeError, ValueError)):
    # --config.gen_hidden_dims.x=3: every field is one value. The lookup's error named every
    # override (the innocent ones too), and --config.gen_hidden_dims.0=5 blamed the config file.
    field = parts[0].split('.')[0]
    return (f'--config.{parts[0]}: {field} is one value (default {fields[field]!r}), not a group '
            f'of fields; set it whole with --config.{field}=VALUE')
  if isinstance(error, (AttributeError, KeyError, TypeError)) and overrides:
    lookup = _lookup_error_text(error)
    missing = lookup.splitlines()[0].strip().strip('"\'') if lookup.strip() else ''
    suggestion = re.search(r'Did you mean "([^"]+)"', lookup)
    hint = f' (did you mean {suggestion.group(1)}?)' if suggestion else ''
    for field in overrides:
      if missing in field.split('.'):
        return (f'--config.{field}: no config field {missing!r}{hint}; the fields and their '
                'defaults are in configs/default.py')
    path = re.search(r'Attempting to lookup: ([\w.]+)', lookup)
    named = [path.group(1)] if path and path.group(1) in overrides else overrides
    return (f'--config.{" / --config.".join(named)}: cannot be applied '
            f'({" ".join(lookup.split())}); the fields and their defaults are in '
            'configs/default.py')
  if os.path.isdir(config_file):
    return (f'--config={config_file} is a directory; give one config file in it, e.g. '
            'configs/default.py')
  if isinstance(error, OSError) and not os.path.isfile(config_file):
    return (f'--config={config_file}: no such config file (relative to {os.getcwd()}); the '
            'configs/ directory of the repository holds the presets')
  if isinstance(error, SyntaxError):
    return f'--config={config_file} is not valid Python: {text}'
  if isinstance(error, flags.Error):  # absl's own messages name the flag
    if 'before a value for --config was specified' in text:
      return f'{text}; give --config=FILE before the --config.<field> overrides'
    return text
  return f'--config={config_file} cannot be used: {type(error).__name__}: {text}'


_KINDS = {bool: 'True or False', int: 'a whole number', float: 'a number',
          tuple: 'a tuple (a,b,...)', str: 'a string'}


def value_kind(default) -> str:
  """What a field whose value is `default` takes, for messages: 'a whole number', ..."""
  return _KINDS.get(type(default), type(default).__name__)


def _wrong_type_message(error: Exception, fields, argv: Sequence[str]) -> str:
  """One line for a --config.<field> value absl cannot convert to the field's type: its own
  message said how the conversion failed, not what the field takes ("invalid literal for int()
  with base 10: '1.5'", "('Non-boolean argument to boolean flag', 'maybe')"). '' for any other
  error. `fields`: the default config's; `argv`: the command line, whose values are matched
  whole against the message (a value may itself hold the ': ' that ends it there)."""
  message = str(error)
  match = re.match(r'flag --config\.(\w+)=', message)
  if not isinstance(error, flags.IllegalFlagValueError) or not match or match[1] not in fields:
    return ''
  field, default = match[1], fields[match[1]]
  given = [v for v in _override_values(argv, field) if message.startswith(f'{match[0]}{v}: ')]
  value = max(given, key=len) if given else message[match.end():].split(': ', 1)[0]
  return (f'--config.{field}={value}: {field} takes {value_kind(default)} (default '
          f'{default!r}), got {value!r}')


def _override_values(argv: Sequence[str], field: str) -> list[str]:
  """The values argv gives --config.<field>, as `--config.<field>=V` or `--config.<field> V`."""
  values = []
  for arg, following in zip(argv, [*argv[1:], None]):
    if arg.startswith(f'--config.{field}='):
      values.append(arg.split('=', 1)[1])
    elif arg == f'--config.{field}' and following is not None:
      values.append(following)
  return values


def _lookup_error_text(error: Exception) -> str:
  """The text of a failed field lookup: ConfigDict wraps its KeyError in an AttributeError, and
  str() of a KeyError is the repr of its message (quotes and newlines escaped)."""
  if isinstance(error, AttributeError) and error.args and isinstance(error.args[0], KeyError):
    error = error.args[0]
  if isinstance(error, KeyError) and error.args:
    return str(error.args[0])
  return str(error)


def seed_configs(config) -> list:
  """The runs a resolved config trains: itself, or for num_seeds = K > 1 one complete run per
  seed seed+k, logging to <log_path>/seed_<seed+k>. A sweep's runs share the base seed's
  train/validation split (data_seed), so each run directory evaluates and resumes on its own."""
  if config.num_seeds == 1:
    return [config]
  runs = []
  for k in range(config.num_seeds):
    c = ml_collections.ConfigDict(config.to_dict())
    c.seed, c.num_seeds, c.data_seed = config.seed + k, 1, data_seed(config)
    c.log_path = os.path.join(config.log_path, f'seed_{c.seed}')
    if config.output_path:
      c.output_path = os.path.join(config.output_path, f'seed_{c.seed}')
    runs.append(c)
  return runs
