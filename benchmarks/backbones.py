"""Size and speed of the zoo's backbones at their real (published) architectures, with random weights.

1. Parameter counts of the real architectures, built on the meta device (no memory, no weights), next to
   the paper's Tab. 4 "Params" column. ``counted`` is what the backbone keeps (its ``num_parameters``).
   The natively written parts (VGGT's aggregator, the SEVA/Vmem UNet input blocks) are checked against the
   counts of the authors' own modules (``[= reference count]``).
2. Seconds per frame and peak memory of a forward pass at the paper's input resolution, through the real
   loader: the architecture is built with random weights, saved with ``save_pretrained`` (labelled
   RANDOM WEIGHTS) and loaded with ``load_backbone``. Speed does not depend on the weights' values.
   Single-model backbones only (``--time``); the 896x896 UNets are for a GPU.

    python benchmarks/backbones.py                                  # counts + sd-vae, dinov3 on CPU
    python benchmarks/backbones.py --time siglip-so400m-384,vjepa2-vitg16 --device cuda --frames 32
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results" / "backbones.json"
PAPER_PARAMS = {"vjepa2-vitg16": 1.0e9, "dinov3-vitl16": 0.3e9, "svd": 1.5e9, "sd2.1": 0.9e9, "sd-vae": 0.08e9}
# Counted with the authors' own modules (REFERENCE-ZOO Sec. 1-2): the natively written parts must equal them.
REFERENCE_PARTS = {("vggt", "aggregator"): 909_112_320, ("vggt", "patch_embed"): 304_372_736,
                   ("seva", "unet_input_blocks"): 392_398_400, ("vmem", "unet_input_blocks"): 392_398_400}


def siglip():
    from transformers import SiglipVisionConfig, SiglipVisionModel

    return {"vision": SiglipVisionModel(SiglipVisionConfig(hidden_size=1152, intermediate_size=4304, num_hidden_layers=27,
                                                           num_attention_heads=16, image_size=384, patch_size=14))}


def dinov3():
    from transformers import DINOv3ViTConfig, DINOv3ViTModel

    return {"vit": DINOv3ViTModel(DINOv3ViTConfig(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
                                                  num_attention_heads=16, patch_size=16, num_register_tokens=4,
                                                  layerscale_value=1e-5))}


def vjepa2():
    from transformers import VJEPA2Config, VJEPA2Model

    model = VJEPA2Model(VJEPA2Config(hidden_size=1408, num_hidden_layers=40, num_attention_heads=22, mlp_ratio=48 / 11,
                                     crop_size=256, frames_per_clip=64))
    return {"model": model}


def sd_vae():
    from diffusers import AutoencoderKL

    blocks = ("DownEncoderBlock2D",) * 4, ("UpDecoderBlock2D",) * 4
    return {"vae": AutoencoderKL(down_block_types=blocks[0], up_block_types=blocks[1], block_out_channels=(128, 256, 512, 512),
                                 layers_per_block=2, sample_size=768)}


def sd21():
    from diffusers import UNet2DConditionModel

    unet = UNet2DConditionModel(sample_size=96, block_out_channels=(320, 640, 1280, 1280), attention_head_dim=(5, 10, 20, 20),
                                cross_attention_dim=1024, use_linear_projection=True)
    return {**sd_vae(), "unet": unet}


def clip_vit_h():
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    return CLIPVisionModelWithProjection(CLIPVisionConfig(hidden_size=1280, intermediate_size=5120, num_hidden_layers=32,
                                                          num_attention_heads=16, image_size=224, patch_size=14,
                                                          projection_dim=1024))


def svd():
    from diffusers import AutoencoderKLTemporalDecoder, UNetSpatioTemporalConditionModel

    vae = AutoencoderKLTemporalDecoder(down_block_types=("DownEncoderBlock2D",) * 4, block_out_channels=(128, 256, 512, 512),
                                       layers_per_block=2)
    return {"vae": vae, "unet": UNetSpatioTemporalConditionModel(), "image_encoder": clip_vit_h()}  # class defaults = SVD's


def vggt():
    from vega3d.backbones.vggt import VggtAggregator, VggtConfig

    return {"aggregator": VggtAggregator(VggtConfig())}  # VGGT() defaults; the heads are never loaded


def seva():
    from vega3d.backbones.unet_camera import SevaConfig, SevaInputBlocks

    # The UNet up to input block 11 (SevaParams), SD-2.1-base's VAE and the CLIP ViT-H/14 image tower.
    return {"unet_input_blocks": SevaInputBlocks(SevaConfig()), **sd_vae(), "image_encoder": clip_vit_h()}


ARCHITECTURES = {"siglip-so400m-384": siglip, "dinov3-vitl16": dinov3, "vjepa2-vitg16": vjepa2, "sd2.1": sd21, "svd": svd,
                 "sd-vae": sd_vae, "vggt": vggt, "seva": seva, "vmem": seva}


def count(name: str) -> dict:
    with torch.device("meta"):
        parts = ARCHITECTURES[name]()
    sizes = {part: sum(p.numel() for p in module.parameters()) for part, module in parts.items()}
    if name == "vjepa2-vitg16":
        sizes = {"encoder": sum(p.numel() for p in parts["model"].encoder.parameters()),
                 "predictor": sum(p.numel() for p in parts["model"].predictor.parameters())}
    counted = sum(sizes.values())
    if name == "vggt":
        sizes["patch_embed"] = sum(p.numel() for p in parts["aggregator"].patch_embed.parameters())  # inside the aggregator
    reference = {part: REFERENCE_PARTS[name, part] for part in sizes if (name, part) in REFERENCE_PARTS}
    return {"backbone": name, "parts": sizes, "counted": counted, "paper": PAPER_PARAMS.get(name), "reference_parts": reference,
            "matches_reference": all(sizes[part] == value for part, value in reference.items()) if reference else None}


def time_forward(name: str, frames: int, device: str, dtype: str, repeats: int) -> dict:
    from vega3d.backbones import load_backbone
    from vega3d.backbones.registry import RANDOM_WEIGHTS_MARKER

    torch.manual_seed(0)
    (module,) = ARCHITECTURES[name]().values()
    with tempfile.TemporaryDirectory() as folder:
        module.save_pretrained(folder)
        del module
        (Path(folder) / RANDOM_WEIGHTS_MARKER).write_text("benchmark: random weights of the real architecture\n")
        backbone = load_backbone(name, weights=folder, device=device, dtype=dtype)
    video = torch.rand(frames, 3, 384, 384, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        backbone(video[:2])  # warm-up
        if device.startswith("cuda"):
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        for _ in range(repeats):
            tokens = backbone(video)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
    seconds = (time.perf_counter() - start) / repeats
    peak = torch.cuda.max_memory_allocated() if device.startswith("cuda") else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"backbone": name, "device": device, "dtype": dtype, "frames": frames, "resolution": backbone.config()["resolution"],
            "tokens": list(tokens.shape), "seconds_per_frame": seconds / frames, "peak_memory_gib": peak / 2**30,
            "threads": torch.get_num_threads(), "weights": backbone.weights_label}


# Video DiTs (vega3d.backbones.video_dit and the Wan path): the price of each prior at its native geometry.
WAN_NATIVE = {"wan2.1-t2v-1.3b": (480, 832), "wan2.1-t2v-14b": (720, 1280), "wan2.2-ti2v-5b": (704, 1280)}


def _dit_parts(name: str):
    """(transformer, vae, block lists, native size, patch) of a video DiT, built on the meta device."""
    import diffusers

    from vega3d.backbones.video_dit import FAMILIES
    from vega3d.backbones.wan_loading import WAN_VARIANTS

    with torch.device("meta"):
        if name in FAMILIES:
            family = FAMILIES[name]
            transformer = getattr(diffusers, family.transformer)(**family.architecture)
            vae = getattr(diffusers, family.vae)(**family.vae_architecture)
            lists, size = family.block_lists, family.size
        else:
            variant = WAN_VARIANTS[name]
            transformer = diffusers.WanTransformer3DModel(**variant.architecture)
            vae = diffusers.AutoencoderKLWan(**variant.vae_architecture)
            lists, size = ("blocks",), WAN_NATIVE[name]
    patch = transformer.config.patch_size
    return transformer, vae, lists, size, patch[-1] if isinstance(patch, (list, tuple)) else patch


def video_dit_cost(name: str) -> dict:
    """Parameters, tokens per frame at the native size and forward FLOPs per frame up to the default block.

    FLOPs = 2 x tokens x (parameters of blocks 0..l) for the matrix products + 4 x tokens^2 x width per block for
    self-attention (scores and values; text cross-attention and norms are left out, a few per cent).
    """
    from vega3d.backbones.video_dit import FAMILIES, _compression

    transformer, vae, lists, size, patch = _dit_parts(name)
    blocks = [b for attribute in lists for b in getattr(transformer, attribute)]
    block = len(blocks) // 2 if name in FAMILIES else 20
    spatial, temporal = _compression(vae)
    tokens = (size[0] // spatial // patch) * (size[1] // spatial // patch)
    width = transformer.config.num_attention_heads * transformer.config.attention_head_dim
    block_params = sum(p.numel() for b in blocks[: block + 1] for p in b.parameters())
    flops = 2 * tokens * block_params + 4 * tokens ** 2 * width * (block + 1)
    return {"backbone": name, "transformer_params": sum(p.numel() for p in transformer.parameters()),
            "vae_encoder_params": sum(p.numel() for p in vae.encoder.parameters()), "blocks": len(blocks), "block": block,
            "width": width, "native_size": list(size), "compression": [temporal, spatial, spatial], "patch": patch,
            "tokens_per_frame": tokens, "params_to_block": block_params, "tflops_per_frame_to_block": flops / 1e12}


def time_video_dit(name: str, device: str, dtype: str, depth: int = 2) -> dict:
    """Seconds per frame through blocks 0..l at the real width and native size, timed at reduced depth.

    The backbone is built with RANDOM WEIGHTS and only ``depth`` blocks; one one-frame latent at the native size
    goes through them (the VAE is not timed); the time per block is scaled to the default block ``l``.
    """
    from vega3d.backbones import load_backbone

    cost = video_dit_cost(name)
    backbone = load_backbone(name, "random", block=depth - 1, device=device, dtype=dtype)
    spatial = cost["compression"][1]
    latent = torch.randn(1, int(backbone.vae.config.get("latent_channels", backbone.vae.config.get("z_dim", 16))), 1,
                         cost["native_size"][0] // spatial, cost["native_size"][1] // spatial, generator=torch.Generator().manual_seed(0))
    latent = latent.to(device)
    run = (lambda: backbone.block_tokens(latent, 300.0)) if hasattr(backbone, "block_tokens") else \
        (lambda: backbone._pooled_tokens(latent, 300.0, None))
    with torch.inference_mode():
        run()  # warm-up
        start = time.perf_counter()
        run()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
    per_block = seconds / depth
    return {"backbone": name, "device": device, "dtype": dtype, "timed_blocks": depth, "seconds_per_block": per_block,
            "seconds_per_frame_to_block": per_block * (cost["block"] + 1), "block": cost["block"],
            "threads": torch.get_num_threads(), "weights": backbone.weights_label}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--time", default="sd-vae,dinov3-vitl16", help="backbones to time (single-model ones), '' for none")
    parser.add_argument("--frames", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--time-dits", default="", help="video DiTs to time at reduced depth (comma-separated, 'all')")
    args = parser.parse_args()

    counts = [count(name) for name in ARCHITECTURES]
    print(f"{'backbone':20s} {'counted':>14s} {'paper':>8s}  parts")
    for c in counts:
        paper = f"{c['paper'] / 1e9:.2f}B" if c["paper"] else "-"
        check = {True: "  [= reference count]", False: "  [!= REFERENCE COUNT]", None: ""}[c["matches_reference"]]
        print(f"{c['backbone']:20s} {c['counted']:>14,} {paper:>8s}  " + ", ".join(f"{k} {v:,}" for k, v in c["parts"].items()) + check)
    from vega3d.backbones.video_dit import FAMILIES

    dits = [video_dit_cost(name) for name in [*WAN_NATIVE, *FAMILIES]]
    print(f"\n{'video DiT':18s} {'params':>8s} {'blocks':>6s} {'l':>3s} {'native':>10s} {'tokens/frame':>12s} {'TFLOP/frame to l':>16s}")
    for d in dits:
        print(f"{d['backbone']:18s} {d['transformer_params'] / 1e9:7.2f}B {d['blocks']:6d} {d['block']:3d} "
              f"{d['native_size'][0]:>4d}x{d['native_size'][1]:<5d} {d['tokens_per_frame']:12,d} {d['tflops_per_frame_to_block']:16.2f}")
    dit_names = [*WAN_NATIVE, *FAMILIES] if args.time_dits == "all" else [n for n in args.time_dits.split(",") if n]
    dit_timings = []
    for name in dit_names:
        dit_timings.append(time_video_dit(name, args.device, args.dtype))
        t = dit_timings[-1]
        print(f"{name:18s} {t['seconds_per_block']:.2f} s/block at the native size -> {t['seconds_per_frame_to_block']:.1f} s/frame "
              f"to block {t['block']} ({t['device']}, {t['dtype']}, {t['threads']} threads, timed on {t['timed_blocks']} blocks)")
    timings = []
    for name in [n for n in args.time.split(",") if n]:
        if name not in ("siglip-so400m-384", "dinov3-vitl16", "vjepa2-vitg16", "sd-vae"):
            sys.exit(f"--time supports single-model backbones only; got {name!r}")
        timings.append(time_forward(name, args.frames, args.device, args.dtype, args.repeats))
        t = timings[-1]
        print(f"{name:20s} {t['seconds_per_frame']:.3f} s/frame at {t['resolution']} ({t['frames']} frames, {t['device']}, "
              f"{t['dtype']}, {t['threads']} threads), peak {t['peak_memory_gib']:.2f} GiB")
    # Timings measured before (other backbones, devices or dtypes) are kept; re-measured ones are replaced.
    key = lambda t: (t["backbone"], t["device"], t["dtype"])  # noqa: E731
    earlier = json.loads(RESULTS.read_text()).get("timings", []) if RESULTS.is_file() else []
    timings = [t for t in earlier if key(t) not in {key(n) for n in timings}] + timings
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"parameters": counts, "video_dits": dits, "video_dit_timings": dit_timings, "timings": timings, "torch": torch.__version__,
                                   "machine": platform.machine(), "python": platform.python_version()}, indent=2) + "\n")
    print(f"written: {RESULTS}")


if __name__ == "__main__":
    main()
