"""Resuming: what a run directory holds, and the starts refused before anything is written.

Re-running a training command resumes each run from its latest checkpoint. A resume keeps the
settings, data and batch size the run started with (`check_resumable`), a sweep's runs resume
together from the last epoch they all saved (`resume_epoch`), and nothing that cannot be trained
again is deleted on the way (`check_run_layout`, `check_cut_back_early`). The checks that can run
before the run directories get a log line do (the `*_early` ones and the layout checks), so a
refused start leaves them as they were.
"""

import os

from gan import checkpoints
from gan import config as config_lib
from gan import data
from gan import paths
from gan.errors import ConfigError, DesignGanError


def has_checkpoints(config, name: str = 'checkpoints') -> bool:
  """Whether a run of `config` (a sweep: any of its runs) has a checkpoint to resume from (`name`
  'best': a best checkpoint)."""
  return any(saved_epochs(c.log_path, name) for c in config_lib.seed_configs(config))


def saved_epochs(log_path: str, name: str = 'checkpoints') -> list[int]:
  """The epochs of the checkpoint directories under <log_path>/<name> (none opened)."""
  directory = os.path.join(log_path, name)
  return paths.step_numbers(directory, os.listdir(directory)) if os.path.isdir(directory) else []


def check_run_layout(config) -> None:
  """Refuses, before anything is written, a log_path whose checkpoints another num_seeds or seed
  wrote: a single run where a sweep is asked for, a sweep where a single run is, or a sweep some
  of whose runs have checkpoints while the others have none, unless this sweep wrote them all
  (`_first_saves_of`: it trains afresh)."""
  root = config.log_path
  if config.num_seeds == 1:
    sweep = sorted(n for n in (os.listdir(root) if os.path.isdir(root) else ())
                   if n.startswith('seed_') and saved_epochs(os.path.join(root, n)))
    if sweep:
      raise ConfigError(f'{root} holds a seed sweep ({", ".join(sweep)}); resume it with its '
                        'num_seeds and seed, or train a single model under a new '
                        '--config.log_path')
    return
  if saved_epochs(root):
    raise ConfigError(f'{root} holds a single run (num_seeds=1); train the sweep under a new '
                      '--config.log_path')
  runs = config_lib.seed_configs(config)
  run_dirs = [c.log_path for c in runs]
  fresh = [d for d in run_dirs if not saved_epochs(d)]
  if fresh and len(fresh) < len(run_dirs):
    mngrs = [[checkpoints.manager(os.path.join(d, name), 1, create=False)
              for name in ('checkpoints', 'best') if saved_epochs(d, name)]
             for d in run_dirs if d not in fresh]
    try:
      if not _written_by(sweep_id(config), [m for run in mngrs for m in run]):
        raise _sweep_mismatch(fresh)
      if not all(_first_save(run[0]) for run in mngrs):
        # This sweep's runs trained further, and one lost its checkpoints (removed, a damaged
        # disk): training afresh would cost them all their training, catching that one up not.
        target = min(max(saved_epochs(d)) for d in run_dirs if d not in fresh)
        raise ConfigError(
            f'{", ".join(fresh)}: no checkpoint, while the sweep\'s other runs hold its '
            f'checkpoints up to epoch {target} (removed?); '
            + _catch_up([c for c in runs if c.log_path in fresh], target)
            + 'use a new --config.log_path')
    finally:
      for mngr in (m for run in mngrs for m in run):
        mngr.close()
  for c in runs:
    _check_same_sweep(c, sweep_id(config))


