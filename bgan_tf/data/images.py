"""Decoding one image, the pixel budget, RGB conversion, resizing and the folder lister.

Every image the project reads goes through here (training, evaluation, indexing and the
search service alike). Bad files never crash deep inside TensorFlow: grayscale is
replicated to RGB, RGBA is composited on white, 16-bit and float images are scaled to 8
bits, and undecodable or empty files and images over the pixel budget (checked from the
header, before decoding) raise ``UserError`` / ``ImageTooLarge`` naming the file.
`list_image_files` is the one folder lister (`ImageListing`).
"""

from __future__ import annotations

import dataclasses
import io
import os
import re
import struct
from typing import BinaryIO

import numpy as np

from bgan_tf.errors import UserError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
# The pixel budget of one decoded image, checked from the header before any pixel is
# decoded: 40 megapixels takes any camera photo (120 MB as RGB) while a 97 KB PNG that
# claims 10000x10000 pixels is refused instead of costing 300 MB and seconds to decode.
DEFAULT_MAX_PIXELS = 40_000_000
# Bytes per pixel a file may hold before it is refused unread (`max_file_bytes`): an
# uncompressed 16-bit RGBA image is 8; a 6 GB file named .jpg must not be read whole.
FILE_BYTES_PER_PIXEL = 8


class ImageTooLarge(UserError):
    """An image whose header claims more pixels than the budget (nothing was decoded)."""


@dataclasses.dataclass
class ImageListing:
    """What `list_image_files` found under a folder."""

    entries: list[tuple[str, str | None]]  # (path, class subfolder or None), sorted
    unsupported: list[str]  # files skipped because of their extension
    hidden: int = 0  # dot-files and files in dot-folders, never read
    # Symbolic links not followed: every link to a folder, and links to files outside the
    # folder (an index must never record, nor a service serve, a file outside its root).
    links: list[str] = dataclasses.field(default_factory=list)
    unlisted: list[str] = dataclasses.field(default_factory=list)  # folders that could not be read

    def describe_skips(self) -> str:
        """'' or e.g. '3 files with unsupported extensions (.txt, .heic); 1 symbolic link ...'."""
        parts = []
        if self.unsupported:
            exts = sorted({os.path.splitext(p)[1].lower() or "(none)" for p in self.unsupported})
            parts.append(f"{len(self.unsupported)} file(s) with unsupported extensions ({', '.join(exts[:6])}); "
                         f"supported: {', '.join(IMAGE_EXTENSIONS)}")
        if self.links:
            parts.append(f"{len(self.links)} symbolic link(s) to folders or to files outside the folder "
                         "(not followed)")
        if self.unlisted:
            parts.append(f"{len(self.unlisted)} folder(s) that could not be listed")
        return "; ".join(parts)


def to_rgb_uint8(arr: np.ndarray, what: str = "image") -> np.ndarray:
    """Any HxW, HxWx1, HxWx3 or HxWx4 array -> uint8 HxWx3."""
    a = np.asarray(arr)
    if a.ndim == 2:
        a = a[..., None]
    if a.ndim != 3 or a.shape[-1] not in (1, 3, 4):
        raise UserError(f"{what}: expected an HxW, HxWx1, HxWx3 or HxWx4 image, got shape {a.shape}")
    if a.shape[0] == 0 or a.shape[1] == 0:
        raise UserError(f"{what}: image has zero size")
    if a.dtype == np.uint16:
        # 16-bit arrays (npz, TFDS) span 0..65535: scale like 16-bit PNGs, never clip.
        a = np.round(a.astype(np.float32) * (255.0 / 65535.0)).astype(np.uint8)
    elif a.dtype != np.uint8:
        a = np.clip(a, 0, 255).astype(np.uint8)
    if a.shape[-1] == 1:
        a = np.repeat(a, 3, axis=-1)
    elif a.shape[-1] == 4:
        alpha = a[..., 3:4].astype(np.float32) / 255.0
        a = (a[..., :3].astype(np.float32) * alpha + 255.0 * (1.0 - alpha)).round().astype(np.uint8)
    return a


# The formats Pillow may decode: those of IMAGE_EXTENSIONS (Pillow's JPEG opener also
# returns the MPO files many phones write). An upload can be any bytes: without this
# list Pillow would also try EPS (which runs Ghostscript), PSD, ICNS and dozens more.
_PIL_FORMATS = ("JPEG", "PNG", "BMP", "GIF", "WEBP", "TIFF")
_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")


