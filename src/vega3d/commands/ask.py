"""``vega3d ask VIDEO_OR_SCENE "question"``: answer a question with Qwen2.5-VL (+ generative branch)."""

from __future__ import annotations

from pathlib import Path


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "ask",
        help="answer questions about a scene folder, video or frame folder",
        description="Loads MODEL (a VEGA-3D checkpoint or a plain Qwen2.5-VL), samples the clip once, computes "
                    "its generative features once, and answers each question in turn (greedy decoding).",
    )
    parser.add_argument("video", type=Path, help="scene folder (posed layout), video file or folder of frames")
    parser.add_argument("questions", nargs="+", help="one or more questions, answered in order")
    parser.add_argument("--model", type=Path, required=True, help="checkpoint folder (config.json, weights, tokenizer)")
    parser.add_argument("--frames", type=int, default=32, help="frames sampled uniformly (default 32)")
    parser.add_argument("--image-size", type=int, nargs=2, default=(384, 384), metavar=("H", "W"),
                        help="frame size before Qwen's own resizing (default 384 384)")
    parser.add_argument("--source", choices=("online", "offline"), default="online",
                        help="generative features: encode now (cached) or read from --store (default online)")
    parser.add_argument("--store", type=Path, default=None, help="feature store folder")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--gates", type=Path, default=None,
                        help="also write the per-token gates to this .safetensors file (for vega3d gates)")
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --gates file")
    parser.set_defaults(func=run)


def run(args) -> int:
    from vega3d.cli import CommandError, check_device, check_outputs, loading
    from vega3d.serving import Assistant

    if not (args.model / "config.json").is_file():
        raise CommandError(f"{args.model}: not a model folder (no config.json)")
    if args.frames < 1 or min(args.image_size) < 1 or args.max_new_tokens < 1:
        raise CommandError(f"--frames, --image-size and --max-new-tokens must be positive; got {args.frames}, "
                           f"{list(args.image_size)}, {args.max_new_tokens}")
    if args.gates is not None and args.gates.suffix != ".safetensors":
        raise CommandError(f"--gates {args.gates}: must end in .safetensors")
    # The gates file may not be any file of the model (e.g. MODEL/model.safetensors) nor the clip.
    check_outputs({"--gates": args.gates}, [*args.model.iterdir(), args.video], overwrite=args.overwrite)
    check_outputs({"--store": args.store}, [args.video], folders=("--store",))
    check_device(args.device)
    with loading(f"--model {args.model}"):
        assistant = Assistant(args.model, num_frames=args.frames, image_size=tuple(args.image_size),
                              generative_source=args.source, store=args.store, device=args.device,
                              max_new_tokens=args.max_new_tokens)
    for question in args.questions:
        print(f"Q: {question}\nA: {assistant.ask(args.video, question)}")
    if args.gates is not None:
        from vega3d.fusion import save_gates

        frames, gates = assistant.gates(args.video)
        random = bool(getattr(assistant.model.config, "random_weights", False))
        save_gates(args.gates, frames, gates, model=type(assistant.model).__name__, weights=str(args.model),
                   random_weights=random, question=" | ".join(args.questions))
        print(f"{args.gates}: gates of {len(frames)} frames written (draw them with: vega3d gates {args.gates})")
    return 0
