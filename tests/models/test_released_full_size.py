"""The full-size released key set (REFERENCE-SR section 2) against our classes on the meta device.

Real widths (Qwen2.5-VL-7B, Wan2.1-T2V-1.3B) at reduced depth, so that it stays fast; the full depth
(28 LLM layers, 32 vision blocks, 30 DiT blocks: 825 DiT tensors, 1,418,996,800 parameters) is checked
by ``benchmarks/released_keys.py``.
"""

from __future__ import annotations

from vega3d.models.released_keys import QWEN_7B, WAN_1_3B, check_released_keys


def test_full_width_released_keys_fit_our_classes():
    params = check_released_keys({**QWEN_7B, "layers": 2, "vision_blocks": 2}, {**WAN_1_3B, "num_layers": 2})
    per_block = 2 * (4 * (1536 * 1536 + 1536) + 2 * 1536) + 2 * 1536 + 6 * 1536 + 2 * 8960 * 1536 + 8960 + 1536
    assert params == 1_418_996_800 - 28 * per_block  # the fact's total for 30 blocks, minus 28 of them
