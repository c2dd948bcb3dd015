"""All 12 combinations at one wall-clock budget: a metrics table and a figure of their designs.

  python -m gan.compare --out runs/compare --minutes 15 [--combos vanilla_wgangp_mlp,...]
                        [--set field=value ...]

Each combination is configs/default.py with gan_model, loss_mode and both networks set, trained into
`<out>/<combination>` for the default's epochs or until `time_budget_min = --minutes` runs out,
whichever comes first (so none gets more wall-clock than another, compilation included), then its
last checkpoint is evaluated by `gan.evaluate` on the held-out designs. Results go to
`<out>/results.json` (all metrics), `<out>/table.md` (the README table: every combination in
results.json, in the order of COMBINATIONS) and `<out>/designs.png` (per combination named, one
design per durability (rows) x mass (columns) pair from fixed noise and struts). A combination
already in results.json is not retrained (unless its run directory has no checkpoint left: the
figure draws from it), so an interrupted comparison continues where it stopped; the combination it
was training starts again from scratch (resuming it would give it more than the budget), unless a
process still trains in its directory (another gan.compare on this --out: refused, as train.py is).
Continuing with other --minutes or --set is refused (the table would mix settings); use another
--out.
"""

import json
import os
import shutil
import sys
from typing import Optional, Sequence

from gan import interrupts

if __name__ == '__main__':  # before the imports below: they take seconds (JAX)
  interrupts.quiet_while_starting('the comparison')
# pylint: disable=wrong-import-position,wrong-import-order
import ml_collections
import numpy as np
from PIL import Image, ImageDraw

from gan import config as config_lib
from gan import data
from gan import evaluate
from gan import images
from gan import inference
from gan import paths
from gan import resume
from gan import run_lock
from gan import summaries
from gan import trainer
from gan.errors import (ArgumentParser, ConfigError, DesignGanError,
                        escape_unencodable_stdout, messages_on_stderr)

COMBINATIONS = config_lib.COMBINATIONS  # what it trains, in the order of its table
# Fields every comparison sets itself, and why they cannot be --set.
COMPARE_SETS = {
    'log_path': 'each combination trains into <out>/<combination>',
    'output_path': 'each combination writes into <out>/<combination>/output',
    'time_budget_min': 'use --minutes',
    'num_seeds': 'one model per combination',
    'gan_model': 'use --combos', 'loss_mode': 'use --combos',
    'gen_mode': 'use --combos', 'disc_mode': 'use --combos',
}
# The figure's strut colours, in strut order (cycled for models with more struts).
STRUT_COLOURS = ((255, 0, 0), (0, 0, 255), (0, 255, 0), (255, 255, 0))
# What a comparison writes into --out beside the runs.
OUTPUT_FILES = ('results.json', 'table.md', 'designs.png')
COLUMNS = ('oracle_exact', 'oracle_within1', 'strut_exact', 'fd', 'fd_real_baseline',
           'diversity', 'diversity_real', 'classifier_accuracy_generated')


def combination_config(name: str, minutes: float, out: str,
                       overrides: Sequence[str] = ()) -> ml_collections.ConfigDict:
  """The default config with the three choices of `name` (`<gan>_<loss>_<network>`)."""
  config = config_lib.combination_config(name)
  config.log_path = os.path.join(out, name)
  config.time_budget_min = float(minutes)
  for item in overrides:
    field, equals, value = item.partition('=')
    if not equals:
      raise ConfigError(f'--set {item}: expected FIELD=VALUE, e.g. --set batch_size=128')
    if field not in config:
      raise ConfigError(f'--set {item}: no config field {field!r}')
    if field in COMPARE_SETS:
      raise ConfigError(f'--set {item}: gan.compare sets {field} itself ({COMPARE_SETS[field]})')
    config[field] = _coerce(config[field], value, item)
  return config


