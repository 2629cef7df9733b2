"""``vega3d train CONFIG``: fine-tune Qwen2.5-VL or the LLaVA-Video 3D model with the generative branch (paper Alg. 1)."""

from __future__ import annotations

from pathlib import Path


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train Qwen2.5-VL or LLaVA-Video 3D + generative branch from a YAML/JSON config (Alg. 1)",
        description="Reads CONFIG (sections model, generative, data, training; see docs/training.md), trains "
                    "through the Hugging Face Trainer (DeepSpeed/FSDP/bf16/gradient checkpointing are training "
                    "keys), resumes from the last checkpoint in output_dir, and writes the final model there. A LLaVA-Video "
                    "checkpoint trains on the five ScanNet tasks (data.train: the multi.yaml of vega3d prepare mixture).",
    )
    parser.add_argument("config", type=Path, help="YAML or JSON run configuration")
    parser.set_defaults(func=run)


def run(args) -> int:
    from vega3d.training import read_config, train

    output = train(read_config(args.config))
    print(f"{output}: model, tokenizer, image processor and train_summary.json written")
    return 0
