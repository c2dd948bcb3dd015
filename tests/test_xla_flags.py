"""Tests of gan/xla_flags.py: which flags are added to XLA_FLAGS, and when."""

import os
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