def _coerce(current, text: str, item: str):
  """`text` as a value of `current`'s type (bool, int, float, str or a tuple of ints)."""
  try:
    if isinstance(current, bool):
      return {'true': True, 'false': False}[text.lower()]
    if isinstance(current, tuple):
      return tuple(int(v) for v in text.strip('()[] ').split(',') if v.strip())
    return type(current)(text)
  except (KeyError, ValueError):
    raise ConfigError(f'--set {item}: {text!r} is not {config_lib.value_kind(current)}') from None


def run(names: Sequence[str], minutes: float, out: str, overrides: Sequence[str] = ()) -> dict:
  """Trains and evaluates every named combination not yet in `<out>/results.json`."""
  out = paths.check_output_dir(out, '--out')  # absolute: '' (the working directory) refused
  for name in OUTPUT_FILES:  # found now, not after hours of training
    if os.path.isdir(os.path.join(out, name)):
      raise paths.OutputPathError(f'--out {out}: {os.path.join(out, name)} is a directory, where '
                                  f'the comparison writes its {name}; remove it or use another '
                                  '--out')
  # Resolved here, so a --set that some combination refuses fails before any training.
  configs = {name: config_lib.resolve(combination_config(name, minutes, out, overrides))
             for name in names}
  # ... and an evaluation the data cannot give (eval_per_pair, best_metric), before an
  # interrupted run is discarded. (--set gives every combination the same data.)
  dataset = data.load_for_config(next(iter(configs.values())))
  for config in configs.values():
    trainer.check_evaluation(config, dataset)
  made = paths.missing_dirs(out)
  paths.make_output_dir(out, '--out')
  try:
    return _run(names, configs, minutes, out, overrides)
  except BaseException:  # an error or Ctrl-C before any combination finished: no empty --out left
    paths.remove_if_empty(made)
    raise


def _run(names, configs: dict, minutes: float, out: str, overrides: Sequence[str]) -> dict:
  """`run` once `out` exists."""
  results_path = os.path.join(out, 'results.json')
  results = _read_results(results_path)
  # Every combination of the comparison, not only those named now: a combination added with
  # other settings would mix them in results.json and refuse every later command of either.
  for name, entry in results.items():
    earlier = (entry.get('minutes'), entry.get('set', []))
    if not _same_settings(name, out, earlier, (minutes, overrides)):
      raise ConfigError(f'{results_path} holds {name} trained with --minutes {earlier[0]:g} '
                        f'and --set {earlier[1]}, not --minutes {minutes:g} and --set '
                        f'{list(overrides)}; use those settings to continue this comparison, or '
                        'another --out')
  for name, config in configs.items():
    if name in results and resume.has_checkpoints(config):
      print(f'=== {name}: already in {results_path}, kept', flush=True)
      continue
    if name in results:  # designs.png draws from the run: trained again, not an error later
      print(f'=== {name}: in {results_path}, but its run {config.log_path} has no checkpoint',
            flush=True)
    if os.path.islink(config.log_path):  # shutil.rmtree refuses a link: an OSError traceback
      raise paths.OutputPathError(
          f'{config.log_path} is a symbolic link to {os.readlink(config.log_path)}: the run of '
          f'{name} there is to be discarded and trained again from scratch (no result in '
          f'{results_path}, or no checkpoint left), and the comparison does not delete through '
          'a link; remove the link (and what it points to, if nothing else needs it)')
    if os.path.exists(config.log_path):
      # Unless a process (another gan.compare on this --out) still trains there: refused.
      with run_lock.RunLock(config.log_path):
        print(f'=== {name}: discarding the interrupted run in {config.log_path}', flush=True)
        shutil.rmtree(config.log_path)
    print(f'=== {name}: training for {minutes:g} minutes', flush=True)
    summary = trainer.train(config)
    metrics = evaluate.evaluate_model(config.log_path, seed=0)
    # Read again: another gan.compare on this --out (other --combos) may have added its
    # combinations since; writing back the results read at the start would drop them.
    results = _read_results(results_path)
    results[name] = dict(evaluate.scalar_metrics(metrics), epochs=summary['epochs'],
                         minutes=minutes, set=list(overrides))
    paths.write_json(results_path, results, 'results.json')
  paths.write_text(os.path.join(out, 'table.md'), markdown_table(results) + '\n', 'table.md')
  figure(names, out, os.path.join(out, 'designs.png'))
  return results


