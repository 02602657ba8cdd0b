"""Strategy factory: a flag value -> a tf.distribute strategy."""

from __future__ import annotations

import json
import os

import tensorflow as tf

from bgan_tf.errors import UserError


def configure_cpu_devices(count: int) -> None:
    """Split the CPU into ``count`` logical devices (to run mirrored on CPU).

    Must run before TensorFlow initialises its devices.
    """
    if count <= 1:
        return
    cpus = tf.config.list_physical_devices("CPU")
    try:
        tf.config.set_logical_device_configuration(cpus[0], [tf.config.LogicalDeviceConfiguration()] * count)
    except RuntimeError as e:
        current = len(tf.config.list_logical_devices("CPU"))
        if current != count:
            raise UserError(f"cannot create {count} CPU devices after TensorFlow started ({current} exist): {e}") from None


def make_strategy(name: str, num_cpu_devices: int = 1) -> tf.distribute.Strategy:
    """``one_device`` | ``mirrored`` | ``multi_worker_mirrored``.

    mirrored uses every GPU, or the logical CPU devices when there is none;
    multi_worker_mirrored reads the cluster from TF_CONFIG.
    """
    configure_cpu_devices(num_cpu_devices)
    if name == "one_device":
        gpus = tf.config.list_logical_devices("GPU")
        return tf.distribute.OneDeviceStrategy(gpus[0].name if gpus else "/cpu:0")
    if name == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        devices = [d.name for d in gpus] or [d.name for d in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(devices)
    if name == "multi_worker_mirrored":
        if "TF_CONFIG" not in os.environ:
            raise UserError("--strategy multi_worker_mirrored needs TF_CONFIG describing the cluster "
                            "(see README, 'Run on a GPU cluster')")
        try:
            json.loads(os.environ["TF_CONFIG"])
        except ValueError:
            raise UserError("TF_CONFIG is not valid JSON") from None
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise UserError(f"unknown --strategy {name!r}: use one_device, mirrored or multi_worker_mirrored")


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """Only the chief writes checkpoints, logs, samples and the final model."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return True
    task_type, task_id = resolver.task_type, resolver.task_id
    return task_type is None or task_type == "chief" or (task_type == "worker" and task_id == 0 and
                                                         "chief" not in (resolver.cluster_spec().as_dict() or {}))