def _check_same_sweep(run, sweep: dict) -> None:
  """Refuses to resume `run` (a seed config) in a sweep that leaves out some models of the sweep
  (`sweep_id`) that wrote its latest checkpoint: a smaller num_seeds, or a seed shifted within
  that sweep's, would train some of its models on without the others, which could then not resume
  with them (their checkpoints would be another sweep's). A sweep that holds all of them resumes
  (a larger one, extended by models trained on their own up to the same epoch), as does a run
  whose latest checkpoint a single run wrote (a model caught up on its own), does not say, or is
  unreadable (the restore names it).
  """
  epoch, meta = _latest_meta(run.log_path)
  wrote = meta.get('sweep')
  if not isinstance(wrote, dict):
    return
  theirs = range(wrote['seed'], wrote['seed'] + wrote['num_seeds'])
  ours = range(sweep['seed'], sweep['seed'] + sweep['num_seeds'])
  left_out = [s for s in theirs if s not in ours]
  if not left_out:
    return
  first, end = min(theirs[0], ours[0]), max(theirs[-1], ours[-1]) + 1
  split = config_lib.data_seed(meta['config'])  # the sweep of all of them resumes on its split
  raise ConfigError(
      f'{os.path.abspath(run.log_path)} holds a model of another sweep: its latest checkpoint '
      f'(epoch {epoch}) was written by the sweep of num_seeds={wrote["num_seeds"]} from '
      f'seed={wrote["seed"]}, which this one (num_seeds={sweep["num_seeds"]}, '
      f'seed={sweep["seed"]}) would train on without its seed_{left_out[0]}'
      + (f' ... seed_{left_out[-1]}' if len(left_out) > 1 else '')
      + f'; resume a sweep of all of them (--config.num_seeds={end - first} '
      f'--config.seed={first}' + (f' --config.data_seed={split}' if split != first else '')
      + '), or use a new --config.log_path')


def _first_saves_of(sweep: dict, mngrs) -> bool:
  """Whether the runs with checkpoints, each given as its managers (checkpoints/ first, then
  best/ where it holds any), hold what a sweep stopped between its runs' first saves (a second
  Ctrl-C, a kill) leaves: one regular checkpoint each (`_first_save`), all of them this sweep's
  (`_written_by`). The same command then trains them all afresh, recomputing that one checkpoint
  interval; runs trained further are refused instead (a run's lost checkpoints would cost all of
  theirs)."""
  return (all(_first_save(run[0]) for run in mngrs)
          and _written_by(sweep, [m for run in mngrs for m in run]))


def _first_save(mngr) -> bool:
  """Whether the checkpoints/ manager `mngr` holds a run's first save only: one checkpoint, by a
  training that started afresh (`trained_from` 0), of an epoch up to its checkpoint_every (the
  first periodic save, or an earlier last epoch or stop). One checkpoint alone does not say so:
  keep_checkpoints=1 leaves one of a run trained on, whose training afresh would cost all of it,
  and a resume may raise checkpoint_every past the epoch it saves. A checkpoint that does not say
  (unreadable, or written before checkpoints recorded `trained_from`) is none."""
  steps = mngr.all_steps()
  if len(steps) != 1:
    return False
  try:
    meta = checkpoints.read_meta(mngr, steps[0])[1]
    every = meta['config']['checkpoint_every']
  except (checkpoints.CheckpointError, KeyError, TypeError):
    return False
  return meta.get('trained_from') == 0 and isinstance(every, int) and steps[0] <= every


def _written_by(sweep: dict, mngrs) -> bool:
  """Whether every checkpoint of the managers `mngrs` records `sweep` (`sweep_id`) as the one that
  wrote it. Another sweep's training (another num_seeds or seed), a single run's, and a checkpoint
  that does not say (written before checkpoints recorded it, or unreadable) are not."""
  for mngr in mngrs:
    for step in mngr.all_steps():
      try:
        meta = checkpoints.read_meta(mngr, step)[1]
      except checkpoints.CheckpointError:
        return False
      if meta.get('sweep') != sweep:
        return False
  return True


def _sweep_mismatch(fresh) -> ConfigError:
  return ConfigError(f'{", ".join(fresh)}: no checkpoint, while the sweep\'s other runs have some '
                     '(num_seeds or seed changed?); resume with the original num_seeds and seed, '
                     'or train the new seeds under a new --config.log_path')


def _no_shared_epoch(log_path: str, epoch: int, catch_up: str = '') -> ConfigError:
  """`log_path` got further than the others and no longer holds `epoch` (keep_checkpoints removed
  it); `catch_up`, the way to give the runs another shared epoch (`_catch_up`)."""
  return ConfigError(f'the runs under the sweep cannot resume together: '
                     f'{os.path.abspath(log_path)} has no checkpoint of epoch {epoch}, the last '
                     f'one the others share; {catch_up}use a new --config.log_path')


