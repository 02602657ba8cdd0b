"""CIFAR-10 with ImageNet MobileNetV2 (torch padding), 32 bits; frozen, or its top fine-tuned.

Command:  python -m bgan_tf.train --config cifar10 \
              --dataset folder:../shared/data/cifar10/train \
              --backbone_weights ../shared/weights/mobilenet_v2_imagenet_torchvision_notop.weights.h5
Cost:     features once (then cached; XNNPACK, ~200 s for the 60,000 images on 2 cores),
          graph (~10 s for 10,000), 6 epochs at batch 64 (~510 s for the paper preset on
          10,000 images; whole_run_32 in benchmarks/results/cifar10_pbgan.json).
Result:   P-BGAN protocol, 32 bits: mAP@all 0.353 for the paper preset (seed 0; ITQ 0.279).

``--config cifar10:finetune``: MobileNetV2 from block_10_expand on trains (its bottom's
activations and their mirrors' cached once, float16) at Adam 1e-4, on the diffusion graph,
with the consistency term (--w_consistency 1: an image's and its mirror's codes agree),
spectral norm in D and D at a third of G's step (--lr_d 3e-4).
Command:  the same with --config cifar10:finetune.
Cost:     699 s for the whole 32-bit run, features and bottom activations included, on the
          2-core AMD EPYC (whole_run_32_ft_lr1e-4_diffusion_sn_cons1_from_block10; timed
          before --lr_d 3e-4, which changes no shape).
Result:   32 bits, mAP@all 0.426 over seeds 0-2, and 0.429 for the same encoder without G
          and D: README.md's table; per-seed numbers and why each setting is there in
          docs/experiments.md.
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
        # _ft_lr1e-4_diffusion rows): MobileNetV2 from block_10_expand on trains on its cached
        # bottom at Adam 1e-4 (1e-3 collapsed it), on the diffusion graph, with codes of an image
        # and its mirror held together (+0.010 over seeds 0-2; block_10 over block_13 +0.010 over
        # seeds 0-2 on one CPU, block_6 no better). Spectral norm alone let D reach 0.95-0.98 on
        # fakes at seed 1 (12 and 32 bits); D at a third of G's step (lr_d 3e-4, the two
        # time-scale remedy) keeps it below that where one-sided label smoothing did not (the
        # _sn_cons1_lrd3e-4 and _ls0.1 rows), at no measured cost to the codes.
        config = config.replace(trainable_from="block_10_expand", lr_e=1e-4, graph_construction="diffusion",
                                disc_spectral_norm=True, lr_d=3e-4, w_consistency=1.0,
                                output_dir="runs/cifar10_finetune")
    return config
