"""TensorFlow's decode of one encoded image, to the same pixels as the Python path.

The Python path (``bgan_tf.data.images.decode_image_bytes``: Pillow, used by index
build, query, the search service and training folders) is the reference; the SavedModel's
``encode_bytes`` decodes with this module so a TF Serving client sending file bytes gets
the index's codes bit for bit (issue 29 item 5). What makes them agree:

- JPEG: ``dct_method="INTEGER_ACCURATE"`` (libjpeg's ISLOW IDCT, Pillow's choice) with
  fancy upsampling (both defaults). TensorFlow's default IDCT (IFAST) differed by up to 19
  grey levels at quality 100 (3-8 at quality 50-95). Grey and CMYK JPEGs agree too.
- The EXIF orientation of a JPEG (APP1 ``Exif`` IFD0 tag 0x0112) or PNG (``eXIf``) is applied, as
  Pillow's ``ImageOps.exif_transpose`` does on the Python path (issue 27 case 20).
- PNG with alpha (grey+alpha, RGBA, a palette with a tRNS chunk) is composited on white
  to the Python path's float32 result (computed exactly in integers); TensorFlow alone
  drops alpha (a transparent pixel came out black, up to 255 levels off).
- 16-bit PNG: grey is x * 255 / 65535 rounded (the Python path's ``_grey_to_uint8``);
  colour and grey+alpha keep the high byte (what Pillow's 16-bit unpackers do).

Not identical (docs/serving.md): a GIF with a transparent colour (Pillow composites it on
white, TensorFlow's GIF decoder gives black), and WebP/TIFF, which ``encode_bytes``
refuses.
"""

from __future__ import annotations

# Recorded in the export metadata (signatures.encode_bytes.decoder): exports made before
# this contract decoded with TensorFlow's defaults and record nothing, so a client or
# index can tell whether file bytes sent to a version give the Python path's codes.
DECODER_CONTRACT = "python-path-pixels-v1"
JPEG_MAGIC = b"\xff\xd8\xff"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_PAD = 16  # zero bytes appended so a read past the end gives zeros, never an op error
# At most this many JPEG segments and IFD entries are walked: a real file has a handful;
# a crafted one cannot make the walk long.
_MAX_SEGMENTS = 64
_MAX_IFD_ENTRIES = 256
# PNG chunks walked looking for eXIf: encoders split the image data into chunks of 8-64 KB,
# so this covers a 250 MB file at 8 KB a chunk (about 50 us a chunk).
_MAX_PNG_CHUNKS = 32768


def starts_with(data, prefix: bytes):
    """bool: the scalar string ``data`` begins with ``prefix``."""
    import tensorflow as tf

    return tf.equal(tf.strings.substr(data, 0, len(prefix)), prefix)


def read_uint(padded, offset, nbytes: int, little_endian):
    """The unsigned ``nbytes``-byte integer at ``offset`` (int or int64 tensor) of a scalar
    string padded with at least ``nbytes`` zero bytes, as int64; 0 past the end.
    ``little_endian``: a Python bool or a bool tensor."""
    import tensorflow as tf

    size = tf.cast(tf.strings.length(padded), tf.int64) - nbytes
    offset = tf.cast(offset, tf.int64)
    inside = tf.logical_and(offset >= 0, offset <= size)
    raw = tf.io.decode_raw(tf.strings.substr(padded, tf.clip_by_value(offset, 0, tf.maximum(size, 0)), nbytes),
                           tf.uint8)
    raw = tf.cast(tf.ensure_shape(raw, (nbytes,)), tf.int64)
    le = tf.constant([256 ** i for i in range(nbytes)], tf.int64)
    value = tf.reduce_sum(raw * tf.where(tf.cast(little_endian, tf.bool), le, tf.reverse(le, [0])))
    return tf.where(inside, value, tf.constant(0, tf.int64))


