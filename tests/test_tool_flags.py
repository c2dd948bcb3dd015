"""The `python -m gan.<tool>` commands' flag errors: one `error:` line and exit status 1, as
train.py's and infer.py's and every other input error, not argparse's usage block and status 2."""

import importlib

import pytest

TOOLS = ('gan.bench', 'gan.compare', 'gan.designs', 'gan.evaluate')


@pytest.mark.parametrize('tool', TOOLS)
@pytest.mark.parametrize('argv, message', [
    (['--no_such_flag=1'], 'unrecognized arguments: --no_such_flag=1'),
    (['stray'], 'unrecognized arguments: stray'),
])
def test_an_unknown_flag_is_one_error_line_and_exit_status_1(tool, argv, message, capsys):
  module = importlib.import_module(tool)
  required = {'gan.designs': ['--out=unused'], 'gan.evaluate': ['--model_path=unused']}
  with pytest.raises(SystemExit) as exited:
    module.main(required.get(tool, []) + argv)
  assert exited.value.code == 1
  captured = capsys.readouterr()
  assert captured.out == ''
  assert captured.err == f'error: {message} (python -m {tool} --help lists the options)\n'


@pytest.mark.parametrize('tool, argv, message', [
    ('gan.bench', ['--iters=three'], "argument --iters: invalid int value: 'three'"),
    ('gan.designs', [], 'the following arguments are required: --out'),
    ('gan.evaluate', [], 'the following arguments are required: --model_path'),
])
def test_a_bad_or_missing_value_is_one_error_line_and_exit_status_1(tool, argv, message, capsys):
  with pytest.raises(SystemExit) as exited:
    importlib.import_module(tool).main(argv)
  assert exited.value.code == 1
  hint = f'(python -m {tool} --help lists the options)'
  assert capsys.readouterr().err == f'error: {message} {hint}\n'


def test_help_still_prints_the_usage_and_exits_0(capsys):
  with pytest.raises(SystemExit) as exited:
    importlib.import_module('gan.bench').main(['--help'])
  assert exited.value.code == 0
  assert capsys.readouterr().out.startswith('usage: python -m gan.bench')


@pytest.mark.parametrize('tool, argv, message', [
    ('gan.compare', ['--out=', '--combos=vanilla_bce_mlp'],
     '--out is empty; give a directory (created if missing)'),
    ('gan.bench', ['--json=', '--configs=vanilla_bce_mlp'],
     '--json is empty; give a file name such as metrics.json'),
    ('gan.evaluate', ['--model_path=no_such_run', '--json='],
     '--json is empty; give a file name such as metrics.json'),
])
def test_an_empty_output_path_is_refused_before_the_work(tool, argv, message, capsys, tmp_path,
                                                         monkeypatch):
  """`--out=` trained gan.compare's runs into the working directory (os.path.abspath('')), and
  `--json=` of gan.bench and gan.evaluate was taken as no JSON file at all."""
  monkeypatch.chdir(tmp_path)
  assert importlib.import_module(tool).main(argv) == 1
  assert capsys.readouterr().err == f'error: {message}\n'
  assert not list(tmp_path.iterdir())


@pytest.mark.parametrize('tool, argv, message', [
    ('gan.compare', ['--out=~/file/runs', '--combos=vanilla_bce_mlp'],
     '--out {home}/file/runs cannot be created: {home}/file is a file; give a directory (created '
     'if missing)'),
    ('gan.designs', ['--out=~/file/designs'],
     '--out {home}/file/designs cannot be created: {home}/file is a file; give a directory '
     '(created if missing)'),
    ('gan.bench', ['--json=~/file/bench.json', '--configs=vanilla_bce_mlp'],
     '--json {home}/file/bench.json: {home}/file is a file'),
    ('gan.bench', ['--configs=~/nothing.py'], '--configs {home}/nothing.py: no such config file'),
    ('gan.evaluate', ['--model_path=~/no_such_run'],
     '--model_path {home}/no_such_run: no such file or directory'),
    ('gan.evaluate', ['--model_path=unused', '--json=~/file/metrics.json'],
     '--json {home}/file/metrics.json: {home}/file is a file'),
])
def test_a_home_directory_in_a_path_is_expanded(tool, argv, message, capsys, tmp_path,
                                                monkeypatch):
  """`--out=~/x` reaches Python unexpanded (the shell expands a ~ only at the start of a word): the
  tools wrote into a directory named '~' in the working directory."""
  home = tmp_path / 'home'
  home.mkdir()
  (home / 'file').write_text('')
  monkeypatch.setenv('HOME', str(home))
  monkeypatch.chdir(tmp_path)
  assert importlib.import_module(tool).main(argv) == 1
  assert capsys.readouterr().err.splitlines()[-1] == 'error: ' + message.format(home=home)
  assert not (tmp_path / '~').exists()
