"""Registry of image encoders, built by name.

Names: ``effnet-lite0-imagenet`` (default, offline), ``uni``, ``conch``, ``virchow2``,
``hoptimus0``, ``ciga-resnet18``, ``timm:<model>`` (needs weights) and
``precomputed:<file>`` (see :mod:`.precomputed`). Hub-backed encoders load from a local
checkpoint (``weights``) or from the Hugging Face hub with the token in the environment.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from ..errors import StemError
from . import effnet
from .base import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ImageEncoder,
    file_sha256,
    load_exact,
    read_state_dict,
    strip_prefixes,
)

log = logging.getLogger(__name__)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
HOPTIMUS_MEAN = (0.707223, 0.578729, 0.703617)
HOPTIMUS_STD = (0.211883, 0.230117, 0.177517)


def _timm(name: str, **kwargs) -> Callable[[dict], nn.Module]:
    def build(overrides: dict) -> nn.Module:
        import timm

        return timm.create_model(name, pretrained=False, **{**kwargs, **overrides})

    return build


def _virchow2_build(overrides: dict) -> nn.Module:
    from timm.layers import SwiGLUPacked

    return _timm("vit_huge_patch14_224", img_size=224, init_values=1e-5, num_classes=0,
                 mlp_ratio=5.3375, reg_tokens=4, global_pool="", dynamic_img_size=True,
                 mlp_layer=SwiGLUPacked, act_layer=nn.SiLU)(overrides)


def _virchow2_forward(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    tokens = model(x)  # (B, 1 + 4 registers + patches, 1280)
    return torch.cat([tokens[:, 0], tokens[:, 5:].mean(dim=1)], dim=-1)


@dataclass(frozen=True)
class EncoderSpec:
    """How to build one encoder: architecture, output, normalisation, weight sources."""

    name: str
    dim: int
    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    build: Callable[[dict], nn.Module]
    hub_repo: str | None = None
    hub_files: tuple[str, ...] = ("model.safetensors", "pytorch_model.bin")
    forward: Callable[[nn.Module, torch.Tensor], torch.Tensor] | None = None
    pathology: bool = True
    key_prefixes: tuple[str, ...] = ("module.", "model.", "backbone.")
    drop_keys: tuple[str, ...] = ()
    description: str = ""
    extra: dict = field(default_factory=dict)


def _resnet18_build(overrides: dict) -> nn.Module:
    return _timm("resnet18", num_classes=0)(overrides)


SPECS: dict[str, EncoderSpec] = {
    "uni": EncoderSpec(
        "uni", 1024, 224, IMAGENET_MEAN, IMAGENET_STD,
        _timm("vit_large_patch16_224", img_size=224, patch_size=16, init_values=1e-5,
              num_classes=0, dynamic_img_size=True),
        hub_repo="MahmoodLab/UNI", description="UNI ViT-L/16 (Chen et al. 2024), CLS token",
    ),
    "virchow2": EncoderSpec(
        "virchow2", 2560, 224, IMAGENET_MEAN, IMAGENET_STD,
        _virchow2_build,
        hub_repo="paige-ai/Virchow2", forward=_virchow2_forward,
        description="Virchow2 ViT-H/14 (Zimmermann et al. 2024), CLS + mean patch token",
    ),
    "hoptimus0": EncoderSpec(
        "hoptimus0", 1536, 224, HOPTIMUS_MEAN, HOPTIMUS_STD,
        _timm("vit_giant_patch14_reg4_dinov2", img_size=224, init_values=1e-5, num_classes=0,
              dynamic_img_size=False),
        hub_repo="bioptimus/H-optimus-0", description="H-optimus-0 ViT-g/14 (Bioptimus), CLS",
    ),
    "ciga-resnet18": EncoderSpec(
        "ciga-resnet18", 512, 224, IMAGENET_MEAN, IMAGENET_STD, _resnet18_build,
        key_prefixes=("model.resnet.", "module.", "resnet."), drop_keys=("fc.",),
        description="ResNet-18, self-supervised on histology (Ciga et al. 2022)",
    ),
}
DEFAULT_ENCODER = "effnet-lite0-imagenet"
KNOWN = (DEFAULT_ENCODER, *SPECS, "conch", "timm:<model>", "precomputed:<file>")


def _hub_weights(spec: EncoderSpec) -> str:
    try:
        from huggingface_hub import hf_hub_download
    except ImportError:  # pragma: no cover - a declared dependency
        raise StemError("huggingface_hub is not installed") from None
    last = None
    for fname in spec.hub_files:
        try:
            return hf_hub_download(spec.hub_repo, fname)
        except Exception as exc:  # offline, gated, or file absent
            last = exc
    reason = str(last).splitlines()[0] if last else "unknown error"
    raise StemError(
        f"cannot load '{spec.name}' weights from the Hugging Face hub ({spec.hub_repo}): "
        f"{type(last).__name__}: {reason[:160]}. The repo is gated: accept its terms, set "
        f"HF_TOKEN, or download the checkpoint and pass --weights PATH"
    )


def _build_registered(spec: EncoderSpec, weights: str | None, overrides: dict) -> ImageEncoder:
    model = spec.build(overrides)
    if weights is None:
        if spec.hub_repo is None:
            raise StemError(f"encoder '{spec.name}' has no hub source; pass --weights PATH")
        weights = _hub_weights(spec)
    sd = strip_prefixes(read_state_dict(weights), spec.key_prefixes)
    sd = {k: v for k, v in sd.items() if not k.startswith(spec.drop_keys or ("\0",))}
    load_exact(model, sd, f"encoder '{spec.name}'", weights)
    return ImageEncoder(spec.name, spec.dim, spec.input_size, spec.mean, spec.std, model,
                        file_sha256(weights), spec.pathology, spec.forward)


def _build_effnet(weights: str | None) -> ImageEncoder:
    import timm

    path = weights or effnet.weights_path()
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=1000)
    load_exact(model, effnet.map_lite0_keys(read_state_dict(path)), "tf_efficientnet_lite0", path)
    model.reset_classifier(0)  # pooled 1280-d features
    effnet.fold_batchnorm(model)
    return ImageEncoder(DEFAULT_ENCODER, 1280, 224, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), model,
                        file_sha256(path), pathology=False)


def _build_timm(name: str, weights: str | None) -> ImageEncoder:
    import timm

    if weights is None:
        raise StemError(f"encoder 'timm:{name}' needs --weights PATH (no download here)")
    try:
        model = timm.create_model(name, pretrained=False, num_classes=0)
    except Exception as exc:
        raise StemError(f"timm has no model '{name}': {exc}") from None
    sd = strip_prefixes(read_state_dict(weights), ("module.",))
    head = {k for k in sd if k.startswith(("head.", "fc.", "classifier.")) and k not in
            model.state_dict()}
    load_exact(model, {k: v for k, v in sd.items() if k not in head}, f"timm '{name}'", weights)
    cfg = model.pretrained_cfg
    size = int(cfg.get("input_size", (3, 224, 224))[-1])
    return ImageEncoder(f"timm:{name}", int(model.num_features), size,
                        tuple(cfg.get("mean", IMAGENET_MEAN)), tuple(cfg.get("std", IMAGENET_STD)),
                        model, file_sha256(weights), pathology=False)


def _build_conch(weights: str | None) -> ImageEncoder:
    try:
        from conch.open_clip_custom import create_model_from_pretrained
    except ImportError:
        raise StemError(
            "encoder 'conch' needs the CONCH package: "
            "pip install git+https://github.com/mahmoodlab/CONCH"
        ) from None
    source = weights or "hf_hub:MahmoodLab/conch"
    try:
        model, _ = create_model_from_pretrained("conch_ViT-B-16", checkpoint_path=source)
    except Exception as exc:
        raise StemError(
            f"cannot load CONCH from {source}: {type(exc).__name__}: {str(exc)[:160]}. The hub "
            "repo is gated: set HF_TOKEN, or pass --weights PATH to a local checkpoint"
        ) from None

    def forward(m: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return m.encode_image(x, proj_contrast=False, normalize=False)

    wid = file_sha256(weights) if weights else source
    return ImageEncoder("conch", 512, 448, CLIP_MEAN, CLIP_STD, model, wid, True, forward)


def build_encoder(
    name: str, weights: str | None = None, device: str | torch.device = "cpu",
    arch_overrides: dict | None = None,
) -> ImageEncoder:
    """Build an encoder by registry name, with weights from ``weights`` or its default source.

    ``arch_overrides`` changes timm architecture arguments (tests use a shallower depth).
    """
    if name == DEFAULT_ENCODER:
        enc = _build_effnet(weights)
    elif name == "conch":
        enc = _build_conch(weights)
    elif name.startswith("timm:"):
        enc = _build_timm(name[5:], weights)
    elif name in SPECS:
        enc = _build_registered(SPECS[name], weights, arch_overrides or {})
    else:
        raise StemError(f"unknown encoder '{name}'; choose from {', '.join(KNOWN)}")
    enc.model.eval()
    log.info("encoder %s: %d-d, input %d px, weights %s", enc.name, enc.dim, enc.input_size,
             enc.weights_id[:12])
    return enc.to(device)
