"""python -m gan.compare: the combination table and figure (tiny budget, two combinations)."""

import errno
import json
import os
import shutil
import socket
import subprocess
import sys
import types

import numpy as np
import pytest
from PIL import Image

from gan import compare
from gan import designs
from gan import run_lock
from tests.helpers import ctrl_c_swallowed_by_a_gc_callback

pytestmark = pytest.mark.usefixtures('fast_compilation')


@pytest.fixture(scope='module', autouse=True)
def embedded_designs_generated(private_cache):
  """The session's first use of the embedded designs generates them and says so on stderr, a
  line the tests of error and interrupt lines would find first: made now."""
  del private_cache
  designs.ensure_default_dataset()


TINY = ['data_path={data}', 'epochs=1', 'batch_size=32', 'critic_iter=1', 'gen_hidden_dims=32',
        'disc_hidden_dims=32', 'zdim=8', 'embed_dim=8', 'num_layers=1', 'eval_every=0',
        'num_output_images=2']


@pytest.mark.slow
def test_compare_writes_results_table_and_figure(small_design_dir, tmp_path, capsys):
  names = 'vanilla_bce_mlp,infogan_wgan_mlp'
  overrides = [s.format(data=small_design_dir) for s in TINY]
  args = ['--out', str(tmp_path), '--minutes', '5', '--combos', names]
  for item in overrides:
    args += ['--set', item]
  assert compare.main(args) == 0
  with open(tmp_path / 'results.json') as f:
    results = json.load(f)
  assert sorted(results) == sorted(names.split(','))
  for r in results.values():
    assert r['epochs'] == 1 and 0 <= r['oracle_exact'] <= 1 and r['fd'] > 0
  table = (tmp_path / 'table.md').read_text()
  assert table.count('\n') == 4 and '`infogan_wgan_mlp`' in table
  with Image.open(tmp_path / 'designs.png') as image:
    assert image.size[0] > 2 * 14 * 2 * 12  # two panels of 12 mass columns side by side
  assert os.path.isdir(tmp_path / 'vanilla_bce_mlp' / 'checkpoints')
  # Already evaluated combinations are not retrained, and say so; one named twice is one row.
  capsys.readouterr()
  assert compare.main([a.replace(names, names + ',vanilla_bce_mlp') for a in args]) == 0
  out = capsys.readouterr().out
  assert 'training for' not in out and 'vanilla_bce_mlp: already in' in out, out
  assert out.count('| `vanilla_bce_mlp` |') == 1, out
  # ... but not continued with other settings: the table would mix them.
  assert compare.main(args + ['--set', 'gen_norm=none']) == 1
  err = capsys.readouterr().err
  assert 'trained with --minutes 5' in err and 'another --out' in err, err
  # An interrupted combination (a run directory but no result) is trained again from scratch.
  del results['infogan_wgan_mlp']
  compare.paths.write_json(str(tmp_path / 'results.json'), results)
  (tmp_path / 'infogan_wgan_mlp' / 'stale').write_text('from the interrupted run')
  assert compare.main(args) == 0
  out = capsys.readouterr().out
  assert 'infogan_wgan_mlp: discarding the interrupted run' in out
  assert 'vanilla_bce_mlp: training for' not in out
  assert not (tmp_path / 'infogan_wgan_mlp' / 'stale').exists()
  with open(tmp_path / 'results.json') as f:
    assert json.load(f)['infogan_wgan_mlp']['epochs'] == 1
  # A kept combination whose run is gone is trained again: designs.png draws from it, and failed
  # with "--model_path ...: no such file or directory" (no such flag) after rewriting table.md.
  shutil.rmtree(tmp_path / 'vanilla_bce_mlp')
  assert compare.main(args) == 0
  out = capsys.readouterr().out
  assert 'vanilla_bce_mlp: in ' in out and 'has no checkpoint' in out, out
  assert 'vanilla_bce_mlp: training for' in out and 'infogan_wgan_mlp: already in' in out, out
  assert os.path.isdir(tmp_path / 'vanilla_bce_mlp' / 'checkpoints')
  # A directory where the table or the figure goes: one error line before any work, not an
  # IsADirectoryError traceback once every combination had trained.
  for name in ('table.md', 'designs.png'):
    (tmp_path / name).unlink()
    (tmp_path / name).mkdir()
    capsys.readouterr()
    assert compare.main(args) == 1
    err = capsys.readouterr().err
    assert err.startswith(f'error: --out {tmp_path}: {tmp_path / name} is a directory, where '
                          f'the comparison writes its {name}; ') and err.count('\n') == 1, err
    (tmp_path / name).rmdir()


