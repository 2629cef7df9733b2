"""Wan2.1-T2V-1.3B feature extraction on one GPU: the numbers a user waits for, in one command.

    PYTHONPATH=src python benchmarks/gpu.py            # one H200: ~5-8 minutes; writes benchmarks/results/gpu.json
    PYTHONPATH=src python benchmarks/gpu.py --smoke    # the same code at toy sizes on the CPU (seconds; run by the tests)

RANDOM WEIGHTS of the real sizes (costs do not depend on the values; nothing here is a trained model).
Rows, for 832x480 and 1280x720, 32 frames, bf16:

- ``scene`` rows: the whole backbone on one scene (VAE encoder + DiT + pooling), ``per_frame`` (32 one-frame
  clips) and ``clip`` (one 33-frame video, 9 latent frames), ``truncated`` (blocks 0..20 loaded and run, what
  ``vega3d`` does) and ``full`` (all 30 blocks loaded and run, the cost of the released code's full forward
  with a hook on block 20);
- ``vae`` rows: the VAE encoder alone on the same clips.

Each row: seconds per scene (median of ``--repeats`` after a warm-up), peak GPU memory, FLOPs, achieved
TFLOP/s and MFU = achieved / measured bf16 matmul peak of the same GPU (``matmul_peak``: large square
matmuls). FLOPs are counted from the shapes: the DiT with ``dit_flops`` (benchmarks/extract.py: per block
12 L d^2 for the q/k/v/o and cross-attention q/o projections, 4 S d^2 for cross k/v on the S = 512 text
tokens, 4 L^2 d + 4 L S d for attention scores and values, 4 L d f for the FFN; L tokens per sequence,
d = 1536, f = 8960), the VAE with ``torch.utils.flop_counter.FlopCounterMode`` (convolutions and matmuls,
from their shapes) in one extra untimed pass.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from extract import dit_flops, matmul_peak  # noqa: E402  (the FLOP formula and peak, written once)

RESULTS = Path(__file__).resolve().parent / "results" / "gpu.json"
FULL_SIZES = [(480, 832), (720, 1280)]
SMOKE = {"sizes": [(32, 48)], "frames": 5, "block": 1, "transformer": dict(
    num_attention_heads=2, attention_head_dim=12, text_dim=16, freq_dim=16, ffn_dim=32, num_layers=3, rope_max_seq_len=64),
    "vae": dict(base_dim=8, num_res_blocks=1)}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(step, device, repeats: int) -> float:
    step()  # warm-up: kernels, allocator, autotuning
    times = []
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        step()
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def counted_flops(step) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        step()
    return float(counter.get_total_flops())


def peak_memory(device: torch.device, step) -> float | None:
    if device.type != "cuda":
        return None
    torch.cuda.reset_peak_memory_stats(device)
    step()
    _sync(device)
    return torch.cuda.max_memory_allocated(device) / 2**30


def build(block: int, args, architecture: dict, vae_config: dict | None):
    from vega3d.backbones.wan import WanBackbone

    return WanBackbone("wan2.1-t2v-1.3b", "random", block=block, size=args.sizes[0], dtype=args.dtype, device=args.device,
                       chunk_frames=args.chunk_frames, transformer_config=architecture, vae_config=vae_config)


def measure(args) -> dict:
    device = torch.device(args.device)
    architecture = dict(SMOKE["transformer"]) if args.smoke else None
    from vega3d.backbones.wan_loading import WAN_VARIANTS

    architecture = architecture or dict(WAN_VARIANTS["wan2.1-t2v-1.3b"].architecture)
    vae_config = SMOKE["vae"] if args.smoke else None
    total_blocks = architecture["num_layers"]
    frames = torch.rand(args.frames, 3, 384, 384, generator=torch.Generator().manual_seed(0))
    peak = matmul_peak(device, getattr(torch, args.dtype), size=256 if args.smoke else None)
    rows = []
    for forward, block in (("truncated", args.block), ("full", total_blocks - 1)):
        start = time.perf_counter()
        backbone = build(block, args, architecture, vae_config)
        build_seconds = time.perf_counter() - start
        weights_gib = sum(p.numel() * p.element_size() for p in backbone.transformer.parameters()) / 2**30
        for size in args.sizes:
            for mode in ("per_frame", "clip"):
                backbone.size, backbone.frame_mode = size, mode  # same weights, another input geometry
                tokens_per_frame = (size[0] // 16) * (size[1] // 16)
                latent_frames = 1 + (args.frames + (-(args.frames - 1)) % 4 - 1) // 4
                sequences, tokens = (args.frames, tokens_per_frame) if mode == "per_frame" else (1, latent_frames * tokens_per_frame)
                scene = lambda: backbone(frames, scene_id="bench")  # noqa: E731
                seconds = timed(scene, device, args.repeats)
                flops = dit_flops(architecture, tokens, sequences, block + 1)
                rows.append(_row("scene", forward, mode, size, args, seconds, flops, peak, peak_memory(device, scene),
                                 {"blocks_run": block + 1, "dit_weights_gib": round(weights_gib, 3),
                                  "build_seconds": round(build_seconds, 2)}))
                print(_line(rows[-1]), flush=True)
                if forward == "truncated":  # the VAE is the same in both: measured once per geometry
                    clips = _vae_input(backbone, frames)
                    vae = lambda: [backbone._latents(c) for c in clips]  # noqa: E731
                    vae_seconds = timed(vae, device, args.repeats)
                    rows.append(_row("vae", "encoder", mode, size, args, vae_seconds, counted_flops(vae), peak,
                                     peak_memory(device, vae), {}))
                    print(_line(rows[-1]), flush=True)
        del backbone
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return {"matmul_peak_tflop_s": peak, "rows": rows}


def _vae_input(backbone, frames) -> list[torch.Tensor]:
    """The clips the backbone's VAE sees for ``frames`` (as ``WanBackbone.encode`` packs them), in chunks."""
    from vega3d.backbones.wan import fit_frames

    with torch.inference_mode():
        video = fit_frames(frames.to(backbone.device), backbone.size, backbone.preset) * 2.0 - 1.0
    if backbone.frame_mode == "per_frame":
        return list(video[:, :, None].split(backbone.chunk_frames))
    padding = (-(len(frames) - 1)) % 4
    clip = torch.cat([video, video[-1:].expand(padding, -1, -1, -1)]) if padding else video
    return [clip.transpose(0, 1)[None]]


