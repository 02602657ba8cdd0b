"""CIFAR-10 with ImageNet MobileNetV2 (torch padding), 32 bits; frozen, or its top fine-tuned.

Command:  python -m bgan_tf.train --config cifar10 \
              --dataset folder:../shared/data/cifar10/train \
              --backbone_weights ../shared/weights/mobilenet_v2_imagenet_torchvision_notop.weights.h5
Cost:     features once (then cached; XNNPACK, ~200 s for the 60,000 images on 2 cores),
          graph (~10 s for 10,000), 6 epochs at batch 64 (~510 s for the paper preset on
          10,000 images; benchmarks/results/cifar10_pbgan.md, whole_run_32).
Result:   P-BGAN protocol, 32 bits, mAP@all / mAP@1000: paper preset 0.353 / 0.522,
          nbr_only 0.374 / 0.541, ITQ 0.279 / 0.461 (benchmarks/cifar10_pbgan.py).

``--config cifar10:finetune``: MobileNetV2 from block_13_expand on trains (its bottom's
activations cached once, float16) at Adam 1e-4, on the diffusion graph, with spectral
norm in D.
Cost:     the whole run, features and bottom activations included, 381 s on a quiet
          2-core Xeon with the paper preset (whole_run_32_ft_lr1e-4_diffusion in
          benchmarks/results/cifar10_pbgan.md; its training 196 s).
Result:   same protocol, seeds 0 and 1: paper preset (spectral norm in D) 0.412 / 0.548 and
          0.426 / 0.548, D's last-epoch accuracy at most 0.938; nbr_only 0.413 / 0.548 and
          0.418 / 0.545; nbr_only with --w_consistency 1 0.424 / 0.558 and 0.426 / 0.548: the
          _ft_lr1e-4_diffusion rows of benchmarks/results/cifar10_pbgan.md. The timed whole run
          above used the paper preset without spectral norm.
"""

from bgan_tf.config import LOSS_PRESETS, BGANConfig


ARGS = ("", "finetune")


def get_config(arg: str = "") -> BGANConfig:
    config = BGANConfig(
        dataset="folder:../shared/data/cifar10/train",
        image_size=32,
        backbone="mobilenet_v2_torch",
        backbone_weights="../shared/weights/mobilenet_v2_imagenet_torchvision_notop.weights.h5",
        backbone_input_size=128,
        freeze_backbone=True,
        hash_hidden=(1024,),
        hash_norm=True,
        graph_features="backbone",
        num_bits=32,
        # Released-code shapes (5x5 kernels, stride 2) at an eighth (G) and a
        # quarter (D) of the widths: what two CPU cores train in minutes. Widen on a GPU.
        gen_channels=(32, 32, 16),
        disc_channels=(16, 32, 64, 64),
        disc_feature_dim=256,
        batch_size=64,
        epochs=6,
        output_dir="runs/cifar10",
    ).replace(**LOSS_PRESETS["paper"])
    if arg == "finetune":
        # The best measured fine-tuning (benchmarks/results/cifar10_pbgan.md, the
        # _ft_lr1e-4_diffusion rows): MobileNetV2 from block_13_expand on trains on its cached
        # bottom at Adam 1e-4 (1e-3 collapsed it), on the diffusion graph. Spectral norm keeps D
        # below 0.95 on every image kind there (the _sn rows, seeds 0-1) at no cost to the codes.
        config = config.replace(trainable_from="block_13_expand", lr_e=1e-4, graph_construction="diffusion",
                                disc_spectral_norm=True, output_dir="runs/cifar10_finetune")
    return config
