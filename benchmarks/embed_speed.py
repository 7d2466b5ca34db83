"""How fast does the default encoder embed real HER2ST patches, with its batch norms folded into
the convolutions (what `stem prepare` runs) and without (timm's network from the same weights)?

Usage: .venv/bin/python benchmarks/embed_speed.py [--data ../shared/data/her2st] [--section C2]
           [--spots 256] [--batch 64] [--repeats 5]

Both networks embed the same crops, alternating, ``--repeats`` times each; the minimum and median
seconds per 100 patches are reported with the largest difference between the two embeddings.
Writes ``benchmarks/results/embed_speed.{json,md}`` with the machine it ran on.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from report import RESULTS, machine, write_results

from stem_st.data.images import open_image
from stem_st.data.patches import iter_patch_batches, patch_geometry
from stem_st.data.readers import read_section
from stem_st.encoders import effnet
from stem_st.encoders.base import load_exact, read_state_dict
from stem_st.encoders.registry import build_encoder


def crops_of(data: str, section: str, spots: int) -> torch.Tensor:
    """uint8 crops of the first ``spots`` spots, as `stem prepare` cuts them (patch mode hest)."""
    a = read_section("her2st", data, section)
    info = a.uns["stem"]
    geom = patch_geometry("hest", info["mpp"], info["spot_diameter_um"])
    with open_image(info["image_path"]) as img:
        return torch.cat([c for _, c in iter_patch_batches(img, a.obsm["spatial"][:spots], geom, 64)])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[1].parent / "shared/data/her2st"))
    ap.add_argument("--section", default="C2")
    ap.add_argument("--spots", type=int, default=256)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--results", default=str(RESULTS / "embed_speed"), help="writes RESULTS.json and .md")
    a = ap.parse_args()
    import timm

    enc = build_encoder("effnet-lite0-imagenet")  # folded
    plain = timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=1000)
    load_exact(plain, effnet.map_lite0_keys(read_state_dict(effnet.weights_path())), "lite0")
    plain.reset_classifier(0)
    plain.eval().to(memory_format=torch.channels_last)  # as ImageEncoder.to places a network
    x = enc.preprocess(crops_of(a.data, a.section, a.spots))
    nets = {"folded (shipped)": enc.model, "unfolded (timm)": plain}
    times: dict[str, list[float]] = {k: [] for k in nets}
    outs = {}
    with torch.inference_mode():
        for name, net in nets.items():  # warm-up, and the embeddings to compare
            outs[name] = torch.cat([net(x[i:i + a.batch]) for i in range(0, len(x), a.batch)])
        for _ in range(a.repeats):
            for name, net in nets.items():
                t = time.perf_counter()
                for i in range(0, len(x), a.batch):
                    net(x[i:i + a.batch])
                times[name].append((time.perf_counter() - t) * 100 / len(x))
    diff = float((outs["folded (shipped)"] - outs["unfolded (timm)"]).abs().max())
    rows = [{"network": k, "min_s_per_100": round(min(v), 3), "median_s_per_100": round(statistics.median(v), 3)}
            for k, v in times.items()]
    speedup = rows[1]["median_s_per_100"] / rows[0]["median_s_per_100"]
    meta = {"machine": machine(), "section": a.section, "patches": len(x), "batch": a.batch, "repeats": a.repeats,
            "max_abs_diff": diff, "speedup_median": round(speedup, 2),
            "command": " ".join(["python benchmarks/embed_speed.py", *sys.argv[1:]])}
    lines = ["# Default encoder: embedding speed with batch norms folded", "",
             f"Machine: {meta['machine']}. Command: `{meta['command']}`. {len(x)} real HER2ST {a.section} "
             f"patches at 224 px, batches of {a.batch}, {a.repeats} alternating repeats.", "",
             f"**Folded is {speedup:.2f}x faster** (median); the largest difference between the two "
             f"embeddings is {diff:.1e} (embeddings reach ~{float(outs['unfolded (timm)'].abs().max()):.0f}).", "",
             "| network | s per 100 patches, min | median |", "|---|---|---|"]
    lines += [f"| {r['network']} | {r['min_s_per_100']:.3f} | {r['median_s_per_100']:.3f} |" for r in rows]
    text = "\n".join(lines) + "\n"
    write_results(a.results, {"meta": meta, "rows": rows}, text)
    print(text)


if __name__ == "__main__":
    main()
