"""Loading a trained generator from its checkpoint and generating designs on demand.

Everything needed (config, vocabularies, layout, strut positions) comes from the checkpoint's
metadata, so no training flag is repeated. The state is restored onto the requested device
through an abstract target, so a checkpoint written on a GPU loads on a CPU and vice versa.
"""

import dataclasses
import os
import re
from typing import Callable, Optional, Sequence

import jax
import ml_collections
import numpy as np

from gan import checkpoints
from gan import config as config_lib
from gan import data
from gan import parallel
from gan import paths
from gan import prng
from gan import step
from gan.errors import DesignGanError

DEVICES = {'cpu': 'cpu', 'gpu': 'gpu', 'cuda': 'gpu'}


@dataclasses.dataclass(frozen=True)
class TrainedModel:
  """A restored generator with everything needed to use it."""
  config: ml_collections.ConfigDict
  spec: data.DataSpec
  models: step.Models
  state: step.TrainState
  epoch: int
  checkpoint_dir: str
  run_dir: str
  sample_fn: Callable  # jit of step.sample for these models
  oracle_applies: bool  # trained on the synthetic designs: oracle numbers are meaningful
  data_fingerprint: Optional[dict] = None  # data.Dataset.fingerprint() of its training data
  # data.Dataset.untrained_classes() of its training data ({} in checkpoints from before it)
  untrained_classes: dict = dataclasses.field(default_factory=dict)

  def class_index(self, durability: float, mass: float) -> tuple[int, int]:
    """Vocabulary indices; a DataError listing the allowed values for anything else."""
    return self.spec.durability.index(durability), self.spec.mass.index(mass)


def find_checkpoints(model_path: str, step_: Optional[int] = None) -> tuple[str, int, str]:
  """(checkpoints dir, epoch, run dir) for a run dir, its checkpoints dir or one step's dir."""
  if not str(model_path).strip():  # abspath('') is the working directory: say what it was
    raise checkpoints.CheckpointError('--model_path is empty; give a training run directory '
                                      '(log_path), its checkpoints/ directory or one step '
                                      'directory inside it')
  path = os.path.abspath(model_path)
  if not paths.utf8_name(path):  # orbax wrote no checkpoint there: it cannot open such a name
    raise checkpoints.CheckpointError(f'--model_path {model_path!a} has a name that is not '
                                      'UTF-8, under which orbax (TensorStore) cannot read '
                                      'checkpoints; rename it with a UTF-8 name')
  if not os.path.exists(path):
    raise checkpoints.CheckpointError(f'--model_path {model_path}: no such file or directory')
  if not os.path.isdir(path):
    raise checkpoints.CheckpointError(f'--model_path {model_path} is a file; give a training run '
                                      'directory (log_path), its checkpoints/ directory or one '
                                      'step directory inside it')
  if os.path.isdir(os.path.join(path, 'checkpoints')):
    ckpt_dir = os.path.join(path, 'checkpoints')
  elif _is_step_dir(path):
    ckpt_dir = os.path.dirname(path)
    if step_ is not None and step_ != int(os.path.basename(path)):
      raise checkpoints.CheckpointError(f'--model_path names step {os.path.basename(path)} but '
                                        f'--step={step_}; give one of them')
    step_ = int(os.path.basename(path))
  else:
    ckpt_dir = path
  steps = _steps_in(ckpt_dir, model_path)
  if not steps:
    seeds = sorted((n for n in _listdir(path, model_path) if re.fullmatch(r'seed_\d+', n)
                    and os.path.isdir(os.path.join(path, n, 'checkpoints'))),
                   key=lambda n: int(n[5:]))
    if seeds:
      raise checkpoints.CheckpointError(
          f'--model_path {model_path} is a seed sweep (num_seeds > 1) with one run directory per '
          f'model; give one of: {", ".join(os.path.join(model_path, s) for s in seeds)}')
    best = _only_best(ckpt_dir, model_path)
    if best:
      raise checkpoints.CheckpointError(
          f'--model_path {model_path} has no checkpoint in {ckpt_dir}, but {best} holds the '
          f'run\'s best checkpoint; use it with --model_path={best}')
    raise checkpoints.CheckpointError(
        f'--model_path {model_path} holds no checkpoint; give a training run directory '
        '(log_path), its checkpoints/ directory or one step directory inside it')
  if step_ is None:
    step_ = steps[-1]
  elif step_ not in steps:
    best = os.path.join(os.path.dirname(ckpt_dir), 'best')  # the best checkpoint, kept apart
    in_best = (f'; {best} holds step {step_}: --model_path={best}'
               if os.path.basename(ckpt_dir) == 'checkpoints'
               and os.path.isdir(os.path.join(best, str(step_))) else '')
    raise checkpoints.CheckpointError(f'no checkpoint for step {step_} in {ckpt_dir}; '
                                      f'available: {", ".join(map(str, steps))}{in_best}')
  return ckpt_dir, step_, os.path.dirname(ckpt_dir)


