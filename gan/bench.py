r"""Training-speed benchmark: how fast is one generator update of each configuration?

`python -m gan.bench [--configs NAME_OR_PATH ...] [--iters N] [--json out.json]`
`python -m gan.bench --devices 1 4 [--configs default] [--epochs 3] [--repeats 2] [--platform gpu]
  [--num_seeds 1 8]`

The second form measures data parallelism instead: whole training epochs on the training data,
on each device count in its own subprocess, and the speed-up over the first (gan/bench_devices.py).

One row per configuration, plus two reference rows, the rooflines the achieved rates are
compared with: `matmul`, the machine's float32 matmul rate (N x N x N, N = 2048 by default), and
`stream`, the rate at which it streams float32 arrays through `x * a + y` (two arrays of 16 MiB
in, one out, by default: the sizes of the activations of a batch, so mostly from cache). Both are
timed before every configuration row and after the last (median of all), so on a shared machine
they see the same load as the rows.

  samples_per_s   batch_size x generator updates per second; each update is the config's
                  critic_iter critic steps and one generator step (gan.step.update)
  iters_per_s     generator updates per second
  gflops_per_s    achieved: XLA's flop count of one compiled update / its median time
  net_gflops_per_s  the same over the networks' flops only: XLA's count of the same update
                  without dropout. Drawing and applying dropout masks is integer work that
                  XLA's count includes (6% of original_vanilla_wgangp's); equal to
                  gflops_per_s for a config without dropout
  gb_per_s        achieved: XLA's count of the bytes one compiled update reads and writes
                  (operands and results of every operation it runs, `bytes accessed`) / its
                  median time; the JSON also has gb_per_update. A row far below both
                  `matmul` in GFLOP/s and `stream` in GB/s is held up by neither roofline
                  but by per-operation costs (many small operations, strided layouts)
  compile_s       seconds to lower and compile the timed function (wall clock); the JSON also
                  has compile_cpu_s, the process's CPU seconds meanwhile, which a loaded
                  machine inflates less

Rows by default: the 12 combinations at their default sizes, named
<gan_model>_<loss_mode>_<mlp|selfattention> (generator and critic of the same kind), and the
preset `original_vanilla_wgangp`. `--configs` takes row names, names of files in configs/
(without .py) and paths of config files (anything with `get_config()`).

The data are random but have the training layout's shapes (10 x 14 x 3 for the Hyundai parts with
datashape=dropempty, 10 durability and 12 mass classes, the config's strut pixels). Each timed
call is one jitted lax.scan of `update` over `--updates` pre-gathered batches, so per-call
dispatch does not dominate; after a warm-up call, `--iters` calls are timed and medians reported.

Flops and bytes: XLA's cost analysis counts the body of a while loop once, whatever its trip
count (a lax.scan of 5 matmuls reports the flops of 1). So the cost of one update is assembled
from loop-free parts: cost(critic_step) x critic_iter + cost(generator_step), each from
`jax.jit(f, donate_argnums=0).lower(...).compile().cost_analysis()`, the state donated as in the
timed update (undonated, a critic step would count a copy of the generator's whole state).
"""

import math
import os
import statistics
import sys
import time
from typing import Any, Callable, NamedTuple, Optional, Sequence

from gan import interrupts

if __name__ == '__main__':  # before the imports below: they take seconds (JAX)
  interrupts.quiet_while_starting('the benchmark')
# pylint: disable=wrong-import-position,wrong-import-order
import jax
import jax.numpy as jnp
import numpy as np

from gan import config as config_lib
from gan import bench_devices
from gan import data
from gan import layout as layout_lib
from gan import parallel
from gan import paths
from gan import step
from gan.errors import (ArgumentParser, DesignGanError, escape_unencodable_stdout,
                        out_of_memory)

NUM_DURABILITY = 10
NUM_MASS = 12
PRESETS = ('original_vanilla_wgangp',)
REFERENCE_ROWS = ('matmul', 'stream')  # the names of the roofline rows (matmul_row, stream_row)
CONFIG_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'configs')
# Keys of every row, in table order.
COLUMNS = ('name', 'gan_model', 'loss_mode', 'gen_mode', 'disc_mode', 'batch_size',
           'samples_per_s', 'iters_per_s', 'gflops_per_s', 'net_gflops_per_s', 'gb_per_s',
           'compile_s')