def _row(kind, forward, mode, size, args, seconds, flops, peak, memory_gib, extra) -> dict:
    achieved = flops / seconds / 1e12
    return {"kind": kind, "forward": forward, "frame_mode": mode, "height": size[0], "width": size[1], "frames": args.frames,
            "seconds_per_scene": seconds, "tflops": flops / 1e12, "achieved_tflop_s": achieved, "mfu": achieved / peak,
            "peak_gpu_gib": memory_gib, **extra}


HEADER = f"{'row':<28} {'size':>9} {'s/scene':>8} {'TFLOP':>8} {'TFLOP/s':>8} {'MFU':>6} {'peak GiB':>9}"


def _line(row: dict) -> str:
    name = f"{row['kind']} {row['forward']} {row['frame_mode']}"
    memory = "-" if row["peak_gpu_gib"] is None else f"{row['peak_gpu_gib']:.2f}"
    return (f"{name:<28} {row['width']:>4}x{row['height']:<4} {row['seconds_per_scene']:>8.3f} {row['tflops']:>8.2f} "
            f"{row['achieved_tflop_s']:>8.2f} {row['mfu']:>6.1%} {memory:>9}")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="toy sizes on the CPU: checks the script, measures nothing")
    parser.add_argument("--device", default=None, help="default: cuda (cpu with --smoke)")
    parser.add_argument("--dtype", default=None, help="default: bfloat16 (float32 with --smoke)")
    parser.add_argument("--frames", type=int, default=None, help="frames per scene (default 32)")
    parser.add_argument("--block", type=int, default=None, help="truncated forward: blocks 0..BLOCK (default 20)")
    parser.add_argument("--chunk-frames", type=int, default=8, help="per-frame mode: one-frame clips per batch (default 8)")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs per row after one warm-up (default 3)")
    parser.add_argument("--out", type=Path, default=None, help=f"default {RESULTS} (with --smoke: not written)")
    args = parser.parse_args(argv)
    args.device = args.device or ("cpu" if args.smoke else "cuda")
    args.dtype = args.dtype or ("float32" if args.smoke else "bfloat16")
    args.frames = args.frames or (SMOKE["frames"] if args.smoke else 32)
    args.block = args.block if args.block is not None else (SMOKE["block"] if args.smoke else 20)
    args.repeats = args.repeats or (1 if args.smoke else 3)
    args.sizes = SMOKE["sizes"] if args.smoke else FULL_SIZES
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("no CUDA device: run on a GPU, or pass --smoke to check the script on the CPU")
    torch.manual_seed(0)
    start = time.perf_counter()
    print(f"Wan2.1-T2V-1.3B{' (toy sizes: --smoke)' if args.smoke else ''}, RANDOM WEIGHTS, {args.frames} frames, "
          f"{args.device} {args.dtype}")
    print(HEADER)
    result = measure(args)
    result.update({"weights": "RANDOM WEIGHTS (untrained; costs only)", "smoke": args.smoke,
                   "config": {"frames": args.frames, "block": args.block, "chunk_frames": args.chunk_frames,
                              "repeats": args.repeats, "dtype": args.dtype, "sizes": [list(s) for s in args.sizes]},
                   "seconds_total": time.perf_counter() - start,
                   "environment": {"torch": torch.__version__, "python": platform.python_version(), "cpu_count": os.cpu_count(),
                                   "gpu": torch.cuda.get_device_name() if args.device.startswith("cuda") else None}})
    print(f"matmul peak {result['matmul_peak_tflop_s']:.1f} TFLOP/s ({args.dtype}); total {result['seconds_total']:.0f} s")
    out = args.out or (None if args.smoke else RESULTS)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {out}")
    return result


if __name__ == "__main__":
    main()
