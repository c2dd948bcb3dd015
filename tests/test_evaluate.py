"""Tests of gan/evaluate.py: the metrics on generators known to be right or wrong, and the command
line on a tiny trained run."""

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import types

import numpy as np
import pytest
from helpers import relabelled
from helpers import tiny_config

from gan import checkpoints
from gan import data
from gan import designs
from gan import evaluate
from gan import images as images_lib
from gan import inference
from gan import trainer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PER_PAIR = 4  # 120 pairs x 4 = 480 designs per evaluation

# ---------------------------------------------------------------------------------------------
# Fixtures and generators with known answers


@pytest.fixture(scope='module')
def ref(dataset, classifier):
  return evaluate.reference(dataset, classifier)


@pytest.fixture(scope='module')
def pool():
  """Real designs independent of the dataset: enough that every (pair, strut colours) occurs."""
  return designs.generate(30_000, seed=11)


def strut_colors_of(fixed, layout) -> np.ndarray:
  """(N, num_struts, 3) uint8 strut colours of fixed-pixel images."""
  rows, cols = np.asarray(layout.train_strut_positions).T
  return data.denormalize(fixed)[:, rows, cols, :]


def force_struts(full, fixed, layout) -> np.ndarray:
  rows, cols = np.asarray(layout.strut_positions).T
  full = full.copy()
  full[:, rows, cols, :] = strut_colors_of(fixed, layout)
  return full


def real_fn(pool_designs, spec, layout):
  """A perfect generator: for each request a real pool design of that pair and those struts."""
  rows, cols = np.asarray(layout.strut_positions).T
  by_key = {}
  for i, (d, m, struts) in enumerate(zip(pool_designs.durability, pool_designs.mass,
                                         pool_designs.images[:, rows, cols, :])):
    by_key.setdefault((round(d, 2), round(m, 2), struts.tobytes()), []).append(i)

  def generate_fn(d_idx, m_idx, fixed, seed):
    rng = np.random.default_rng(seed)
    picks = []
    for d, m, struts in zip(d_idx, m_idx, strut_colors_of(fixed, layout)):
      key = (round(spec.durability.values[d], 2), round(spec.mass.values[m], 2), struts.tobytes())
      picks.append(rng.choice(by_key[key]))
    return pool_designs.images[np.asarray(picks)]

  return generate_fn


def noise_fn(layout, set_struts=True):
  """Uniformly random pixels (struts forced to the requested colours unless set_struts=False)."""

  def generate_fn(d_idx, m_idx, fixed, seed):
    del m_idx
    rng = np.random.default_rng(seed)
    full = rng.integers(0, 256, (len(d_idx), layout.full_height, layout.full_width, 3), np.uint8)
    return force_struts(full, fixed, layout) if set_struts else full

  return generate_fn




# ---------------------------------------------------------------------------------------------
# The metrics can pass and can fail


def test_real_designs_score_perfectly(dataset, classifier, ref, pool):
  generate_fn = real_fn(pool, dataset.spec, dataset.layout)
  metrics = evaluate.evaluate_generator(generate_fn, dataset, classifier, PER_PAIR, seed=3,
                                        ref=ref)
  assert metrics['num_generated'] == 120 * PER_PAIR
  assert metrics['synthetic'] is True
  assert metrics['oracle_exact'] == 1.0 and metrics['oracle_within1'] == 1.0
  assert metrics['strut_exact'] == 1.0
  # At the baseline's sample size a perfect generator meets issue 7's target, fd <= 1.5 x the
  # baseline; at 480 designs FD's small-sample bias alone would exceed it.
  assert metrics['fd_designs'] >= len(dataset.train)
  assert metrics['fd'] <= 1.5 * metrics['fd_real_baseline']
  # Real designs are as recognisable as the held-out ones (up to sampling noise).
  assert metrics['classifier_accuracy_generated'] > metrics['classifier_accuracy_real'] - 0.15
  assert abs(metrics['diversity'] - metrics['diversity_real']) < 0.2 * metrics['diversity_real']
  per_class = metrics['per_class']
  assert len(per_class['durability']) == 10 and len(per_class['mass']) == 12
  assert len(per_class['pairs']) == 120
  assert all(row['oracle_exact'] == 1.0 and row['count'] == 10 * PER_PAIR
             for row in per_class['mass'])


