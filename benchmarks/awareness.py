"""Stage times of ``vega3d awareness`` on the real scans: decode, scene preparation, encode, score, plots.

For each scene, in one process: the *bare decode* of the sampled frames' image files (colour JPEG/PNG and
depth PNG through the reader, nothing else), then the *preparation* ``sample_frames`` + per-token world
coordinates (decode, resize, depth and cameras, pooled coordinates) - target <= 1.5x the bare decode - then
a leaderboard run over both scans with two weight-free backbones, counting how often scenes are read
(target: once per scene per run).

Preparation decodes the depth maps on a second thread beside the colour images, so the table also shows
the bare decode on the same two threads (colour on one, depth on the other: the fairest floor for it) and
the CPU seconds both stages spend, summed over threads.

    python benchmarks/awareness.py [--frames 32] [--image-size 384] [--repeats 7]
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")  # as the vega3d command sets it (vega3d.cli.main)
import torch  # noqa: E402

from vega3d.io import write_json  # noqa: E402
from timing import interleaved_median_seconds, median_seconds  # noqa: E402  (benchmarks/timing.py, beside this script)

REPO = Path(__file__).resolve().parents[1]
SCENES = Path(os.environ.get("VEGA3D_SHARED_DATA", REPO.parent / "shared" / "data")) / "scenes"
RESULTS = REPO / "benchmarks" / "results" / "awareness.json"
TARGET = 1.5  # preparation / bare decode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=32)
    parser.add_argument("--image-size", type=int, default=384)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    import vega3d.scenes.prepared as prepared_module
    from vega3d.analysis import scene_correspondence
    from vega3d.analysis.leaderboard import BackboneRequest, run_leaderboard
    from vega3d.backbones import load_backbone
    from vega3d.scenes import find_scenes, load_scene, sample_frames

    size = (args.image_size, args.image_size)
    paths = find_scenes(SCENES)
    rows = []
    print(f"{'scene':<22} {'decode s':>9} {'prepare s':>10} {'/decode':>8} {'decode 2t':>10} {'/2t':>5} "
          f"{'cpu dec':>8} {'cpu prep':>9} {'encode s':>9} {'score s':>8}")
    for path in paths:
        scene = load_scene(path)
        indices = sample_frames(scene, args.frames, size, geometry=False).frame_indices

        def decode():
            for i in indices:
                scene.color(i), scene.depth(i)

        def decode_two_threads():
            with ThreadPoolExecutor(1) as pool:
                depth = pool.submit(lambda: [scene.depth(i) for i in indices])
                [scene.color(i) for i in indices]
                depth.result()

        def prepare():
            frames = sample_frames(scene, args.frames, size)
            frames.token_coordinates((14, 14))
            return frames

        # the first, untimed round warms the page cache: both stages then read the files from memory
        medians = interleaved_median_seconds({"decode": decode, "decode_two_threads": decode_two_threads,
                                              "prepare": prepare}, args.repeats)
        seconds_decode, seconds_prepare = medians["decode"], medians["prepare"]
        cpu_decode, cpu_prepare = (median_seconds(stage, args.repeats, warmup=False, clock=time.process_time)
                                   for stage in (decode, prepare))
        frames = prepare()
        backbone = load_backbone("pixels")
        with torch.inference_mode():
            seconds_encode = median_seconds(lambda: backbone(frames.images), args.repeats, warmup=False)
            tokens = backbone(frames.images)
        seconds_score = median_seconds(lambda: scene_correspondence(frames, tokens), args.repeats, warmup=False)
        row = {"scene": scene.scene_id, "frames": args.frames, "image_size": args.image_size,
               "depth_size": list(frames.depth.shape[1:]), "decode_seconds": seconds_decode,
               "prepare_seconds": seconds_prepare, "prepare_over_decode": seconds_prepare / seconds_decode,
               "decode_two_threads_seconds": medians["decode_two_threads"],
               "prepare_over_decode_two_threads": seconds_prepare / medians["decode_two_threads"],
               "decode_cpu_seconds": cpu_decode, "prepare_cpu_seconds": cpu_prepare,
               "encode_pixels_seconds": seconds_encode, "score_seconds": seconds_score}
        rows.append(row)
        print(f"{row['scene']:<22} {seconds_decode:>9.3f} {seconds_prepare:>10.3f} {row['prepare_over_decode']:>8.2f} "
              f"{medians['decode_two_threads']:>10.3f} {row['prepare_over_decode_two_threads']:>5.2f} {cpu_decode:>8.3f} "
              f"{cpu_prepare:>9.3f} {seconds_encode:>9.3f} {seconds_score:>8.3f}")

    reads = []
    real = prepared_module.load_scene
    prepared_module.load_scene = lambda path, **kw: reads.append(str(path)) or real(path, **kw)
    requests = [BackboneRequest("pixels"), BackboneRequest("position")]
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        run_leaderboard(paths, requests, out, num_frames=args.frames, image_size=size, plot_scenes=1, progress=False)
        end_to_end = time.perf_counter() - start
    prepared_module.load_scene = real
    print(f"\nleaderboard, {len(requests)} backbones x {len(paths)} scenes (plots for 1): {end_to_end:.2f} s; "
          f"scene reads: {len(reads)} (target {len(paths)}: once per scene per run)")
    worst = max(r["prepare_over_decode"] for r in rows)
    worst_two_threads = max(r["prepare_over_decode_two_threads"] for r in rows)
    print(f"preparation / bare decode: worst {worst:.2f}x (target <= {TARGET}x); "
          f"/ bare decode on the same two threads: worst {worst_two_threads:.2f}x")
    write_json(RESULTS, {"timing": f"median of {args.repeats} runs per stage after a warm-up (decode and prepare in turn), page cache warm",
                         "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(), "torch": torch.__version__,
                                     "torch_threads": torch.get_num_threads(), "load_average": os.getloadavg()},
                         "rows": rows, "leaderboard_seconds": end_to_end, "scene_reads": len(reads), "scenes": len(paths),
                         "worst_prepare_over_decode": worst, "worst_prepare_over_decode_two_threads": worst_two_threads})
    print(f"written: {RESULTS}")


if __name__ == "__main__":
    main()
