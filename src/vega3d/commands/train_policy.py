"""``vega3d train-policy CONFIG``: OFT fine-tuning of the OpenVLA policy (+ generative branch) on LIBERO demos."""

from __future__ import annotations

from pathlib import Path


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "train-policy",
        help="fine-tune the OpenVLA-OFT policy (+ generative branch) on LIBERO HDF5 demos",
        description="Reads CONFIG (sections model, data, training; see docs/policy.md), trains with LoRA, the L1 "
                    "action head and the proprio projector through the Hugging Face Trainer (DeepSpeed/FSDP/bf16 are "
                    "training keys), resumes from the last checkpoint in output_dir and writes the policy there.",
    )
    parser.add_argument("config", type=Path, help="YAML or JSON run configuration")
    parser.set_defaults(func=run)


def run(args) -> int:
    from vega3d.policies.train import read_policy_config, train_policy

    output = train_policy(read_policy_config(args.config))
    print(f"{output}: policy (merged weights, LoRA adapter, heads, dataset_statistics.json) and train_summary.json written")
    return 0
