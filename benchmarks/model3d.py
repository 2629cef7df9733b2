"""The LLaVA-Video 3D model at the paper's geometry: visual tokens, parameters, forward time, memory.

* Visual tokens for 32 frames (6,720; twice that with sequence concat).
* Parameter counts of the full-size model (authors' VEGA-3D config) on the meta device, by part.
* Forward time on CPU at the real widths (Qwen2-7B 3584, SigLIP 1152, 32 frames of 384 x 384, a grounding
  prompt with 50 proposals), with and without the generative branch, at reduced depth (``--layers`` LLM and
  SigLIP layers, RANDOM WEIGHTS, vocabulary cut to 1,024 rows: only the last token's logits are computed).
  The LLM forward at the real depth is scaled from the timed decoder layers: embed + 28 x layer + norm.
* Targets, as ratios in one run: what this model adds around the LLM (merge: pooling, fusion, position code,
  newlines, splice; object features; grounding head) <= 5 % of the LLM forward; object features for 50
  proposals over 32 frames of 378 x 378 world coordinates <= 256 MiB beyond their inputs (peak RSS of a fresh
  process, ``ru_maxrss``).

    python benchmarks/model3d.py [--layers 1] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

from vega3d.io import write_json

REPO = Path(__file__).resolve().parents[1]
FRAMES, SIZE, PROPOSALS = 32, 384, 50


def full_config(generative: bool, **overrides):
    from vega3d.models.llava_layouts import AUTHORS_3D_CONFIG, llava_next_config
    from vega3d.models.llava_video import Vega3DLlavaVideoConfig

    values = llava_next_config({**AUTHORS_3D_CONFIG, "use_generative_feature": generative})
    values.pop("model_type")
    for part in ("text_config", "vision_config"):
        values[part] = {**values[part], **overrides.get(part, {})}
    return Vega3DLlavaVideoConfig(**values)


def parameter_counts() -> dict:
    from vega3d.models.llava_video import Vega3DLlavaVideoForConditionalGeneration

    counts = {}
    for generative in (True, False):
        with torch.device("meta"):
            model = Vega3DLlavaVideoForConditionalGeneration(full_config(generative))
        parts = {"llm (embeddings, 28 layers, lm_head)": [model.model.language_model, model.lm_head],
                 "siglip (26 layers)": [model.model.vision_tower], "projector": [model.model.multi_modal_projector],
                 "generative adapters": [getattr(model.model, a) for a in ("generative_projector", "fusion") if hasattr(model.model, a)],
                 "grounding head": [model.grounding_head]}
        row = {name: sum(p.numel() for m in modules for p in m.parameters()) for name, modules in parts.items()}
        row["total"] = sum(p.numel() for p in model.parameters())
        counts["with_branch" if generative else "without_branch"] = row
    return counts


def timed(function, repeat: int = 1):
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        out = function()
        best = min(best, time.perf_counter() - start)
    return best, out


def forward_times(layers: int) -> dict:
    from vega3d.models.grounding import object_features
    from vega3d.models.llava_prompts import inference_prompt
    from vega3d.models.llava_tiny import tiny_tokenizer
    from vega3d.models.llava_video import Vega3DLlavaVideoForConditionalGeneration

    generator = torch.Generator().manual_seed(0)
    pixels = torch.rand(FRAMES, 3, SIZE, SIZE, generator=generator) * 2 - 1
    world = torch.rand(FRAMES, SIZE, SIZE, 3, generator=generator) * 8 - 4
    gen = torch.randn(FRAMES, 14, 14, 1536, generator=generator)
    centres = torch.rand(PROPOSALS, 3, generator=generator) * 6 - 3
    boxes = torch.cat([centres, torch.rand(PROPOSALS, 3, generator=generator) + 0.2], dim=1)
    tokenizer = tiny_tokenizer()
    results, t_llm = {}, None
    for generative in (True, False):
        config = full_config(generative, text_config={"num_hidden_layers": layers, "vocab_size": 1024},
                             vision_config={"num_hidden_layers": layers})
        config.ground_token_id = 1000
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = Vega3DLlavaVideoForConditionalGeneration(config).eval()
        ids = inference_prompt(tokenizer, "<image>Identify the object according to the following description.\nThe chair by the door.")
        input_ids = torch.tensor([ids + [1000]])
        extra = {"generative_tokens": [gen]} if generative else {}
        with torch.no_grad():
            t_vision, patches = timed(lambda: model.model.encode_frames(pixels))
            t_merge, tokens = timed(lambda: model.model.visual_tokens(patches, world, gen if generative else None), repeat=2)
            t_objects, objects = timed(lambda: object_features(patches, world, boxes), repeat=2)
            query = torch.randn(config.text_config.hidden_size)
            t_head, _ = timed(lambda: model.grounding_head.scores(objects, query), repeat=3)
            t_forward, out = timed(lambda: model(input_ids=input_ids, pixel_values_videos=[pixels], world_coords=[world],
                                                 boxes=[boxes], logits_to_keep=1, **extra))
            if t_llm is None:  # the same LLM with and without the branch: timed once, on the branch's sequence
                sequence = torch.randn(1, len(tokens) + len(ids), config.text_config.hidden_size)
                t_llm, _ = timed(lambda: model.model.language_model(inputs_embeds=sequence, use_cache=False))
        per_layer = t_llm / layers  # embed/norm are negligible next to a decoder layer at 6,8k tokens
        llm_full = per_layer * 28
        additions = t_merge + t_objects + t_head
        results["with_branch" if generative else "without_branch"] = {
            "visual_tokens": len(tokens), "sequence_tokens": len(tokens) + len(ids),
            "forward_s_reduced_depth": t_forward, "vision_s_reduced_depth": t_vision, "merge_s": t_merge,
            "object_features_s": t_objects, "head_s": t_head, "llm_layer_s": per_layer, "llm_forward_s_28_layers": llm_full,
            "siglip_forward_s_26_layers": t_vision / layers * 26, "additions_s": additions,
            "additions_over_llm": additions / llm_full, "scores": len(out.grounding_scores[0]),
        }
        del model
    return results


def memory_probe() -> None:
    """Run in a fresh process: peak RSS growth of object features beyond their (already touched) inputs."""
    from vega3d.models.grounding import object_features

    generator = torch.Generator().manual_seed(0)
    world = torch.empty(FRAMES, SIZE, SIZE, 3).uniform_(-4, 4, generator=generator)
    patches = torch.empty(FRAMES, 27 * 27, 3584).normal_(generator=generator)
    boxes = torch.cat([torch.empty(PROPOSALS, 3).uniform_(-3, 3, generator=generator),
                       torch.empty(PROPOSALS, 3).uniform_(0.2, 1.2, generator=generator)], dim=1)
    object_features(patches[:1, :4], world[:1, :28, :28], boxes[:1])  # warm up the kernels on a tiny input
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    object_features(patches, world, boxes)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"peak_growth_mib": (after - before) / 1024, "inputs_mib": (world.numel() + patches.numel()) * 4 / 2**20}))


def report(result: dict) -> None:
    times, params, memory = result["times"], result["parameters"], result["object_features_memory"]
    print(f"{'':<40}{'with branch':>16}{'without':>16}")
    for key, label in (("visual_tokens", "visual tokens (32 frames)"), ("forward_s_reduced_depth", f"forward s ({result['layers_run']} layer)"),
                       ("merge_s", "merge s"), ("object_features_s", "object features s (50)"), ("head_s", "grounding head s"),
                       ("llm_forward_s_28_layers", "LLM forward s (28, scaled)"), ("siglip_forward_s_26_layers", "SigLIP s (26, scaled)"),
                       ("additions_over_llm", "additions / LLM (<= 0.05)")):
        a, b = times["with_branch"][key], times["without_branch"][key]
        fmt = (lambda v: f"{v:>16,}") if isinstance(a, int) else (lambda v: f"{v:>16.4f}")
        print(f"{label:<40}{fmt(a)}{fmt(b)}")
    for key in params["with_branch"]:
        print(f"{'params: ' + key:<40}{params['with_branch'][key]:>16,}{params['without_branch'][key]:>16,}")
    print(f"object features, 50 boxes x 32 frames: peak +{memory['peak_growth_mib']:.1f} MiB beyond "
          f"{memory['inputs_mib']:.0f} MiB of inputs (<= 256)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=1, help="LLM and SigLIP layers actually run (default 1)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--memory-probe", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.memory_probe:
        return memory_probe()
    probe = subprocess.run([sys.executable, __file__, "--memory-probe", "--threads", str(args.threads)],
                           capture_output=True, text=True, check=True)
    memory = json.loads(probe.stdout.strip().splitlines()[-1])
    params = parameter_counts()
    times = forward_times(args.layers)
    result = {"model": "LLaVA-Video 3D model at full width, RANDOM WEIGHTS, reduced depth for timing",
              "frames": FRAMES, "image_size": SIZE, "proposals": PROPOSALS, "layers_run": args.layers,
              "threads": args.threads, "parameters": params, "times": times, "object_features_memory": memory,
              "targets": {"additions_over_llm <= 0.05": all(t["additions_over_llm"] <= 0.05 for t in times.values()),
                          "object_features_peak_mib <= 256": memory["peak_growth_mib"] <= 256}}
    report(result)
    out = write_json(REPO / "benchmarks" / "results" / "model3d.json", result, sort_keys=True)
    print(f"targets met: {result['targets']}; wrote {out}")


if __name__ == "__main__":
    main()
