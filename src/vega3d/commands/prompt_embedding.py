"""``vega3d prompt-embedding``: the empty-prompt UMT5 embedding the Wan DiT is conditioned on, made once."""

from __future__ import annotations

from pathlib import Path


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "prompt-embedding", help="write the UMT5 embedding of the empty prompt (1 x 512 x 4096) for the Wan backbones",
        description="Encode a prompt (default: empty) with the UMT5 text encoder of a local Wan diffusers folder "
                    "(text_encoder/, tokenizer/), zero-pad to 512 rows and write {prompt_embeds: [1, 512, D]}; or "
                    "convert the released code's wan_prompt_embedding.pt (--from FILE).")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--weights", help="diffusers folder holding text_encoder/ and tokenizer/")
    source.add_argument("--from", dest="from_file", metavar="FILE",
                        help="a released prompt-embedding file (.pt: tensor or {context|embedding: tensor}), padded to 512 rows")
    parser.add_argument("--backbone", default="wan2.1-t2v-1.3b",
                        help="whose text encoder and prompt layout (default wan2.1-t2v-1.3b; a video DiT family such as "
                             "cogvideox-2b, hunyuanvideo, ltx-video, mochi-1 uses its diffusers pipeline's encode_prompt)")
    parser.add_argument("--text-dim", type=int, default=4096, help="with --from: the DiT's text width (default 4096)")
    parser.add_argument("--out", help="output file (default: WEIGHTS/vega3d_empty_prompt.safetensors, where the backbone "
                                      "looks; with --from: beside FILE)")
    parser.add_argument("--prompt", default="", help="text to encode (default: the empty prompt, as the paper)")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"], help="text encoder precision")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    parser.set_defaults(func=run)


def run(args) -> int:
    import torch

    from vega3d.backbones.video_dit import FAMILIES
    from vega3d.backbones.wan_prompt import (
        DEFAULT_PROMPT_FILE,
        load_released_prompt_embedding,
        make_prompt_embedding,
        save_prompt_embedding,
    )
    from vega3d.cli import CommandError, check_device, check_outputs

    if args.from_file:
        source = Path(args.from_file)
        if not source.is_file():
            raise CommandError(f"--from {source}: no such file")
        out = Path(args.out) if args.out else source.with_name(DEFAULT_PROMPT_FILE)
        if out.resolve() == source.resolve():
            raise CommandError(f"--out {out}: would overwrite the input")
        embeds = load_released_prompt_embedding(source, args.text_dim)
        rows = int(embeds[0].abs().sum(-1).ne(0).sum())
        print(f"wrote {save_prompt_embedding(embeds, out)}: prompt_embeds {list(embeds.shape)} from {source} ({rows} non-zero row(s))")
        return 0
    weights = Path(args.weights)
    if args.backbone in FAMILIES:
        return _family(args, weights)
    for part in ("text_encoder", "tokenizer"):
        if not (weights / part).is_dir():
            raise CommandError(f"--weights {weights}: no {part}/ folder (expected a Wan diffusers folder)")
    check_outputs({"--out": Path(args.out) if args.out else weights / DEFAULT_PROMPT_FILE},
                  [*(weights / "text_encoder").iterdir(), *(weights / "tokenizer").iterdir()], overwrite=args.overwrite)
    check_device(args.device)
    embeds = make_prompt_embedding(weights / "text_encoder", weights / "tokenizer", args.prompt,
                                   dtype=getattr(torch, args.dtype), device=args.device)
    out = save_prompt_embedding(embeds, Path(args.out) if args.out else weights / DEFAULT_PROMPT_FILE)
    print(f"wrote {out}: prompt_embeds {list(embeds.shape)} for prompt {args.prompt!r}")
    return 0


def _family(args, weights: Path) -> int:
    """A video DiT family's own prompt condition (embeddings, mask, pooled projection where it has one)."""
    import torch

    from vega3d.backbones.video_dit import make_family_prompt_embedding
    from vega3d.backbones.wan_prompt import DEFAULT_PROMPT_FILE
    from vega3d.cli import CommandError
    from vega3d.io import save_safetensors

    if not (weights / "model_index.json").is_file():
        raise CommandError(f"--weights {weights}: no model_index.json (expected a diffusers {args.backbone} folder)")
    tensors = make_family_prompt_embedding(args.backbone, weights, args.prompt, dtype=getattr(torch, args.dtype), device=args.device)
    out = save_safetensors(tensors, Path(args.out) if args.out else weights / DEFAULT_PROMPT_FILE)
    print(f"wrote {out}: " + ", ".join(f"{k} {list(v.shape)}" for k, v in sorted(tensors.items())) + f" for prompt {args.prompt!r}")
    return 0