def _same_settings(name: str, out: str, earlier: tuple, now: tuple) -> bool:
  """Whether (minutes, --set items) `earlier` and `now` configure `name` alike: `epochs=02` is
  `epochs=2`, the order of the items does not matter, and a default given is no change."""
  if earlier[0] != now[0]:
    return False
  try:
    before = combination_config(name, now[0], out, earlier[1])
  except ConfigError:
    return False
  return before.to_dict() == combination_config(name, now[0], out, now[1]).to_dict()


def _read_results(path: str) -> dict:
  """{combination: metrics} of an earlier comparison in the same --out ({} if none)."""
  if not os.path.exists(path):
    return {}
  try:
    with open(path, encoding='utf-8') as f:
      results = json.load(f)
  except (OSError, ValueError) as e:
    raise ConfigError(f'{path} is unreadable ({e}); remove it to compare from scratch') from None
  if not isinstance(results, dict) or not all(isinstance(r, dict) for r in results.values()):
    raise ConfigError(f'{path} is not a results file of gan.compare; remove it to compare from '
                      'scratch')
  for name, r in results.items():  # what continuing and the table read of an entry
    problem = ('is not a combination gan.compare trains' if name not in COMBINATIONS
               else _entry_problem(r))
    if problem:
      raise ConfigError(f'{path} is not a results file of gan.compare: its {name} {problem}; '
                        'remove it to compare from scratch')
  return results


def _number(value) -> bool:
  return isinstance(value, (int, float)) and not isinstance(value, bool)


def _entry_problem(entry: dict) -> str:
  """What is wrong with one combination's entry of results.json, or ''."""
  if not _number(entry.get('minutes')):
    return f'has no number of minutes (minutes={entry.get("minutes")!r})'
  if not isinstance(entry.get('epochs'), int) or isinstance(entry.get('epochs'), bool):
    return f'has no number of epochs (epochs={entry.get("epochs")!r})'
  items = entry.get('set', [])
  if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
    return f'has a set that is not a list of FIELD=VALUE items (set={items!r})'
  bad = [k for k in COLUMNS if entry.get(k) is not None and not _number(entry[k])]
  if bad:
    return f'has a {bad[0]} that is not a number ({entry[bad[0]]!r})'
  return ''


