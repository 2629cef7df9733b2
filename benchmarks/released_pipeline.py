"""The released spatial-reasoning pipeline end to end on a toy (RANDOM WEIGHTS): a tiny checkpoint written in
the released layout -> `vega3d convert` -> the reference preset (frames as 518-wide images, Wan fill-crop to
832x480, t = 299, last block at its native 30x52 grid, bilinear to Qwen's patch grid, merger, residual gate)
-> an answer. Prints shapes and times; writes results/released_pipeline.json.

    PYTHONPATH=src python benchmarks/released_pipeline.py
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

from vega3d.backbones.wan_loading import save_random_wan
from vega3d.cli import main
from vega3d.io import write_json
from vega3d.models.inputs import QwenInputs
from vega3d.models.tiny import save_tiny_released, tiny_processor
from vega3d.serving import Assistant

WAN = dict(num_attention_heads=2, attention_head_dim=12, text_dim=16, freq_dim=16, ffn_dim=32, num_layers=2, rope_max_seq_len=64)
DIT = dict(dim=24, ffn_dim=32, num_layers=2, text_dim=16, freq_dim=16, in_channels=16)


def run(root: Path, num_frames: int = 4) -> dict:
    wan = save_random_wan(root / "Wan2.1-tiny", "wan2.1-t2v-1.3b", WAN, dict(base_dim=8, num_res_blocks=1))
    torch.save({"context": torch.randn(1, 16, generator=torch.Generator().manual_seed(0)).to(torch.bfloat16)},
               root / "wan_prompt_embedding.pt")  # the released file format: a dict, trimmed rows, bf16
    main(["prompt-embedding", "--from", str(root / "wan_prompt_embedding.pt"), "--text-dim", "16",
          "--out", str(wan / "vega3d_empty_prompt.safetensors")])
    tiny = tiny_processor(56)  # the released processor bounds (12544..451584 px) keep 504x392 as it is: 28x36 patches
    processor = QwenInputs(tiny.tokenizer, Qwen2VLImageProcessorPil(min_pixels=12544, max_pixels=451584))
    released = save_tiny_released(root / "released", processor, DIT, hidden=32)
    main(["convert", str(released), str(root / "converted"), "--backbone-weights", str(wan)])
    frames = root / "frames"
    frames.mkdir()
    for i in range(num_frames):
        Image.fromarray(np.random.default_rng(i).integers(0, 255, (480, 640, 3), dtype=np.uint8)).save(frames / f"{i:03d}.png")
    start = time.perf_counter()
    assistant = Assistant(root / "converted", num_frames=32, device="cpu", max_new_tokens=16)
    clip, inputs = assistant.clip(frames)
    load_s = time.perf_counter() - start
    start = time.perf_counter()
    tokens = assistant.generative.tokens(clip)
    encode_s = time.perf_counter() - start
    start = time.perf_counter()
    answer = assistant.ask(frames, "These are frames of a video.\nHow many chairs?\n"
                           "Please answer the question using a single word or phrase.", strip=False)
    answer_s = time.perf_counter() - start
    return {"weights": "RANDOM WEIGHTS (tiny toy of the real classes)", "frames": num_frames,
            "frame_size_in": [480, 640], "frame_size_qwen": list(clip.images.shape[-2:]),
            "qwen_patch_grid": inputs["image_grid_thw"][0].tolist(), "generative_tokens": list(tokens.shape),
            "backbone": assistant.generative.backbone.config(), "load_s": round(load_s, 2),
            "encode_s": round(encode_s, 2), "answer_s": round(answer_s, 2), "answer_chars": len(answer)}


def main_() -> None:
    with tempfile.TemporaryDirectory() as folder:
        result = run(Path(folder))
    for key in ("weights", "frames", "frame_size_in", "frame_size_qwen", "qwen_patch_grid", "generative_tokens",
                "load_s", "encode_s", "answer_s"):
        print(f"{key:22s} {result[key]}")
    backbone = result["backbone"]
    print(f"{'backbone options':22s} preset={backbone['preset']} size={backbone['size']} block={backbone['block']} "
          f"grid={backbone['grid']} timestep={backbone['timestep']}")
    result["backbone"] = {k: v for k, v in backbone.items() if k not in ("weights", "dit_weights", "prompt_embedding")}
    print(f"wrote {write_json(Path(__file__).parent / 'results' / 'released_pipeline.json', result)}")


if __name__ == "__main__":
    main_()