def _catch_up(behind, target: int) -> str:
  """How the runs `behind` (seed configs) reach epoch `target` of the run that got further: each
  trained on its own, as the single run its sweep model is, after which the sweep resumes."""
  runs = '; '.join(f'--config.log_path={os.path.abspath(c.log_path)} --config.seed={c.seed}'
                   for c in behind)
  return (f'to keep their training, train {"each of " * (len(behind) > 1)}the runs behind it to '
          f'epoch {target} on its own, with the sweep\'s other settings and --config.num_seeds=1 '
          f'--config.data_seed={behind[0].data_seed} --config.epochs={target} ({runs}), then '
          'resume the sweep; or ')


def resume_epoch(runs) -> int:
  """The epoch every run (the trainer's, with its opened checkpoint managers `mngr` and
  `evaluator.best`) resumes from: the latest checkpoint (0: none). Checkpoints after it are
  removed before training, as training redoes them (`check_cut_back_early` refused those it
  cannot redo):
  - a sweep interrupted between its runs' saves resumes all runs from the last epoch they all
    saved, without the later checkpoints of the runs that got further (training is deterministic,
    so they are recomputed);
  - `best/` checkpoints of evaluations after it (a run stopped between an evaluation and its
    checkpoint): orbax skips a save at or before its latest step, so they would keep this run's
    evaluations of those epochs out of `best/` (one ranked by another best_metric failed a later
    save). Kept where nothing is trained again (a smaller epochs).
  """
  latest = [run.mngr.latest_step() or 0 for run in runs]
  epoch = min(latest)
  if epoch == 0 and max(latest) > 0 and not _first_saves_of(runs[0].shared.sweep, [
      [m for m in (run.mngr, run.evaluator.best) if m] for run, last in zip(runs, latest) if last]):
    # Resuming together from 0 would delete another sweep's training: refuse instead.
    raise _sweep_mismatch([run.log_path for run, last in zip(runs, latest) if last == 0])
  for run, last in zip(runs, latest):
    if last != epoch:
      if epoch and epoch not in run.mngr.all_steps():
        raise _no_shared_epoch(run.log_path, epoch)
      for s in [s for s in run.mngr.all_steps() if s > epoch]:
        run.mngr.delete(s)
    best = run.evaluator.best
    removed = ([s for s in best.all_steps() if s > epoch]
               if best and (last != epoch or epoch < run.config.epochs) else [])
    for s in removed:
      best.delete(s)
    if last != epoch and not epoch:
      run.log.info('Checkpoints removed: the sweep trains afresh together, as a run of it saved '
                   'none')
    elif last != epoch:
      run.log.info('Checkpoints after epoch %d removed: the sweep resumes together from it', epoch)
    elif removed:
      run.log.info('best/ checkpoints after epoch %d removed (%s): the epochs after it are '
                   'trained and evaluated again', epoch, ', '.join(map(str, removed)))
  return epoch


def sweep_id(config) -> dict | None:
  """What a run's checkpoint metadata records of the sweep that wrote it (None: a single run)."""
  return {'num_seeds': config.num_seeds, 'seed': config.seed} if config.num_seeds > 1 else None