def markdown_table(results: dict) -> str:
  """A row for every combination of `results` (results.json: those of earlier commands on the
  same --out too), in the order of COMBINATIONS, whatever order they were trained in."""
  head = ['combination', 'epochs'] + list(COLUMNS)
  lines = ['| ' + ' | '.join(head) + ' |', '|' + ' --- |' * len(head)]
  for name in (n for n in COMBINATIONS if n in results):
    r = results[name]
    cells = [f'`{name}`', str(r['epochs'])] + [
        'n/a' if r.get(k) is None else f'{r[k]:.3f}' for k in COLUMNS]
    lines.append('| ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines)


def figure(names: Sequence[str], out: str, path: str, columns: int = 2) -> None:
  """One panel per combination: its durability x mass grid of designs, captioned."""
  panels = []
  for name in names:
    model = inference.load(os.path.join(out, name))
    nd, nm = len(model.spec.durability), len(model.spec.mass)
    d, m = model.spec.class_pairs()
    num_struts = len(model.spec.layout.strut_positions)
    colours = [STRUT_COLOURS[i % len(STRUT_COLOURS)] for i in range(num_struts)]
    fixed = np.broadcast_to(inference.fixed_pixels(model, colours),
                            (nd * nm,) + model.spec.layout.shape)
    designs = inference.generate(model, d, m, fixed, seed=1)
    grid = summaries.design_grid(designs.reshape((nd, nm) + designs.shape[1:]), scale=2)
    panel = Image.new('RGB', (grid.shape[1], grid.shape[0] + 14), (255, 255, 255))
    panel.paste(Image.fromarray(grid), (0, 14))
    ImageDraw.Draw(panel).text((2, 1), name, fill=(0, 0, 0))
    panels.append(panel)
  w, h = panels[0].size
  rows = -(-len(panels) // columns)
  sheet = Image.new('RGB', (columns * (w + 8), rows * (h + 8)), (255, 255, 255))
  for i, panel in enumerate(panels):
    sheet.paste(panel, ((i % columns) * (w + 8), (i // columns) * (h + 8)))
  write_figure(path, np.asarray(sheet))


def write_figure(path: str, image: np.ndarray) -> None:
  """Writes the (H, W, 3) uint8 figure atomically, as every output: a stop or a full disk leaves
  the earlier figure or none. Checked and refused as `paths.write_text` writes table.md."""
  what = os.path.basename(path)
  path = paths.check_output_file(path, what)
  try:
    images.write_rgb(path, image)
  except OSError as e:
    raise paths.cannot_write(path, e, what) from None


def main(argv: Optional[Sequence[str]] = None) -> int:
  parser = ArgumentParser(prog='python -m gan.compare', description=__doc__.split(
      '\n')[0])
  parser.add_argument('--out', default='runs/compare', type=os.path.expanduser,
                      help='directory of the runs and results')
  parser.add_argument('--minutes', type=float, default=15.0,
                      help='wall-clock budget of each combination (compilation included)')
  parser.add_argument('--combos', default='all',
                      help='comma-separated combinations (default all 12): ' + ', '.join(
                          COMBINATIONS))
  parser.add_argument('--set', action='append', default=[], metavar='FIELD=VALUE',
                      help='config override for every combination (repeatable)')
  args = parser.parse_args(argv)
  names = COMBINATIONS if args.combos == 'all' else tuple(dict.fromkeys(  # each once, in order
      n.strip() for n in args.combos.split(',') if n.strip()))
  try:
    if not 0 < args.minutes < float('inf'):
      raise ConfigError(f'--minutes must be a finite number > 0, got {args.minutes}')
    if not names:
      raise ConfigError(f'--combos {args.combos!r} names no combination; choose from: '
                        f'{", ".join(COMBINATIONS)}')
    # The evaluation's lines (the classifier trained or loaded, warnings) as gan.evaluate's;
    # interrupts.watched: also a Ctrl-C a callback swallowed (JAX's gc callback, at any
    # allocation) stops the training at its next check, as under train.py.
    with messages_on_stderr(), interrupts.watched():
      results = run(names, args.minutes, args.out, args.set)
  except DesignGanError as e:
    print(f'error: {e}', file=sys.stderr)
    return 1
  except KeyboardInterrupt:
    # The trainer has completed its pending checkpoint writes; results.json holds only finished
    # combinations, so the same command continues (the one in progress starts again).
    print('interrupted: the combinations in results.json are kept; the same command continues '
          'with the others (the one in progress starts again)', file=sys.stderr)
    return 130
  print(markdown_table(results))  # as table.md
  print(f'table, results.json and designs.png written to {os.path.abspath(args.out)}')
  return 0


def cli() -> None:
  """`python -m gan.compare`: main's status; after an error or Ctrl-C at once, without the
  interpreter's teardown, which can crash (a segmentation fault, exit status 139 after the
  'interrupted:' line) while XLA threads are still busy with the interrupted compilation or
  epoch. Nothing is left to write then: the trainer completed its pending checkpoint writes and
  results.json is written whole or not at all."""
  interrupts.exit_cli(main())


if __name__ == '__main__':
  escape_unencodable_stdout()
  interrupts.started()
  cli()
