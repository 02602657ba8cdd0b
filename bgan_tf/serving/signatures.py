"""The graphs behind the exported signatures: packing, hex, resizing, and the pixel limit.

``serving_fns`` returns the two functions ``bgan_tf.serving.saved_model`` exports as
``serving_default`` (uint8 images) and ``encode_bytes`` (encoded files);
``pack_bits_tf`` is shared with the TFLite graph (``bgan_tf.serving.tflite``).

``encode_bytes`` takes bytes from anyone who can reach a TF Serving deployment, so it
reads each file's pixel count from its header (``claimed_pixels``; for a GIF, every
frame's) and refuses an image over ``max_pixels`` with InvalidArgument before one pixel is decoded,
as the Python path does (``bgan_tf.data.images``): a 1 MB PNG can claim 20000x20000
pixels (1.2 GB decoded). Each accepted image is decoded and resized to the input size
one at a time (``tf.map_fn`` with ``parallel_iterations=1``) and resized from uint8, so
a request holds at most one full-size decoded image (``max_pixels`` x 3 bytes) besides
the batch at the input size.
"""

from __future__ import annotations

from bgan_tf.serving.tf_decode import JPEG_MAGIC, PNG_MAGIC, decode_like_python, read_uint, starts_with

# First bytes of the formats tf.io.decode_image reads (WebP is not among them).
_GIFS = (b"GIF87a", b"GIF89a")
_BMP = b"BM"
_MAGIC = (JPEG_MAGIC, PNG_MAGIC, *_GIFS, _BMP)
# The PNG and BMP header bytes read end before byte 26; shorter files are padded with
# zeros (a truncated header then claims 0 pixels and the decoder names the damage).
_HEADER_PAD = 32


def pack_bits_tf(codes, num_bits: int):
    """[N, L] signs -> [N, ceil(L/8)] uint8, numpy.packbits (big-endian) order."""
    import tensorflow as tf

    nbytes = (num_bits + 7) // 8
    bits = tf.cast(codes >= 0, tf.int32)
    pad = nbytes * 8 - num_bits
    if pad:
        bits = tf.pad(bits, [[0, 0], [0, pad]])  # packbits pads with zeros at the end
    bits = tf.reshape(bits, [-1, nbytes, 8])
    weights = tf.constant([128, 64, 32, 16, 8, 4, 2, 1], tf.int32)
    return tf.cast(tf.reduce_sum(bits * weights, axis=-1), tf.uint8)


def hex_tf(packed):
    """[N, B] uint8 -> [N] hex strings (two lowercase digits per byte)."""
    import tensorflow as tf

    table = tf.constant([f"{i:02x}" for i in range(256)])
    return tf.strings.reduce_join(tf.gather(table, tf.cast(packed, tf.int32)), axis=-1)


def _resize_like_preprocess(image, size: int):
    """uint8 or float32 [H,W,3] -> float32 [size,size,3], the same resize as ``Preprocess``.

    A uint8 image is resized as it is (tf.image.resize computes in float and returns
    float32, the same values as resizing its float32 copy) so no full-size float32 copy
    (4 bytes a channel) is made.
    """
    import tensorflow as tf

    shape = tf.shape(image)
    return tf.cond(
        tf.logical_and(tf.equal(shape[0], size), tf.equal(shape[1], size)),
        lambda: tf.cast(image, tf.float32),
        lambda: tf.image.resize(image, (size, size), method="bilinear"),
    )


def _int32_le(padded, offset: int):
    import tensorflow as tf

    value = read_uint(padded, offset, 4, little_endian=True)
    return tf.where(value >= 2 ** 31, value - 2 ** 32, value)