def _jpeg_exif(padded, n):
    """(start of the TIFF block, end of its APP1 segment) of a JPEG's first ``Exif``
    segment before the scan, or (-1, 0)."""
    import tensorflow as tf

    def seg_cond(pos, tiff, end, i):
        return tf.logical_and(tf.logical_and(tiff < 0, pos + 4 <= n), i < _MAX_SEGMENTS)

    def seg_body(pos, tiff, end, i):
        ff, marker = read_uint(padded, pos, 1, False), read_uint(padded, pos + 1, 1, False)
        length = read_uint(padded, pos + 2, 2, False)
        exif = tf.logical_and(tf.equal(marker, 0xE1), tf.equal(tf.strings.substr(
            padded, tf.minimum(pos + 4, n), 6), b"Exif\0\0"))
        stop = tf.logical_or(tf.not_equal(ff, 0xFF), tf.logical_or(tf.equal(marker, 0xDA), tf.equal(marker, 0xD9)))
        fill = tf.equal(marker, 0xFF)  # fill bytes before a marker
        new_pos = tf.where(stop, n, tf.where(fill, pos + 1, pos + 2 + length))
        new_tiff = tf.where(tf.logical_and(exif, tf.logical_not(stop)), pos + 10, tf.constant(-1, tf.int64))
        return new_pos, new_tiff, pos + 2 + length, i + 1

    _, tiff, end, _ = tf.while_loop(seg_cond, seg_body, (tf.constant(2, tf.int64), tf.constant(-1, tf.int64),
                                                         tf.constant(0, tf.int64), tf.constant(0)))
    return tiff, end


def _png_exif(padded, n):
    """(start of the TIFF block, end of the chunk) of a PNG's ``eXIf`` chunk, or (-1, 0).
    Pillow reads it wherever it is (after the image data too), so every chunk up to IEND
    is walked, at most _MAX_PNG_CHUNKS of them (8 bytes read per chunk, nothing copied)."""
    import tensorflow as tf

    def cond(pos, tiff, end, i):
        return tf.logical_and(tf.logical_and(tiff < 0, pos + 8 <= n), i < _MAX_PNG_CHUNKS)

    def body(pos, tiff, end, i):
        length = read_uint(padded, pos, 4, False)
        kind = tf.strings.substr(padded, tf.minimum(pos + 4, n), 4)
        found = tf.equal(kind, b"eXIf")
        new_pos = tf.where(tf.equal(kind, b"IEND"), n, pos + 12 + length)
        return new_pos, tf.where(found, pos + 8, tf.constant(-1, tf.int64)), pos + 8 + length, i + 1

    _, tiff, end, _ = tf.while_loop(cond, body, (tf.constant(8, tf.int64), tf.constant(-1, tf.int64),
                                                 tf.constant(0, tf.int64), tf.constant(0)))
    return tiff, end


def exif_orientation(data, png: bool = False):
    """int64 1..8: the EXIF orientation of a JPEG (APP1 ``Exif``) or, with ``png``, a PNG
    (``eXIf`` chunk): 1, as stored, when there is none, it is not 2..8, or the block is
    malformed (reads outside the segment count as absent: Pillow reads the block from that
    segment alone)."""
    import tensorflow as tf

    padded = tf.strings.join([data, tf.constant(b"\0" * _PAD)])
    n = tf.cast(tf.strings.length(data), tf.int64)
    tiff, end = (_png_exif if png else _jpeg_exif)(padded, n)
    end = tf.minimum(end, n)
    le = tf.equal(tf.strings.substr(padded, tf.clip_by_value(tiff, 0, n), 2), b"II")
    ifd = tiff + read_uint(padded, tiff + 4, 4, le)
    count = tf.minimum(read_uint(padded, ifd, 2, le), _MAX_IFD_ENTRIES)

    def ifd_cond(i, found):
        return tf.logical_and(i < count, found < 0)

    def ifd_body(i, found):
        entry = ifd + 2 + 12 * i
        tag, kind = read_uint(padded, entry, 2, le), read_uint(padded, entry + 2, 2, le)
        value = tf.where(tf.equal(kind, 4), read_uint(padded, entry + 8, 4, le), read_uint(padded, entry + 8, 2, le))
        hit = tf.logical_and(tf.equal(tag, 0x0112), entry + 12 <= end)
        return i + 1, tf.where(hit, value, found)

    ok = tf.logical_and(tiff >= 0, ifd + 2 <= end)
    start = tf.where(ok, tf.constant(-1, tf.int64), tf.constant(1, tf.int64))
    _, found = tf.while_loop(ifd_cond, ifd_body, (tf.constant(0, tf.int64), start))
    return tf.where(tf.logical_and(found >= 2, found <= 8), found, tf.constant(1, tf.int64))


def apply_orientation(image, orientation):
    """[H,W,C] as stored -> upright, for EXIF orientation 1..8 (Pillow's exif_transpose:
    2 mirror, 3 rotate 180, 4 flip, 5 transpose, 6 rotate 90 clockwise, 7 transverse,
    8 rotate 90 counter-clockwise)."""
    import tensorflow as tf

    def t(x):
        return tf.transpose(x, [1, 0, 2])

    branches = [lambda: image, lambda: image, lambda: tf.reverse(image, [1]), lambda: tf.reverse(image, [0, 1]),
                lambda: tf.reverse(image, [0]), lambda: t(image), lambda: tf.reverse(t(image), [1]),
                lambda: tf.reverse(t(image), [0, 1]), lambda: tf.reverse(t(image), [0])]
    return tf.switch_case(tf.cast(orientation, tf.int32), branches)


