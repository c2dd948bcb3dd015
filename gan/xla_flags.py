"""XLA flags this project measured to pay on CPU, added to XLA_FLAGS before JAX starts a backend.

`--xla_cpu_experimental_ynn_fusion_type=-reduce`: jaxlib 0.10's XLA:CPU hands reductions (bias
gradients, LayerNorm statistics) to YNNPACK fusions, which are slower here than XLA's own
reduction loops. Without them (`python -m gan.bench --configs ... --iters 3 --updates 1`,
2-core CPU, two runs each, samples/s with / without the flag): original_vanilla_wgangp 1,802
and 1,678 / 1,494 and 1,507; vanilla_wgangp_mlp 5,472 and 5,646 / 4,142 and 4,966;
vanilla_wgangp_selfattention 295 and 296 / 249 and 254.

The flag is experimental, and an XLA that does not know a flag aborts the process, so it is only
added for the jaxlib version it was measured on. A flag of the same name already in XLA_FLAGS
(the user's choice) is left alone, and so is everything else there.
"""

import importlib.metadata
import os
from typing import MutableMapping, Optional

CPU_FLAGS = ('--xla_cpu_experimental_ynn_fusion_type=-reduce',)
VERIFIED_JAXLIB = ('0.10.2',)  # jaxlib versions the flags were measured (and parsed) on


def jaxlib_version() -> Optional[str]:
  try:
    return importlib.metadata.version('jaxlib')
  except importlib.metadata.PackageNotFoundError:
    return None


def _name(flag: str) -> str:
  """A flag's name: XLA accepts one or two leading dashes."""
  return flag.split('=', 1)[0].lstrip('-')


def with_cpu_flags(xla_flags: str, version: Optional[str]) -> str:
  """`xla_flags` plus each of CPU_FLAGS whose name it does not already set, when `version` (of
  jaxlib) is one the flags were verified on; otherwise `xla_flags` unchanged."""
  if version not in VERIFIED_JAXLIB:
    return xla_flags
  present = {_name(f) for f in xla_flags.split()}
  added = [f for f in CPU_FLAGS if _name(f) not in present]
  return ' '.join([xla_flags.strip()] + added).strip()


def apply(environ: MutableMapping[str, str] = os.environ) -> None:
  """Adds CPU_FLAGS to environ['XLA_FLAGS'] (see `with_cpu_flags`). Takes effect only if called
  before JAX's first computation, which is why `gan/__init__.py` calls it."""
  flags = with_cpu_flags(environ.get('XLA_FLAGS', ''), jaxlib_version())
  if flags:
    environ['XLA_FLAGS'] = flags
