"""Reading and writing design images (24-bit RGB BMP and PNG) with Pillow.

Writers are atomic: an image is written to a temporary file beside the target and renamed, so an
interrupted run never leaves a half-written file behind.
"""

import os
import stat
import warnings
from typing import Optional

import numpy as np
from PIL import Image, PngImagePlugin, UnidentifiedImageError

from gan import paths
from gan.errors import DataError

IMAGE_EXTENSIONS = ('.bmp', '.png')


def is_image_file(name: str) -> bool:
  """True when `name` has an extension the loader reads (case-insensitive)."""
  return name.lower().endswith(IMAGE_EXTENSIONS)


_DESIGN_FORMATS = ('BMP', 'DIB', 'PNG')  # what Pillow calls the formats it reads designs from


def read_rgb(path: str) -> np.ndarray:
  """Reads an image as an (H, W, 3) uint8 RGB array.

  8-bit grayscale ('L') and palette ('P') images are converted to RGB: a grey level v becomes the
  colour (v, v, v); 16/32-bit single-channel images ('I;16', 'I', 'F') are refused (Pillow reads
  16-bit-per-channel RGB PNGs as 8-bit RGB). Images with an alpha channel, or a colour marked
  transparent (PNG tRNS; `_with_alpha`), are accepted only when every pixel
  is fully opaque (the alpha is then dropped); transparency has no meaning in a design, so any
  other alpha value is refused rather than silently composited (Pillow reads a 32-bit BMP's fourth
  byte as padding, but as alpha when a BITMAPV4/V5 header gives an alpha mask). The content must
  be BMP or PNG whatever the name says: a JPEG's lossy colours are refused.

  Raises:
    DataError: the file is missing, not readable by this user, corrupt, not a BMP or PNG, or has a
      non-opaque alpha channel.
  """
  try:
    if not stat.S_ISREG(os.stat(path).st_mode):  # opening a FIFO would wait for a writer forever
      raise DataError(f'{path}: not a regular file (a FIFO, socket or device); designs must be '
                      'BMP or PNG files')
    # Pillow only warns (DecompressionBombWarning, two lines with its source path on stderr) of a
    # header claiming 89M to 179M pixels: a design grid is tiny, so that is an error here too.
    with (warnings.catch_warnings(action='error', category=Image.DecompressionBombWarning),
          Image.open(path) as img):
      if img.format not in _DESIGN_FORMATS:  # e.g. a JPEG named .bmp: lossy, colours shifted
        kind = img.format or 'unrecognised'
        article = 'an' if kind[:1].upper() in 'AEIOU' else 'a'  # a JPEG, an ICO image
        raise DataError(f'{path}: the file is {article} {kind} image, not BMP or PNG, whatever '
                        'its name says; designs must be lossless BMP or PNG files')
      img.load()
      if 'transparency' in img.info and img.mode in ('P', 'L', 'RGB', '1'):
        # A transparent palette entry, grey level or colour (PNG tRNS): an alpha channel in
        # effect, whose transparent pixels' stored colour (often a white background) means nothing.
        img = _with_alpha(path, img)
      elif img.mode == 'P':
        img = img.convert('RGB')
      if img.mode in ('RGBA', 'LA', 'PA'):
        alpha = np.asarray(img.getchannel('A'))
        if alpha.min() != 255:
          raise DataError(
              f'{path}: image has transparent pixels (alpha channel); designs must be opaque '
              'RGB or grayscale images')
      if img.mode != 'RGB':
        if img.mode.startswith('I') or img.mode == 'F':
          raise DataError(f'{path}: {img.mode!r} images (16/32-bit) are not supported; '
                          'use 8-bit RGB or grayscale')
        img = img.convert('RGB')
      array = np.asarray(img, dtype=np.uint8)
  except DataError:
    raise
  except FileNotFoundError:
    if os.path.islink(path):  # listed in its directory, so 'not found' read as a contradiction
      raise DataError(f'{path}: a symbolic link to {os.readlink(path)}, which does not exist; '
                      'designs must be files, or links to files') from None
    raise DataError(f'{path}: file not found') from None
  except PermissionError as e:  # an OSError, but neither corrupt nor of another format
    raise DataError(f'{path}: cannot read the file ({e.strerror}); designs must be files this '
                    'user can read') from None
  # Not OSErrors: a header claiming a vast size (the warning: 89M to 179M pixels).
  except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
    raise DataError(f'{path}: cannot read image ({e}); the file is corrupt, or far larger than '
                    'a design grid such as 10x30') from None
  except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
    raise DataError(f'{path}: cannot read image ({e.__class__.__name__}: {e}); the file is '
                    'corrupt or not a BMP/PNG') from None
  return array