def test_compare_draws_a_model_with_one_strut(small_design_dir, tmp_path):
  """The figure gives each model as many strut colours as it has struts (it used to give two)."""
  args = ['--out', str(tmp_path), '--minutes', '5', '--combos', 'vanilla_bce_mlp',
          '--set', 'strut_positions=7,11']
  for item in TINY:
    args += ['--set', item.format(data=small_design_dir)]
  assert compare.main(args) == 0
  with Image.open(tmp_path / 'designs.png') as image:
    pixels = np.asarray(image.convert('RGB')).reshape(-1, 3)
  assert (pixels == (255, 0, 0)).all(axis=1).any()  # the one strut, drawn red


def _refuse_training(monkeypatch):
  """A test of a refusal fails at once if the refusal is gone, instead of training a combination
  for its full --minutes."""
  def trained(*args, **kwargs):
    raise AssertionError('trained a combination that should have been refused')
  monkeypatch.setattr(compare.trainer, 'train', trained)


@pytest.mark.parametrize('args,message', [
    (['--combos', 'vanilla_bce_cnn'], 'unknown combination'),
    (['--set', 'nonsense=1'], "no config field 'nonsense'"),
    (['--set', 'batch_size=many'], "'many' is not a whole number"),
    (['--minutes', '0'], '--minutes must be a finite number > 0, got 0.0'),
    # It was refused as 'time_budget_min must be a finite number', a field the user never gave.
    (['--minutes', 'inf'], '--minutes must be a finite number > 0, got inf'),
    (['--minutes', 'nan'], '--minutes must be a finite number > 0, got nan'),
    (['--set', 'batch_size'], 'expected FIELD=VALUE'),
    (['--out', '{tmp}/a_file/out'], 'a_file is a file'),
    (['--set', 'log_path={tmp}/precious'], 'gan.compare sets log_path itself'),
    (['--set', 'num_seeds=2'], 'gan.compare sets num_seeds itself'),
    (['--combos', ','], 'names no combination'),
    (['--set', 'batch_size=-5'], 'batch_size must be a positive integer, got -5'),
    (['--set', 'gen_dropout=0.1'], 'gen_dropout=0.1 would be ignored: gen_mode=selfattention'),
])
def test_compare_rejects_bad_arguments(args, message, tmp_path, capsys, monkeypatch):
  _refuse_training(monkeypatch)
  (tmp_path / 'a_file').write_text('')
  args = [a.format(tmp=tmp_path) for a in args]
  assert compare.main(['--out', str(tmp_path / 'out')] + args) == 1
  assert message in capsys.readouterr().err
  assert sorted(os.listdir(tmp_path)) == ['a_file']  # refused before anything is written


@pytest.mark.parametrize('content', [
    '{bad', '[1, 2]',
    # Entries that continuing or the table could not read: a TypeError or ValueError traceback.
    '{"vanilla_bce_mlp": {"oracle_exact": 0.5}}',
    '{"vanilla_bce_mlp": {"epochs": 1, "minutes": "15"}}',
    '{"vanilla_bce_mlp": {"minutes": 15.0, "set": []}}',
    '{"vanilla_bce_mlp": {"epochs": 1, "minutes": 15.0, "set": [], "fd": "low"}}',
    # Refused as trained "with --minutes 15 and --set [], not --minutes 15 and --set []".
    '{"vanilla_gan_mlp": {"epochs": 1, "minutes": 15.0, "set": []}}',
])
def test_an_unreadable_results_file_is_one_error_line(content, tmp_path, capsys, monkeypatch):
  _refuse_training(monkeypatch)
  (tmp_path / 'results.json').write_text(content)
  assert compare.main(['--out', str(tmp_path), '--combos', 'vanilla_bce_mlp']) == 1
  err = capsys.readouterr().err
  assert err.startswith('error: ') and 'remove it to compare from scratch' in err, err
  assert os.listdir(tmp_path) == ['results.json']


