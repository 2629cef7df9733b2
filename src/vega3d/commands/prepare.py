"""``vega3d prepare STEP ...``: the ScanNet tasks from the files users have, one command per step (docs/prepare.md)."""

from __future__ import annotations

STEPS = ("scenes", "boxes", "proposals", "scanrefer", "multi3drefer", "scan2cap", "scanqa", "sqa3d", "mixture", "verify")


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "prepare", help="prepare the ScanNet tasks: scene infos, GT boxes, proposals, the five tasks, the mixture",
        description="One step per verb; every output is written atomically and recorded with the SHA-256 of its "
                    "inputs in OUT/prepare_manifest.json. Input files are never modified. See docs/prepare.md.")
    steps = parser.add_subparsers(dest="step", metavar="STEP", required=True)

    def step(name, help_text):
        sub = steps.add_parser(name, help=help_text, description=help_text)
        if name not in ("mixture", "verify"):
            sub.add_argument("--out", required=True, help="output folder (the processed data folder)")
        sub.set_defaults(func=run)
        return sub

    sub = step("scenes", "convert EmbodiedScan embodiedscan_infos_*.pkl (restricted unpickler) to JSON + safetensors")
    sub.add_argument("infos", nargs="+", metavar="INFO.pkl")
    sub = step("boxes", "GT boxes scannet_{split}_gt_box.json from ScanNet scans (ply, aggregation, segs, axisAlignment)")
    sub.add_argument("scans", help="ScanNet scans folder (SCANS/sceneXXXX_XX/...)")
    sub.add_argument("--scenes", required=True, help="the split's scene list (scannetv2_{split}.txt)")
    sub.add_argument("--split", help="train/val/test (default: from the --scenes file name)")
    sub.add_argument("--id-rule", choices=("keep", "reference"), default="keep",
                     help="keep (default): every scene, null for an object id without points; reference: drop "
                          "scenes whose ids are not exactly 0..K-1, as released")
    sub = step("proposals", "predicted boxes scannet_{split}_pred_box.json from Mask3D *.mask.npz or a JSON of boxes")
    sub.add_argument("source", help="folder of <scene>.mask.npz, or a JSON {scene: [box, ...]}")
    sub.add_argument("--split", required=True, choices=("train", "val", "test"))
    sub.add_argument("--scenes", help="the split's scene list (scannetv2_{split}.txt or its gt_box JSON): "
                                      "proposals of other scenes are an error")
    sub.add_argument("--scans", help="ScanNet scans folder (needed for masks: boxes come from the mesh)")
    sub.add_argument("--box-format", choices=("center_size", "min_max"), default="center_size", help="JSON box layout")
    sub.add_argument("--limit", type=int, default=50, help="proposals kept per scene (default 50, the first ones)")
    for name, what in (("scanrefer", "ScanRefer_filtered_{split}.json"), ("multi3drefer", "multi3drefer_{split}.json"),
                       ("scan2cap", "ScanRefer_filtered_{split}.json")):
        sub = step(name, f"{name} records from {what} and the GT boxes")
        sub.add_argument("annotations", metavar=what.replace("{split}", "SPLIT"))
        sub.add_argument("--boxes", required=True, help="scannet_{split}_gt_box.json")
        sub.add_argument("--split", help="default: from the file name")
        sub.add_argument("--skip-missing-scenes", action="store_true",
                         help="drop records of scenes the box file lacks (e.g. scenes dropped by --id-rule reference)")
        if name == "scanrefer":
            sub.add_argument("--labels", required=True, help="scannetv2-labels.combined.tsv (for unique/multiple)")
        if name == "scan2cap":
            sub.add_argument("--proposals", help="scannet_{split}_pred_box.json (val/test: box_input = best IoU >= 0.5)")
    sub = step("scanqa", "ScanQA records from ScanQA_v1.0_{split}.json")
    sub.add_argument("annotations", metavar="ScanQA_v1.0_SPLIT.json")
    sub.add_argument("--split", help="default: from the file name")
    sub = step("sqa3d", "SQA3D records from v1_balanced_questions/sqa_annotations_{split}_scannetv2.json")
    sub.add_argument("questions", metavar="QUESTIONS.json")
    sub.add_argument("annotations", metavar="SQA_ANNOTATIONS.json")
    sub.add_argument("--split", help="default: from the file name")
    sub = step("mixture", "write DIR/multi.yaml: the five train files, each sampling_strategy all")
    sub.add_argument("dir", help="the folder holding the five *_train_llava_style.json")
    sub = step("verify", "re-hash every input and output recorded in DIR/prepare_manifest.json")
    sub.add_argument("dir")