def _listdir(directory: str, model_path: str) -> list[str]:
  """os.listdir, a CheckpointError where `directory` cannot be read (another user's run): a
  PermissionError traceback before."""
  try:
    return os.listdir(directory)
  except OSError as e:
    raise checkpoints.CheckpointError(f'--model_path {model_path}: cannot read {directory} '
                                      f'({e.strerror or e}); give a run directory you can '
                                      'read') from None


def _only_best(ckpt_dir: str, model_path: str) -> str:
  """The run's best/ where `ckpt_dir` is its checkpoints/ (here without a step) and best/ holds a
  checkpoint (the run stopped between its first evaluation and its first checkpoint), else ''."""
  best = os.path.join(os.path.dirname(ckpt_dir), 'best')
  if os.path.basename(ckpt_dir) != 'checkpoints' or not os.path.isdir(best):
    return ''
  return best if _steps_in(best, model_path) else ''


def _steps_in(directory: str, model_path: str) -> list[int]:
  """The steps of the checkpoint directories (named by their step) in `directory`, in order."""
  return paths.step_numbers(directory, _listdir(directory, model_path))


def _is_step_dir(path: str) -> bool:
  """Whether the directory `path` is one checkpoint step's: numbered, and marked by orbax or in a
  directory of checkpoints (a damaged step, to be named as such). A run directory that is only
  numbered (log_path=runs/3: a seed sweep, or a run not yet checkpointed) is not: it was read as
  step 3 of runs/, 'unreadable: Item "meta" was not found'."""
  if not paths.is_step_name(os.path.basename(path)):
    return False
  parent = os.path.dirname(path)
  return (os.path.isfile(os.path.join(path, paths.CHECKPOINT_MARKER))
          or os.path.basename(parent) in ('checkpoints', 'best')
          or paths.holds_checkpoints(parent))


def select_device(name: str):
  """The first device of `name` (cpu | gpu | cuda | auto: a GPU when there is one, else the CPU);
  a clear error when there is none."""
  if str(name).lower() == 'auto':
    gpus = [d for d in jax.devices() if d.platform == 'gpu']
    return gpus[0] if gpus else jax.devices('cpu')[0]
  platform = DEVICES.get(str(name).lower())
  if platform is None:
    raise DesignGanError(f'--device={name!r} is not allowed; choose one of: auto, cpu, '
                         'gpu (alias cuda)')
  try:
    return jax.devices(platform)[0]
  except RuntimeError:
    raise DesignGanError(f'--device={name}: no {platform.upper()} is available on this machine; '
                         'use --device=cpu') from None


def load(model_path: str, step_: Optional[int] = None, device=None) -> TrainedModel:
  """Restores the generator (and the rest of the training state) of a checkpoint onto `device`
  (a JAX device, or a name `select_device` takes: 'cpu', 'gpu', 'auto'; default JAX's first)."""
  if isinstance(device, str):  # it reached orbax as a device: 'checkpoint ... is damaged'
    device = select_device(device)
  ckpt_dir, epoch, run_dir = find_checkpoints(model_path, step_)
  mngr = checkpoints.manager(ckpt_dir, keep=1_000_000, create=False)
  try:  # closing the manager ends orbax's background reads even when a restore fails
    _, meta = checkpoints.read_meta(mngr, epoch, _earlier_hint(model_path, ckpt_dir))
    try:
      config = config_lib.from_saved(meta['config'])
      spec = data.DataSpec.from_dict(meta['spec'])
    except (KeyError, TypeError, ValueError, AttributeError, DesignGanError) as e:
      raise checkpoints.CheckpointError(f'checkpoint {epoch} in {ckpt_dir} has invalid metadata:'
                                        f' {checkpoints.one_line(e)}') from None
    device = device or jax.devices()[0]
    with jax.default_device(device):  # the models' constants (the strut mask) too
      # The restore target: the state's tree, shapes and dtypes, placed on `device`.
      models, target = step.abstract_init(config, spec, spec.layout.strut_mask())
      target = parallel.placed_like(target, jax.sharding.SingleDeviceSharding(device))
      state = checkpoints.restore_state(mngr, epoch, target,
                                        _earlier_hint(model_path, ckpt_dir))
  finally:
    mngr.close()
  sample_fn = step.compile_sampler(models)
  return TrainedModel(config, spec, models, state, epoch, ckpt_dir, run_dir, sample_fn,
                      bool(meta.get('oracle_applies', False)), meta.get('data'),
                      meta.get('untrained_classes') or {})