def test_ctrl_c_is_one_line_and_exit_status_130(tmp_path, monkeypatch, capsys):
  """A Ctrl-C during a combination's training used to end in a traceback."""
  def interrupted(*args, **kwargs):
    raise KeyboardInterrupt
  monkeypatch.setattr(compare.trainer, 'train', interrupted)
  assert compare.main(['--out', str(tmp_path / 'new' / 'out'), '--combos',
                       'vanilla_bce_mlp']) == 130
  err = capsys.readouterr().err
  assert err.startswith('interrupted: ') and err.count('\n') == 1, err
  assert 'same command continues' in err
  assert os.listdir(tmp_path) == []  # the --out it made, still empty, is removed


@pytest.mark.parametrize('status', [130, 1])
def test_the_command_ends_without_the_interpreter_teardown_after_ctrl_c_or_an_error(
    status, monkeypatch):
  """A Ctrl-C while a combination compiled printed its 'interrupted:' line, then the interpreter's
  teardown crashed on the XLA work still running: 'Segmentation fault', exit status 139 (one of
  two tries). It now exits at once with main's status, as gan.evaluate and gan.bench do."""
  exits = []
  monkeypatch.setattr(compare, 'main', lambda: status)
  monkeypatch.setattr(compare.interrupts, 'exit_after_error', exits.append)
  # It would leave SIGINT ignored in this test process (and so in every later subprocess).
  monkeypatch.setattr(compare.interrupts, 'finished', lambda: None)
  with pytest.raises(SystemExit):  # the fallback, reached here only because exits is a stub
    compare.cli()
  assert exits == [status]


def test_the_same_settings_spelled_otherwise_continue_a_comparison(tmp_path, monkeypatch,
                                                                   capsys):
  """results.json's --set items used to be compared as text: reordered or spelled otherwise
  (epochs=02, a default given explicitly), the same settings were refused."""
  done = dict(epochs=2, minutes=5.0, set=['epochs=2', 'batch_size=32'])
  (tmp_path / 'results.json').write_text(json.dumps({'vanilla_bce_mlp': done}))
  (tmp_path / 'vanilla_bce_mlp' / 'checkpoints' / '2').mkdir(parents=True)  # its run
  monkeypatch.setattr(compare.trainer, 'train', lambda *a, **k: pytest.fail('trained again'))
  monkeypatch.setattr(compare, 'figure', lambda *a, **k: None)
  base = ['--out', str(tmp_path), '--minutes', '5', '--combos', 'vanilla_bce_mlp']
  for items in (['batch_size=32', 'epochs=2'], ['epochs=02', 'batch_size=032'],
                ['epochs=2', 'batch_size=32', 'zdim=100']):
    args = base + [a for item in items for a in ('--set', item)]
    assert compare.main(args) == 0, capsys.readouterr().err
    assert 'vanilla_bce_mlp: already in' in capsys.readouterr().out
  # Other values are still refused.
  assert compare.main(base + ['--set', 'epochs=3', '--set', 'batch_size=32']) == 1
  assert 'trained with --minutes 5' in capsys.readouterr().err


def test_the_table_lists_every_combination_of_results_json_in_a_stable_order(
    tmp_path, monkeypatch, capsys):
  """table.md held only the combinations the last command named, while results.json (and the
  README's table made from it) holds every one compared on that --out."""
  done = {name: dict(epochs=2, minutes=5.0, set=['epochs=2'], oracle_exact=i / 4)
          for i, name in enumerate(('vanilla_wgan_mlp', 'infogan_bce_mlp', 'vanilla_bce_mlp'))}
  (tmp_path / 'results.json').write_text(json.dumps(done))
  for name in done:
    (tmp_path / name / 'checkpoints' / '2').mkdir(parents=True)  # its run
  monkeypatch.setattr(compare.trainer, 'train', lambda *a, **k: pytest.fail('trained again'))
  monkeypatch.setattr(compare, 'figure', lambda *a, **k: None)
  args = ['--out', str(tmp_path), '--minutes', '5', '--set', 'epochs=2', '--combos',
          'vanilla_wgan_mlp']
  assert compare.main(args) == 0, capsys.readouterr().err
  table = (tmp_path / 'table.md').read_text()
  rows = [line.split(' | ')[0] for line in table.splitlines()[2:]]
  assert rows == ['| `vanilla_bce_mlp`', '| `vanilla_wgan_mlp`', '| `infogan_bce_mlp`'], table
  assert '| `vanilla_bce_mlp` | 2 | 0.500 | n/a |' in table
  assert table in capsys.readouterr().out  # the table printed is table.md's