class BenchError(DesignGanError):
  """The benchmark cannot run as asked (unknown configuration, unwritable output)."""


# ---------------------------------------------------------------------------------------------
# Configurations


DEFAULT_ROWS = config_lib.COMBINATIONS + PRESETS


def _load_config_file(path: str):
  """get_config() of a config file given by path, every field checked before any timing."""
  config = config_lib.load_config_file(path)
  try:
    config_lib.resolve(config)
  except DesignGanError as e:
    raise BenchError(f'config file {path}: {e}') from None
  return config


def row_config(spec: str):
  """(row name, unresolved config) for a row name, a configs/ file name or a config path."""
  if spec in config_lib.COMBINATIONS:
    return spec, config_lib.combination_config(spec)
  if spec.endswith('.py') or os.sep in spec:
    if not spec.endswith('.py'):
      raise BenchError(f'--configs {spec}: a config file is a Python file ending in .py')
    if not os.path.isfile(spec) and os.path.isfile(os.path.join(CONFIG_DIR, spec)):
      spec = os.path.join(CONFIG_DIR, spec)  # a file name of configs/, as --help says
    if not os.path.isfile(spec):
      raise BenchError(f'--configs {spec}: no such config file')
    return os.path.splitext(os.path.basename(spec))[0], _load_config_file(spec)
  path = os.path.join(CONFIG_DIR, spec + '.py')
  if spec.isidentifier() and os.path.isfile(path):
    return spec, _load_config_file(path)
  raise BenchError(f'--configs {spec!r} is not a row name, a file in configs/ or a config file; '
                   f'row names: {", ".join(DEFAULT_ROWS)}')


def unique_rows(specs: Sequence[str], rows: Sequence[tuple],
                reserved: Sequence[str] = ()) -> list:
  """The (name, config) rows of `--configs specs`, each once, in first-seen order.

  A repeated entry, or two spellings of one config (`default`, `configs/default.py`), asks for
  the same row: timed twice it gave two rows of one name in the table and the JSON. Two
  different configs under one row name (two files named tiny.py) could not be told apart there,
  so they are refused, before any timing, as is a config of a `reserved` name (that of a
  reference row, matmul.py).
  """
  seen, unique = {}, []  # seen: row name -> (first spec, its resolved fields)
  for spec, (name, config) in zip(specs, rows):
    if name in reserved:  # the table takes a row of that name for the roofline
      raise BenchError(f'--configs {spec} has the row name {name!r} of the reference row, which '
                       'the table and the JSON could not tell apart from it; rename the file')
    fields = config_lib.resolve(config).to_dict()
    if name not in seen:
      seen[name] = spec, fields
      unique.append((name, config))
    elif seen[name][1] != fields:
      raise BenchError(f'--configs {seen[name][0]} and {spec} are different configs with the '
                       f'same row name {name!r}, which the table and the JSON could not tell '
                       'apart; rename one of the files')
  return unique


def unique_values(values: Optional[Sequence[int]]) -> Optional[list]:
  """--num_seeds or --devices values each once, in first-seen order (a repeat: the same row)."""
  return None if values is None else list(dict.fromkeys(values))


# ---------------------------------------------------------------------------------------------
# Models and random data of the training layout


def bench_layout(config) -> layout_lib.DesignLayout:
  """The Hyundai parts' layout under the config's datashape and strut pixels."""
  return layout_lib.DesignLayout.from_datashape(
      config.datashape, layout_lib.HYUNDAI_HEIGHT, layout_lib.HYUNDAI_WIDTH,
      layout_lib.HYUNDAI_ACTIVE_COLUMNS,
      layout_lib.parse_strut_positions(config.strut_positions))


def check_bench_layout(spec: str, config) -> None:
  """A BenchError, before any timing, for `--configs spec` whose strut pixels `bench_layout`
  cannot hold (a strut in a column datashape=dropempty drops)."""
  try:
    bench_layout(config_lib.resolve(config))
  except DesignGanError as e:
    raise BenchError(f'--configs {spec}: {e}') from None


def bench_spec(layout: layout_lib.DesignLayout) -> data.DataSpec:
  return data.DataSpec(layout, data.ClassVocab(tuple(float(i) for i in range(NUM_DURABILITY))),
                       data.ClassVocab(tuple(float(i) for i in range(NUM_MASS))))


