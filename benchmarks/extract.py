"""Cost of Wan2.1 feature extraction: truncated DiT (blocks 0..l) vs the full forward, per-frame vs clip mode.

    PYTHONPATH=src python benchmarks/extract.py                                  # CPU, reduced resolution
    PYTHONPATH=src python benchmarks/extract.py --device cuda --size 480 832 --frames 32 --out benchmarks/results/extract_gpu_480p.json
    PYTHONPATH=src python benchmarks/extract.py --device cuda --size 720 1280 --frames 32 --out benchmarks/results/extract_gpu_720p.json

The model has the real Wan2.1-T2V-1.3B geometry (30 blocks, hidden 1536 = 12 x 128, FFN 8960, text 4096)
with RANDOM weights (costs do not depend on the values). Each variant runs in its own process so the peak
memory reported is its own. Rows:

- ``dit truncated``: blocks 0..l only are built and run (what the backbone does);
- ``dit full``: the whole diffusers forward (all blocks + output head) with a hook on blocks[l], as the
  released code runs it;
- ``scene per_frame`` / ``scene clip``: the whole backbone (VAE + truncated DiT + pooling) on one scene.

``--pipeline`` measures the extraction pipeline instead (``vega3d.store.extract_scenes``): a dataset of
copies of the real scans, a weight-free stand-in backbone whose encode time is calibrated to the decode time
of a scene on this CPU, run one scene after the other (``prefetch=0``) and then pipelined (decode threads +
writer thread). Target: pipelined wall <= 1.2x max(total decode, total encode), with byte-identical stores.

    PYTHONPATH=src python benchmarks/extract.py --pipeline [--scenes 8] [--frames 32] [--prefetch 1]

TFLOP/s counts the DiT's matrix work analytically (projections, attention, FFN; see ``dit_flops``) and is
compared with a measured matmul peak of the same device and dtype. On CPU, seconds are process CPU time
per thread (1 thread by default), because wall time on a shared machine mostly measures the other jobs;
wall time is recorded too. On GPU, seconds are wall time after a warm-up run.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import torch

ROWS = ("dit truncated", "dit full", "scene per_frame", "scene clip")
TEXT_TOKENS = 512


def dit_flops(config: dict, tokens: int, sequences: int, blocks: int) -> float:
    """Multiply-add FLOPs (x2) of ``blocks`` Wan blocks on ``sequences`` sequences of ``tokens`` tokens."""
    d, f, s, length = config["num_attention_heads"] * config["attention_head_dim"], config["ffn_dim"], TEXT_TOKENS, tokens
    per_block = (12 * length * d * d  # self q, k, v, o + cross q, o
                 + 4 * s * d * d  # cross k, v on the text tokens
                 + 4 * length * length * d + 4 * length * s * d  # attention scores and values
                 + 4 * length * d * f)  # feed-forward
    return float(per_block * blocks * sequences)


def matmul_peak(device: torch.device, dtype: torch.dtype, size: int | None = None) -> float:
    """Best TFLOP/s of a large square matmul on this device and dtype (the card's or CPU's measured peak)."""
    n = size or (8192 if device.type == "cuda" else 2048)
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    repeats = 20 if device.type == "cuda" else 2
    step = lambda: [a @ b for _ in range(repeats)]  # noqa: E731
    return 2 * n**3 * repeats / _timed(step, device, 5, warmup=1)[0 if device.type == "cuda" else 1] / 1e12


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(step, device, repeats: int, warmup: int) -> tuple[float, float]:
    """Best (wall, process CPU) seconds of ``repeats`` runs. On a shared CPU the process time is the
    robust figure: it does not count the time other jobs hold the cores."""
    for _ in range(warmup):
        step()
    wall = cpu = float("inf")
    for _ in range(repeats):
        _sync(device)
        start, start_cpu = time.perf_counter(), time.process_time()
        step()
        _sync(device)
        wall, cpu = min(wall, time.perf_counter() - start), min(cpu, time.process_time() - start_cpu)
    return wall, cpu


def measure(row: str, args) -> dict:
    """One row, run in a fresh process."""
    from vega3d.backbones.wan import WanBackbone, dit_block_tokens
    from vega3d.backbones.wan_loading import WAN_VARIANTS, load_transformer, resolve_weights

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    architecture = {**WAN_VARIANTS["wan2.1-t2v-1.3b"].architecture, "num_layers": args.num_layers}
    height, width = args.size
    tokens_per_frame = (height // 16) * (width // 16)
    autocast = torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32)
    result = {"row": row}
    if row.startswith("dit"):
        latents = torch.randn(args.frames, 16, 1, height // 8, width // 8, device=device)
        text = torch.zeros(1, TEXT_TOKENS, architecture["text_dim"], device=device)
        if row == "dit truncated":
            model = load_transformer(resolve_weights("wan2.1-t2v-1.3b", "random", transformer_config=architecture),
                                     False, args.block, dtype).to(device)

            def step():
                with torch.inference_mode(), autocast:
                    for chunk in latents.split(args.chunk_frames):
                        dit_block_tokens(model, chunk, 300.0, text, args.block)
        else:
            from diffusers import WanTransformer3DModel

            from vega3d.backbones.wan_loading import cast_keeping_fp32

            model = WanTransformer3DModel(**architecture).eval()
            cast_keeping_fp32(model, dtype)
            model = model.to(device)
            kept = []
            model.blocks[args.block].register_forward_hook(lambda m, a, out: kept.append(out))

            def step():
                kept.clear()
                with torch.inference_mode(), autocast:
                    for chunk in latents.split(args.chunk_frames):
                        model(chunk, torch.full((len(chunk),), 300.0, device=device), text.expand(len(chunk), -1, -1))

        blocks_run = args.block + 1 if row == "dit truncated" else args.num_layers
        sequences, tokens = args.frames, tokens_per_frame
        weights = model
    else:
        mode = row.split()[1]
        backbone = WanBackbone("wan2.1-t2v-1.3b", "random", block=args.block, size=args.size, frame_mode=mode,
                               dtype=args.dtype, device=args.device, chunk_frames=args.chunk_frames,
                               transformer_config=architecture)
        frames = torch.rand(args.frames, 3, 384, 384, generator=torch.Generator().manual_seed(0))
        step = lambda: backbone(frames, scene_id="bench")  # noqa: E731
        latent_frames = 1 + (args.frames + (-(args.frames - 1)) % 4 - 1) // 4
        sequences, tokens = (args.frames, tokens_per_frame) if mode == "per_frame" else (1, latent_frames * tokens_per_frame)
        blocks_run = args.block + 1
        weights = backbone.transformer
        result["vae_weights_mib"] = round(sum(p.numel() * p.element_size() for p in backbone.vae.parameters()) / 2**20, 1)
    wall, cpu = _timed(step, device, args.repeats, args.warmup)
    seconds = wall if device.type == "cuda" else cpu / args.threads  # CPU: compute time per core-thread
    flops = dit_flops(architecture, tokens, sequences, blocks_run)
    result.update({
        "seconds_per_scene": round(seconds, 3),
        "wall_seconds": round(wall, 3),
        "process_cpu_seconds": round(cpu, 3),
        "dit_tokens_per_s": round(sequences * tokens / seconds, 1),
        "frames_per_s": round(args.frames / seconds, 3),
        "dit_tflops": round(flops / 1e12, 3),
        "achieved_tflop_s": round(flops / seconds / 1e12, 3),
        "dit_weights_mib": round(sum(p.numel() * p.element_size() for p in weights.parameters()) / 2**20, 1),
        "blocks_run": blocks_run,
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    })
    if device.type == "cuda":
        result["peak_gpu_mib"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    return result


class _Busy(torch.nn.Module):
    """Stand-in backbone for the pipeline case: mean colour per 14x14 cell plus ``work`` 512x512 matmuls per
    frame, so its encode time can be set equal to the decode time (weight-free; costs only)."""

    def __init__(self, work: int):
        super().__init__()
        from vega3d.backbones import Backbone

        self.backbone = type("BusyBackbone", (Backbone,), {"name": "busy", "encode": self._encode})()
        self.work = work
        self.matrix = torch.randn(512, 512, generator=torch.Generator().manual_seed(0)) / 512**0.5

    def _encode(self, frames, scene_id=None):
        x = self.matrix
        for _ in range(self.work * len(frames)):
            x = torch.tanh(x @ self.matrix)
        cells = torch.nn.functional.adaptive_avg_pool2d(frames, (14, 14)).permute(0, 2, 3, 1)
        return cells + 0 * x.mean()


def pipeline_case(args) -> dict:
    import shutil
    import tempfile

    from vega3d.scenes import find_scenes, load_scene, sample_frames
    from vega3d.store import FeatureStore, extract_scenes

    torch.set_num_threads(1)  # one core encodes, the other decodes
    scenes_root = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "scenes"
    import os

    scenes_root = Path(os.environ.get("VEGA3D_SHARED_DATA", scenes_root.parent)) / "scenes"
    real = find_scenes(scenes_root)
    size = tuple(args.image_size)
    work_dir = Path(tempfile.mkdtemp(prefix="vega3d-extract-bench-"))
    try:
        data = work_dir / "data"
        data.mkdir()
        for i in range(args.scenes):
            (data / f"scene{i:03d}").symlink_to(real[i % len(real)], target_is_directory=True)
        paths = sorted(data.iterdir())
        # calibrate: encode time of one scene ~= its decode time
        scene = load_scene(paths[0])
        start = time.perf_counter()
        frames = sample_frames(scene, args.frames, size, geometry=False)
        decode_one = time.perf_counter() - start
        probe = _Busy(1)
        start = time.perf_counter()
        probe.backbone(frames.images)
        per_unit = (time.perf_counter() - start) / len(frames)
        busy = _Busy(max(1, round(decode_one / len(frames) / per_unit)))
        # cores actually free: two threads of the same compute vs one (2.0 = no parallelism left on the machine)
        import threading

        start = time.perf_counter()
        busy.backbone(frames.images)
        alone = time.perf_counter() - start
        other = threading.Thread(target=busy.backbone, args=(frames.images,))
        start = time.perf_counter()
        other.start()
        busy.backbone(frames.images)
        other.join()
        contention = (time.perf_counter() - start) / alone
        results = {}
        for prefetch in (0, args.prefetch):
            store = FeatureStore(work_dir / f"store{prefetch}", cache_items=0)
            results[prefetch] = extract_scenes(paths, busy.backbone, store, num_frames=args.frames, image_size=size,
                                               prefetch=prefetch, progress=False)
        files = sorted(p.relative_to(work_dir / "store0") for p in (work_dir / "store0").rglob("*") if p.is_file())
        identical = all((work_dir / "store0" / f).read_bytes() == (work_dir / f"store{args.prefetch}" / f).read_bytes() for f in files)
    finally:
        shutil.rmtree(work_dir)
    sequential, pipelined = results[0].seconds, results[args.prefetch].seconds
    bound = max(sequential["decode"], sequential["encode"])
    return {"scenes": args.scenes, "prefetch": args.prefetch, "frames": args.frames, "image_size": list(size), "busy_work": busy.work,
            "decode_seconds": sequential["decode"], "encode_seconds": sequential["encode"], "write_seconds": sequential["write"],
            "sequential_wall_seconds": sequential["wall"], "pipelined_wall_seconds": pipelined["wall"],
            "pipelined_wait_seconds": pipelined["wait"], "wall_over_max_stage": pipelined["wall"] / bound,
            "sequential_over_max_stage": sequential["wall"] / bound, "identical_store": identical, "files": len(files),
            "two_threads_over_one": contention}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pipeline", action="store_true", help="measure the decode/encode/write pipeline (see above)")
    parser.add_argument("--scenes", type=int, default=8, help="--pipeline: scenes in the dataset (copies of the real scans)")
    parser.add_argument("--image-size", type=int, nargs=2, default=(384, 384), help="--pipeline: frame size")
    parser.add_argument("--prefetch", type=int, default=1, help="--pipeline: scenes decoded ahead (default 1)")
    parser.add_argument("--size", type=int, nargs=2, default=(128, 224), metavar=("H", "W"), help="DiT input (default 128 224)")
    parser.add_argument("--frames", type=int, default=5, help="frames per scene (default 5 = 4n+1)")
    parser.add_argument("--block", type=int, default=20)
    parser.add_argument("--num-layers", type=int, default=30, help="blocks of the full model (1.3B: 30)")
    parser.add_argument("--chunk-frames", type=int, default=5, help="one-frame clips per DiT batch")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default=None, help="default: bfloat16 on cuda, float32 on cpu")
    parser.add_argument("--repeats", type=int, default=1, help="timed runs; the best is kept")
    parser.add_argument("--warmup", type=int, default=None, help="untimed runs first (default: 1 on cuda, 0 on cpu)")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (default 1: process time = compute time)")
    parser.add_argument("--rows", nargs="+", default=list(ROWS), choices=ROWS)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "extract.json")
    args = parser.parse_args()
    if args.pipeline:
        args.frames = args.frames if args.frames != 5 else 32
        row = pipeline_case(args)
        print(f"{row['scenes']} scenes x {row['frames']} frames at {row['image_size']}: decode {row['decode_seconds']:.2f} s, "
              f"encode {row['encode_seconds']:.2f} s, write {row['write_seconds']:.2f} s (sums of the stages)")
        print(f"sequential wall {row['sequential_wall_seconds']:.2f} s = {row['sequential_over_max_stage']:.2f}x max(decode, encode); "
              f"pipelined wall {row['pipelined_wall_seconds']:.2f} s = {row['wall_over_max_stage']:.2f}x (target <= 1.2x); "
              f"identical store: {row['identical_store']} ({row['files']} files)")
        print(f"free cores: two threads of the same compute take {row['two_threads_over_one']:.2f}x one "
              f"(1.0: two free cores; 2.0: one, so no overlap is possible on this machine now)")
        out = args.out if args.out.name != "extract.json" else args.out.with_name("extract_pipeline.json")
        row["environment"] = {"torch": torch.__version__, "cpu_count": __import__("os").cpu_count(),
                              "load_average": __import__("os").getloadavg(), "platform": platform.platform()}
        out.write_text(json.dumps(row, indent=2) + "\n")
        print(f"wrote {out}")
        return
    args.dtype = args.dtype or ("bfloat16" if args.device.startswith("cuda") else "float32")
    args.warmup = args.warmup if args.warmup is not None else int(args.device.startswith("cuda"))
    rows = []
    for row in args.rows:
        with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:  # own process, own peak
            rows.append(pool.submit(measure, row, args).result())
        print(f"{row}: {rows[-1]}", flush=True)
    torch.set_num_threads(args.threads)
    peak = matmul_peak(torch.device(args.device), getattr(torch, args.dtype))
    for row in rows:
        row["fraction_of_peak"] = round(row["achieved_tflop_s"] / peak, 3)
    by_name = {row["row"]: row for row in rows}
    summary = {}
    if {"dit truncated", "dit full"} <= by_name.keys():
        truncated, full = by_name["dit truncated"], by_name["dit full"]
        summary = {"speedup_truncated_vs_full": round(full["seconds_per_scene"] / truncated["seconds_per_scene"], 3),
                   "weight_memory_saving": round(1 - truncated["dit_weights_mib"] / full["dit_weights_mib"], 3),
                   "peak_rss_saving": round(1 - truncated["peak_rss_mib"] / full["peak_rss_mib"], 3)}
    header = f"{'row':16s} {'s/scene':>8s} {'tokens/s':>10s} {'TFLOP/s':>8s} {'of peak':>8s} {'DiT MiB':>8s} {'peak RSS MiB':>13s}"
    print(f"\nWan2.1-T2V-1.3B geometry, RANDOM weights, {args.frames} frames at {args.size[0]}x{args.size[1]}, "
          f"block {args.block} of {args.num_layers}, {args.device} {args.dtype}, measured matmul peak {peak:.3f} TFLOP/s")
    print(header)
    for row in rows:
        print(f"{row['row']:16s} {row['seconds_per_scene']:8.2f} {row['dit_tokens_per_s']:10.1f} {row['achieved_tflop_s']:8.3f} "
              f"{row['fraction_of_peak']:8.1%} {row['dit_weights_mib']:8.0f} {row['peak_rss_mib']:13.0f}")
    for key, value in summary.items():
        print(f"{key}: {value}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    report = {"config": {k: (list(v) if isinstance(v, tuple) else str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
              "weights": "RANDOM WEIGHTS (untrained; costs only)", "matmul_peak_tflop_s": round(peak, 3), "rows": rows,
              "summary": summary, "environment": {"torch": torch.__version__, "machine": platform.machine(),
                                                  "processor": platform.processor(), "python": platform.python_version(),
                                                  "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None}}
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
