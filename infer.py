"""Generates designs from a trained model: not implemented yet (see issue 4)."""

import sys

if __name__ == '__main__':
  print('error: inference is not implemented yet (see issue 4)', file=sys.stderr)
  sys.exit(2)