def random_batches(seed: int, layout: layout_lib.DesignLayout, num: int, batch_size: int) -> dict:
  """`num` batches of random designs with the layout's shapes, stacked: leaves (num, B, ...)."""
  rng = np.random.default_rng(seed)
  n = num * batch_size
  colors = rng.integers(0, 256, (n, len(layout.strut_positions), 3), dtype=np.uint8)
  arrays = dict(images=rng.uniform(-1, 1, (n,) + layout.shape).astype(np.float32),
                durability=rng.integers(0, NUM_DURABILITY, n).astype(np.int32),
                mass=rng.integers(0, NUM_MASS, n).astype(np.int32),
                fixed=data.fixed_pixel_images(colors, layout))
  return {k: v.reshape((num, batch_size) + v.shape[1:]) for k, v in arrays.items()}


def scanned_updates(config, models: step.Models, num_seeds: int = 1):
  """jit of (state, batches) -> (state, last metrics): `update` over each batch in turn; with
  num_seeds = K > 1 vmapped over K stacked models sharing the batches, as a sweep trains."""

  def run(state, batches):
    state, metrics = jax.lax.scan(lambda s, b: step.update(config, models, s, b), state, batches)
    return state, jax.tree.map(lambda v: v[-1], metrics)

  return jax.jit(jax.vmap(run, in_axes=(0, None)) if num_seeds > 1 else run, donate_argnums=0)


def compiled_cost(fn: Callable, *args) -> np.ndarray:
  """XLA's [flops, bytes accessed] of fn(*args) once compiled (loop bodies counted once: see the
  module doc). The first argument, the state, is donated, as the timed update donates it: else
  every array a part returns unchanged (the generator's in a critic step) is counted as copied
  into a new buffer, bytes the update never moves."""
  cost = jax.jit(fn, donate_argnums=0).lower(*args).compile().cost_analysis()
  if isinstance(cost, (list, tuple)):  # older jax: one dict per computation
    cost = cost[0]
  return np.array([cost['flops'], cost['bytes accessed']], np.float64)


def update_cost(config, models: step.Models, state: step.TrainState, batch) -> np.ndarray:
  """[flops, bytes accessed] of one `update`: critic_iter critic steps and one generator step.
  `state` may be abstract (`step.abstract_init`): only its shapes are compiled."""
  key = jax.random.PRNGKey(0)
  critic = compiled_cost(lambda s, b, k: step.critic_step(config, models, s, b, k)[0],
                         state, batch, key)
  gen = compiled_cost(lambda s, b, k: step.generator_step(config, models, s, b, k)[0],
                      state, batch, key)
  return config.critic_iter * critic + gen


def network_flops(config, spec: data.DataSpec, mask, batch) -> float:
  """Flops of one `update` of the same networks without dropout (see net_gflops_per_s)."""
  config = config.copy_and_resolve_references()
  config.gen_dropout = config.disc_dropout = 0.0
  models, abstract = step.abstract_init(config, spec, mask)
  return float(update_cost(config, models, abstract, batch)[0])


# ---------------------------------------------------------------------------------------------
# Timing


def _block(tree):
  return jax.block_until_ready(tree)


def benchmark_jitted(fn, state, args: Sequence[Any], *, samples_per_call: int,
                     updates_per_call: int, flops_per_call: float, iters: int,
                     bytes_per_call: float = 0.0, warmup: int = 1) -> dict:
  """Compiles and times any jitted update `fn(state, *args) -> (state, aux)`.

  The state is threaded from call to call (fn may donate it). One call does `updates_per_call`
  generator updates on `samples_per_call` training examples in all (for K vmapped models,
  K x batch x updates), `flops_per_call` flops and moves `bytes_per_call` bytes. Returns the
  timing columns of a row: medians over `iters` timed calls after `warmup` untimed ones.
  """
  t0, c0 = time.perf_counter(), time.process_time()
  compiled = fn.lower(state, *args).compile()
  compile_s, compile_cpu_s = time.perf_counter() - t0, time.process_time() - c0
  for _ in range(warmup):
    state, _ = _block(compiled(state, *args))
  seconds = []
  for _ in range(iters):
    t0 = time.perf_counter()
    state, _ = _block(compiled(state, *args))
    seconds.append(time.perf_counter() - t0)
  t = statistics.median(seconds)
  return dict(samples_per_s=samples_per_call / t, iters_per_s=updates_per_call / t,
              gflops_per_s=flops_per_call / t / 1e9, gb_per_s=bytes_per_call / t / 1e9,
              compile_s=compile_s, compile_cpu_s=compile_cpu_s, seconds_per_call=seconds)


