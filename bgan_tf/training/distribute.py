"""Strategy factory and the multi-worker plumbing around it.

- ``make_strategy(name)``: a flag value -> a tf.distribute strategy (one per
  process: MultiWorkerMirroredStrategy configures collective ops at startup
  and cannot be created twice, so the strategy is cached).
- ``is_chief`` / ``chief_from_tf_config``: who writes files in a cluster.
- ``shard_by_data``: the auto-shard policy our in-memory pipeline needs.

See docs/distributed.md for how a cluster run is set up.
"""

from __future__ import annotations

import json
import os

import tensorflow as tf

from bgan_tf.errors import UserError

_STRATEGIES: dict[tuple[str, int], tf.distribute.Strategy] = {}


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
    multi_worker_mirrored reads the cluster from TF_CONFIG and must be created
    before any other TensorFlow op runs in the process (collective ops are
    configured at startup). One strategy per (name, devices) per process.
    """
    key = (name, int(num_cpu_devices))
    if key in _STRATEGIES:
        return _STRATEGIES[key]
    if name == "multi_worker_mirrored":
        if "TF_CONFIG" not in os.environ:
            raise UserError("--strategy multi_worker_mirrored needs TF_CONFIG describing the cluster "
                            "(see docs/distributed.md, 'Run on a GPU cluster')")
        try:
            json.loads(os.environ["TF_CONFIG"])
        except ValueError:
            raise UserError("TF_CONFIG is not valid JSON") from None
    configure_cpu_devices(num_cpu_devices)
    if name == "one_device":
        gpus = tf.config.list_logical_devices("GPU")
        strategy = tf.distribute.OneDeviceStrategy(gpus[0].name if gpus else "/cpu:0")
    elif name == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        devices = [d.name for d in gpus] or [d.name for d in tf.config.list_logical_devices("CPU")]
        strategy = tf.distribute.MirroredStrategy(devices)
    elif name == "multi_worker_mirrored":
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
    else:
        raise UserError(f"unknown --strategy {name!r}: use one_device, mirrored or multi_worker_mirrored")
    _STRATEGIES[key] = strategy
    return strategy


def _chief_of(task_type: str | None, task_id: int | None, job_names) -> bool:
    """The chief is the "chief" task, or worker 0 when the cluster has no chief
    task (TF's convention); a process outside any cluster is its own chief."""
    if not task_type:
        return True
    if task_type == "chief":
        return True
    return task_type == "worker" and int(task_id or 0) == 0 and "chief" not in set(job_names or ())


def chief_from_tf_config(tf_config: str | dict | None) -> bool:
    """Chief detection from a TF_CONFIG value alone (no strategy needed)."""
    if not tf_config:
        return True
    cfg = json.loads(tf_config) if isinstance(tf_config, str) else tf_config
    task = cfg.get("task") or {}
    return _chief_of(task.get("type"), task.get("index", 0), (cfg.get("cluster") or {}).keys())


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """Only the chief writes checkpoints, logs, samples and the final model."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return True
    return _chief_of(resolver.task_type, resolver.task_id, (resolver.cluster_spec().as_dict() or {}).keys())


def shard_by_data(dataset: tf.data.Dataset) -> tf.data.Dataset:
    """Shard by DATA when a multi-worker strategy distributes the dataset.

    The training pipeline is built from in-memory arrays, identically on every
    worker (same seed, same permutation), so there are no files to shard. With
    the DATA policy, ``experimental_distribute_dataset`` rebatches each global
    batch of B rows into per-replica batches of B / replicas and hands worker w
    its own slice, so the workers together see exactly the global batch a
    single device would. AUTO would reach the same policy after failing to
    find files (with a warning); this states it. Mirrored (one worker) and
    one-device strategies ignore the option.
    """
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)


def synchronize_batch_norm(model) -> int:
    """Make every BatchNormalization layer inside ``model`` (nested models
    included, e.g. a backbone built without the option) use global batch
    statistics across replicas. Returns how many layers it switched.

    Keras reads ``synchronized`` when the layer runs, so this works on a
    built model, before the first traced step."""
    import keras

    count = 0
    seen = set()
    stack = [model]
    while stack:
        layer = stack.pop()
        if id(layer) in seen:
            continue
        seen.add(id(layer))
        if isinstance(layer, keras.layers.BatchNormalization):
            if not layer.synchronized:
                layer.synchronized = True
                count += 1
        stack.extend(getattr(layer, "_layers", None) or [])
        stack.extend(l for l in getattr(layer, "layers", None) or [] if l is not layer)
    return count
