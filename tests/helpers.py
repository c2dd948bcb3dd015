"""Helpers shared by the tests."""

import contextlib
import gc
import json
import os
import signal
import socket
import subprocess
import sys
import threading

import jax
import numpy as np

from configs import default
from gan import data
from gan import run_lock


def relabelled(dataset_):
  """The dataset with every durability label moved one class up (cyclically): not synthetic."""
  nd = len(dataset_.spec.durability)

  def shift(part):
    return data.DesignArrays(part.images, part.fixed, part.strut_colors,
                             ((part.durability + 1) % nd).astype(np.int32), part.mass, part.names)

  return data.Dataset(dataset_.spec, shift(dataset_.train), shift(dataset_.val), dataset_.mask,
                      dataset_.data_dir)


def train_arrays(dataset_):
  """The training split as the arrays an epoch gathers its batches from."""
  return {k: getattr(dataset_.train, k) for k in ('images', 'durability', 'mass', 'fixed')}


def spread_batch(config, dataset_):
  """A training batch with several durability and several mass labels (the files are sorted by
  label, so the first rows would all share one)."""
  idx = np.random.default_rng(0).permutation(len(dataset_.train))[:config.batch_size]
  batch = {k: jax.numpy.asarray(v[idx]) for k, v in train_arrays(dataset_).items()}
  assert len(np.unique(batch['durability'])) > 1 and len(np.unique(batch['mass'])) > 1
  return batch


def tiny_config(data_path, log_path, **overrides):
  """The default config shrunk to train in seconds on a small dataset."""
  config = default.get_config()
  config.update(dict(data_path=str(data_path), log_path=str(log_path), epochs=1, batch_size=32,
                     critic_iter=1, gen_hidden_dims=(32,), disc_hidden_dims=(32,), zdim=8,
                     num_output_images=4))
  config.update(overrides)
  return config


def write_run_lock(directory: str, pid: int) -> str:
  """`directory`'s run lock, naming process `pid` of this host; returns its path."""
  lock = os.path.join(directory, run_lock.LOCK_NAME)
  with open(lock, 'w', encoding='utf-8') as f:
    json.dump(dict(pid=pid, host=socket.gethostname(), started='2026-11-27 00:00:00'), f)
  return lock


def finished_pid() -> int:
  """The id of a process that has exited (and been reaped): no process has it now."""
  proc = subprocess.Popen([sys.executable, '-c', 'pass'])
  proc.wait()
  return proc.pid


@contextlib.contextmanager
def run_locked_by_a_live_process(directory: str):
  """Within the block, `directory`'s run lock names a live process of this host (its id is
  yielded), as while another train.py trains there; the lock is removed after the block."""
  with subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)']) as other:
    try:
      lock = write_run_lock(directory, other.pid)
      yield other.pid
    finally:
      other.kill()
      lock = os.path.join(directory, run_lock.LOCK_NAME)
      if os.path.exists(lock):
        os.unlink(lock)


@contextlib.contextmanager
def environment_variable(name: str, value: str):
  """Sets an environment variable for the duration of the block, then restores it."""
  old = os.environ.get(name)
  os.environ[name] = value
  try:
    yield
  finally:
    if old is None:
      del os.environ[name]
    else:
      os.environ[name] = old


def record_labels(monkeypatch, module, name: str, positions: tuple[int, int], record):
  """Wraps `module.name` so that every call passes its positional (durability, mass) arguments at
  `positions` to `record(name, d, m)` as NumPy arrays. Through jax.debug.callback, so calls are
  recorded at any trace level (inside jit and value_and_grad too) and on every run."""
  real = getattr(module, name)

  def wrapped(*args, **kwargs):
    jax.debug.callback(lambda d, m: record(name, np.asarray(d), np.asarray(m)),
                       *(args[i] for i in positions), ordered=True)
    return real(*args, **kwargs)

  monkeypatch.setattr(module, name, wrapped)


@contextlib.contextmanager
def compilations():
  """Yields a list that gets one entry (its duration) per XLA compilation in the block, counting
  an executable taken from the persistent compilation cache as one (the tests share a cache:
  conftest), so a test sees the same count whether a program was compiled before or not."""
  events = ('/jax/core/compile/backend_compile_duration',
            '/jax/compilation_cache/cache_retrieval_time_sec')
  found = []

  def listener(event, duration, **_):
    if event in events:
      found.append(duration)

  jax.monitoring.register_event_duration_secs_listener(listener)
  try:
    yield found
  finally:
    jax.monitoring.unregister_event_duration_listener(listener)


@contextlib.contextmanager
def fast_compilation():
  """JAX compiles with `jax_disable_most_optimizations` inside, as before outside.

  JAX's in-memory cache of jitted functions does not key on the setting, and the programs round
  differently: a module-level jitted function (the classifier's) compiled inside was reused by a
  later test module on the same worker, whose two calls of one evaluation then ran different
  programs (FD differing in the 8th digit). So the caches are cleared on the way in and out.
  """
  previous = jax.config.read('jax_disable_most_optimizations')
  jax.clear_caches()
  jax.config.update('jax_disable_most_optimizations', True)
  try:
    yield
  finally:
    jax.config.update('jax_disable_most_optimizations', previous)
    jax.clear_caches()


def ctrl_c_swallowed_by_a_gc_callback():
  """A Ctrl-C whose KeyboardInterrupt is raised inside a garbage-collection callback, as JAX's
  runs at any allocation: Python reports it to sys.unraisablehook and goes on. In a collection of
  this (the main) thread: gc.collect() does nothing while another thread's collection runs (an
  orbax writer's), whose callback then fired later, in epoch 2 (seen once in a fresh-clone run)."""
  fired = []

  def callback(phase, info):
    del phase, info
    if threading.current_thread() is threading.main_thread() and not fired:
      gc.callbacks.remove(callback)
      fired.append(True)
      os.kill(os.getpid(), signal.SIGINT)

  gc.callbacks.append(callback)
  while not fired:
    gc.collect()
