"""Trains a conditional design GAN: `python train.py --config=configs/default.py`."""

import sys

if __name__ == '__main__':
  print('error: training is not implemented yet (see issue 3); the dataset and loader are ready: '
        'python -m gan.designs --out DIR', file=sys.stderr)
  sys.exit(2)
