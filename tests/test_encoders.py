"""Image encoders: the offline default on real patches, hub encoders from test checkpoints."""

from __future__ import annotations

import copy
import sys
import types

import h5py
import numpy as np
import pytest
import torch
from skimage import data as skdata

from stem_st.data.images import open_image
from stem_st.data.patches import dihedral, iter_patch_batches, patch_geometry
from stem_st.encoders import effnet
from stem_st.encoders.base import load_exact, read_state_dict
from stem_st.encoders.precomputed import load_precomputed
from stem_st.encoders.registry import SPECS, build_encoder
from stem_st.errors import StemError


def _c2_patches(c2, n=8):
    info = c2.uns["stem"]
    geom = patch_geometry("hest", info["mpp"], info["spot_diameter_um"])
    with open_image(info["image_path"]) as img:
        _, crops = next(iter_patch_batches(img, c2.obsm["spatial"][:n], geom, batch_size=n))
    return crops


def test_lite0_checkpoint_maps_onto_timm_with_no_key_left():
    import timm

    sd = read_state_dict(effnet.weights_path())
    mapped = effnet.map_lite0_keys(sd)
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=1000)
    assert set(mapped) == set(model.state_dict())  # every key used, none missing
    load_exact(model, mapped, "lite0")
    # the mapping is right when ImageNet predictions are: scikit-image's cat photo
    img = torch.from_numpy(skdata.chelsea()).permute(2, 0, 1)[None].float() / 255
    img = torch.nn.functional.interpolate(img, size=(224, 224), mode="bilinear", antialias=True)
    with torch.no_grad():
        top = model.eval()((img - 0.5) / 0.5).argmax(-1).item()
    assert 281 <= top <= 285  # the ImageNet cat classes


def test_load_exact_reports_unused_keys():
    import timm

    model = timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=1000)
    sd = read_state_dict(effnet.weights_path())  # unmapped names
    with pytest.raises(StemError, match="missing"):
        load_exact(model, sd, "lite0")


def test_default_encoder_on_real_her2st_patches(c2, effnet):
    crops = _c2_patches(c2)
    a = effnet.embed(crops)
    b = effnet.embed(crops)
    assert a.shape == (8, 1280) and torch.isfinite(a).all()
    torch.testing.assert_close(a, b)  # deterministic
    assert not effnet.pathology and effnet.mean == (0.5, 0.5, 0.5)
    # distinct spots give distinct embeddings; views of one spot differ but stay close
    assert (a[0] - a[1]).abs().max() > 1e-3
    views = torch.stack([effnet.embed(dihedral(crops, v))[0] for v in range(8)])
    assert len({tuple(v[:8].round(decimals=4).tolist()) for v in views}) == 8
    cos = torch.nn.functional.cosine_similarity(views[0:1], views[1:])
    others = torch.nn.functional.cosine_similarity(a[0:1], a[1:])
    assert cos.mean() > others.mean() - 0.05


def test_folded_batchnorm_gives_the_unfolded_network_s_embeddings(c2, effnet):
    """The default encoder's norms are folded into its convolutions: none is left, and real patches
    embed as the network timm builds from the same weights (to float rounding)."""
    import timm

    from stem_st.encoders.effnet import fold_batchnorm, map_lite0_keys, weights_path

    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in effnet.model.modules())
    plain = timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=1000)
    load_exact(plain, map_lite0_keys(read_state_dict(weights_path())), "lite0")
    plain.reset_classifier(0)
    x = effnet.preprocess(_c2_patches(c2))
    with torch.inference_mode():
        want = plain.eval()(x)
        torch.testing.assert_close(effnet.embed_normalised(x), want, rtol=1e-4, atol=1e-4)
        folded = copy.deepcopy(plain)
        assert fold_batchnorm(folded) == 49  # stem, head and every block's norms
        assert (folded(x) - want).abs().max() < 1e-4 and (folded(x) - want).abs().max() > 0