def seed_counts(args, config) -> list:
  """The numbers of vmapped models a config's rows time: --num_seeds, else the config's own."""
  return args.num_seeds or [config_lib.resolve(config).num_seeds]


def row_name(name: str, num_seeds: int = 1) -> str:
  """The name of a row of `num_seeds` models of config `name` (trained together, a sweep's)."""
  return name + (f' x{num_seeds} seeds' if num_seeds > 1 else '')


def row_columns(name: str, config, num_seeds: int = 1) -> dict:
  """The columns of a row known before it is timed: its name and the resolved config's kind."""
  return dict(name=row_name(name, num_seeds),
              gan_model=config.gan_model, loss_mode=config.loss_mode,
              gen_mode=config.gen_mode, disc_mode=config.disc_mode, num_seeds=num_seeds,
              batch_size=config.batch_size)


def bench_config(name: str, config, *, iters: int, updates: int, seed: int = 0,
                 num_seeds: int = 1) -> dict:
  """One row: builds the config's models on random data and times `updates` updates a call
  (of each of num_seeds vmapped models: samples/s counts the samples of all of them)."""
  config = config_lib.resolve(config)
  layout = bench_layout(config)
  spec, mask = bench_spec(layout), layout.strut_mask()
  models, state = (step.init_sweep(config, spec, mask, range(num_seeds)) if num_seeds > 1
                   else step.init(config, spec, mask))
  abstract = step.abstract_init(config, spec, mask)[1]  # the costs compile from shapes alone
  batches = jax.device_put(random_batches(seed, layout, updates, config.batch_size))
  first = jax.tree.map(lambda v: v[0], batches)
  flops, bytes_accessed = update_cost(config, models, abstract, first) * updates * num_seeds
  net_flops = network_flops(config, spec, mask, first) * updates * num_seeds if (
      config.gen_dropout or config.disc_dropout) else flops
  timing = benchmark_jitted(scanned_updates(config, models, num_seeds), state, (batches,),
                            samples_per_call=updates * config.batch_size * num_seeds,
                            updates_per_call=updates * num_seeds, flops_per_call=flops,
                            bytes_per_call=bytes_accessed, iters=iters)
  return dict(**row_columns(name, config, num_seeds),
              gflop_per_update=flops / updates / num_seeds / 1e9,
              gb_per_update=bytes_accessed / updates / num_seeds / 1e9,
              net_gflops_per_s=timing['gflops_per_s'] * (net_flops / flops), **timing)


class ReferenceRow:
  """A roofline row: one jitted kernel of known flops or bytes a call, compiled once.

  The machine may be shared, so its rate drifts; `sample` is called between the configuration
  rows and the row reports the median over every sample, taken under the same conditions as
  the rows it is compared with.
  """

  def __init__(self, name: str, fn, args: Sequence[Any], *, flops_per_call: float = 0.0,
               bytes_per_call: float = 0.0, **extra):
    self.name, self.extra = name, extra
    self._fn, self._args = jax.jit(fn), tuple(args)
    self._flops, self._bytes = flops_per_call, bytes_per_call
    self.seconds, self.compile_s = [], None

  def sample(self, iters: int) -> None:
    timing = benchmark_jitted(self._fn, jnp.zeros(()), self._args, samples_per_call=0,
                              updates_per_call=0, flops_per_call=0.0, iters=iters)
    self.compile_s = self.compile_s or timing['compile_s']
    self.seconds += timing['seconds_per_call']

  def row(self) -> dict:
    t = statistics.median(self.seconds)
    return dict(name=self.name, gan_model=None, loss_mode=None, gen_mode=None, disc_mode=None,
                batch_size=None, samples_per_s=None, iters_per_s=None,
                gflops_per_s=self._flops / t / 1e9 if self._flops else None,
                net_gflops_per_s=None, gb_per_s=self._bytes / t / 1e9 if self._bytes else None,
                compile_s=self.compile_s, seconds_per_call=self.seconds, **self.extra)