def test_a_figure_that_cannot_be_written_is_refused_as_the_table_is(tmp_path, monkeypatch):
  """designs.png's error was '<path>: cannot write (...)', where table.md's and results.json's
  (paths.write_text) name the output first and say what is wrong with its directory."""
  image = np.zeros((2, 2, 3), np.uint8)
  errors = {}
  for name, write in (('designs.png', compare.write_figure),
                      ('table.md', lambda path, _: compare.paths.write_text(path, '', 'table.md'))):
    path = str(tmp_path / 'gone' / name)
    with pytest.raises(compare.paths.OutputPathError) as raised:
      write(path, image)
    errors[name] = str(raised.value).replace(name, '<name>')
  assert errors['designs.png'] == errors['table.md'], errors
  assert errors['table.md'].startswith(f'<name> {tmp_path}'), errors
  # A failed write (a full disk; Pillow's OSErrors without an errno): the same form.
  path = str(tmp_path / 'designs.png')
  for error, reason in ((OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)), 'No space left on '
                         'device'), (OSError('encoder error -2'), 'encoder error -2')):
    def failing(*args, error=error, **kwargs):
      raise error
    monkeypatch.setattr(compare.images, 'write_rgb', failing)
    with pytest.raises(compare.paths.OutputPathError) as raised:
      compare.write_figure(path, image)
    assert str(raised.value) == f'designs.png {path}: cannot write ({reason})'


def test_a_combination_added_with_other_settings_is_refused(tmp_path, monkeypatch, capsys):
  """A comparison continued with other --minutes or --set was refused only for the combinations
  already in results.json: one added with --combos trained, and results.json mixed settings."""
  done = dict(epochs=2, minutes=5.0, set=['epochs=2'])
  (tmp_path / 'results.json').write_text(json.dumps({'vanilla_bce_mlp': done}))
  monkeypatch.setattr(compare.trainer, 'train', lambda *a, **k: pytest.fail('trained'))
  for other in (['--minutes', '6', '--set', 'epochs=2'], ['--minutes', '5', '--set', 'epochs=3']):
    args = ['--out', str(tmp_path), '--combos', 'vanilla_wgan_mlp'] + other
    assert compare.main(args) == 1
    err = capsys.readouterr().err
    assert err.startswith(f'error: {tmp_path / "results.json"} holds vanilla_bce_mlp trained '
                          "with --minutes 5 and --set ['epochs=2']"), err
    assert 'another --out' in err and err.count('\n') == 1, err
  assert sorted(os.listdir(tmp_path)) == ['results.json']


def test_an_evaluation_the_data_cannot_give_is_refused_before_a_run_is_discarded(
    tmp_path, monkeypatch, capsys):
  """`--set eval_per_pair=1000` (120,000 designs an evaluation) was refused by the trainer, after
  the interrupted run of the combination had been discarded."""
  monkeypatch.setattr(compare.trainer, 'train', lambda *a, **k: pytest.fail('trained'))
  run = tmp_path / 'vanilla_bce_mlp'
  (run / 'checkpoints').mkdir(parents=True)
  args = ['--out', str(tmp_path), '--combos', 'vanilla_bce_mlp', '--set', 'eval_per_pair=1000']
  assert compare.main(args) == 1
  err = capsys.readouterr().err
  assert err.startswith('error: eval_per_pair=1000 asks for 120,000 designs'), err
  assert os.listdir(run) == ['checkpoints']


