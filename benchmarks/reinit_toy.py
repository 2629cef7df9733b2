"""What the released construction does to a frozen tower loaded in ``__init__`` (REFERENCE-SR section 2,
"Critical"), re-run on a toy with the transformers installed here.

A PreTrainedModel builds a base Linear plus a "tower" (Linear, Conv3d, LayerNorm) whose weights it sets in
``__init__`` (7.0 for Linear/Conv3d, 9.0 for the LayerNorm), as the released model loads Wan in ``__init__``;
its ``_init_weights`` covers the modules Qwen2.5-VL's does.
A base checkpoint without the tower's keys is then loaded with ``from_pretrained``. Prints which tower
tensors kept their ``__init__`` values; writes results/reinit_toy.json.

    PYTHONPATH=src python benchmarks/reinit_toy.py
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch
import transformers
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel

from vega3d.io import write_json


class ToyConfig(PretrainedConfig):
    model_type = "vega3d_reinit_toy"


class Toy(PreTrainedModel):
    config_class = ToyConfig

    def __init__(self, config, with_tower: bool = True):
        super().__init__(config)
        self.base = nn.Linear(4, 4)
        if with_tower:
            self.tower = nn.ModuleDict({"linear": nn.Linear(4, 4), "conv": nn.Conv3d(2, 2, 1), "norm": nn.LayerNorm(4)})
            with torch.no_grad():  # "loaded in __init__"
                for module in (self.tower["linear"], self.tower["conv"]):
                    module.weight.fill_(7.0)
                    module.bias.fill_(7.0)
                self.tower["norm"].weight.fill_(9.0)
        self.post_init()

    def _init_weights(self, module):
        # The modules Qwen2.5-VL's _init_weights (transformers 4.50) covers: Linear / Conv3d, Embedding.
        if isinstance(module, (nn.Linear, nn.Conv3d)):
            module.weight.data.normal_(0.0, 0.02)
            if module.bias is not None:
                module.bias.data.zero_()
        elif isinstance(module, nn.Embedding):
            module.weight.data.normal_(0.0, 0.02)


class Base(Toy):
    def __init__(self, config):
        super().__init__(config, with_tower=False)


def main() -> None:
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as folder:
        Base(ToyConfig()).save_pretrained(folder)  # the Qwen base checkpoint: no tower keys
        model = Toy.from_pretrained(folder)
    kept = {}
    for name, value in model.tower.state_dict().items():
        if name == "norm.bias":
            continue  # LayerNorm bias is 0 in __init__ as after any reset: it tells nothing
        kept[name] = bool(torch.all(value == (9.0 if name == "norm.weight" else 7.0)))
        print(f"tower.{name:14s} kept __init__ value: {kept[name]}  (now {[round(v, 4) for v in value.flatten()[:4].tolist()]})")
    out = write_json(Path(__file__).parent / "results" / "reinit_toy.json",
                     {"transformers": transformers.__version__, "kept_init_values": kept})
    print(f"transformers {transformers.__version__}; wrote {out}")


if __name__ == "__main__":
    main()