def run(args) -> int:
    import json
    from pathlib import Path

    from vega3d import prepare as p
    from vega3d.io import write_text
    from vega3d.prepare.inputs import record_outputs
    from vega3d.prepare.tasks import write_prepared

    if args.step == "scenes":
        from vega3d.scenes.embodiedscan import convert_info_file

        for info in args.infos:
            json_path, poses_path = convert_info_file(info, args.out)
            written = [json_path] + ([poses_path] if poses_path else [])
            count = len(json.loads(json_path.read_text())["scenes"])
            record_outputs(args.out, "scenes", [info], {}, {path.name: count for path in written})
            print(f"wrote {', '.join(map(str, written))}")
        return 0
    if args.step == "verify":
        problems = p.verify_manifest(args.dir)
        for problem in problems:
            print(problem)
        print(f"{args.dir}: {'all inputs and outputs match the manifest' if not problems else f'{len(problems)} problem(s)'}")
        return 1 if problems else 0
    if args.step == "mixture":
        print(f"wrote {write_text(Path(args.dir) / 'multi.yaml', p.mixture_yaml(args.dir))}")
        return 0
    files, inputs, options = _build(args)
    for path in write_prepared(args.out, args.step, inputs, options, files):
        print(f"wrote {path}")
    if options.get("dropped_scenes"):
        print(f"dropped {len(options['dropped_scenes'])} scene(s) (--id-rule reference): {', '.join(options['dropped_scenes'])}")
    return 0


def _build(args) -> tuple[dict, list, dict]:
    """``(files to write, inputs read, options)`` of the boxes, proposals and task steps."""
    from pathlib import Path

    from vega3d import prepare as p
    from vega3d.prepare.boxes import read_scene_list, scan_files
    from vega3d.prepare.inputs import split_of

    if args.step == "boxes":
        scene_ids = read_scene_list(args.scenes)
        table, dropped = p.gt_boxes(args.scans, scene_ids, args.id_rule)
        inputs = [args.scenes, *(path for scene in scene_ids for path in scan_files(Path(args.scans) / scene))]
        return ({f"scannet_{split_of(args.scenes, args.split)}_gt_box.json": table}, inputs,
                {"id_rule": args.id_rule, "dropped_scenes": dropped})
    if args.step == "proposals":
        scenes = read_scene_list(args.scenes) if args.scenes else None
        inputs = [args.scenes] if args.scenes else []
        if Path(args.source).is_dir():
            if not args.scans:
                raise p.PrepareError(f"{args.source}: mask proposals need --scans (the boxes come from the meshes)")
            table = p.mask_proposals(args.source, args.scans, scenes, args.limit)
            for key in table:
                scene = key.removeprefix("scannet/")
                inputs += [Path(args.source) / f"{scene}.mask.npz", *scan_files(Path(args.scans) / scene)[:2]]
        else:
            table = p.json_proposals(args.source, scenes, args.box_format, args.limit)
            inputs.append(args.source)
        return ({f"scannet_{args.split}_pred_box.json": table}, inputs,
                {"limit": args.limit, "box_format": args.box_format, "source": str(args.source)})
    if args.step == "scanqa":
        return p.build_scanqa(args.annotations, split_of(args.annotations, args.split)), [args.annotations], {}
    if args.step == "sqa3d":
        files = p.build_sqa3d(args.questions, args.annotations, split_of(args.questions, args.split))
        return files, [args.questions, args.annotations], {}
    split, boxes = split_of(args.annotations, args.split), p.BoxFile(args.boxes)
    options, inputs = {"skip_missing_scenes": args.skip_missing_scenes}, [args.annotations, args.boxes]
    if args.step == "scanrefer":
        files = p.build_scanrefer(args.annotations, boxes, p.read_label_map(args.labels), split, args.skip_missing_scenes)
        inputs.append(args.labels)
    elif args.step == "multi3drefer":
        files = p.build_multi3drefer(args.annotations, boxes, split, args.skip_missing_scenes)
    else:
        proposals = p.BoxFile(args.proposals) if args.proposals else None
        files = p.build_scan2cap(args.annotations, boxes, split, proposals, args.skip_missing_scenes)
        inputs += [args.proposals] if args.proposals else []
    return files, inputs, options
