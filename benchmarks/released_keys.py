"""The released spatial-reasoning checkpoint's full key set (Qwen2.5-VL-7B + Wan2.1-T2V-1.3B, from the facts)
against our classes on the meta device, at full depth. Prints a table; writes results/released_keys.json.

    PYTHONPATH=src python benchmarks/released_keys.py
"""

from __future__ import annotations

import time
from pathlib import Path

from vega3d.io import write_json
from vega3d.models.released_keys import QWEN_7B, WAN_1_3B, check_released_keys, released_base_shapes, released_generative_shapes
from vega3d.models.released_sr import DIT_PREFIX


def main() -> None:
    start = time.perf_counter()
    dit_params = check_released_keys(QWEN_7B, WAN_1_3B)  # raises on any missing, extra or mis-shaped key
    seconds = time.perf_counter() - start
    shapes = {**released_base_shapes(QWEN_7B), **released_generative_shapes(QWEN_7B["hidden"], WAN_1_3B)}
    rows = {
        "released keys": len(shapes),
        "Wan DiT tensors (generative_encoder.tower.model.*)": sum(k.startswith(DIT_PREFIX) for k in shapes),
        "Wan DiT parameters": dit_params,
        "generative_merger + generative_fusion tensors": sum(k.startswith(("generative_merger.", "generative_fusion.")) for k in shapes),
        "check time on the meta device (s)": round(seconds, 2),
    }
    for name, value in rows.items():
        print(f"{name:55s} {value:>15,}" if isinstance(value, int) else f"{name:55s} {value:>15}")
    out = write_json(Path(__file__).parent / "results" / "released_keys.json", {"all_keys_match": True, **rows})
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
