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
    from vega3d.cli import CommandError, check_device, check_outputs
    from vega3d.io import remove_stale_temporaries
    from vega3d.scenes import SceneError, find_scenes, load_scene, sample_frames, scene_ids
    from vega3d.store import FeatureStore, StoreError, barrier, encode_scene, rank_and_world_size, shard

    # Everything that can be checked is checked before the backbone is built or any scene encoded.
    if args.frames < 1 or min(args.image_size) < 1:
        raise CommandError(f"--frames and --image-size must be positive; got {args.frames} and {list(args.image_size)}")
    check_outputs({"--out": args.out}, [args.dataset], folders=("--out",))
    options = backbone_options(args)
    check_device(options.get("device"))
    rank, world_size = rank_and_world_size()
    found = find_scenes(args.dataset)
    ids = dict(zip(found, scene_ids(found, args.dataset)))  # unique within the dataset: path relative to it
    scenes = shard(found, rank, world_size)
    backbone = load_backbone(args.backbone, weights=args.weights, **options)
    store = FeatureStore(args.out, cache_items=1)
    remove_stale_temporaries(store.root)  # left by killed runs (only old ones: other ranks may be writing)
    done = skipped = 0
    recomputed, failed = [], []
    for path in tqdm(scenes, desc=f"extract {args.backbone} (rank {rank}/{world_size})", unit="scene"):
        try:
            frames = sample_frames(load_scene(path, scene_id=ids[path]), num_frames=args.frames, image_size=tuple(args.image_size))
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
        except (SceneError, OSError) as error:  # one bad scene does not stop the run; a rerun retries it
            tqdm.write(f"vega3d extract: error: {error}", file=sys.stderr)
            failed.append({"scene": str(path), "scene_id": ids[path], "error": str(error)})
    store.record_failures(failed, rank)
    barrier(world_size)
    if rank == 0:
        index = store.build_index()
        print(f"index: {index}")
    print(f"rank {rank}/{world_size}: {done} scene(s) encoded, {skipped} already stored"
          + (f", {len(recomputed)} corrupt file(s) recomputed: {', '.join(recomputed)}" if recomputed else "")
          + (f", {len(failed)} failed (listed in index.json; rerun to retry them)" if failed else "")
          + f"; weights: {backbone.weights_label}")
    return 3 if failed else 0