def test_fd_gets_a_set_as_large_as_the_baselines(dataset, classifier, ref):
  """FD's own set: every pair equally often, at least as many designs as the baseline's training
  designs, struts drawn independently of the main set's."""
  calls = []
  inner = noise_fn(dataset.layout)

  def generate_fn(d_idx, m_idx, fixed, seed):
    calls.append((np.asarray(d_idx), np.asarray(m_idx), np.asarray(fixed), seed))
    return inner(d_idx, m_idx, fixed, seed)

  metrics = evaluate.evaluate_generator(generate_fn, dataset, classifier, PER_PAIR, seed=3,
                                        ref=ref)
  (d_main, _, fixed_main, seed_main), (d_fd, m_fd, fixed_fd, seed_fd) = calls
  assert len(d_main) == 120 * PER_PAIR == metrics['num_generated']
  assert metrics['fd_designs'] == len(d_fd) >= len(dataset.train) > len(d_main)
  pairs = np.unique(np.stack([d_fd, m_fd]), axis=1, return_counts=True)[1]
  assert len(pairs) == 120 and pairs.min() == pairs.max()
  assert seed_fd != seed_main and not np.array_equal(fixed_fd[:len(fixed_main)], fixed_main)


def test_noise_fails_every_fidelity_metric(dataset, classifier, ref):
  metrics = evaluate.evaluate_generator(noise_fn(dataset.layout), dataset, classifier, PER_PAIR,
                                        ref=ref)
  assert metrics['oracle_exact'] < 0.2
  assert metrics['classifier_accuracy_generated'] < 0.1
  assert metrics['fd'] > 10 * metrics['fd_real_baseline']
  assert metrics['strut_exact'] == 1.0


def test_noise_is_more_diverse_than_real_designs(dataset, classifier, ref):
  metrics = evaluate.evaluate_generator(noise_fn(dataset.layout), dataset, classifier, PER_PAIR,
                                        ref=ref)
  assert metrics['diversity'] > metrics['diversity_real'] > 0


def test_wrong_struts_are_detected(dataset, classifier, ref, pool):
  perfect = real_fn(pool, dataset.spec, dataset.layout)

  def black_struts(d_idx, m_idx, fixed, seed):
    return force_struts(perfect(d_idx, m_idx, fixed, seed), -np.ones_like(fixed), dataset.layout)

  metrics = evaluate.evaluate_generator(black_struts, dataset, classifier, PER_PAIR, ref=ref)
  # Only requests whose struts were black anyway (1/25 of the palette pairs) pass.
  assert metrics['strut_exact'] < 0.2
  unset = evaluate.evaluate_generator(noise_fn(dataset.layout, set_struts=False), dataset,
                                      classifier, PER_PAIR, ref=ref)
  assert unset['strut_exact'] < 0.05


def test_metrics_are_deterministic_json_and_reference_is_optional(dataset, classifier, ref):
  fn = noise_fn(dataset.layout)
  a = evaluate.evaluate_generator(fn, dataset, classifier, 2, seed=5)
  b = evaluate.evaluate_generator(fn, dataset, classifier, 2, seed=5, ref=ref)
  assert json.loads(json.dumps(a)) == a == b


def test_non_synthetic_data_have_no_oracle_metrics(dataset, classifier):
  other = relabelled(dataset)
  metrics = evaluate.evaluate_generator(noise_fn(dataset.layout), other, classifier, 2)
  assert metrics['synthetic'] is False
  assert metrics['oracle_exact'] is None and metrics['oracle_within1'] is None
  assert all(row['oracle_exact'] is None for row in metrics['per_class']['durability'])
  assert 'not the synthetic designs' in evaluate.format_report(metrics)
  assert 'held-out real' in evaluate.format_report(metrics)
  no_val = dict(metrics, classifier=dict(metrics['classifier'], held_out_set='train'))
  assert 'real (training designs: no validation split)' in evaluate.format_report(no_val)


def test_report_writes_each_class_as_the_file_names_do(dataset, classifier):
  """The per-class lines printed classes with `:g` (6 significant digits): a mass class 100000.5
  read '100000', and 12345.67 and 12345.68 were both '12345.7'; 1e+06 for 1000000."""
  metrics = evaluate.evaluate_generator(noise_fn(dataset.layout), relabelled(dataset),
                                        classifier, 1)
  rows = metrics['per_class']
  values = {'durability': [12345.67, 12345.68, 1000000.0, 0.5], 'mass': [100000.5, 2.2, 0.0]}
  for label, row_values in values.items():
    rows[label] = [dict(rows[label][0], value=v) for v in row_values]
  lines = evaluate.format_report(metrics).splitlines()
  by_durability = lines[lines.index('classifier accuracy by durability:') + 1]
  by_mass = lines[lines.index('classifier accuracy by mass:') + 1]
  assert [p.split(':')[0] for p in by_durability.split()] == ['12345.67', '12345.68', '1000000',
                                                              '0.5']
  assert [p.split(':')[0] for p in by_mass.split()] == ['100000.5', '2.2', '0']
  assert f'({metrics["num_pairs"]} class pairs x 1)' in lines[0]
  assert '(1 class pair x 1)' in evaluate.format_report(dict(metrics, num_pairs=1))