@pytest.mark.parametrize("name", sorted(SPECS))
def test_hub_encoders_load_a_written_checkpoint(name, tmp_path):
    spec = SPECS[name]
    small = {"depth": 1} if name != "ciga-resnet18" else {}
    sd = spec.build(small).state_dict()
    path = tmp_path / f"{name}.pth"
    if name == "ciga-resnet18":  # the published checkpoint's layout
        sd = {"state_dict": {f"model.resnet.{k}": v for k, v in sd.items()}}
        sd["state_dict"]["model.resnet.fc.1.weight"] = torch.zeros(128, 512)
    torch.save(sd, path)
    enc = build_encoder(name, weights=str(path), arch_overrides=small)
    crops = torch.randint(0, 255, (2, 3, 180, 180), dtype=torch.uint8)
    out = enc.embed(crops)
    assert out.shape == (2, spec.dim) and torch.isfinite(out).all()
    assert enc.weights_id != "random" and len(enc.weights_id) == 64


def test_hub_encoder_offline_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(StemError, match="Hugging Face hub.*--weights PATH"):
        build_encoder("uni", arch_overrides={"depth": 1})


def test_wrong_checkpoint_is_a_clear_error(tmp_path):
    path = tmp_path / "x.pth"
    torch.save({"foo": torch.zeros(1)}, path)
    with pytest.raises(StemError, match="do not fit"):
        build_encoder("uni", weights=str(path), arch_overrides={"depth": 1})
    with pytest.raises(StemError, match="unknown encoder"):
        build_encoder("nope")


def test_conch_through_its_package(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "conch", None)
    with pytest.raises(StemError, match="CONCH package"):
        build_encoder("conch")

    class Tower(torch.nn.Module):  # stands in for CONCH's CoCa model
        def __init__(self):
            super().__init__()
            self.proj = torch.nn.Conv2d(3, 512, 16, 16)

        def encode_image(self, x, proj_contrast, normalize):
            assert x.shape[-1] == 448 and not proj_contrast and not normalize
            return self.proj(x).mean(dim=(2, 3))

    calls = {}

    def create_model_from_pretrained(name, checkpoint_path):
        calls["args"] = (name, checkpoint_path)
        return Tower(), None

    pkg = types.ModuleType("conch")
    sub = types.ModuleType("conch.open_clip_custom")
    sub.create_model_from_pretrained = create_model_from_pretrained
    monkeypatch.setitem(sys.modules, "conch", pkg)
    monkeypatch.setitem(sys.modules, "conch.open_clip_custom", sub)
    ckpt = tmp_path / "conch.bin"
    ckpt.write_bytes(b"weights")
    enc = build_encoder("conch", weights=str(ckpt))
    assert calls["args"] == ("conch_ViT-B-16", str(ckpt))
    assert enc.embed(torch.randint(0, 255, (2, 3, 200, 200), dtype=torch.uint8)).shape == (2, 512)


def test_timm_encoder_needs_weights(tmp_path):
    import timm

    with pytest.raises(StemError, match="--weights"):
        build_encoder("timm:resnet18")
    m = timm.create_model("resnet18", num_classes=1000)
    torch.save(m.state_dict(), tmp_path / "r18.pth")  # with its classifier head
    enc = build_encoder("timm:resnet18", weights=str(tmp_path / "r18.pth"))
    assert enc.dim == 512
    assert enc.embed(torch.zeros(1, 3, 64, 64, dtype=torch.uint8)).shape == (1, 512)


def test_precomputed_h5_aligns_by_barcode_and_npy_by_order(tmp_path):
    spots = ["a", "b", "c"]
    emb = np.arange(12, dtype=np.float32).reshape(3, 4)
    with h5py.File(tmp_path / "S1.h5", "w") as f:
        f["embeddings"] = emb[::-1]
        f["barcodes"] = np.array([b"c", b"b", b"a"])
    got, _ = load_precomputed(f"precomputed:{tmp_path}/{{section}}.h5", "S1", spots, 1)
    np.testing.assert_array_equal(got[:, 0], emb)
    np.save(tmp_path / "e.npy", emb)
    got, _ = load_precomputed(f"precomputed:{tmp_path}/e.npy", "S1", spots, 1)
    np.testing.assert_array_equal(got[:, 0], emb)
    with pytest.raises(StemError, match="view"):
        load_precomputed(f"precomputed:{tmp_path}/e.npy", "S1", spots, 8)
    with pytest.raises(StemError, match="rows"):
        load_precomputed(f"precomputed:{tmp_path}/e.npy", "S1", spots[:2], 1)
