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
    parser.add_argument("--prefetch", type=int, default=2,
                        help="scenes decoded ahead by background threads while the backbone encodes (default 2; 0: none)")
    add_backbone_options(parser)
    parser.set_defaults(func=run)


def run(args) -> int:
    from vega3d.backbones import load_backbone
    from vega3d.backbones.cli_options import backbone_options
    from vega3d.scenes import find_scenes
    from vega3d.store import FeatureStore, barrier, extract_scenes, rank_and_world_size, shard

    rank, world_size = rank_and_world_size()
    scenes = shard(find_scenes(args.dataset), rank, world_size)
    backbone = load_backbone(args.backbone, weights=args.weights, **backbone_options(args))
    store = FeatureStore(args.out, cache_items=0)  # each scene is visited once; the writer thread shares the store
    result = extract_scenes(scenes, backbone, store, num_frames=args.frames, image_size=tuple(args.image_size),
                            prefetch=args.prefetch)
    barrier(world_size)
    if rank == 0:
        index = store.build_index()
        print(f"index: {index}")
    recomputed = result.recomputed
    print(f"rank {rank}/{world_size}: {len(result.encoded)} scene(s) encoded, {len(result.skipped)} already stored"
          + (f", {len(recomputed)} corrupt file(s) recomputed: {', '.join(recomputed)}" if recomputed else "")
          + f"; weights: {backbone.weights_label}")
    return 0