def _gif_frame_pixels(data, stop_above: int):
    """int64: the pixels of every frame of a GIF together (sum of width x height), read
    from its block structure without decoding.

    TensorFlow's GIF decoder (giflib's DGifSlurp) holds every frame's raster (one byte a
    pixel) and returns the largest frame's size, not the logical screen's: a 1 KB GIF can
    claim a 1x1 screen and a 60000x60000 frame, or a thousand full-size frames. So the
    walk visits each block: the header and global colour table, then extensions
    (0x21, skipped by their sub-blocks) and image descriptors (0x2C: width x height
    added, local colour table and LZW data skipped) up to the trailer or the first byte
    that is neither (the decoder then refuses the file itself). One loop step per
    sub-block (at most 255 bytes each); it stops once the count passes ``stop_above``.
    """
    import tensorflow as tf

    b = tf.cast(tf.io.decode_raw(data, tf.uint8), tf.int64)
    n = tf.size(b, out_type=tf.int64)

    def at(i):  # byte i, or 0 past the end (a truncated file then ends the walk)
        i = tf.cast(i, tf.int64)
        return tf.where(i < n, tf.gather(b, tf.minimum(i, tf.maximum(n - 1, 0))), tf.constant(0, tf.int64))

    def u16(i):
        return at(i) + 256 * at(i + 1)

    def table(flags_byte):  # size of the colour table a flags byte announces
        return tf.where(flags_byte >= 128, 3 * tf.bitwise.left_shift(tf.constant(2, tf.int64), flags_byte % 8),
                        tf.constant(0, tf.int64))

    # state: position, pixels so far, in_sub_blocks (0: at a block introducer), done
    def cond(pos, total, sub, done):
        return tf.logical_and(tf.logical_not(done), tf.logical_and(pos < n, total <= stop_above))

    def body(pos, total, sub, done):
        byte = at(pos)
        in_sub = tf.equal(sub, 1)
        is_ext = tf.logical_and(tf.logical_not(in_sub), tf.equal(byte, 0x21))
        is_img = tf.logical_and(tf.logical_not(in_sub), tf.equal(byte, 0x2C))
        area = u16(pos + 5) * u16(pos + 7)
        img_next = pos + 10 + table(at(pos + 9)) + 1  # descriptor, local table, LZW code size
        sub_next = tf.where(tf.equal(byte, 0), pos + 1, pos + byte + 1)
        new_pos = tf.where(in_sub, sub_next, tf.where(is_ext, pos + 2, tf.where(is_img, img_next, pos)))
        new_total = total + tf.where(is_img, area, tf.constant(0, tf.int64))
        new_sub = tf.where(in_sub, tf.where(tf.equal(byte, 0), 0, 1), tf.where(is_ext | is_img, 1, 0))
        new_done = tf.logical_and(tf.logical_not(in_sub), tf.logical_not(is_ext | is_img))
        return new_pos, new_total, tf.cast(new_sub, tf.int32), new_done

    start = 13 + table(at(10))
    _, total, _, _ = tf.while_loop(cond, body, (start, tf.constant(0, tf.int64), tf.constant(0, tf.int32),
                                                tf.constant(False)))
    return total


def claimed_pixels(data, stop_above: int):
    """int64: how many pixels a JPEG/PNG/GIF/BMP file's header says the decoder will
    produce; nothing is decoded.

    JPEG: ``tf.image.extract_jpeg_shape`` (the SOF marker); PNG: IHDR's big-endian width
    and height (bytes 16..24); BMP: the info header's little-endian int32 width and
    height (bytes 18..26; a negative height means top-down rows); GIF: every frame's
    pixels together (``_gif_frame_pixels``, which stops counting past ``stop_above``).
    Anything else gives 0: the caller's format check refuses it first.
    """
    import tensorflow as tf

    padded = tf.strings.join([data, tf.constant(b"\0" * _HEADER_PAD)])

    def jpeg():
        hw = tf.cast(tf.image.extract_jpeg_shape(data)[:2], tf.int64)
        return hw[0] * hw[1]

    def png():
        return read_uint(padded, 16, 4, False) * read_uint(padded, 20, 4, False)

    def bmp():
        return tf.abs(_int32_le(padded, 18)) * tf.abs(_int32_le(padded, 22))

    return tf.case([(starts_with(data, JPEG_MAGIC), jpeg), (starts_with(data, PNG_MAGIC), png),
                    (tf.logical_or(starts_with(data, _GIFS[0]), starts_with(data, _GIFS[1])),
                     lambda: _gif_frame_pixels(data, stop_above)),
                    (starts_with(data, _BMP), bmp)],
                   default=lambda: tf.constant(0, tf.int64))


