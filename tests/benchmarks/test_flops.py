"""benchmarks/flops.py counts TensorFlow's float operations exactly on layers of known cost."""

import os
import sys

import keras
import pytest
import tensorflow as tf

# realpath: under Bazel this file is a symlink into the source tree, where benchmarks/ is.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.realpath(__file__)))),
                                "benchmarks"))
from flops import function_flops  # noqa: E402


def test_dense_is_two_flops_per_multiply_add_plus_the_bias():
    dense = keras.layers.Dense(32)
    dense.build((8, 64))
    count = function_flops(lambda x: dense(x), tf.TensorSpec((8, 64)))
    assert count.total == 2 * 8 * 64 * 32 + 8 * 32
    assert count.by_type() == {"MatMul": 2 * 8 * 64 * 32, "BiasAdd": 8 * 32}


@pytest.mark.parametrize("strides,out", [(1, 16), (2, 8)])
def test_conv2d_counts_every_output_position(strides, out):
    conv = keras.layers.Conv2D(16, 3, strides=strides, padding="same")
    conv.build((2, 16, 16, 8))
    count = function_flops(lambda x: conv(x), tf.TensorSpec((2, 16, 16, 8)))
    macs = 2 * out * out * 16 * 3 * 3 * 8
    assert count.by_type() == {"Conv2D": 2 * macs, "BiasAdd": 2 * out * out * 16}
    name = count.heaviest(("Conv2D",))
    assert count.op_types[name] == "Conv2D" and count.by_op[name] == 2 * macs


def test_a_training_step_counts_the_backward_pass():
    # Two stacked Dense layers: the backward pass of each is its weight gradient (the
    # forward's cost again), plus the input gradient of the second one only.
    first, second = keras.layers.Dense(32, use_bias=False), keras.layers.Dense(4, use_bias=False)
    first.build((8, 64))
    second.build((8, 32))

    def step(x):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(second(first(x)))
        return loss, tape.gradient(loss, first.trainable_variables + second.trainable_variables)

    matmuls = function_flops(step, tf.TensorSpec((8, 64))).by_type()["MatMul"]
    f1, f2 = 2 * 8 * 64 * 32, 2 * 8 * 32 * 4
    assert matmuls == 2 * f1 + 3 * f2
    # Without the loss among the outputs its forward matmul is dead (d sum / d y is all ones).
    no_loss = function_flops(lambda x: step(x)[1], tf.TensorSpec((8, 64))).by_type()["MatMul"]
    assert no_loss == 2 * f1 + 2 * f2


def test_control_flow_bodies_are_named_as_uncounted():
    count = function_flops(lambda x: tf.cond(tf.reduce_sum(x) > 0, lambda: tf.matmul(x, x), lambda: x),
                           tf.TensorSpec((4, 4)))
    assert "If" in count.calls() or "StatelessIf" in count.calls()
    assert "MatMul" not in count.by_type()


def test_only_the_work_that_runs_is_counted():
    # A repeated stateless op runs once (grappler merges it) and an op nothing uses not at all.
    def fn(x):
        tf.matmul(x, x, transpose_b=True)  # dead
        return tf.matmul(x, x) + tf.matmul(x, x)

    count = function_flops(fn, tf.TensorSpec((4, 4)))
    assert count.by_type() == {"MatMul": 2 * 4 * 4 * 4, "AddV2": 4 * 4}
    assert count.graph_total == 3 * 2 * 4 * 4 * 4 + 4 * 4


def test_stateful_ops_are_never_merged():
    # Two reads of a variable may differ (a write can come between): neither the reads nor
    # the matmuls that use them are one computation.
    v = tf.Variable(tf.ones((4, 4)))
    count = function_flops(lambda x: tf.matmul(v.read_value(), x) + tf.matmul(v.read_value(), x),
                           tf.TensorSpec((4, 4)))
    assert count.by_type()["MatMul"] == 2 * (2 * 4 * 4 * 4)
