r"""Generates designs for requested conditions from a trained model.

  python infer.py --model_path=runs/default --durability=1.4 --mass=2.14 \
      --strut1=0,0,0 --strut2=255,255,255 --num_gen_image=50 --grid
  python infer.py --model_path=runs/three_struts --durability=1.4 --mass=2.14 \
      --struts='0,0,0;255,255,255;255,0,0'

Writes <durability>_<mass>_<iii>.bmp (e.g. 1.4_2.14_000.bmp; 24-bit RGB of the training designs'
full size, 10x30 for the embedded data; struts exact) and manifest.csv into --gen_img_path
(default <run>/inference_output). A model has as many strut colours as strut pixels:
--strut1/--strut2, or --struts for any number. All logic is in gan/inference.py and
gan/inference_output.py.
"""

import importlib
import os
import sys

from absl import app
from absl import flags
from absl import logging as absl_logging

from gan import interrupts
from gan.errors import DesignGanError, escape_unencodable_stdout

flags.DEFINE_string('model_path', None, 'Training run directory (log_path), its checkpoints/ '
                    'directory, or one step directory.')
flags.DEFINE_integer('step', None, 'Checkpoint step (epoch) to use; default the latest.')


class _ClassParser(flags.ArgumentParser):
  """--durability, --mass: a class as the design file names write it (gan/data.py's
  `requested_class`); float() also took 2e0, +1.4, nan or 1_4, which no file name does."""
  syntactic_help = 'a plain decimal as in the file names, such as 1.4 or .5'

  def parse(self, argument):
    # numpy and Pillow, not JAX: imported only when the flag is given (not for --helpshort)
    from gan import data  # pylint: disable=import-outside-toplevel
    return data.requested_class(argument)

  def flag_type(self):
    return 'float'


flags.DEFINE(_ClassParser(), 'durability', None, 'Requested durability class (from the model '
             'vocabulary).')
flags.DEFINE(_ClassParser(), 'mass', None, 'Requested mass class (from the model vocabulary).')
flags.DEFINE_string('strut1', '255,255,255', 'RGB of the first strut pixel, three integers 0..255.')
flags.DEFINE_string('strut2', '255,255,255', 'RGB of the second strut pixel, three integers 0..255 '
                    '(only for a model with two or more struts).')
flags.DEFINE_string('struts', None, "RGB of every strut pixel in order, 'r,g,b;r,g,b;...', for a "
                    'model with any number of struts (instead of --strut1/--strut2). A strut '
                    'whose colour is not given is 255,255,255; a colour beyond the model\'s '
                    'strut count is an error.')
flags.DEFINE_integer('num_gen_image', 10, 'Designs to generate (per condition with --sweep); at '
                     'most 100,000 in all. Progress goes to stderr above 10,000.')
flags.DEFINE_string('gen_img_path', None, 'Output directory; default <run>/inference_output.')
flags.DEFINE_string('device', 'auto', 'cpu | gpu (alias cuda) | auto (a GPU when present).')
flags.DEFINE_integer('seed', 0, 'Noise seed: the same seed gives the same designs.')
flags.DEFINE_bool('grid', False, 'Also write grid.png, an upscaled contact sheet: every design '
                  '(at most 10,000), or with --sweep the first of each class pair.')
flags.DEFINE_bool('sweep', False, 'Generate for every (durability, mass) pair of the vocabulary.')


def parse_flags(argv):
  """absl's flag parsing, its errors as one `error:` line (exit status 1) like every other
  input error, instead of absl's FATAL line and hint."""
  try:
    argv = flags.FLAGS(argv)
  except flags.Error as e:
    _flag_error(f'{e}')
  if len(argv) > 1:
    _flag_error(f'unexpected arguments: {" ".join(argv[1:])}; every value is given as '
                '--flag=value')
  if flags.FLAGS.model_path is None:
    _flag_error('give --model_path: a training run directory (log_path), its checkpoints/ '
                'directory or one step directory')
  return argv


def _flag_error(message: str):
  print(f'error: {message} (python infer.py --helpshort lists the flags)', file=sys.stderr)
  sys.exit(1)


def main(argv):
  del argv  # parse_flags refused any argument that is not a flag
  # Imported after the flags are checked, so that a bad flag is refused at once; a Ctrl-C among
  # these imports (JAX: seconds) is one line, not a traceback from inside an extension's import.
  interrupts.quiet_while_starting('the request')
  importlib.import_module('gan.inference_output')  # and gan.checkpoints: what _infer uses
  interrupts.started()
  try:
    with interrupts.watched():  # also a Ctrl-C that a callback swallowed stops the request
      written = _infer()
  except KeyboardInterrupt as e:
    # The outputs are staged and moved in at the end (a Ctrl-C during the move waits for it):
    # an interrupted request has written nothing unless the exception says otherwise.
    _exit_interrupted(str(e) or 'nothing written')
  interrupts.finished()
  extra = ', manifest.csv and grid.png' if flags.FLAGS.grid else ' and manifest.csv'
  n = len(written.files)
  print(f'wrote {n:,} design{"s" * (n != 1)}{extra} to {written.out_dir} (step {written.step} of '
        f'{written.checkpoint_dir})')


def _exit_interrupted(outcome: str):
  """Ctrl-C: one line saying what was written, exit status 130 (as train.py)."""
  print(f'interrupted: {outcome}', file=sys.stderr)
  sys.stdout.flush()
  sys.stderr.flush()
  os._exit(130)  # pylint: disable=protected-access  (orbax reads may be pending: no shutdown)


def _infer():
  # orbax logs every file it reads at INFO, and warns about a damaged step (from a background
  # thread) before the one-line error that says the same
  absl_logging.set_verbosity(absl_logging.ERROR)
  from gan import checkpoints  # pylint: disable=import-outside-toplevel  (jax: seconds)
  checkpoints.silence_abandoned_checkpoint_reads()
  from gan import inference_output  # pylint: disable=import-outside-toplevel
  f = flags.FLAGS
  try:
    return inference_output.run(
        model_path=os.path.expanduser(f.model_path), step=f.step, durability=f.durability,
        mass=f.mass, struts=[f[n].value if f[n].present else None for n in ('strut1', 'strut2')],
        strut_list=f.struts, num=f.num_gen_image,
        out_dir=None if f.gen_img_path is None else os.path.expanduser(f.gen_img_path),
        device=f.device, seed=f.seed, grid=f.grid, sweep=f.sweep,
        progress=lambda line: print(line, file=sys.stderr, flush=True),
        warn=lambda line: print(f'warning: {line}', file=sys.stderr, flush=True))
  except DesignGanError as e:
    if interrupts.interrupted():  # e.g. a restore cut short by the Ctrl-C
      raise KeyboardInterrupt from None
    print(f'error: {e}', file=sys.stderr)
    if isinstance(e, checkpoints.CheckpointError):
      interrupts.exit_after_error()  # outputs are only staged after a successful load
    interrupts.finished()
    sys.exit(1)


if __name__ == '__main__':
  escape_unencodable_stdout()
  app.run(main, flags_parser=parse_flags)