def _earlier_hint(model_path: str, ckpt_dir: str) -> str:
  """How to read an earlier checkpoint, for the message of a damaged one: with --step=N, unless
  `model_path` names one step's directory, where --step=N is refused (it names another step):
  then that step's sibling directory."""
  path = os.path.abspath(model_path)
  if os.path.dirname(path) != ckpt_dir or not paths.is_step_name(os.path.basename(path)):
    return checkpoints.CLI_EARLIER_HINT
  sibling = os.path.join(os.path.dirname(os.path.normpath(str(model_path))), '{step}')
  return f'infer.py and python -m gan.evaluate read one with --model_path={sibling}'


def fixed_pixels(model: TrainedModel, strut_colors: Sequence[Sequence[int]]) -> np.ndarray:
  """(H, W, 3) normalised fixed-pixel image for one set of strut colours (uint8 RGB each)."""
  colors = np.asarray(strut_colors)
  # A cast alone wraps 300 to 44 and -1 to 255 (a list's 300 raises NumPy's OverflowError).
  if colors.size and (not np.issubdtype(colors.dtype, np.number) or np.any(colors % 1)
                      or colors.min() < 0 or colors.max() > 255):
    raise data.DataError(f'strut colours must be integers 0..255, got {strut_colors!r}')
  colors = colors.astype(np.uint8)[None]
  return data.fixed_pixel_images(colors, model.spec.layout)[0]


def generate(model: TrainedModel, durability_idx, mass_idx, fixed, seed: int,
             chunk_size: Optional[int] = None,
             progress: Optional[Callable[[int, int], None]] = None) -> np.ndarray:
  """uint8 designs (N, full_H, full_W, 3) for per-design class indices (N,) and fixed-pixel
  images (N, H, W, 3); strut pixels exactly the requested colours; deterministic in `seed`.

  With `chunk_size`, generates that many at a time (the float intermediates of only one chunk
  are held) and calls progress(done, N) after each chunk; the noise is drawn for all N at once,
  so the designs are those of one batch. A shorter last chunk is padded (its last design
  repeated; sampling is per design) so that every chunk runs the one compiled shape."""
  durability_idx = _class_indices(durability_idx, model.spec.durability, 'durability')
  mass_idx = _class_indices(mass_idx, model.spec.mass, 'mass')
  n = len(durability_idx)
  for name, values in (('mass', mass_idx), ('fixed', fixed)):
    if len(values) != n:
      raise data.DataError(f'{name} has {len(values)} rows for {n} designs (durability_idx); '
                           'give one per design')
  if not n:  # the loop below makes no chunk
    layout = model.spec.layout
    return np.zeros((0, layout.full_height, layout.full_width, 3), np.uint8)
  z = prng.noise(seed, n, model.config.zdim)
  chunk_size = min(chunk_size or n, n) or 1
  designs = None
  for start in range(0, n, chunk_size):
    part = slice(start, start + chunk_size)
    rows = np.minimum(np.arange(start, start + chunk_size), n - 1)
    images = model.sample_fn(*step.sampling_params(model.state), z[rows], durability_idx[rows],
                             mass_idx[rows], np.asarray(fixed[rows], np.float32))
    chunk = data.full_designs(model.spec.layout, images)[:n - start]
    if designs is None:
      designs = np.empty((n,) + chunk.shape[1:], chunk.dtype)
    designs[part] = chunk
    if progress is not None:
      progress(min(n, start + chunk_size), n)
  return designs


def _class_indices(indices, vocab: data.ClassVocab, label: str) -> np.ndarray:
  """`indices` as int32 positions in `vocab`; a DataError for any other value: JAX's embedding
  lookup gives an all-black design past the vocabulary and the last class for -1, and a cast
  truncates a class value (1.4) to another index."""
  values = np.asarray(indices)
  if values.ndim == 1 and np.issubdtype(values.dtype, np.number):
    bad = values[(values % 1 != 0) | (values < 0) | (values >= len(vocab))].tolist()
  else:  # booleans, strings, one value instead of one per design
    bad = [indices]
  if bad:
    raise data.DataError(f'{label} class indices must be integers 0..{len(vocab) - 1}, one per '
                         f'design (TrainedModel.class_index gives the index of a class value: '
                         f'{vocab.describe()}), got {bad[0]!r}')
  return values.astype(np.int32)