def matmul_row(size: int) -> ReferenceRow:
  """`matmul`: float32 (N x N) @ (N x N), 2 N^3 flops a call."""
  a = jax.random.normal(jax.random.PRNGKey(0), (size, size), jnp.float32)
  b = jax.random.normal(jax.random.PRNGKey(1), (size, size), jnp.float32)
  # (state, aux) is the shape benchmark_jitted threads.
  return ReferenceRow('matmul', lambda s, a, b: (s, a @ b), (a, b),
                      flops_per_call=2.0 * size ** 3, matmul_size=size)


def stream_row(mib: float, repeats: int = 10) -> ReferenceRow:
  """`stream`: x <- x * a + y over float32 arrays of `mib` MiB (reads two, writes one), repeated
  in a loop inside the call so that one call's dispatch does not count."""
  n = max(1, int(mib * 2**20) // 4)
  x = jax.random.normal(jax.random.PRNGKey(0), (n,), jnp.float32)
  y = jax.random.normal(jax.random.PRNGKey(1), (n,), jnp.float32)
  stream = lambda s, x, y: (s, jax.lax.fori_loop(0, repeats, lambda _, x: x * 0.5 + y, x))
  return ReferenceRow('stream', stream, (x, y), bytes_per_call=3.0 * 4 * n * repeats,
                      stream_mib=mib)


# ---------------------------------------------------------------------------------------------
# Output


def _fmt(value) -> str:
  if value is None:
    return '-'
  if isinstance(value, float):
    return f'{value:,.1f}' if value >= 10 else f'{value:.2f}'
  return str(value)


class Column(NamedTuple):
  """A table column: its title, a row's cell, and whether it is left-aligned (else right)."""
  title: str
  cell: Callable[[dict], str]
  left: bool = False


def key_column(title: str, key: str, fmt: Callable[[Any], str] = _fmt,
               left: bool = False) -> Column:
  """The column of a row's value at `key`, `fmt`ted, `-` where it has none (or none yet)."""
  return Column(title, lambda r: '-' if r.get(key) is None else fmt(r[key]), left)


def bench_columns(rows: Sequence[dict]) -> list:
  """COLUMNS, plus each row's share of the matmul and stream rooflines where `rows` have them."""
  shares = [(label, key, roof) for label, name, key in (('roofline_%', 'matmul', 'gflops_per_s'),
                                                         ('stream_%', 'stream', 'gb_per_s'))
            if (roof := next((r[key] for r in rows if r['name'] == name), None))]
  return ([key_column(c, c, left=c == 'name') for c in COLUMNS]
          + [key_column(label, key, lambda v, roof=roof: f'{100 * v / roof:.0f}')
             for label, key, roof in shares])


# The --devices table: a row per config, num_seeds and device count (bench_devices.device_rows).
DEVICE_COLUMNS = (
    key_column('config', 'name', str, left=True), key_column('devices', 'devices', str),
    key_column('samples/s', 'samples_per_s', '{:.0f}'.format),
    key_column('s/epoch', 'seconds_per_epoch', '{:.2f}'.format),
    key_column('speed-up', 'speed_up', '{:.2f}x'.format),
    key_column('warm-up s', 'warmup_s', '{:.1f}'.format),
    key_column('runs (samples/s)', 'all_samples_per_s', str, left=True))


def format_table(rows: Sequence[dict], columns: Optional[Sequence[Column]] = None, *,
                 fit: Sequence[dict] = (), header: bool = True) -> str:
  """Fixed-width table of `columns` (default: bench_columns(rows)).

  `fit`: rows the columns are made wide enough for without being printed (those still to come,
  when the table is printed a row at a time); a row may lack columns not known yet (`-`).
  """
  columns = bench_columns(rows) if columns is None else columns
  cells = lambda r: [c.cell(r) for c in columns]
  printed = [cells(r) for r in rows]
  widths = [max([len(c.title)] + [len(row[i]) for row in printed + [cells(r) for r in fit]])
            for i, c in enumerate(columns)]
  fmt = lambda row: '  '.join(s.ljust(w) if c.left else s.rjust(w)
                              for s, w, c in zip(row, widths, columns)).rstrip()
  return '\n'.join(([fmt([c.title for c in columns])] if header else [])
                   + [fmt(row) for row in printed])


def print_timed(rows: Sequence[dict], fit: Sequence[dict],
                columns: Optional[Sequence[Column]] = None) -> None:
  """The last of `rows` to stderr as soon as it is timed, the first under a header, in the final
  table's columns: as wide as the rows of `fit` (every row's columns known before timing) need,
  numbers as wide as their titles (those are not known yet)."""
  print(format_table(rows[-1:], columns, fit=fit, header=len(rows) == 1), file=sys.stderr,
        flush=True)


def main(argv: Optional[Sequence[str]] = None) -> int:
  parser = ArgumentParser(
      prog='python -m gan.bench',
      description='Training-speed benchmark: samples/s, updates/s, achieved GFLOP/s and '
                  'compile time of each configuration, against a float32 matmul and a '
                  'memory-stream roofline.')
  parser.add_argument('--configs', nargs='+', default=None, type=os.path.expanduser,
                      help='row names (e.g. vanilla_wgangp_mlp), configs/ file names or config '
                           'file paths, each timed once (default: the 12 combinations and the '
                           'presets; with --devices: default)')
  parser.add_argument('--iters', type=int, default=3, help='timed calls per row (median)')
  parser.add_argument('--updates', type=int, default=2, help='generator updates per timed call')
  parser.add_argument('--batch_size', type=int, default=0,
                      help='batch size of every row (default: each config\'s own)')
  parser.add_argument('--num_seeds', type=int, nargs='+', default=None,
                      help='rows with K vmapped models (a num_seeds sweep) for each K given '
                           '(default: each config\'s num_seeds, 1 for the row names); with '
                           '--devices, the models of each run')
  parser.add_argument('--matmul_size', type=int, default=2048, help='N of the roofline matmul')
  parser.add_argument('--no_matmul', action='store_true', help='leave out the matmul row')
  parser.add_argument('--stream_mib', type=float, default=16.0,
                      help='MiB of each array of the stream row (x * a + y)')
  parser.add_argument('--no_stream', action='store_true', help='leave out the stream row')
  parser.add_argument('--json', default=None, type=os.path.expanduser,
                      help='also write the rows to this JSON file')
  devices = parser.add_argument_group(
      'data-parallel speed-up', 'with --devices, time whole training epochs on the training data '
      'for each device count instead (one subprocess each; gan/bench_devices.py)')
  devices.add_argument('--devices', type=int, nargs='+', default=[],
                       help='device counts to compare, e.g. 1 4')
  devices.add_argument('--epochs', type=int, default=3, help='timed epochs per run')
  devices.add_argument('--repeats', type=int, default=1, help='runs per device count (best kept)')
  devices.add_argument('--platform', choices=('cpu', 'gpu'), default='cpu',
                       help='cpu: split the host into N XLA devices; gpu: the first N visible GPUs')
  args = parser.parse_args(argv)
  if args.configs is None:
    args.configs = ['default'] if args.devices else list(DEFAULT_ROWS)
  try:
    if (args.iters < 1 or args.updates < 1 or args.matmul_size < 1 or args.batch_size < 0
        or min(args.num_seeds or [1]) < 1 or not 0 < args.stream_mib < math.inf):
      raise BenchError('--iters, --updates, --matmul_size, --stream_mib and --num_seeds must be '
                       'positive (--stream_mib a finite number of MiB; --batch_size 0 = the '
                       'config\'s)')
    def changed(names):  # the options given other values than their defaults
      return [f'--{n}' for n in names if getattr(args, n) != parser.get_default(n)]

    if not args.devices:
      ignored = changed(('platform', 'epochs', 'repeats'))
      if ignored:
        raise BenchError(f'{", ".join(ignored)} only appl{"ies" if len(ignored) == 1 else "y"} '
                         'with --devices (data-parallel epochs); give --devices 1 N, or leave '
                         f'{"it" if len(ignored) == 1 else "them"} out')
    else:
      ignored = changed(('iters', 'updates', 'matmul_size', 'no_matmul',
                         'stream_mib', 'no_stream'))
      if ignored:
        raise BenchError(f'{", ".join(ignored)} '
                         f'{"does" if len(ignored) == 1 else "do"} not apply with --devices, which '
                         'times whole epochs (--epochs, --repeats); leave '
                         f'{"it" if len(ignored) == 1 else "them"} out')
    if args.json is not None:  # fail before the work, not after it ('' too)
      paths.check_output_file(args.json, '--json')
    # Every name checked before any timing; each row once.
    named = [row_config(c) for c in args.configs]
    for spec, (_, config) in zip(args.configs, named) if not args.devices else ():
      check_bench_layout(spec, config)  # the rows' layout: a LayoutError once others were timed
    configs = unique_rows(args.configs, named, reserved=() if args.devices else REFERENCE_ROWS)
    args.num_seeds, args.devices = unique_values(args.num_seeds), unique_values(args.devices)
    for _, config in configs if args.batch_size else ():  # one home for --batch_size
      config.batch_size = args.batch_size
    if args.devices:
      return _device_main(args, configs)
    references = (([] if args.no_matmul else [matmul_row(args.matmul_size)])
                  + ([] if args.no_stream else [stream_row(args.stream_mib)]))
    runs = [(name, config, num_seeds) for name, config in configs
            for num_seeds in seed_counts(args, config)]
    fit = [dict(name=r.name) for r in references] + [
        row_columns(name, config_lib.resolve(config), k) for name, config, k in runs]
    rows = []
    for name, config, num_seeds in runs:
      for reference in references:
        reference.sample(args.iters)
      rows.append(bench_config(name, config, iters=args.iters, updates=args.updates,
                               num_seeds=num_seeds))
      print_timed(rows, fit)
    for reference in references:
      reference.sample(args.iters)
    rows[:0] = [reference.row() for reference in references]
    if args.json:
      meta = dict(iters=args.iters, updates_per_call=args.updates, backend=jax.default_backend(),
                  devices=[str(d) for d in jax.devices()], cpu_count=os.cpu_count(),
                  load_average=os.getloadavg())
      paths.write_json(args.json, dict(meta=meta, rows=rows))
  except DesignGanError as e:
    print(f'error: {e}', file=sys.stderr)
    return 1
  except (MemoryError, jax.errors.JaxRuntimeError) as e:
    # A size too large for this machine (--matmul_size 1000000, --stream_mib 1e9, --updates or
    # --batch_size 1000000000) ended in a traceback from numpy or XLA.
    reason = out_of_memory(e)
    if not reason:
      raise
    print(f'error: the benchmark ran out of memory ({reason}); give a smaller --matmul_size, '
          '--stream_mib, --updates or --batch_size (rows: batch_size x updates designs are '
          'held at once)', file=sys.stderr)
    return 1
  except KeyboardInterrupt:  # Ctrl-C: one line and the shell's status for SIGINT, as train.py
    print('\ninterrupted: the rows timed so far are above; a --json file is written only once '
          'every row is timed', file=sys.stderr)
    return 130
  print(format_table(rows))
  return 0


def _device_main(args, configs) -> int:
  if min(args.devices) < 1 or args.epochs < 1 or args.repeats < 1:
    raise BenchError('--devices, --epochs and --repeats must be positive')
  runs = []  # (row name, config) per --num_seeds K, every one checked before any timing
  for name, config in configs:  # main set --batch_size
    for num_devices in args.devices:
      parallel.check_batch_size(config.batch_size, num_devices)
    for num_seeds in seed_counts(args, config):
      run = config.copy_and_resolve_references()
      run.num_seeds = num_seeds
      config_lib.resolve(run)  # e.g. a seed too large for K models' seeds, before any timing
      runs.append((row_name(name, num_seeds), run))
  fit = [dict(name=name, devices=n) for name, _ in runs for n in args.devices]
  rows = []
  for name, config in runs:
    for row in bench_devices.device_rows(name, config, args.devices, epochs=args.epochs,
                                         repeats=args.repeats, platform=args.platform):
      rows.append(row)
      print_timed(rows, fit, DEVICE_COLUMNS)
  if args.json:
    paths.write_json(args.json, dict(meta=dict(
        epochs=args.epochs, repeats=args.repeats, platform=args.platform,
        cpu_count=os.cpu_count(), load_average=os.getloadavg()), rows=rows))
  print(format_table(rows, DEVICE_COLUMNS))
  return 0


if __name__ == '__main__':
  # compile_s is the time to compile: a persistent compilation cache the user enabled for training
  # (JAX_COMPILATION_CACHE_DIR, see the README) would make it the time to load an earlier result.
  jax.config.update('jax_enable_compilation_cache', False)
  escape_unencodable_stdout()
  interrupts.started()
  interrupts.exit_cli(main())