def _png_depth(path: str) -> tuple[int, int]:
  """(bit depth, colour type) from a PNG's IHDR chunk, which the PNG spec puts first."""
  with open(path, 'rb') as f:
    header = f.read(26)
  return header[24], header[25]


def _with_alpha(path: str, img: Image.Image) -> Image.Image:
  """`img`, whose PNG marks one grey level or colour transparent (tRNS), as RGBA: alpha 0 where
  that value occurs.

  Pillow compares the tRNS value with the samples as it read them, at 8 bits: it scales 2- and
  4-bit grey levels to 0..255 but not the tRNS grey, so it missed it, and a 1-bit grey's too
  before Pillow 12.1 (since, 255 for 1); those levels are compared at their own depth here. Of a
  16-bit colour Pillow keeps each sample's high byte but matched the tRNS colour's low byte; the
  low bytes are gone, so a pixel whose high bytes equal the tRNS colour's may be transparent or
  not, and such an image is refused (one with no such pixel is not transparent anywhere).
  """
  if img.format != 'PNG':
    return img.convert('RGBA')
  bit_depth, colour_type = _png_depth(path)
  trns = np.asarray(img.info['transparency'])
  if colour_type == 0 and bit_depth in (1, 2, 4):  # grey
    levels = np.asarray(img.convert('L')) // (255 // (2 ** bit_depth - 1))  # the PNG's levels
    transparent = levels == (np.minimum(trns, 1) if bit_depth == 1 else trns)
  elif colour_type == 2 and bit_depth == 16:  # RGB
    transparent = (np.asarray(img.convert('RGB')) == trns >> 8).all(-1)
    if transparent.any():
      raise DataError(
          f'{path}: a 16-bit PNG whose transparent colour (tRNS) may occur: Pillow reads such '
          'images at 8 bits, where its pixels cannot be told apart from the transparent colour; '
          'save the design as an 8-bit PNG or without transparency')
  else:
    return img.convert('RGBA')
  alpha = np.where(transparent, 0, 255).astype(np.uint8)
  return Image.fromarray(np.dstack([np.asarray(img.convert('RGB')), alpha]))  # (H, W, 4): RGBA


def write_rgb(path: str, image: np.ndarray, atomic: bool = True,
              text: Optional[dict[str, str]] = None) -> None:
  """Writes an (H, W, 3) uint8 array as a 24-bit RGB image; format from the extension.

  `atomic=False` skips the temporary file, for callers that write into a directory they rename
  into place as a whole. `text`: PNG text chunks (key: value), read back by `png_text`.
  """
  image = np.asarray(image)
  if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
    raise ValueError(f'expected an (H, W, 3) uint8 array, got {image.shape} {image.dtype}')
  options = {}
  if text:
    if _format_of(path) != 'PNG':
      raise ValueError(f'{path}: text chunks need a .png file')
    options['pnginfo'] = PngImagePlugin.PngInfo()
    for key, value in text.items():
      options['pnginfo'].add_text(key, value)
  if not atomic:
    Image.fromarray(image).save(path, format=_format_of(path), **options)
    return
  fd, tmp = paths.staging_file(path, suffix=os.path.splitext(path)[1] + '.tmp')
  try:
    with os.fdopen(fd, 'wb') as f:
      Image.fromarray(image).save(f, format=_format_of(path), **options)
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.unlink(tmp)
    raise


def png_text(path: str) -> dict[str, str]:
  """The text chunks before the pixels of a PNG file (where `write_rgb` puts them; read without
  decoding the pixels); {} for any other file, or one that cannot be read."""
  try:
    with Image.open(path) as image:
      if image.format != 'PNG':
        return {}
      return {k: v for k, v in image.info.items() if isinstance(k, str) and isinstance(v, str)}
  except (OSError, ValueError, UnidentifiedImageError, Image.DecompressionBombError):
    return {}


def _format_of(path: str) -> str:
  ext = os.path.splitext(path)[1].lower()
  if ext == '.bmp':
    return 'BMP'
  if ext == '.png':
    return 'PNG'
  raise ValueError(f'{path}: unsupported image extension {ext!r}; use .bmp or .png')
