"""Shared fixtures: small generated datasets, built once per test session."""

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from gan import designs  # pylint: disable=wrong-import-position


@pytest.fixture(scope='session')
def default_designs():
  """The default-size dataset in memory (10,000 designs, seed 0): about 2 s."""
  return designs.generate(designs.DEFAULT_NUM_DESIGNS, designs.DEFAULT_SEED)


@pytest.fixture(scope='session')
def small_design_dir(tmp_path_factory):
  """240 designs (two of every label pair) written as BMPs by the CLI."""
  out = tmp_path_factory.mktemp('designs') / 'data'
  assert designs.main(['--out', str(out), '--num', '240', '--seed', '1']) == 0
  return str(out)
