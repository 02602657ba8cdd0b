"""BGAN's loss terms, each already scaled for tf.distribute.

Every function returns this replica's share of a loss averaged over the
GLOBAL batch: summing the returned values over replicas gives the loss of the
whole batch (what tf.distribute's gradient all-reduce, a SUM, expects). A
plain reduce_mean per replica would overshoot by the number of replicas.
"""

from __future__ import annotations

import tensorflow as tf

from bgan_tf.config import NBR_FORMS


def _bce_logits(logits, target: float):
    return tf.nn.sigmoid_cross_entropy_with_logits(labels=tf.fill(tf.shape(logits), target), logits=logits)


def per_example_share(values: tf.Tensor, global_batch: tf.Tensor) -> tf.Tensor:
    """sum(values) / global_batch: this replica's share of a per-example mean."""
    return tf.reduce_sum(tf.cast(values, tf.float32)) / tf.cast(global_batch, tf.float32)


def neighbourhood_loss(
    z_local: tf.Tensor,
    z_global: tf.Tensor,
    s_block: tf.Tensor,
    same_item: tf.Tensor,
    form: str,
) -> tf.Tensor:
    """Codes must reproduce the neighbourhood structure S.

    z_local [b, L] are this replica's codes, z_global [B, L] the codes of the
    whole global batch (all-gathered), s_block [b, B] the matching S entries
    and same_item [b, B] marks the diagonal (i == j).

    - ``released``: mean over the B x B block of (z_i . z_j - s_ij)^2, no 1/L,
      diagonal included (the 2017 code).
    - ``paper``: mean over off-diagonal pairs of ((1/L) z_i . z_j - s_ij)^2.
    - ``released_scaled``: the released block mean with 1/L; ``released_off_diagonal``:
      without 1/L over off-diagonal pairs (`NBR_FORMS`: one difference each).

    Gradient: the full block loss is symmetric, so its gradient w.r.t. z_i is
    twice the row term's. Each replica differentiates only its rows against
    stop_gradient(z_global) and doubles the gradient (value unchanged), which
    sums over replicas to exactly the one-device gradient.
    """
    dtype = z_local.dtype
    num_bits = tf.cast(tf.shape(z_local)[1], dtype)
    g = tf.cast(tf.shape(z_global)[0], dtype)
    s_block = tf.cast(s_block, dtype)
    inner = tf.matmul(z_local, tf.stop_gradient(z_global), transpose_b=True)
    if form not in NBR_FORMS:
        raise ValueError(f"unknown neighbourhood form {form!r}")
    scaled, diagonal = NBR_FORMS[form]
    sq = tf.square((inner / num_bits if scaled else inner) - s_block)
    if diagonal:
        row_loss = tf.reduce_sum(sq) / (g * g)
    else:
        off = 1.0 - tf.cast(same_item, dtype)
        row_loss = tf.reduce_sum(sq * off) / tf.maximum(g * (g - 1.0), tf.ones_like(g))
    return 2.0 * row_loss - tf.stop_gradient(row_loss)


def quantization_loss(z: tf.Tensor, global_batch) -> tf.Tensor:
    """mean((z - sgn z)^2): pushes the relaxed code towards +-1."""
    target = tf.stop_gradient(tf.where(z >= 0, tf.ones_like(z), -tf.ones_like(z)))
    return per_example_share(tf.reduce_mean(tf.square(z - target), axis=1), global_batch)


def consistency_loss(z: tf.Tensor, z_other: tf.Tensor, global_batch) -> tf.Tensor:
    """mean((z(x) - z(x'))^2) over two views x, x' of each image: their codes agree."""
    return per_example_share(tf.reduce_mean(tf.square(z - z_other), axis=1), global_batch)


def pixel_loss(real: tf.Tensor, recon: tf.Tensor, global_batch) -> tf.Tensor:
    """Per-image pixel MSE (the paper's content term)."""
    return per_example_share(tf.reduce_mean(tf.square(real - recon), axis=[1, 2, 3]), global_batch)


def feature_loss(phi_real: tf.Tensor, phi_recon: tf.Tensor, image_elems: int, global_batch) -> tf.Tensor:
    """||phi(x) - phi(G(z))||^2 / (H*W*3): the released code's content term."""
    d = tf.reduce_sum(tf.square(tf.stop_gradient(phi_real) - phi_recon), axis=1) / float(image_elems)
    return per_example_share(d, global_batch)


def generator_adv_loss(fake_logits: tf.Tensor, global_batch) -> tf.Tensor:
    """The generator's adversarial loss: non-saturating -log D(G(.))."""
    return per_example_share(_bce_logits(fake_logits, 1.0), global_batch)


def discriminator_loss(real_logits: tf.Tensor, fake_logits: tf.Tensor, global_batch) -> tf.Tensor:
    """D's loss on one real and one fake batch: -log D(x) - log(1 - D(G(.)))."""
    return per_example_share(_bce_logits(real_logits, 1.0), global_batch) + per_example_share(
        _bce_logits(fake_logits, 0.0), global_batch
    )


def judged_right(logits: tf.Tensor, real: bool) -> tf.Tensor:
    """How many of ``logits`` D judged right (logit > 0 means "real"), as float32: a
    count, so replicas' counts add up to the global batch's (``real=False``: fakes)."""
    says_real = tf.cast(logits, tf.float32) > 0.0
    return tf.reduce_sum(tf.cast(says_real if real else tf.logical_not(says_real), tf.float32))
