"""Helpers shared by the tests."""

import numpy as np

from gan import data


def relabelled(dataset_):
  """The dataset with every durability label moved one class up (cyclically): not synthetic."""
  nd = len(dataset_.spec.durability)

  def shift(part):
    return data.DesignArrays(part.images, part.fixed, part.strut_colors,
                             ((part.durability + 1) % nd).astype(np.int32), part.mass, part.names)

  return data.Dataset(dataset_.spec, shift(dataset_.train), shift(dataset_.val), dataset_.mask,
                      dataset_.data_dir)
