"""Bounds and defaults of the search service's knobs, and the check that applies them.

`bgan_tf.search.service.create_app` checks its knobs with `check_settings`
against `LIMITS`, and `python -m bgan_tf.serve` bounds its flags by the same
table at parse time (flags/search_flags.py). No web framework is imported here,
so parsing flags does not import FastAPI.
"""

from __future__ import annotations

import re
from typing import Sequence

import numpy as np

from bgan_tf.errors import UserError

# Host names a loopback service answers to by default (serve --allowed_hosts).
LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1")
DEFAULT_TYPES = ("image/jpeg", "image/png", "image/gif", "image/bmp", "image/webp")
# Defaults of the other create_app knobs; the serve flags default to the same values.
DEFAULTS = {"max_upload_bytes": 10 * 1024 * 1024, "max_k": 100, "search_threads": 2, "max_batch": 64,
            "pixel_budget": 48_000_000}

# The service's pixel budget per upload: 16 megapixels (a 48 MB decoded image) takes
# any phone photo, while the CLI's larger default (data.DEFAULT_MAX_PIXELS) is for
# files the operator chose. A few concurrent 100-megapixel uploads would otherwise
# take gigabytes and stall every other client for seconds.
DEFAULT_MAX_PIXELS = 16_000_000
# (lowest, highest) value of each create_app knob; `python -m bgan_tf.serve` checks its
# flags against the same bounds at parse time (flags/search_flags.py).
LIMITS: dict[str, tuple[int, int]] = {
    "max_upload_bytes": (1, 1 << 30),
    "max_k": (1, 10_000),
    "search_threads": (1, 64),
    "max_batch": (1, 4096),
    # Pillow refuses anything above twice Image.MAX_IMAGE_PIXELS (178,956,970) itself.
    "max_pixels": (1, 178_956_970),
    # Decoded pixels in flight across ALL requests (service.create_app): an upload takes
    # its header's pixel count before decoding and returns it once shrunk to the
    # encoder's input, so concurrent uploads cost at most ~budget x 3 bytes (plus the
    # decoder's transients) and wait, rather than allocate, beyond it. The default
    # admits three 16-megapixel uploads at once. It must be at least max_pixels.
    "pixel_budget": (1, 1_000_000_000),
}


def check_settings(*, max_upload_bytes: int, allowed_types: Sequence[str], max_k: int, search_threads: int,
                   max_batch: int, max_pixels: int, pixel_budget: int = DEFAULTS["pixel_budget"]) -> list[str]:
    """The content types to accept (lowercased); UserError naming the first bad setting.

    A service started with max_k 0 or no content types would refuse every request.
    """
    values = {"max_upload_bytes": max_upload_bytes, "max_k": max_k, "search_threads": search_threads,
              "max_batch": max_batch, "max_pixels": max_pixels, "pixel_budget": pixel_budget}
    for name, value in values.items():
        lo, hi = LIMITS[name]
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not lo <= value <= hi:
            raise UserError(f"{name} must be an integer from {lo:,} to {hi:,}, got {value!r}")
    if pixel_budget < max_pixels:
        raise UserError(f"pixel_budget ({pixel_budget:,}) must be at least max_pixels ({max_pixels:,}): "
                        "an upload of max_pixels pixels could never be decoded")
    if isinstance(allowed_types, str):
        allowed_types = [allowed_types]
    types = [str(t).strip().lower() for t in allowed_types]
    types = [t for t in types if t]
    if not types:
        raise UserError("allowed_types is empty: the service would refuse every upload; "
                        f"pass image types such as {','.join(DEFAULT_TYPES)}")
    bad = [t for t in types if not is_image_type(t)]
    if bad:
        raise UserError(f"allowed_types must be image/* content types, not {', '.join(map(repr, bad))}")
    return types


def is_image_type(content_type: str) -> bool:
    """Whether a (lowercased) content type is an image/* type the service may accept."""
    return re.fullmatch(r"image/[a-z0-9][a-z0-9.+-]*", content_type) is not None