def test_a_combination_another_process_trains_is_not_discarded(tmp_path, monkeypatch, capsys):
  """A run directory without a result is that of an interrupted run, unless a process (another
  gan.compare on the same --out) still trains there: removing it would delete that run's lock and
  checkpoints under it. Refused with one error line instead, and the directory kept."""
  monkeypatch.setattr(compare.trainer, 'train', lambda *a, **k: pytest.fail('trained'))
  run = tmp_path / 'vanilla_bce_mlp'
  run.mkdir()
  (run / 'checkpoints').mkdir()
  with subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']) as other:
    try:
      (run / run_lock.LOCK_NAME).write_text(json.dumps(
          dict(pid=other.pid, host=socket.gethostname(), started='now')))
      assert compare.main(['--out', str(tmp_path), '--combos', 'vanilla_bce_mlp']) == 1
    finally:
      other.kill()
  err = capsys.readouterr().err
  assert err.startswith(f'error: training process {other.pid} on ') and err.count('\n') == 1, err
  assert sorted(os.listdir(run)) == [run_lock.LOCK_NAME, 'checkpoints']


def test_a_combination_another_comparison_added_meanwhile_stays_in_results_json(
    tmp_path, monkeypatch, capsys):
  """Two gan.compare on one --out with other --combos (a lock keeps them off each other's
  combinations): each wrote back the results.json it had read at its start, so the one that
  finished last dropped the other's combination, and the next command discarded its run as an
  interrupted one and trained it again."""
  results_path = tmp_path / 'results.json'
  other = dict(epochs=1, minutes=5.0, set=[], oracle_exact=0.5)

  def train(config):  # meanwhile, the other comparison finishes its combination
    results_path.write_text(json.dumps({'infogan_bce_mlp': other}))
    return dict(epochs=1)

  monkeypatch.setattr(compare.trainer, 'train', train)
  monkeypatch.setattr(compare.evaluate, 'evaluate_model', lambda *a, **k: dict(oracle_exact=0.25))
  monkeypatch.setattr(compare, 'figure', lambda *a, **k: None)
  assert compare.main(['--out', str(tmp_path), '--minutes', '5', '--combos',
                       'vanilla_bce_mlp']) == 0, capsys.readouterr().err
  results = json.loads(results_path.read_text())
  assert sorted(results) == ['infogan_bce_mlp', 'vanilla_bce_mlp'], results
  assert results['infogan_bce_mlp'] == other
  assert '| `infogan_bce_mlp` |' in (tmp_path / 'table.md').read_text()


def test_an_interrupted_run_behind_a_symbolic_link_is_one_error_line(tmp_path, monkeypatch,
                                                                      capsys):
  """A combination's run directory that is a symbolic link (moved to a larger disk) and has no
  result: discarding it ended in shutil.rmtree's OSError traceback ('Cannot call rmtree on a
  symbolic link'). Now one error line, the link and what it points to left as they were."""
  monkeypatch.setattr(compare.trainer, 'train', lambda *a, **k: pytest.fail('trained'))
  target = tmp_path / 'elsewhere'
  (target / 'checkpoints').mkdir(parents=True)
  out = tmp_path / 'out'
  out.mkdir()
  (out / 'vanilla_bce_mlp').symlink_to(target)
  assert compare.main(['--out', str(out), '--combos', 'vanilla_bce_mlp']) == 1
  err = capsys.readouterr().err
  assert err.startswith(f'error: {out / "vanilla_bce_mlp"} is a symbolic link') and (
      err.count('\n') == 1), err
  assert os.path.islink(out / 'vanilla_bce_mlp') and os.listdir(target) == ['checkpoints']


def test_the_evaluations_messages_are_plain_lines_on_stderr(tmp_path, monkeypatch, capsys):
  """The evaluation after each combination's training logs through the package's loggers, which
  only gan.evaluate's and gan.designs' command lines showed: under gan.compare the classifier's
  lines ('Trained the evaluation classifier in ...', a minute of silence otherwise) were lost
  and a warning read 'WARNING:gan.evaluate:warning: ...'. Now the lines gan.evaluate prints."""
  def evaluate_model(*args, **kwargs):
    compare.evaluate.classifier_lib.log.info('Trained the evaluation classifier in 1.0 s')
    compare.evaluate.log.warning('warning: the data changed')
    return dict(oracle_exact=0.25)

  monkeypatch.setattr(compare.trainer, 'train', lambda config: dict(epochs=1))
  monkeypatch.setattr(compare.evaluate, 'evaluate_model', evaluate_model)
  monkeypatch.setattr(compare, 'figure', lambda *a, **k: None)
  assert compare.main(['--out', str(tmp_path), '--combos', 'vanilla_bce_mlp']) == 0
  err = capsys.readouterr().err
  assert err.splitlines()[-2:] == ['Trained the evaluation classifier in 1.0 s',
                                   'warning: the data changed'], err