def check_cut_back_early(config) -> None:
  """Refuses, before the run directories get a log line, a start that `resume_epoch` would let
  delete training it cannot redo:
  - `best/` checkpoints where `checkpoints/` has none (a run stopped before its first checkpoint):
    the only copy of that model, which a run trained afresh there would replace;
  - checkpoints after the epoch a sweep resumes from that this sweep did not write (a `seed_<s>`
    run trained further on its own): cutting it back would lose that training;
  - a run that got further but no longer holds the checkpoint of that epoch (keep_checkpoints
    removed it): the runs cannot resume together."""
  runs = config_lib.seed_configs(config)
  saved = [(c, saved_epochs(c.log_path), saved_epochs(c.log_path, 'best')) for c in runs]
  epoch = min(max(ckpts, default=0) for _, ckpts, _ in saved)
  for c, ckpts, best in saved:
    best_dir = os.path.join(os.path.abspath(c.log_path), 'best')
    if best and not ckpts:
      raise ConfigError(
          f'{best_dir} holds the best checkpoint (epoch {best[-1]}) of a run stopped before its '
          'first regular checkpoint, which training afresh here would replace; to keep it, train '
          f'under a new --config.log_path, or remove {best_dir} to start afresh')
    if max(ckpts, default=0) <= epoch:  # its later best/ steps: evaluations of its own epochs
      continue
    for name, steps in (('checkpoints', ckpts), ('best', best)):
      later = [s for s in steps if s > epoch]
      if not later:
        continue
      mngr = checkpoints.manager(os.path.join(c.log_path, name), 1, create=False)
      try:
        foreign = [s for s in later if _written_by_another(mngr, s, sweep_id(config))]
      finally:
        mngr.close()
      if foreign:
        raise ConfigError(
            f'{os.path.abspath(c.log_path)} was trained to epoch {max(ckpts + best)} outside '
            f'this sweep (checkpoint {foreign[0]} in its {name}/ is not this sweep\'s), the '
            f'others to epoch {epoch}: resuming together would delete its later checkpoints. '
            'Train the others to that epoch on their own too, remove those checkpoints, or use a '
            'new --config.log_path')
    if epoch and epoch not in ckpts:  # resume_epoch would refuse it once the runs had logged
      behind = [b for b, steps, _ in saved if max(steps, default=0) == epoch]
      raise _no_shared_epoch(c.log_path, epoch, _catch_up(behind, min(s for s in ckpts
                                                                      if s > epoch)))


def _written_by_another(mngr, step: int, sweep: dict | None) -> bool:
  """Whether checkpoint `step` records another writer than `sweep` (`sweep_id`). One written
  before checkpoints recorded it, or whose metadata is unreadable, counts as `sweep`'s: removed
  and retrained, as before this check."""
  try:
    meta = checkpoints.read_meta(mngr, step)[1]
  except checkpoints.CheckpointError:
    return False
  return meta.get('sweep', sweep) != sweep


def best_metric(name: str, synthetic: bool) -> str:
  """The metric `best/` ranks by: 'auto' is oracle_exact on the synthetic designs (the oracle
  labels them), classifier_accuracy_generated on other data."""
  if name != 'auto':
    return name
  return 'oracle_exact' if synthetic else 'classifier_accuracy_generated'


def check_resumable_early(config, spec, synthetic: bool) -> None:
  """`check_resumable` against each run's latest checkpoint, before the run directory gets a
  log line or an empty best/: a refused resume leaves the run as it was. A checkpoint whose
  metadata cannot be read is left to the restore, which says what to do about it."""
  for c in config_lib.seed_configs(config):
    _, saved = _latest_meta(c.log_path)
    if saved:
      check_resumable(saved, c, spec, c.log_path, synthetic)


def _latest_meta(log_path: str) -> tuple[int, dict]:
  """(epoch, metadata) of the latest checkpoint under <log_path>/checkpoints; (0, {}) where it
  has none, or where its metadata cannot be read (the restore names it and says what to do)."""
  if not saved_epochs(log_path):
    return 0, {}
  mngr = checkpoints.manager(os.path.join(log_path, 'checkpoints'), 1, create=False)
  try:
    return checkpoints.read_meta(mngr)
  except checkpoints.CheckpointError:
    return 0, {}
  finally:
    mngr.close()


# model_fields' entries that are no config field, with the field that sets each and how: an error
# naming 'aux_head: False -> True' told no one which setting to give (a run saved before the head
# existed, resumed with today's defaults).
_DERIVED_FIELDS = {
    'aux_head': ('aux_lambda', 'the auxiliary classifier head exists only with aux_lambda > 0'),
    'aux_regression_head': ('aux_regression', 'its regression output exists only with '
                            'aux_regression > 0'),
    'lr_decay': ('lr_decay_steps', 'with lr_decay_steps > 0 the optimizer states count steps'),
}