def _grey_to_uint8(a: np.ndarray, sixteen_bit: bool) -> np.ndarray:
    """A one-channel integer or float image -> uint8, scaled, never clipped.

    16-bit data (and 32-bit "I" data within 0..65535) is x * 255 / 65535 rounded,
    so a 16-bit white is 255 and a mid grey 128. Float data in [0, 1] is x * 255,
    in [0, 255] is kept, in [0, 65535] is read as 16-bit; any other range (negative
    or larger values, e.g. depth maps) is stretched from its min..max to 0..255.
    """
    # float32 halves the temporary of a large image; 8-bit output needs no more.
    a = np.nan_to_num(np.asarray(a, np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    lo, hi = (float(a.min()), float(a.max())) if a.size else (0.0, 0.0)
    if sixteen_bit:
        scaled = a * (255.0 / 65535.0)
    elif lo >= 0 and hi <= 1.0:
        scaled = a * 255.0
    elif lo >= 0 and hi <= 255.0:
        scaled = a
    elif lo >= 0 and hi <= 65535.0:
        scaled = a * (255.0 / 65535.0)
    else:
        scaled = (a - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(a)
    return np.clip(np.round(scaled), 0, 255).astype(np.uint8)


def _pil_to_array(im) -> np.ndarray:
    """A loaded Pillow image -> uint8 HxW, HxWx3 or HxWx4 (alpha kept for compositing)."""
    if im.mode in _SIXTEEN_BIT_MODES:
        # Pillow's convert("RGB"/"L") clips these at 255: a 16-bit grey photo
        # would come out almost all white.
        return _grey_to_uint8(np.asarray(im), sixteen_bit=True)
    if im.mode == "I":
        a = np.asarray(im)
        # 32-bit integer data: 16-bit when it fits (how TIFF/PNG readers hand over 16-bit
        # grey), otherwise its own range.
        return _grey_to_uint8(a, sixteen_bit=a.size > 0 and int(a.min()) >= 0 and int(a.max()) <= 65535)
    if im.mode == "F":
        return _grey_to_uint8(np.asarray(im), sixteen_bit=False)
    # 16-bit RGB(A) and grey+alpha PNGs: Pillow itself reduces them to 8 bits per
    # channel by keeping the high byte (x >> 8): within one level of x * 255 / 65535
    # rounded and never clipped, so they need nothing here.
    if im.mode in ("RGBA", "LA", "PA", "La", "RGBa") or (im.mode == "P" and "transparency" in im.info):
        im = im.convert("RGBA")
    elif im.mode not in ("RGB", "L"):
        im = im.convert("RGB")
    return np.asarray(im)


def _bomb_message(what: str, err: Exception, limit: int) -> str:
    # Pillow refuses on its own (in Image.open) past twice Image.MAX_IMAGE_PIXELS; its
    # message names both counts: "Image size (400000000 pixels) exceeds limit of
    # 178956970 pixels, could be decompression bomb DOS attack."
    text = str(err)
    m = re.search(r"\((\d+) pixels\)", text)
    claimed = f"{int(m.group(1)):,} pixels" if m else "more pixels than the decoder allows"
    m = re.search(r"limit of (\d+) pixels", text)
    if m and int(m.group(1)) < limit:  # Pillow's fixed ceiling: --max_pixels cannot lift it
        return f"{what}: {claimed} is over the decoder's limit of {int(m.group(1)):,} pixels; downscale it"
    return f"{what}: {claimed} is over the limit of {limit:,} pixels; downscale it or raise --max_pixels"


def decode_image_bytes(data: bytes, what: str = "image", max_pixels: int | None = None) -> np.ndarray:
    """Encoded image bytes -> uint8 HxWx3, or UserError naming the problem.

    ``max_pixels`` (default DEFAULT_MAX_PIXELS) is checked against the header before
    the pixels are decoded; a larger image (or one Pillow itself calls a decompression
    bomb) raises ImageTooLarge, a UserError with a one-line message. Grayscale is
    replicated to RGB, alpha composited on white, and 16-bit, 32-bit and float images
    are scaled to 8 bits (see `_grey_to_uint8`), not clipped. The EXIF orientation is
    applied, so a phone photo comes out upright.
    """
    if not data:
        raise UserError(f"{what}: file is empty; pass a JPEG, PNG, BMP, GIF or WebP image")
    return _decode(io.BytesIO(data), what, max_pixels)


def _pixel_limit(max_pixels: int | None) -> int:
    limit = DEFAULT_MAX_PIXELS if max_pixels is None else int(max_pixels)
    if limit < 1:
        raise UserError(f"max_pixels must be at least 1, got {limit}")
    return limit


def max_file_bytes(max_pixels: int | None = None) -> int:
    """The largest file `load_image_file` reads: FILE_BYTES_PER_PIXEL per pixel of the
    budget plus 1 MB of headers (320 MB at the default 40 megapixels)."""
    return FILE_BYTES_PER_PIXEL * _pixel_limit(max_pixels) + (1 << 20)


def _upright(im):
    """Apply the EXIF orientation (issue 27 case 20: phone photos were encoded sideways,
    so the upright copy found other neighbours). Width x height, which the pixel budget
    checks, is the same either way. A malformed EXIF block leaves the image as stored."""
    from PIL import ImageOps

    try:
        if im.getexif().get(0x0112, 1) not in (2, 3, 4, 5, 6, 7, 8):
            return im  # most images: no copy
    except Exception:  # noqa: BLE001 - any broken EXIF block: decode the image as stored
        return im
    return ImageOps.exif_transpose(im)


def _decode(fp: BinaryIO, what: str, max_pixels: int | None) -> np.ndarray:
    """Decode the image in file object ``fp``: Pillow reads the header first, so a file
    that is no image is refused after a few KB and an over-budget one before its pixels."""
    from PIL import Image, UnidentifiedImageError

    limit = _pixel_limit(max_pixels)
    try:
        with Image.open(fp, formats=_PIL_FORMATS) as im:  # reads the header only
            width, height = im.size
            if width * height > limit:
                raise ImageTooLarge(f"{what}: {width}x{height} pixels is over the limit of {limit:,} "
                                    "pixels; downscale it or raise --max_pixels")
            im.load()
            arr = _pil_to_array(_upright(im))
    except UserError:
        raise
    except Image.DecompressionBombError as e:
        raise ImageTooLarge(_bomb_message(what, e, limit)) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError, IndexError, KeyError,
            TypeError, ZeroDivisionError, struct.error) as e:
        # Any bytes can arrive (uploads, a stray file with an image extension) and
        # Pillow's parsers raise all of these on malformed headers.
        raise UserError(f"{what}: cannot decode image ({e.__class__.__name__}); "
                        "pass a JPEG, PNG, BMP, GIF or WebP file") from None
    return to_rgb_uint8(arr, what)


def load_image_file(path: str, max_pixels: int | None = None) -> np.ndarray:
    """Read one image file -> uint8 HxWx3 (UserError if missing, undecodable or too large).

    A file over `max_file_bytes` is refused (ImageTooLarge) before a byte is read, and
    the rest is read only as far as the decoder needs (issue 27 case 19: a 6 GB file
    named .jpg ran a build out of memory; a 3 GB non-image was read whole).
    """
    if not os.path.isfile(path):
        raise UserError(f"image not found: {path}")
    try:
        with open(path, "rb") as f:
            size, cap = os.fstat(f.fileno()).st_size, max_file_bytes(max_pixels)
            if size > cap:
                raise ImageTooLarge(f"{path}: file is {size:,} bytes, over the limit of {cap:,} bytes "
                                    f"({FILE_BYTES_PER_PIXEL} per pixel of the pixel budget); "
                                    "downscale it or raise --max_pixels")
            if size == 0:
                raise UserError(f"{path}: file is empty; pass a JPEG, PNG, BMP, GIF or WebP image")
            return _decode(f, path, max_pixels)
    except OSError as e:
        raise UserError(f"cannot read {path}: {e.strerror}") from None


def resize_uint8(img: np.ndarray, size: int) -> np.ndarray:
    from PIL import Image

    if img.shape[0] == size and img.shape[1] == size:
        return img
    return np.asarray(Image.fromarray(img).resize((size, size), Image.BILINEAR))


def list_image_files(root: str) -> ImageListing:
    """Every image file under ``root`` with its class (first subfolder, or None), sorted.

    The project's one folder lister (training, evaluation and indexing read folders
    alike). Files with other extensions are listed in ``unsupported`` so callers can say
    what they skipped; dot-files and dot-folders (.DS_Store, .git, our own temps) are
    never read. Symbolic links to folders are never followed (no cycles, no escape) and
    links to files are followed only when the file lies inside ``root``; the others are
    counted in ``links``. Iterative, so any depth lists (os.walk recursed: a tree 1,100
    levels deep was a RecursionError, issue 27 case 19). Names that are not valid UTF-8
    come back surrogate-escaped (os.fsencode turns them back into the original bytes).
    """
    if not os.path.isdir(root):
        raise UserError(f"image folder not found: {root}")
    real_root = os.path.realpath(root)
    out = ImageListing([], [])
    stack: list[tuple[str, str | None]] = [(root, None)]
    while stack:
        folder, cls = stack.pop()
        try:
            with os.scandir(folder) as it:
                children = sorted(it, key=lambda e: e.name)
        except OSError:
            out.unlisted.append(folder)
            continue
        subdirs = []
        for e in children:
            if e.name.startswith("."):
                out.hidden += 1
            elif e.is_symlink():
                target = os.path.realpath(e.path)
                inside = os.path.commonpath([real_root, target]) == real_root
                if os.path.isfile(target) and inside and e.name.lower().endswith(IMAGE_EXTENSIONS):
                    out.entries.append((e.path, cls))
                elif os.path.isfile(target) and inside:
                    out.unsupported.append(e.path)
                else:
                    out.links.append(e.path)
            elif e.is_dir(follow_symlinks=False):
                subdirs.append((e.path, e.name if cls is None else cls))
            elif e.name.lower().endswith(IMAGE_EXTENSIONS):
                out.entries.append((e.path, cls))
            else:
                out.unsupported.append(e.path)
        stack.extend(reversed(subdirs))  # depth first, in name order, as os.walk listed
    return out