def test_bad_arguments_and_outputs_are_rejected(dataset, classifier, ref):
  with pytest.raises(evaluate.EvaluationError, match='per_pair'):
    evaluate.evaluate_generator(noise_fn(dataset.layout), dataset, classifier, 0, ref=ref)

  def training_layout(d_idx, m_idx, fixed, seed):
    return data.denormalize(fixed)

  with pytest.raises(ValueError, match='full layout'):
    evaluate.evaluate_generator(training_layout, dataset, classifier, 1, ref=ref)


def test_one_durability_class_off_is_within1_and_the_tables_say_which_label(dataset, classifier,
                                                                            ref, pool):
  """Real designs of the neighbouring durability class (one step off): no design is exact, every
  one within one class; the per-class rows say the durability label is off and the mass label
  right. (Perfect and noise generators alone could not tell within1 from exact.)"""
  perfect = real_fn(pool, dataset.spec, dataset.layout)
  nd = len(dataset.spec.durability)

  def neighbour(d_idx, m_idx, fixed, seed):
    d_idx = np.asarray(d_idx)
    return perfect(np.where(d_idx + 1 < nd, d_idx + 1, d_idx - 1), m_idx, fixed, seed)

  metrics = evaluate.evaluate_generator(neighbour, dataset, classifier, PER_PAIR, seed=3, ref=ref)
  assert metrics['oracle_exact'] == 0.0 and metrics['oracle_within1'] == 1.0
  per_class = metrics['per_class']
  for row in per_class['durability'] + per_class['mass'] + per_class['pairs']:
    assert row['oracle_exact'] == 0.0 and row['oracle_within1'] == 1.0, row
  assert all(row['oracle_label_exact'] == 0.0 for row in per_class['durability'])
  assert all(row['oracle_label_exact'] == 1.0 for row in per_class['mass'])


def test_per_class_tables_count_each_pair_and_agree_with_the_totals(dataset, classifier, ref):
  """Pairs come durability major, `per_pair` designs each; a class row counts its pairs' designs;
  the rows' classifier accuracy (both classes right) averages to the overall one."""
  metrics = evaluate.evaluate_generator(noise_fn(dataset.layout), dataset, classifier, PER_PAIR,
                                        seed=3, ref=ref)
  spec, per_class = dataset.spec, metrics['per_class']
  d_idx, m_idx = spec.class_pairs()
  assert [(row['durability'], row['mass']) for row in per_class['pairs']] == [
      (spec.durability.values[d], spec.mass.values[m]) for d, m in zip(d_idx, m_idx)]
  assert all(row['count'] == PER_PAIR for row in per_class['pairs'])
  assert [row['value'] for row in per_class['durability']] == list(spec.durability.values)
  assert all(row['count'] == len(spec.mass) * PER_PAIR for row in per_class['durability'])
  for table in ('pairs', 'durability', 'mass'):
    rates = [row['classifier_accuracy'] for row in per_class[table]]
    assert np.mean(rates) == pytest.approx(metrics['classifier_accuracy_generated']), table


