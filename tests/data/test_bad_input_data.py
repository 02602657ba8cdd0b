"""Issue 27, the data wing: bad training input and damaged caches are one line or rebuilt.

- case 15: non-finite pixels in a float npz are an error naming the file and the count
  (one NaN used to make the whole [0, 1] set be read as 0..255);
- case 7: a feature cache that is truncated, of the wrong shape or dtype, or full of NaN
  is rebuilt with a log line (it is the tool's own file); non-finite features from the
  backbone itself are refused before the graph code sees them.
"""

from __future__ import annotations

import numpy as np
import pytest

from bgan_tf.data.sources import load_npz
from bgan_tf.errors import UserError


def test_npz_with_one_nan_pixel_is_refused_with_the_count(tmp_path):
    """Issue 27 case 15."""
    images = np.full((4, 8, 8), 0.5, np.float32)
    images[1, 2, 3] = np.nan
    images[2, 0, 0] = np.inf
    path = tmp_path / "a.npz"
    np.savez(path, images=images)
    with pytest.raises(UserError, match=r"a\.npz: 'images' holds 2 non-finite values"):
        load_npz(str(path))
    np.savez(path, images=np.full((4, 8, 8), 0.5, np.float32))  # the clean set still reads as [0, 1]
    assert int(load_npz(str(path)).images.max()) in (127, 128)