def _on_white(rgba):
    """uint8 [H,W,4] -> [H,W,3] composited on white, equal to the Python path's float32
    ``round(c * a/255 + 255 * (1 - a/255))`` (``bgan_tf.data.images.to_rgb_uint8``).

    Computed exactly in uint16, (c*a + 255*(255-a) + 127) // 255 (at most 65152), so the
    decoded image costs 2 bytes a channel, not float32's 4. The two agree everywhere: the
    exact quotient k/255 is never within 1/510 of a half (255 is odd), far beyond float32's
    rounding error at 255.
    """
    import tensorflow as tf

    def composite():
        # One channel at a time, so no [H,W,3] uint16 copy is held (measured in
        # docs/serving.md).
        u16 = tf.uint16
        alpha = tf.cast(rgba[..., 3], u16)
        white = tf.constant(255, u16) * (tf.constant(255, u16) - alpha) + tf.constant(127, u16)
        return tf.stack([tf.cast((tf.cast(rgba[..., c], u16) * alpha + white) // tf.constant(255, u16), tf.uint8)
                         for c in range(3)], axis=-1)

    # An opaque alpha channel (screenshots, exported graphics) composites to its colours.
    return tf.cond(tf.reduce_all(tf.equal(rgba[..., 3], 255)), lambda: rgba[..., :3], composite)


def _png(data):
    """A PNG -> uint8 [H,W,3] as the Python path decodes it (alpha, 16-bit; see above)."""
    import tensorflow as tf

    padded = tf.strings.join([data, tf.constant(b"\0" * _PAD * 2)])
    depth, colour = read_uint(padded, 24, 1, False), read_uint(padded, 25, 1, False)
    # Alpha where Pillow composites: grey+alpha, RGBA, palette (with a tRNS chunk; without
    # one every alpha is 255 and compositing returns the colours unchanged). A grey or RGB
    # image's tRNS colour key is kept as a colour by both.
    alpha = tf.logical_or(tf.logical_or(tf.equal(colour, 4), tf.equal(colour, 6)), tf.equal(colour, 3))

    def eight_bit():
        return tf.cond(alpha, lambda: _on_white(tf.io.decode_png(data, channels=4)),
                       lambda: tf.io.decode_png(data, channels=3))

    def sixteen_grey():
        x = tf.cast(tf.io.decode_png(data, channels=1, dtype=tf.uint16), tf.float32) * (255.0 / 65535.0)
        return tf.tile(tf.cast(tf.clip_by_value(tf.round(x), 0.0, 255.0), tf.uint8), [1, 1, 3])

    def sixteen_colour():
        def high(channels):
            return tf.cast(tf.bitwise.right_shift(tf.io.decode_png(data, channels=channels, dtype=tf.uint16),
                                                  tf.constant(8, tf.uint16)), tf.uint8)

        return tf.cond(alpha, lambda: _on_white(high(4)), lambda: high(3))

    image = tf.case([(tf.logical_and(tf.equal(depth, 16), tf.equal(colour, 0)), sixteen_grey),
                     (tf.equal(depth, 16), sixteen_colour)], default=eight_bit)
    return apply_orientation(image, exif_orientation(data, png=True))


def decode_like_python(data):
    """Encoded JPEG/PNG/GIF/BMP bytes -> uint8 [H,W,3], the Python path's pixels.

    JPEG with libjpeg's accurate IDCT and its EXIF orientation applied, PNG with alpha
    composited on white and 16-bit scaled as the Python path does, GIF (first frame) and
    BMP as ``tf.io.decode_image`` gives them (already identical)."""
    import tensorflow as tf

    def jpeg():
        image = tf.io.decode_jpeg(data, channels=3, dct_method="INTEGER_ACCURATE")
        return apply_orientation(image, exif_orientation(data))

    def other():
        return tf.ensure_shape(tf.io.decode_image(data, channels=3, expand_animations=False, dtype=tf.uint8),
                               (None, None, 3))

    return tf.case([(starts_with(data, JPEG_MAGIC), jpeg), (starts_with(data, PNG_MAGIC), lambda: _png(data))],
                   default=other)