def test_a_ctrl_c_that_a_callback_swallowed_stops_the_comparison(tmp_path, monkeypatch, capsys):
  """A Ctrl-C whose KeyboardInterrupt a callback swallowed (JAX's gc callback, at any allocation)
  was lost: the combination trained on to its budget and was evaluated and recorded. Under
  interrupts.watched the trainer's next check raises it, as under train.py."""
  def train(config):
    ctrl_c_swallowed_by_a_gc_callback()
    compare.interrupts.raise_if_interrupted()  # as the trainer checks after each epoch
    return dict(epochs=1)

  monkeypatch.setattr(compare.trainer, 'train', train)
  monkeypatch.setattr(compare.evaluate, 'evaluate_model', lambda *a, **k: dict(oracle_exact=0.25))
  monkeypatch.setattr(compare, 'figure', lambda *a, **k: None)
  assert compare.main(['--out', str(tmp_path), '--combos', 'vanilla_bce_mlp']) == 130
  assert capsys.readouterr().err.startswith('interrupted: ')
  assert not (tmp_path / 'results.json').exists()


@pytest.mark.parametrize('count', [2, 3])
def test_the_figure_has_a_captioned_panel_per_combination_row_by_row(count, tmp_path,
                                                                     monkeypatch):
  """Two panels a row, in the order named, each its combination's grid under its name; no
  empty row (with stand-ins for the trained models: each draws in a colour of its own)."""
  names = compare.COMBINATIONS[:count]
  colour = {name: (40 * (i + 1), 100, 200 - 40 * i) for i, name in enumerate(names)}
  spec = types.SimpleNamespace(durability=(0, 1), mass=(0, 1, 2), layout=types.SimpleNamespace(
      strut_positions=(3,), shape=(4, 5, 3)))
  spec.class_pairs = lambda: tuple(np.indices((2, 3)).reshape(2, -1))
  monkeypatch.setattr(compare.inference, 'load', lambda path: types.SimpleNamespace(
      spec=spec, name=os.path.basename(path)))
  monkeypatch.setattr(compare.inference, 'fixed_pixels', lambda model, colours: np.zeros(
      (4, 5, 3), np.uint8))
  monkeypatch.setattr(compare.inference, 'generate', lambda model, d, m, fixed, seed: np.full(
      (len(d), 4, 5, 3), colour[model.name], np.uint8))
  compare.figure(names, str(tmp_path), str(tmp_path / 'designs.png'))
  with Image.open(tmp_path / 'designs.png') as image:
    sheet = np.asarray(image.convert('RGB'))
  grid_h, grid_w, _ = compare.summaries.design_grid(np.zeros((2, 3, 4, 5, 3), np.uint8),
                                                    scale=2).shape
  h, w = grid_h + 14, grid_w  # a caption above each grid
  assert sheet.shape[:2] == (-(-count // 2) * (h + 8), 2 * (w + 8))
  for i, name in enumerate(names):
    top, left = (i // 2) * (h + 8), (i % 2) * (w + 8)
    panel = sheet[top:top + h, left:left + w]
    grid = panel[14:]
    assert (grid[compare.summaries.GRID_PAD + 1, compare.summaries.GRID_PAD + 1] ==
            colour[name]).all(), (name, i)
    assert (grid == colour[name]).all(axis=-1).sum() == 2 * 3 * 4 * 5 * 4  # all six designs
    assert (panel[:14] < 128).all(axis=-1).any()  # its caption, dark on white
  if count % 2:
    assert (sheet[h + 8:, w + 8:] == 255).all()  # the empty place, white


def test_set_values_take_the_type_of_the_field_they_set(tmp_path):
  """--set gives text: a flag in any case, a tuple in brackets or parentheses, a float."""
  config = compare.combination_config(
      'vanilla_bce_mlp', 5, str(tmp_path),
      ['mask_input=TRUE', 'gen_hidden_dims=(64, 32)', 'disc_hidden_dims=[16]', 'aux_lambda=0.5'])
  assert config.mask_input is True and config.aux_lambda == 0.5
  assert config.gen_hidden_dims == (64, 32) and config.disc_hidden_dims == (16,)
  assert compare.combination_config('vanilla_bce_mlp', 5, str(tmp_path),
                                    ['mask_input=False']).mask_input is False
  assert config.log_path == os.path.join(str(tmp_path), 'vanilla_bce_mlp')
  assert config.time_budget_min == 5.0
  with pytest.raises(compare.ConfigError, match="--set mask_input=yes: 'yes' is not"):
    compare.combination_config('vanilla_bce_mlp', 5, str(tmp_path), ['mask_input=yes'])


def test_the_table_is_well_formed_markdown_with_every_column():
  """A row per combination of results.json under a header and a separator of as many columns
  (one short, the table renders as plain text); 'n/a' where a metric is undefined."""
  results = {'vanilla_bce_mlp': dict(epochs=3, oracle_exact=0.0, fd=12.3456),
             'infogan_wgan_mlp': dict(epochs=1, diversity=None)}
  lines = compare.markdown_table(results).splitlines()
  assert len(lines) == 4 and len({line.count('|') for line in lines}) == 1, lines
  cells = [[c.strip() for c in line.strip('|').split('|')] for line in lines]
  assert cells[0] == ['combination', 'epochs'] + list(compare.COLUMNS)
  assert set(cells[1]) == {'---'}
  rows = {row[0]: dict(zip(cells[0], row)) for row in cells[2:]}
  assert rows['`vanilla_bce_mlp`']['epochs'] == '3' and rows['`infogan_wgan_mlp`']['epochs'] == '1'
  assert rows['`vanilla_bce_mlp`']['oracle_exact'] == '0.000'  # a zero is a result, not n/a
  assert rows['`vanilla_bce_mlp`']['fd'] == '12.346'
  assert rows['`infogan_wgan_mlp`']['diversity'] == 'n/a'


def test_a_kept_combination_whose_run_is_gone_is_trained_again(tmp_path, monkeypatch, capsys):
  """designs.png draws from each combination's run: one in results.json without a checkpoint
  left is trained again (its figure panel failed to load), one with its checkpoints is kept."""
  done = dict(epochs=2, minutes=5.0, set=['epochs=2'], oracle_exact=0.25)
  (tmp_path / 'results.json').write_text(json.dumps({'vanilla_bce_mlp': done,
                                                     'vanilla_wgan_mlp': done}))
  (tmp_path / 'vanilla_wgan_mlp' / 'checkpoints' / '2').mkdir(parents=True)
  (tmp_path / 'vanilla_bce_mlp' / 'checkpoints').mkdir(parents=True)  # emptied
  trained = []
  monkeypatch.setattr(compare.trainer, 'train', lambda config: trained.append(
      os.path.basename(config.log_path)) or {'epochs': 2})
  monkeypatch.setattr(compare.evaluate, 'evaluate_model', lambda path, seed: {
      'oracle_exact': 0.75})
  monkeypatch.setattr(compare, 'figure', lambda *a, **k: None)
  args = ['--out', str(tmp_path), '--minutes', '5', '--set', 'epochs=2', '--combos',
          'vanilla_bce_mlp,vanilla_wgan_mlp']
  assert compare.main(args) == 0, capsys.readouterr().err
  assert trained == ['vanilla_bce_mlp']
  out = capsys.readouterr().out
  assert 'vanilla_bce_mlp: in ' in out and 'has no checkpoint' in out, out
  results = json.loads((tmp_path / 'results.json').read_text())
  assert results['vanilla_bce_mlp'] == dict(done, oracle_exact=0.75)  # its settings recorded
  assert results['vanilla_wgan_mlp'] == done


def test_a_results_entry_with_a_flag_for_its_epochs_is_refused(tmp_path):
  """JSON's true is a Python int too: it passed as a number of epochs, and the table said
  'True'. (Read directly: refused at once, where main would go on to train.)"""
  path = tmp_path / 'results.json'
  path.write_text('{"vanilla_bce_mlp": {"epochs": true, "minutes": 15.0, "set": []}}')
  with pytest.raises(compare.ConfigError, match=r'vanilla_bce_mlp has no number of epochs '
                                                r'\(epochs=True\)'):
    compare._read_results(str(path))  # pylint: disable=protected-access
