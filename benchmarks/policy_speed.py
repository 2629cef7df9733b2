"""Speed and size of the OpenVLA-OFT policy at the real 7B geometry, with and without the generative branch.

Parameters are counted on the meta device at full size (RANDOM WEIGHTS; nothing is allocated). Latency
is measured on CPU at the real widths and sequence length (two 224 px images, proprio, a 25-token prompt,
56 action placeholders, batch 1) but reduced depth, then extrapolated linearly to the full depth
(DINOv2 runs 23 blocks, SigLIP 26, Llama 32 layers): t_full = t_small + per-block/-layer cost x the
missing blocks/layers. The branch (resample, project, fuse 256 tokens at width 4096) is timed on its own
and added: the difference of two end-to-end CPU runs is below their noise on a shared machine. The reference is OFT's 109.7 actions/s (A100, bf16, parallel decoding + chunk 8,
one image); a CPU number is only the baseline for the branch's relative overhead. The frozen backbone's
own per-step cost (e.g. Wan2.1) is not included: see benchmarks/overhead.py.

    python benchmarks/policy_speed.py [--threads 1] [--repeats 2]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from timing import median_seconds  # benchmarks/timing.py, beside this script
from vega3d.io import write_json
from vega3d.models import GenerativeSettings
from vega3d.policies import OpenVLAConfig, build_policy

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"
WAN = GenerativeSettings(backbone="wan2.1-t2v-1.3b", feature_dim=1536)
FULL = {"dino": 23, "siglip": 26, "llm": 32}  # blocks / layers that run at full depth
OFT_ACTIONS_PER_S = 109.7


def small_policy(vision_depth: int, llm_layers: int, generative):
    vision = [{"depth": vision_depth}, {"depth": vision_depth}]  # real widths, fewer blocks
    config = OpenVLAConfig(timm_model_kwargs=vision, text_config={"num_hidden_layers": llm_layers})
    return build_policy(config, generative=generative).eval()


def measure_base(repeats: int) -> dict:
    """OpenVLA-OFT latency per chunk: two reduced depths, extrapolated to the full one."""
    torch.manual_seed(0)
    prompt = 25
    ids = torch.randint(3, 32000, (1, 1 + prompt + 56 + 1))
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "pixel_values": torch.randn(1, 12, 224, 224),
             "proprio": torch.zeros(1, 8)}
    times = {}
    for vision_depth, layers in ((3, 1), (4, 2)):  # 2 -> 3 ViT blocks run, 1 -> 2 LLM layers
        policy = small_policy(vision_depth, layers, None)
        with torch.inference_mode():
            pixels = batch["pixel_values"].reshape(2, 6, 224, 224)
            times[layers] = {
                "forward": median_seconds(lambda: policy(**batch), repeats),
                "dino": median_seconds(lambda: policy.vision_backbone._patches(policy.vision_backbone.featurizer, pixels[:, :3]), repeats),
                "siglip": median_seconds(lambda: policy.vision_backbone._patches(policy.vision_backbone.fused_featurizer, pixels[:, 3:]), repeats),
            }
        del policy
    small, big = times[1], times[2]
    per = {"dino": big["dino"] - small["dino"], "siglip": big["siglip"] - small["siglip"]}
    per["llm"] = (big["forward"] - small["forward"]) - per["dino"] - per["siglip"]
    full = small["forward"] + per["dino"] * (FULL["dino"] - 2) + per["siglip"] * (FULL["siglip"] - 2) + per["llm"] * (FULL["llm"] - 1)
    return {"measured_s": times, "per_block_s": per, "latency_full_s": full}


def measure_branch(generative, repeats: int) -> float:
    """The branch's own cost per chunk at full width (its input does not depend on the depth): resample the
    backbone tokens to 16x16, project 1536 -> 4096, fuse with the third-person image's 256 tokens."""
    policy = small_policy(3, 1, generative)
    sem = torch.randn(1, 256, 4096)
    gen = torch.randn(1, 1, 1, 14, 14, generative.feature_dim)
    from vega3d.models import resample_tokens

    with torch.inference_mode():
        return median_seconds(lambda: policy.fuse_generative(sem, resample_tokens(gen.flatten(0, 2), (16, 16), 1)), max(repeats, 5))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    base = measure_base(args.repeats)
    branch = measure_branch(WAN, args.repeats)
    rows = {}
    for name, generative in (("OpenVLA-OFT", None), ("+ generative branch (Wan2.1 tokens, gated)", WAN)):
        meta = build_policy(OpenVLAConfig(), generative=generative, device="meta")
        params = sum(p.numel() for p in meta.parameters())
        adapters = sum(p.numel() for p in meta.adapter_parameters()) if generative else 0
        del meta
        latency = base["latency_full_s"] + (branch if generative else 0.0)
        rows[name] = {"parameters": params, "branch_parameters": adapters, "latency_full_s": latency,
                      "actions_per_s": 8 / latency, "branch_s": branch if generative else 0.0}
    rows["OpenVLA-OFT"].update(base)
    print("RANDOM WEIGHTS; CPU, torch threads =", args.threads, "; full depth extrapolated from reduced depth")
    print(f"{'variant':<44} {'params':>8} {'latency/chunk':>14} {'actions/s':>10} {'overhead':>9}")
    for name, row in rows.items():
        row["overhead_vs_oft"] = row["branch_s"] / base["latency_full_s"]
        print(f"{name:<44} {row['parameters'] / 1e9:>7.3f}B {row['latency_full_s']:>13.2f}s {row['actions_per_s']:>10.4f} "
              f"{100 * row['overhead_vs_oft']:>8.2f}%")
    print(f"branch alone: {1000 * branch:.1f} ms per chunk, {rows[list(rows)[1]]['branch_parameters'] / 1e6:.1f}M parameters")
    print(f"reference: OFT paper {OFT_ACTIONS_PER_S} actions/s (A100, bf16, one image)")
    RESULTS.mkdir(parents=True, exist_ok=True)
    write_json(RESULTS / "policy_speed.json", {"label": "RANDOM WEIGHTS", "device": "cpu", "threads": args.threads,
                                               "reference_actions_per_s": OFT_ACTIONS_PER_S, "variants": rows})


if __name__ == "__main__":
    main()