def _model_changes(old: dict, new: dict, old_config, new_config) -> list[str]:
  """'field: old -> new' for each model field (`config.model_fields`) that differs, a derived
  one as the config field that sets it, with its rule."""
  changes = []
  for k in new:
    if old.get(k) == new[k]:
      continue
    if k not in _DERIVED_FIELDS:
      changes.append(f'{k}: {old.get(k)!r} -> {new[k]!r}')
    elif k != 'aux_regression_head' or old.get('aux_head') == new['aux_head']:
      field, rule = _DERIVED_FIELDS[k]  # (no head at all: aux_head's line says why)
      changes.append(f'{field}: {old_config[field]!r} -> {new_config[field]!r} ({rule})')
  return changes


def check_resumable(saved: dict, config, spec, log_path: str, synthetic: bool):
  """Refuses a checkpoint `config` cannot resume on the data of `spec` (`synthetic`: the designs
  the oracle labels); returns the config it was saved with."""
  try:
    saved_config = config_lib.from_saved(saved['config'])
    old = config_lib.model_fields(saved_config)
  except (KeyError, TypeError, DesignGanError):
    raise ConfigError(f'{log_path} holds a checkpoint whose config is unreadable; use a new '
                      '--config.log_path') from None
  new = config_lib.model_fields(config)
  diff = _model_changes(old, new, saved_config, config)
  if diff:
    raise ConfigError(f'{log_path} holds a run started with other settings that cannot change '
                      f'on resume ({"; ".join(diff)}): the model, optimizer, seeds and '
                      'batch_size stay those it started with; use a new --config.log_path or the '
                      'original settings')
  if saved['spec'] != spec.to_dict():
    raise ConfigError(f'{log_path} was trained on data with other vocabularies or layout '
                      f'({data.spec_changes(saved["spec"], spec.to_dict())}); use a new '
                      '--config.log_path')
  if config.lr_decay_steps and saved_config.critic_iter != config.critic_iter:
    raise ConfigError(f'{log_path} was trained with critic_iter={saved_config.critic_iter}, not '
                      f'{config.critic_iter}: the critic\'s learning rate decays over '
                      'lr_decay_steps x critic_iter of its own steps, so it would jump; resume '
                      f'with --config.critic_iter={saved_config.critic_iter} or use a new '
                      '--config.log_path')
  old_best = saved['config'].get('best_metric', 'auto')
  # 'auto' ranks by what the data allow: designs added or removed since may have made them the
  # synthetic ones, or no longer (best/ then failed its first save, after an epoch's training).
  old_metric = best_metric(old_best, bool(saved.get('oracle_applies', False)))
  new_metric = best_metric(config.best_metric, synthetic)
  # An empty best/ ranks nothing: _Evaluator creates it before the restore checks this again. A
  # run with eval_every=0 is checked too: its checkpoints would record the new metric (or data),
  # and a later resume that evaluates would pass this check and fail best/'s first save.
  if old_metric == new_metric or not saved_epochs(log_path, 'best'):
    return saved_config
  ranks = f'{log_path}/best ranks checkpoints by {old_metric}' + (
      '' if old_best == old_metric else f' (best_metric={old_best} on the designs the run was '
      'trained on)')
  # The setting that ranks by old_metric on these designs, if one does: an oracle metric needs the
  # designs the oracle labels (check_evaluation).
  fix = (None if old_metric.startswith('oracle') and not synthetic
         else old_best if best_metric(old_best, synthetic) == old_metric else old_metric)
  if old_best == config.best_metric:  # 'auto', on designs the oracle labels now or no longer
    raise ConfigError(f'{ranks}, but the designs in {config.data_path or "the embedded dataset"} '
                      f'are {"" if synthetic else "not "}the synthetic ones the oracle labels, '
                      f'where it ranks by {new_metric}; resume with the designs it was trained on'
                      f'{f" or --config.best_metric={fix}" if fix else ""}, or use a new '
                      '--config.log_path')
  new = new_metric + ('' if config.best_metric == new_metric else
                      f' (best_metric={config.best_metric})')
  raise ConfigError(f'{ranks}, not {new}; resume with '
                    + (f'--config.best_metric={fix}' if fix else 'the designs it was trained on')
                    + ' or use a new --config.log_path')
