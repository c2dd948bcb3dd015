"""What the inference tests share (tests/test_infer.py, tests/test_infer_requests.py): tiny
training runs in a worker process, the example request in-process and infer.py in a subprocess,
and readers of what a request writes."""

import csv
import os
import re
import subprocess
import sys

from gan import inference_output

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FULL_SHAPE = (10, 30, 3)
TINY = dict(epochs=1, batch_size=32, critic_iter=1, gen_hidden_dims=(32,), disc_hidden_dims=(32,),
            zdim=8, embed_dim=8, num_heads=2, num_layers=1, num_output_images=2,
            eval_every=0)  # no evaluation (it trains a classifier): inference needs none
TRAIN_TIMEOUT_S = 900
CLI_TIMEOUT_S = 300
# Subprocesses must not grab most of a GPU each when these tests run on a machine with one.
ENV = dict(os.environ, XLA_PYTHON_CLIENT_PREALLOCATE='false')
# Training workers skip XLA's expensive CPU code optimisations: compiling takes ~40% less time,
# and the checkpoints are the same kind of files.
TRAIN_ENV = dict(ENV, XLA_FLAGS=' '.join(filter(None, (
    os.environ.get('XLA_FLAGS', ''), '--xla_backend_optimization_level=0',
    '--xla_llvm_disable_expensive_passes=true'))))

# Runs in a worker process: trains each config (a JSON list of override dicts) in turn.
TRAIN_WORKER = """
import json, sys
from configs import default
from gan import trainer
for overrides in json.loads(sys.argv[1]):
  config = default.get_config()
  config.update({k: tuple(v) if isinstance(v, list) else v for k, v in overrides.items()})
  trainer.train(config)
"""


def request(model_path, out_dir, **kwargs) -> inference_output.Written:
  """inference_output.run with the documented example request as defaults."""
  args = dict(model_path=str(model_path), step=None, durability=1.4, mass=2.14,
              struts=('0,0,0', '255,255,255'), num=3,
              out_dir=None if out_dir is None else str(out_dir), device='cpu', seed=0,
              grid=False, sweep=False)
  args.update(kwargs)
  return inference_output.run(**args)


def generate(model_path, out_dir, **kwargs):
  """`request`'s output directory and design paths."""
  return request(model_path, out_dir, **kwargs)[:2]


def infer_cli(*args):
  """Runs infer.py in a subprocess from the repository root."""
  return subprocess.run([sys.executable, 'infer.py', *map(str, args)], cwd=REPO, env=ENV,
                        capture_output=True, text=True, timeout=CLI_TIMEOUT_S, check=False)


def bmp_names(directory) -> list[str]:
  """Sorted names of the BMP files in `directory`."""
  return sorted(n for n in os.listdir(directory) if n.endswith('.bmp'))


def read_bytes(directory) -> dict:
  """{name: bytes} of every design and the manifest in `directory`."""
  names = bmp_names(directory) + ['manifest.csv']
  out = {}
  for name in names:
    with open(os.path.join(directory, name), 'rb') as f:
      out[name] = f.read()
  return out


def read_manifest(directory) -> list[dict]:
  """The rows of `directory`/manifest.csv as dicts keyed by the header."""
  with open(os.path.join(directory, 'manifest.csv'), newline='') as f:
    return list(csv.DictReader(f))


def rgb(text) -> tuple:
  """'0,0,0' (or '0 0 0', '(0, 0, 0)') -> (0, 0, 0)."""
  return tuple(int(v) for v in re.findall(r'\d+', text))


def assert_names_problem(message, fragments, allowed=None):
  """The message contains each fragment and, after 'allowed', lists every allowed value."""
  for fragment in fragments:
    assert fragment in message, (fragment, message)
  if allowed is not None:
    listed = set(re.findall(r'\d+(?:\.\d+)?', message.split('allowed', 1)[-1]))
    assert {f'{v:g}' for v in allowed} <= listed, message
