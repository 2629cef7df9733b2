"""``vega3d awareness``: the multi-view correspondence score of a backbone over one scene or a folder."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

EXIT_PARTIAL = 3  # some scenes failed; the others are done and a rerun retries only the failed ones

DEFAULT_SCENE_NOTE = "the bundled procedural room, rendered once into $VEGA3D_CACHE or ~/.cache/vega3d"


def _size(text: str) -> tuple[int, int]:
    parts = text.lower().replace("x", ",").split(",")
    if len(parts) == 1:
        parts = parts * 2
    try:
        h, w = (int(p) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected H,W or N; got {text!r}") from None
    return h, w


def register(subparsers) -> None:
    p = subparsers.add_parser("awareness", help="multi-view correspondence score of a backbone (paper Sec. 4.1)",
                              description=__doc__)
    p.add_argument("scenes", nargs="?", help=f"a scene folder or a folder of scenes (default: {DEFAULT_SCENE_NOTE})")
    p.add_argument("--backbone", default="pixels", help="backbone name (see --list), or NAME,NAME,... for a leaderboard; default: pixels")
    p.add_argument("--weights", help="weights: local folder, hub id or checkpoint file; several backbones: NAME=PATH,...")
    p.add_argument("--out", type=Path, default=Path("outputs/awareness"), help="output folder (default: outputs/awareness)")
    p.add_argument("--frames", type=int, default=32, help="frames sampled per scene (default: 32)")
    p.add_argument("--image-size", type=_size, default=(384, 384), help="frame size fed to the backbone, H,W (default: 384)")
    p.add_argument("--voxel-size", type=float, default=0.1, help="voxel edge in metres (default: 0.1)")
    p.add_argument("--protocol", choices=("multiview", "adjacent"), default="multiview",
                   help="multiview: App. C.1 (default); adjacent: the released code's frame-pair variant")
    p.add_argument("--min-valid-depth", type=float, default=None,
                   help="keep tokens whose cell has at least this fraction of valid depth (released code: 0.1); "
                        "default: no mask, as the paper's script")
    p.add_argument("--plots", type=int, default=4, help="write PCA and consistency plots for the first N scenes (default: 4)")
    p.add_argument("--grid", type=_size, default=None, help="token grid h,w passed to the backbone (default: its own)")
    p.add_argument("--store", type=Path, help="feature store folder: reuse tokens stored there, store new ones (see `vega3d extract`)")
    p.add_argument("--scene-cache", type=Path, help="folder keeping prepared scenes (frames, depth, cameras) across runs, "
                   "keyed by the SHA-256 of the scene files and settings")
    p.add_argument("--list", action="store_true", help="list the registered backbones and exit")
    leaderboard = p.add_argument_group("leaderboard (several backbones, sweeps, NOS; see docs/backbones.md)")
    leaderboard.add_argument("--timesteps", help="sweep: comma-separated timesteps, one row each (e.g. 0,100,300)")
    leaderboard.add_argument("--layers", help="sweep: comma-separated layers/blocks, one row each (e.g. 10,12,20)")
    leaderboard.add_argument("--nos", type=Path, help="NOS table CSV (model,group,<metrics>): correlation and Fig. 3b scatter")
    leaderboard.add_argument("--baseline", default="Baseline", help="baseline row of the NOS table (default: Baseline)")
    leaderboard.add_argument("--option", action="append", default=[], metavar="[NAME:]KEY=VALUE",
                             help="backbone option for all backbones or for NAME only, e.g. sd2.1:resolution=512 (repeatable)")
    p.set_defaults(func=run)


def run(args) -> int:
    from vega3d.analysis import run_awareness
    from vega3d.backbones import backbone_description, backbone_licence, list_backbones, load_backbone
    from vega3d.cli import CommandError, check_outputs, loading
    from vega3d.scenes import default_scene_path, find_scenes

    if args.list:
        for name in list_backbones():
            licence = backbone_licence(name)
            print(f"{name:24s} {backbone_description(name)}" + (f" [licence: {licence}]" if licence else ""))
        return 0
    if args.frames < 1 or args.voxel_size <= 0:
        raise CommandError("--frames must be >= 1 and --voxel-size > 0")
    if args.min_valid_depth is not None and not 0 <= args.min_valid_depth <= 1:
        raise CommandError(f"--min-valid-depth is a fraction in [0, 1]; got {args.min_valid_depth}")
    if args.frames < 1 or min(args.image_size) < 1 or (args.grid and min(args.grid) < 1):
        raise CommandError("--frames, --image-size and --grid must be positive")
    check_outputs({"--out": args.out, "--store": args.store, "--scene-cache": args.scene_cache}, [args.scenes, args.nos],
                  folders=("--out", "--store", "--scene-cache"))
    from vega3d.io import remove_stale_temporaries

    remove_stale_temporaries(args.out)  # left by killed runs
    for name in args.backbone.split(","):
        backbone_description(name.strip())  # an unknown name fails here, before any scene is read or rendered
    scenes = find_scenes(args.scenes) if args.scenes else [default_scene_path()]
    encoder = {}
    if args.scene_cache:
        from vega3d.scenes import PreparedScenes

        encoder["prepared"] = PreparedScenes(args.frames, args.image_size, cache_dir=args.scene_cache)
    if args.store:
        from vega3d.store import FeatureStore, encode_scene

        store = FeatureStore(args.store)
        encoder["encode"] = lambda model, frames: encode_scene(model, frames, store)
    if "," in args.backbone or args.timesteps or args.layers or args.nos or args.option:
        from vega3d.analysis.leaderboard import run_from_args

        return run_from_args(args, scenes, **encoder)
    options = {"grid": args.grid} if args.grid else {}
    with loading(f"backbone {args.backbone} --weights {args.weights}"):
        backbone = load_backbone(args.backbone, weights=args.weights, **options)
    report = run_awareness(scenes, backbone, out_dir=args.out, num_frames=args.frames, image_size=args.image_size,
                           voxel_size=args.voxel_size, protocol=args.protocol, min_valid_depth=args.min_valid_depth,
                           plot_scenes=args.plots, dataset_root=args.scenes, skip_bad_scenes=True, **encoder)
    for failure in report.failed:
        print(f"vega3d awareness: error: {failure['error']}", file=sys.stderr)
    if not report.scenes:
        return 1
    stats = report.statistics()
    print(f"{backbone.name}: correspondence {stats['mean']:.4f} ± {stats['std']:.4f} over "
          f"{stats['num_scored']}/{stats['num_scenes']} scene(s)" + (f"; NaN: {', '.join(stats['nan_scenes'])}" if stats["nan_scenes"] else ""))
    print(f"report: {args.out / 'report.md'}")
    if report.failed:  # the others are scored and kept; a rerun computes only the failed ones
        print(f"{len(report.failed)} of {len(scenes)} scene(s) failed (listed in the report); rerun to retry them", file=sys.stderr)
        return EXIT_PARTIAL
    return 0