def serving_fns(encoder, num_bits: int, input_size: int, max_pixels: int):
    """The two signature functions (plain Python; ExportArchive traces them).

    ``max_pixels``: the largest width x height ``encode_bytes`` decodes, read from the
    header first; a larger image is InvalidArgument naming the limit.
    """
    import tensorflow as tf

    def encode(x):
        # An empty batch skips the network: oneDNN's fused batch-norm kernels (TensorFlow's
        # default on x86) fail on a zero-size batch ("Incompatible shapes: [64] vs.
        # [0,32,32,3]"), and there is nothing to encode anyway.
        return tf.cond(tf.shape(x)[0] > 0,
                       lambda: tf.cast(encoder(x, training=False), tf.float32),
                       lambda: tf.zeros((0, num_bits), tf.float32))

    def outputs(codes):
        codes = tf.ensure_shape(tf.cast(codes, tf.float32), (None, num_bits))
        packed = pack_bits_tf(codes, num_bits)
        return {"codes": codes, "packed": packed, "hex": hex_tf(packed)}

    def serve_images(images):
        # The signature's input spec fixes the dtype; a runtime check (not
        # constant-folded, unlike tf.rank) gives rank/channel errors a clear message.
        images = tf.ensure_shape(images, (None, None, None, 3), name="images_must_be_NxHxWx3")
        shape = tf.shape(images)
        with tf.control_dependencies([tf.debugging.Assert(
                tf.logical_or(tf.equal(shape[0], 0), tf.logical_and(shape[1] > 0, shape[2] > 0)),
                ["images must have height and width >= 1; got shape", shape])]):
            # Resized from uint8 (the values Preprocess's float resize gives), so the graph
            # holds the request and the batch at the input size, not a float32 copy of
            # the request four times its size. An empty batch may have any H and W.
            x = tf.cond(tf.logical_or(tf.equal(shape[0], 0),
                                      tf.logical_and(tf.equal(shape[1], input_size), tf.equal(shape[2], input_size))),
                        lambda: tf.cast(images, tf.float32),
                        lambda: tf.image.resize(images, (input_size, input_size), method="bilinear"))
        return outputs(encode(x))

    def decode_one(args):
        data, index = args
        known = tf.reduce_any(tf.stack([starts_with(data, m) for m in _MAGIC]))
        with tf.control_dependencies([tf.debugging.Assert(
                known, ["image_bytes item", index, "is not a JPEG, PNG, GIF or BMP file; its first bytes are",
                        tf.io.decode_raw(tf.strings.substr(data, 0, 8), tf.uint8),
                        "- send the encoded file bytes (base64 as {\"b64\": ...} in REST requests)"],
                summarize=8)]):
            pixels = claimed_pixels(data, max_pixels)
        # Checked before decoding: the header's claim is what the decoder would allocate.
        with tf.control_dependencies([tf.debugging.Assert(
                pixels <= max_pixels,
                ["image_bytes item", index, "claims", pixels, "pixels (width x height, every frame of a GIF), "
                 "over the limit of", max_pixels, "set at export (--max_pixels); downscale it before sending"])]):
            # The Python path's pixels (tf_decode: JPEG's accurate IDCT, EXIF orientation,
            # alpha on white), so codes equal an index's bit for bit (issue 29 item 5).
            image = decode_like_python(data)
        image = tf.ensure_shape(image, (None, None, 3))
        decoded_hw = tf.shape(image)[:2]
        with tf.control_dependencies([tf.debugging.Assert(
                tf.reduce_all(decoded_hw > 0),
                ["image_bytes item", index, "decodes to an image with no pixels:", decoded_hw])]):
            return _resize_like_preprocess(image, input_size)

    def serve_bytes(image_bytes):
        image_bytes = tf.ensure_shape(image_bytes, (None,), name="image_bytes_must_be_a_vector")
        n = tf.shape(image_bytes)[0]
        # One image at a time: map_fn's default in a graph decodes up to 10 at once, and
        # each may be max_pixels large.
        images = tf.map_fn(decode_one, (image_bytes, tf.range(n)), parallel_iterations=1,
                           fn_output_signature=tf.TensorSpec((input_size, input_size, 3), tf.float32))
        return outputs(encode(images))

    return serve_images, serve_bytes
