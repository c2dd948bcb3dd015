"""Orbax checkpoints: the whole TrainState plus the metadata needed to resume and to generate.

Layout: `<log_path>/checkpoints/<epoch>/{state,meta}`. `state` is the TrainState pytree
(StandardSave), `meta` JSON with the resolved config, the DataSpec (vocabularies and layout) and
the epoch. Restoring goes through an abstract target built from the config, so a checkpoint written
on a GPU restores on a CPU and vice versa. Orbax writes each step to a temporary directory and
renames it when complete, so an interrupted save never shadows the last good checkpoint.
"""

import os
from typing import Any, Optional

import jax
import orbax.checkpoint as ocp

from gan.errors import DesignGanError


class CheckpointError(DesignGanError):
  """A checkpoint is missing, corrupt or incompatible."""


def manager(directory: str, keep: int, create: bool = True, best_fn=None,
            best_mode: str = 'max') -> ocp.CheckpointManager:
  """Keeps the last `keep` checkpoints, or with `best_fn(metrics)` the `keep` best ones."""
  options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=create, best_fn=best_fn,
                                         best_mode=best_mode)
  return ocp.CheckpointManager(os.path.abspath(directory), options=options,
                               item_names=('state', 'meta'))


def save(mngr: ocp.CheckpointManager, epoch: int, state, meta: dict,
         metrics: Optional[dict] = None) -> None:
  mngr.save(epoch, args=ocp.args.Composite(state=ocp.args.StandardSave(state._asdict()),
                                           meta=ocp.args.JsonSave(meta)), metrics=metrics)


def read_meta(mngr: ocp.CheckpointManager, epoch: Optional[int] = None) -> tuple[int, dict]:
  """(epoch, metadata) of `epoch` or the latest checkpoint."""
  epoch = mngr.latest_step() if epoch is None else epoch
  if epoch is None:
    raise CheckpointError(f'no checkpoint in {mngr.directory}')
  try:
    meta = mngr.restore(epoch, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))['meta']
  except Exception as e:  # orbax raises many types for unreadable files
    raise CheckpointError(f'checkpoint {epoch} in {mngr.directory} is unreadable: {e}') from None
  return epoch, meta


def restore_state(mngr: ocp.CheckpointManager, epoch: int, abstract_state) -> Any:
  """Restores the TrainState onto the shardings/devices of `abstract_state`."""
  target = jax.tree.map(ocp.utils.to_shape_dtype_struct, abstract_state._asdict())
  try:
    restored = mngr.restore(epoch, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(target)))['state']
  except Exception as e:  # a different model or a damaged file
    raise CheckpointError(f'checkpoint {epoch} in {mngr.directory} does not match this model '
                          f'or is damaged: {e}') from None
  return type(abstract_state)(**restored)
