"""``vega3d extract``: compute backbone tokens once per scene into a feature store (resumable, shardable)."""

from __future__ import annotations

from vega3d.backbones.cli_options import add_backbone_options


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "extract", help="encode every scene of a dataset once and store its tokens (resumable, torchrun-shardable)",
        description="Walk the scenes under DATASET, sample frames (floor(linspace(0, N-1, n)), as the awareness "
                    "analysis), encode them and write one safetensors file per scene and configuration to --out. "
                    "Finished scenes are skipped, so a killed run resumes. Under torchrun each rank takes every "
                    "WORLD_SIZE-th scene; rank 0 writes the consolidated index.json at the end.")
    parser.add_argument("dataset", help="a scene folder or a folder of scenes (posed_images or ScanNet export layout)")
    parser.add_argument("--backbone", default="wan2.1-t2v-1.3b", help="backbone name (default wan2.1-t2v-1.3b; any name of vega3d.list_backbones())")
    parser.add_argument("--weights", help="weights: diffusers folder, hub id, single-file checkpoint, or 'random'")
    parser.add_argument("--out", required=True, help="feature store folder")
    parser.add_argument("--frames", type=int, default=32, help="frames sampled per scene (default 32)")
    parser.add_argument("--image-size", type=int, nargs=2, default=(384, 384), metavar=("H", "W"),
                        help="frames are resized to this before the backbone (default 384 384, the semantic branch's input)")
    add_backbone_options(parser)
    parser.set_defaults(func=run)


def run(args) -> int:
    import sys

    from tqdm import tqdm

    from vega3d.backbones import load_backbone
    from vega3d.backbones.cli_options import backbone_options
    from vega3d.scenes import find_scenes, load_scene, sample_frames
    from vega3d.store import FeatureStore, StoreError, barrier, encode_scene, rank_and_world_size, shard

    rank, world_size = rank_and_world_size()
    scenes = shard(find_scenes(args.dataset), rank, world_size)
    backbone = load_backbone(args.backbone, weights=args.weights, **backbone_options(args))
    store = FeatureStore(args.out, cache_items=1)
    done = skipped = 0
    recomputed = []
    for path in tqdm(scenes, desc=f"extract {args.backbone} (rank {rank}/{world_size})", unit="scene"):
        frames = sample_frames(load_scene(path), num_frames=args.frames, image_size=tuple(args.image_size))
        try:
            if store.contains(frames.scene_id, backbone.config(), frames.frame_indices):
                skipped += 1
                continue
        except StoreError as error:  # reported, never used: the file is replaced by a fresh encoding
            tqdm.write(f"warning: {error}; recomputing", file=sys.stderr)
            store.path(frames.scene_id, backbone.config(), frames.frame_indices).unlink()
            recomputed.append(frames.scene_id)
        encode_scene(backbone, frames, store)
        done += 1
    barrier(world_size)
    if rank == 0:
        index = store.build_index()
        print(f"index: {index}")
    print(f"rank {rank}/{world_size}: {done} scene(s) encoded, {skipped} already stored"
          + (f", {len(recomputed)} corrupt file(s) recomputed: {', '.join(recomputed)}" if recomputed else "")
          + f"; weights: {backbone.weights_label}")
    return 0