def test_fd_set_rounds_up_to_whole_pairs(dataset, classifier, ref):
  """A baseline of training designs that is no multiple of the class pairs: FD's set is rounded
  up to whole pairs, never below the baseline's size."""
  odd = dataclasses.replace(ref, fd_designs=ref.fd_designs + 1)
  metrics = evaluate.evaluate_generator(noise_fn(dataset.layout), dataset, classifier, 1, ref=odd)
  pairs = metrics['num_pairs']
  assert metrics['fd_designs'] == pairs * -(-(ref.fd_designs + 1) // pairs) > ref.fd_designs


def test_reference_without_validation_designs_has_no_baseline(small_design_dir, classifier):
  """No validation split: the training designs are the held-out set, and FD(train, train) would
  be 0, not a baseline."""
  no_val = data.load_dataset(small_design_dir, val_fraction=0)
  ref = evaluate.reference(no_val, classifier)
  assert ref.held_out_name == 'train' and ref.fd_real_baseline is None
  assert ref.fd_designs == len(no_val.train) == len(ref.features)


def test_check_per_pair_allows_exactly_max_designs():
  spec = types.SimpleNamespace(durability=range(10), mass=range(10))
  evaluate.check_per_pair(evaluate.MAX_DESIGNS // 100, spec)
  with pytest.raises(evaluate.EvaluationError) as info:
    evaluate.check_per_pair(evaluate.MAX_DESIGNS // 100 + 1, spec, 'eval_per_pair')
  assert str(info.value) == ('eval_per_pair=1001 asks for 100,100 designs (1001 for each of the '
                             '100 class pairs); one evaluation generates at most 100,000, so '
                             'give eval_per_pair=1000 or less')
  with pytest.raises(evaluate.EvaluationError, match='^--per_pair must be at least 1 design'):
    evaluate.check_per_pair(0, spec)
  # more pairs than designs: the advice was '--per_pair=1 or less', itself refused
  too_many = types.SimpleNamespace(durability=range(400), mass=range(300))
  with pytest.raises(evaluate.EvaluationError) as info:
    evaluate.check_per_pair(1, too_many)
  assert str(info.value) == ('the data has 120,000 class pairs, and one evaluation generates at '
                             'most 100,000 designs, at least one per pair: it cannot be evaluated '
                             'whatever --per_pair')
  with pytest.raises(evaluate.EvaluationError, match='eval_per_pair; eval_every=0 trains '):
    evaluate.check_per_pair(1, too_many, 'eval_per_pair')


def test_scalar_metrics_keep_zeros_and_the_summary_shows_four_digits():
  """A metric of 0 (an untrained generator's oracle_exact) is a value for TensorBoard and the
  best/ checkpoint's metadata; only undefined ones (None) are left out."""
  metrics = {'oracle_exact': 0.0, 'oracle_within1': None, 'fd': 12.345678, 'strut_exact': 1,
             'num_generated': 480}
  assert evaluate.scalar_metrics(metrics) == {'oracle_exact': 0.0, 'fd': 12.345678,
                                              'strut_exact': 1.0}
  assert evaluate.format_summary(metrics) == 'oracle_exact 0.0000  fd 12.3457  strut_exact 1.0000'


def test_report_shows_each_metric_in_its_place():
  """Every headline number a distinct value: none is printed in another's place."""
  rows = lambda values, exact, clf: [{'value': v, 'oracle_exact': e, 'classifier_accuracy': c}
                                     for v, e, c in zip(values, exact, clf)]
  metrics = {
      'num_generated': 480, 'num_pairs': 120, 'per_pair': 4, 'synthetic': True,
      'oracle_exact': 0.1, 'oracle_within1': 0.2, 'classifier_accuracy_generated': 0.3,
      'classifier_accuracy_real': 0.4, 'fd': 5.12345, 'fd_designs': 2160,
      'fd_real_baseline': 6.54321, 'strut_exact': 0.7, 'diversity': 0.08123,
      'diversity_real': 0.09876, 'classifier': {'held_out_set': 'val'},
      'per_class': {'durability': rows([1.0, 1.1], [0.25, 0.5], [0.75, 0.5]),
                    'mass': rows([2.13, 2.14], [0.75, None], [0.25, None])}}
  assert evaluate.format_report(metrics).splitlines() == [
      'designs generated     480 (120 class pairs x 4)',
      'oracle exact          0.100   within one class 0.200',
      'classifier accuracy   generated 0.300   held-out real 0.400',
      'Frechet distance      generated 5.1235 (2160 designs)   real baseline 6.5432',
      'strut exact           0.700',
      'diversity (L1)        generated 0.0812   real 0.0988',
      'oracle exact by durability:',
      '  1:0.25  1.1:0.50',
      'oracle exact by mass:',
      '  2.13:0.75  2.14:n/a',
  ]
  other = evaluate.format_report(dict(metrics, synthetic=False)).splitlines()
  assert other[-4:] == ['classifier accuracy by durability:', '  1:0.75  1.1:0.50',
                        'classifier accuracy by mass:', '  2.13:0.25  2.14:n/a']


def test_designs_of_another_dtype_are_rejected(dataset, classifier, ref):
  def float_designs(d_idx, m_idx, fixed, seed):
    return noise_fn(dataset.layout)(d_idx, m_idx, fixed, seed).astype(np.float32)

  with pytest.raises(ValueError, match='must return uint8 designs'):
    evaluate.evaluate_generator(float_designs, dataset, classifier, 1, ref=ref)


# ---------------------------------------------------------------------------------------------
# A trained run, end to end


@pytest.fixture(scope='module')
def trained_run(small_design_dir, tmp_path_factory):
  log_path = str(tmp_path_factory.mktemp('eval_run') / 'log')
  config = tiny_config(small_design_dir, log_path)
  trainer.train(config)
  return log_path


def test_evaluate_model_end_to_end(trained_run, tmp_path, capsys):
  out = tmp_path / 'metrics.json'
  cache = str(tmp_path / 'cache')
  assert evaluate.main([f'--model_path={trained_run}', '--per_pair=2', f'--json={out}',
                        f'--cache_dir={cache}']) == 0
  printed = capsys.readouterr().out
  assert 'oracle exact' in printed and 'Frechet distance' in printed
  assert printed.splitlines()[0] == (f'checkpoint            step 1 of '
                                     f'{os.path.join(trained_run, "checkpoints")}')
  metrics = json.loads(out.read_text())
  for key in ('oracle_exact', 'oracle_within1', 'classifier_accuracy_generated',
              'classifier_accuracy_real', 'strut_exact'):
    assert 0.0 <= metrics[key] <= 1.0, key
  assert metrics['strut_exact'] == 1.0  # inference.generate sets the struts exactly
  assert metrics['fd'] >= 0 and metrics['fd_real_baseline'] >= 0
  assert metrics['diversity'] >= 0 and metrics['diversity_real'] >= 0
  assert metrics['num_generated'] == 120 * 2 and metrics['model']['step'] == 1
  assert set(metrics['per_class']) == {'durability', 'mass', 'pairs'}
  # Same run, same seed, cached classifier: the same numbers.
  again = evaluate.evaluate_model(trained_run, per_pair=2, cache_dir=cache)
  assert again == metrics


def test_data_of_other_classes_are_refused_naming_both_and_data_path(trained_run,
                                                                      small_design_dir, tmp_path):
  """Designs whose classes differ from the model's cannot be scored by its class indices: refused,
  naming the change and how to give the model's own data (no test held this error before)."""
  other = tmp_path / 'other'
  shutil.copytree(small_design_dir, other)
  first = sorted({data.parse_labels(n)[0] for n in os.listdir(other)})[0]
  for name in os.listdir(other):
    if data.parse_labels(name)[0] == first:
      os.remove(other / name)
  with pytest.raises(evaluate.EvaluationError,
                     match=(f'the data at {other} no longer match the model in {trained_run} '
                            r'\(model -> data: durability.*\); evaluate with the data the model '
                            r'was trained on \(--data_path names their directory where they '
                            r'moved\)')):
    evaluate.evaluate_model(trained_run, per_pair=1, data_path=str(other),
                            cache_dir=str(tmp_path / 'cache'))


def test_designs_moved_since_training_are_found_with_data_path(small_design_dir, tmp_path,
                                                               capsys):
  """The run's config names the data it was trained on; once they moved, the error says where
  that path came from and --data_path evaluates with the designs where they are now."""
  data_dir = tmp_path / 'data'
  shutil.copytree(small_design_dir, data_dir)
  log_path = str(tmp_path / 'run')
  trainer.train(tiny_config(data_dir, log_path, eval_every=0))
  args = [f'--model_path={log_path}', '--per_pair=1', f'--cache_dir={tmp_path / "cache"}']
  assert evaluate.main(args + [f'--json={tmp_path / "before.json"}']) == 0
  # A design damaged where the data still are: no advice to name where they moved.
  design = next(data_dir.iterdir())
  kept = design.read_bytes()
  design.write_bytes(b'not an image')
  capsys.readouterr()
  assert evaluate.main(args) == 1
  err = capsys.readouterr().err
  assert f'the data_path the run in {log_path} was trained with' in err, err
  assert 'if the designs moved' not in err, err
  design.write_bytes(kept)
  # The designs moved out, their directory left empty: the advice is given.
  (tmp_path / 'moved').mkdir()
  for path in list(data_dir.iterdir()):
    path.rename(tmp_path / 'moved' / path.name)
  assert evaluate.main(args) == 1
  assert 'if the designs moved, give their directory with --data_path' in capsys.readouterr().err
  data_dir.rmdir()
  capsys.readouterr()
  assert evaluate.main(args) == 1
  err = capsys.readouterr().err
  assert err.startswith(f'error: {data_dir}: data directory does not exist'), err
  assert f'the data_path the run in {log_path} was trained with' in err and '--data_path' in err
  # A --data_path that is wrong too is named as the flag's, not the run's.
  assert evaluate.main(args + [f'--data_path={tmp_path / "gone"}']) == 1
  err = capsys.readouterr().err
  assert err.startswith(f'error: --data_path: {tmp_path / "gone"}: data directory does not '
                        'exist'), err
  assert 'trained with' not in err, err
  assert evaluate.main(args + [f'--data_path={tmp_path / "moved"}',
                               f'--json={tmp_path / "after.json"}']) == 0
  before, after = (json.loads((tmp_path / n).read_text()) for n in ('before.json', 'after.json'))
  assert after['model'].pop('data') == str(tmp_path / 'moved')
  assert before['model'].pop('data') == str(data_dir)
  assert after == before
  err = capsys.readouterr().err
  assert 'not those the model was trained on' not in err
  assert 'Loaded the evaluation classifier from' in err, err  # the info lines are shown
  # Designs added since: another split, whose validation part may hold training designs.
  shutil.copy(next((tmp_path / 'moved').iterdir()), tmp_path / 'moved' / '1.0_a_2.13_extra.bmp')
  assert evaluate.main(args + [f'--data_path={tmp_path / "moved"}']) == 0
  err = capsys.readouterr().err
  # One plain line, not 'WARNING:root:warning: ...' (logging.basicConfig did nothing).
  assert ('\nwarning: the designs in' in '\n' + err and 'not those the model was trained on (240 '
          'then, 241 now): the train/validation split is drawn anew' in err), err


def test_designs_of_another_size_at_the_runs_data_path_say_where_the_path_came_from(tmp_path):
  """Designs of another size put where the run's were: the strut that no longer fits is a
  LayoutError, which read 'strut pixel (row 7, col 11) lies outside the 5x30 design grid' with
  nothing saying that the path and the struts are the run's (a DataError said so)."""
  data_dir = tmp_path / 'data'
  data_dir.mkdir()
  for i in range(4):
    images_lib.write_rgb(str(data_dir / f'1.{i % 2}_a_2.1_{i}.bmp'),
                         np.full((5, 30, 3), 9, np.uint8))
  model = types.SimpleNamespace(config=tiny_config(data_dir, tmp_path / 'run'),
                                run_dir=str(tmp_path / 'run'))
  with pytest.raises(data.DataError) as info:
    evaluate._load_data(model, None)
  assert 'lies outside the 5x30 design grid' in str(info.value), info.value
  assert f'(the data_path the run in {tmp_path / "run"} was trained with)' in str(info.value)


def test_training_evaluates_as_gan_evaluate_does_whatever_the_seed(small_design_dir, tmp_path):
  """A run's logged metrics and its best/ ranking are what `python -m gan.evaluate` reports for it:
  the evaluation seed is gan.evaluate's, not the training seed. Otherwise a sweep's seed_1 (or
  any run with --config.seed=1) logged other numbers than gan.evaluate gave for its checkpoint,
  and the models of one sweep were compared on different noise and struts."""
  log_path = str(tmp_path / 'log')
  trainer.train(tiny_config(small_design_dir, log_path, seed=1, eval_every=1, eval_per_pair=2))
  mngr = checkpoints.manager(os.path.join(log_path, 'best'), keep=1, create=False)
  try:
    logged = checkpoints.read_meta(mngr)[1]['metrics']
  finally:
    mngr.close()
  measured = evaluate.scalar_metrics(evaluate.evaluate_model(log_path, per_pair=2))
  assert measured == pytest.approx(logged, rel=1e-4)


def test_evaluate_model_reports_a_missing_step(trained_run, tmp_path):
  with pytest.raises(evaluate.DesignGanError, match='step 7'):
    evaluate.evaluate_model(trained_run, step=7, cache_dir=str(tmp_path))


@pytest.mark.parametrize('kind', ['sweep', 'run_without_checkpoints'])
def test_a_run_directory_named_by_a_number_is_not_read_as_a_checkpoint_step(tmp_path, capsys,
                                                                            kind):
  """log_path=runs/7: a sweep there, or a run not yet checkpointed, was read as step 7 of runs/
  ('checkpoint 7 in runs is unreadable: Item "meta" was not found'); a step stays one."""
  run = tmp_path / '7'
  step_dir = run / 'seed_7' / 'checkpoints' / '1'
  if kind == 'sweep':
    step_dir.mkdir(parents=True)
    (step_dir / '_CHECKPOINT_METADATA').write_text('{}')
  else:
    run.mkdir()
    (run / 'log_summary').write_text('')
  assert evaluate.main([f'--model_path={run}', f'--cache_dir={tmp_path}']) == 1
  err = capsys.readouterr().err.strip()
  expected = 'is a seed sweep' if kind == 'sweep' else 'holds no checkpoint'
  assert len(err.splitlines()) == 1 and expected in err, err
  if kind == 'sweep':
    assert inference.find_checkpoints(str(step_dir)) == (str(step_dir.parent), 1,
                                                         str(step_dir.parent.parent))


def test_a_negative_seed_evaluates_as_infer_py_takes_it(trained_run, tmp_path):
  """infer.py takes every 64-bit seed; gan.evaluate refused negative ones (numpy's generator of
  the strut draws takes none): a negative seed now draws its own struts and designs."""
  cache = str(tmp_path / 'cache')
  negative = evaluate.evaluate_model(trained_run, per_pair=2, seed=-1, cache_dir=cache)
  zero = evaluate.evaluate_model(trained_run, per_pair=2, seed=0, cache_dir=cache)
  assert negative['seed'] == -1 and negative['num_generated'] == 240
  assert negative['diversity'] != zero['diversity']


@pytest.mark.parametrize('seed', [2**63 - 1, -2**63 - 1])
def test_cli_refuses_a_seed_beyond_64_bits_in_one_line(tmp_path, capsys, seed):
  """jax.random.PRNGKey takes 64-bit seeds; the FD designs use seed + 1: an OverflowError
  traceback before."""
  assert evaluate.main([f'--model_path={tmp_path}', f'--seed={seed}']) == 1
  err = capsys.readouterr().err
  assert err == ('error: --seed must be an integer from -9223372036854775808 to '
                 '9223372036854775806 (JAX seeds are 64-bit integers, and the evaluation also '
                 f'uses seed + 1), got {seed}\n'), err


@pytest.mark.parametrize('seed', [-2**63, 2**63 - 2])
def test_cli_takes_the_seeds_at_the_64_bit_bounds(tmp_path, capsys, seed):
  """The most negative 64-bit seed and the largest whose seed + 1 fits pass the seed check: the
  run's path is what is refused next."""
  assert evaluate.main([f'--model_path={tmp_path / "missing"}', f'--seed={seed}']) == 1
  assert capsys.readouterr().err.startswith('error: --model_path '), seed


def test_cli_refuses_an_empty_json_name_before_the_model(tmp_path, capsys):
  """--json= is no file to write: refused first, as any --json that cannot be written."""
  assert evaluate.main([f'--model_path={tmp_path / "missing"}', '--json=']) == 1
  assert capsys.readouterr().err.startswith('error: --json '), 'the model path came first'


def test_cli_refuses_more_designs_than_one_evaluation_holds_in_one_line(trained_run, capsys,
                                                                         monkeypatch):
  """The evaluation holds every design it generates in memory: --per_pair 100000000 (12e9
  designs) failed with a MemoryError traceback. Refused before the data and the classifier."""
  def no_classifier(*args, **kwargs):
    raise AssertionError('the classifier was loaded although the request is refused')

  monkeypatch.setattr(evaluate.classifier_lib, 'load_or_train_classifier', no_classifier)
  assert evaluate.main([f'--model_path={trained_run}', '--per_pair=100000000']) == 1
  err = capsys.readouterr().err
  assert err == ('error: --per_pair=100000000 asks for 12,000,000,000 designs (100000000 for '
                 'each of the 120 class pairs); one evaluation generates at most 100,000, so '
                 'give --per_pair=833 or less\n'), err


def test_main_runs_outside_the_main_thread(tmp_path, capsys):
  """main() installs its Ctrl-C handler only where Python allows one: in the main thread."""
  status = []
  worker = threading.Thread(target=lambda: status.append(
      evaluate.main([f'--model_path={tmp_path / "missing"}'])))
  worker.start()
  worker.join()
  assert status == [1]
  assert capsys.readouterr().err.startswith('error: --model_path ')


def test_cli_checks_the_json_target_before_evaluating(trained_run, tmp_path, capsys,
                                                     monkeypatch):
  def no_evaluation(*args, **kwargs):
    raise AssertionError('evaluated although the metrics could not be written')

  monkeypatch.setattr(evaluate, 'evaluate_model', no_evaluation)
  missing = tmp_path / 'no' / 'metrics.json'
  assert evaluate.main([f'--model_path={trained_run}', f'--json={missing}']) == 1
  assert capsys.readouterr().err.startswith('error: --json')
  assert evaluate.main([f'--model_path={trained_run}', f'--json={tmp_path}']) == 1
  assert 'is a directory' in capsys.readouterr().err


def test_cli_names_a_damaged_checkpoint_and_the_earlier_one_in_one_line(trained_run, tmp_path):
  """Data files of the latest checkpoint cut short: one line naming it and how to read the
  earlier one, without TensorStore's spec dump."""
  checkpoint_dir = tmp_path / 'checkpoints'
  shutil.copytree(os.path.join(trained_run, 'checkpoints', '1'), checkpoint_dir / '1')
  shutil.copytree(checkpoint_dir / '1', checkpoint_dir / '2')
  data_dir = checkpoint_dir / '2' / 'state' / 'ocdbt.process_0' / 'd'
  for name in os.listdir(data_dir):
    os.truncate(data_dir / name, 100)
  result = subprocess.run(
      [sys.executable, '-m', 'gan.evaluate', f'--model_path={checkpoint_dir}'],
      cwd=REPO, capture_output=True, text=True, timeout=120, check=False,
      env=dict(os.environ, JAX_PLATFORMS='cpu'))
  assert result.returncode == 1
  lines = result.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith('error: checkpoint 2 in '), result.stderr
  assert 'is damaged' in lines[0] and 'the earlier checkpoint 1 is kept' in lines[0], lines[0]
  assert '--step=1' in lines[0], lines[0]
  assert 'TensorStore' not in lines[0] and 'bound method' not in lines[0], lines[0]


def test_cli_shows_its_log_lines_as_plain_lines(trained_run, tmp_path):
  """Run as `python -m gan.evaluate`, its classifier line never showed and a warning read
  'WARNING:__main__:warning: ...': absl had given the root logger its own handler first."""
  result = subprocess.run(
      [sys.executable, '-m', 'gan.evaluate', f'--model_path={trained_run}', '--per_pair=1',
       f'--cache_dir={tmp_path}'], cwd=REPO, capture_output=True, text=True, timeout=300,
      check=False, env=dict(os.environ, JAX_PLATFORMS='cpu'))
  assert result.returncode == 0, result.stderr
  lines = result.stderr.splitlines()
  assert any(line.startswith(('Trained the evaluation classifier in ',
                              'Loaded the evaluation classifier from ')) for line in lines), lines
  assert not [line for line in lines if line.startswith(('WARNING:', 'INFO:'))], lines


# `python -m gan.evaluate` once its imports are done, which it says on stderr first: a Ctrl-C
# during the imports is Python's own. (runpy warns that the module it runs was imported.)
_EVALUATE_AFTER_IMPORTS = ('import runpy, sys, warnings; import gan.evaluate; '
                           'warnings.filterwarnings("ignore", "\'gan.evaluate\' found in"); '
                           'print("imported", file=sys.stderr, flush=True); '
                           'sys.argv[0] = "gan.evaluate"; '
                           'runpy.run_module("gan.evaluate", run_name="__main__")')


@pytest.mark.parametrize('delay_s', [0.5, 3.0])
def test_cli_ctrl_c_says_so_in_one_line_and_writes_nothing(trained_run, tmp_path, delay_s):
  """SIGINT while loading or evaluating: one line, exit status 130, no --json file (also when the
  KeyboardInterrupt lands in a callback that swallows it, or inside a checkpoint read)."""
  out = tmp_path / 'metrics.json'
  args = [sys.executable, '-c', _EVALUATE_AFTER_IMPORTS, f'--model_path={trained_run}',
          '--per_pair=2', f'--cache_dir={tmp_path / "cache"}', f'--json={out}']
  # Without the tests' compilation cache (conftest): the delays are timed against compiling.
  env = {k: v for k, v in os.environ.items() if k != 'JAX_COMPILATION_CACHE_DIR'}
  with subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                        env=dict(env, JAX_PLATFORMS='cpu')) as proc:
    assert proc.stderr.readline() == 'imported\n'
    time.sleep(delay_s)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
  assert proc.returncode == 130, err
  lines = [line for line in err.splitlines() if line]
  assert lines[-1] == 'interrupted: no metrics written', err
  # Before it at most the evaluation's own log lines (the classifier trained before the Ctrl-C
  # is taken, on a busy machine): no traceback, nothing else.
  assert all(line.startswith('Trained the evaluation classifier in ') for line in lines[:-1]), err
  assert not out.exists()


def test_cli_reports_a_bad_path_without_traceback(tmp_path):
  result = subprocess.run(
      [sys.executable, '-m', 'gan.evaluate', f'--model_path={tmp_path / "missing"}'],
      cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
  assert result.returncode == 1
  assert result.stderr.startswith('error:') or '\nerror:' in result.stderr
  assert 'Traceback' not in result.stderr
