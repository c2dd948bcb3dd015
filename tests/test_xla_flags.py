"""Tests of gan/xla_flags.py: which flags are added to XLA_FLAGS, and when."""

import importlib.metadata
import os
import re
import subprocess
import sys

from hypothesis import given
from hypothesis import strategies as st

from gan import xla_flags

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FLAG = xla_flags.CPU_FLAGS[0]
NAME = FLAG.split('=', 1)[0]
VERIFIED = xla_flags.VERIFIED_JAXLIB[0]


def test_added_to_empty_flags_on_a_verified_jaxlib():
  assert xla_flags.with_cpu_flags('', VERIFIED) == ' '.join(xla_flags.CPU_FLAGS)


def test_unverified_or_unknown_jaxlib_gets_nothing():
  # An XLA that does not know a flag aborts the process, so nothing is added blind.
  for version in ('0.4.30', '0.10.1', '0.10.20', '1.0.0', None):
    assert xla_flags.with_cpu_flags('--xla_foo=1', version) == '--xla_foo=1'


def test_the_users_own_value_of_the_flag_wins():
  for mine in (f'{NAME}=dot,eltwise,reduce', f'{NAME[1:]}=dot'):  # XLA takes - or --
    assert xla_flags.with_cpu_flags(mine, VERIFIED) == mine


def test_flags_set_on_other_lines_or_after_tabs_are_recognised():
  """XLA splits XLA_FLAGS at any whitespace: a value set on a line of its own (a multi-line
  export) is the user's as much as one after a space."""
  mine = f'--xla_foo=1\n{NAME}=dot\t--xla_bar=2'
  assert xla_flags.with_cpu_flags(mine, VERIFIED) == mine


flag_words = st.lists(st.from_regex(r'--xla_[a-z_]{1,12}=[a-z0-9]{1,4}', fullmatch=True),
                      max_size=4)


@given(flag_words)
def test_other_flags_are_kept_in_order_and_ours_added_once(words):
  before = ' '.join(words)
  after = xla_flags.with_cpu_flags(before, VERIFIED)
  assert after.split()[:len(words)] == words
  assert after.split().count(FLAG) == 1
  assert xla_flags.with_cpu_flags(after, VERIFIED) == after  # idempotent


def test_importing_gan_sets_the_flags_before_jax_starts():
  # Two host devices prove that XLA read the variable after gan had added to it.
  code = ('import os, gan, jax, jax.numpy as jnp; assert float(jnp.ones(3).sum()) == 3.0; '
          'assert jax.device_count() == 2; print(os.environ["XLA_FLAGS"])')
  env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=2')
  out = subprocess.run([sys.executable, '-c', code], cwd=REPO_ROOT, env=env, capture_output=True,
                       text=True, timeout=120, check=True).stdout.split()
  assert out[0] == '--xla_force_host_platform_device_count=2'
  expected = xla_flags.with_cpu_flags(env['XLA_FLAGS'], xla_flags.jaxlib_version())
  assert ' '.join(out) == expected


def test_apply_adds_to_the_given_environment_only_on_a_verified_jaxlib(monkeypatch):
  monkeypatch.setattr(xla_flags, 'jaxlib_version', lambda: VERIFIED)
  environ = {'XLA_FLAGS': '--xla_foo=1', 'OTHER': 'x'}
  xla_flags.apply(environ)
  assert environ == {'XLA_FLAGS': f'--xla_foo=1 {FLAG}', 'OTHER': 'x'}
  environ = {}
  xla_flags.apply(environ)
  assert environ == {'XLA_FLAGS': FLAG}
  monkeypatch.setattr(xla_flags, 'jaxlib_version', lambda: None)
  environ = {}
  xla_flags.apply(environ)
  assert environ == {}  # no XLA_FLAGS where there was none


def test_the_version_checked_is_jaxlibs_and_none_without_it(monkeypatch):
  """The flags are XLA's, which comes with jaxlib: jax's own version may differ from it."""
  versions = {'jax': '0.10.9', 'jaxlib': '0.10.2'}

  def version(name):
    if name not in versions:
      raise importlib.metadata.PackageNotFoundError(name)
    return versions[name]

  monkeypatch.setattr(importlib.metadata, 'version', version)
  assert xla_flags.jaxlib_version() == '0.10.2'
  del versions['jaxlib']
  assert xla_flags.jaxlib_version() is None


def test_the_tested_version_of_requirements_txt_is_verified():
  """requirements.txt names the jax version the project was tested with, for whose jaxlib the
  flags are verified: a bump there without measuring (and listing) it here silently drops them."""
  with open(os.path.join(REPO_ROOT, 'requirements.txt'), encoding='utf-8') as f:
    tested = re.findall(r'^jax>=(\S+)\s+# tested version', f.read(), re.MULTILINE)
  assert len(tested) == 1 and tested[0] in xla_flags.VERIFIED_JAXLIB, tested
