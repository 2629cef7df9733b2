"""Checkpoint layouts of the authors and upstream projects -> ours: one table of key renames each.

A :class:`Layout` names a checkpoint family (``llava-next``: lmms-lab LLaVA-Video and the authors' 3D
checkpoints; ``vega3d-sr``: the released spatial-reasoning checkpoint; ...), how to recognise its keys,
the ordered regex renames that map every key to ours, and how its ``config.json`` becomes ours. Host-model
files register their layouts with :func:`register_layout`; :func:`convert_checkpoint` (``vega3d convert``)
streams a checkpoint shard by shard, so a 7B model never has to fit in memory twice.

Every key must be matched by a rule, a ``drop`` pattern or a side file: an unmatched key is an error,
never silently carried over under its old name. A :class:`SideFile` takes the keys under a prefix out of
the model's shards into a file of their own, converted by its own function (the released spatial-reasoning
checkpoint's Wan DiT: diffusers' converter for the original Wan naming, written beside the model).
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch

from vega3d.io import save_safetensors, write_json

#: Files copied unchanged from a source checkpoint folder (tokenizer, processor, generation settings).
SIDE_FILES = (
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json", "vocab.json",
    "merges.txt", "tokenizer.model", "preprocessor_config.json", "video_preprocessor_config.json",
    "processor_config.json", "chat_template.json", "chat_template.jinja", "generation_config.json",
)


@dataclass(frozen=True)
class SideFile:
    #: Keys starting with this prefix go to the side file, the prefix stripped.
    prefix: str
    filename: str
    #: The collected ``{stripped key: tensor}`` -> the tensors written (e.g. a naming conversion).
    convert: Callable[[dict], dict] = dict


@dataclass(frozen=True)
class Layout:
    name: str
    description: str
    #: Ordered ``(pattern, replacement)`` pairs for ``re.sub``; the first pattern that matches a key wins.
    renames: tuple[tuple[str, str], ...]
    #: True when a set of checkpoint keys is in this layout.
    detect: Callable[[set[str]], bool]
    #: Patterns of keys that are dropped (buffers that upstream saved but we recompute).
    drop: tuple[str, ...] = ()
    #: The source ``config.json`` (a dict) -> ours; None keeps it as it is.
    convert_config: Callable[[dict], dict] | None = None
    #: Keys our model needs that the layout does not hold (filled by the model's own initialisation).
    notes: tuple[str, ...] = field(default_factory=tuple)
    side_files: tuple[SideFile, ...] = ()
    #: ``(converted config, {key: shape} of the checkpoint)`` -> config: widths the config does not record.
    finish_config: Callable[[dict, dict], dict] | None = None

    def side_file(self, key: str) -> SideFile | None:
        return next((side for side in self.side_files if key.startswith(side.prefix)), None)

    def rename(self, key: str, source: str = "checkpoint") -> str | None:
        """Our name for ``key``; None when the layout drops it. Unknown keys raise, naming ``source``."""
        if any(re.search(pattern, key) for pattern in self.drop):
            return None
        for pattern, replacement in self.renames:
            if re.search(pattern, key):
                return re.sub(pattern, replacement, key, count=1)
        raise ValueError(f"{source}: key {key!r} is not part of the {self.name!r} layout ({self.description})")


LAYOUTS: dict[str, Layout] = {}


def register_layout(layout: Layout) -> Layout:
    if layout.name in LAYOUTS:
        raise ValueError(f"checkpoint layout {layout.name!r} is registered twice")
    LAYOUTS[layout.name] = layout
    return layout


def list_layouts() -> list[str]:
    _register_builtin_layouts()
    return sorted(LAYOUTS)


def _register_builtin_layouts() -> None:
    """Host-model modules register their layouts on import; import the ones that have any."""
    import importlib

    for module in ("vega3d.models.llava_video", "vega3d.models.qwen_vega", "vega3d.models.released_sr"):
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as error:
            if error.name != module:
                raise


def checkpoint_files(folder: str | Path) -> list[Path]:
    """The weight files of a checkpoint folder (safetensors shards, else PyTorch ``.bin`` shards), in order."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such checkpoint folder")
    for index_name, single in (("model.safetensors.index.json", "model.safetensors"),
                               ("pytorch_model.bin.index.json", "pytorch_model.bin")):
        index = folder / index_name
        if index.is_file():
            try:
                weight_map = json.loads(index.read_text())["weight_map"]
            except (json.JSONDecodeError, KeyError, TypeError) as error:
                raise ValueError(f"{index}: not a weight index ({error})") from None
            files = [folder / name for name in dict.fromkeys(weight_map.values())]
            missing = [str(f) for f in files if not f.is_file()]
            if missing:
                raise FileNotFoundError(f"{index}: names shard(s) that do not exist: {missing[:3]}")
            return files
        if (folder / single).is_file():
            return [folder / single]
    raise FileNotFoundError(f"{folder}: no model.safetensors(.index.json) or pytorch_model.bin(.index.json)")


def read_shard(path: Path) -> dict[str, torch.Tensor]:
    """One weight file, without executing code (safetensors, or ``torch.load(weights_only=True)``)."""
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as error:
            raise ValueError(f"{path}: not a readable safetensors file ({error})") from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as error:  # any unpickling failure: the file is refused, never executed
        raise ValueError(f"{path}: cannot be read as plain tensors with weights_only=True ({error})") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path}: expected a mapping of tensor names to tensors")
    return state


def checkpoint_shapes(folder: str | Path) -> dict[str, tuple[int, ...]]:
    """Every tensor's name and shape, read from headers where possible (no tensor is loaded)."""
    shapes: dict[str, tuple[int, ...]] = {}
    for path in checkpoint_files(folder):
        if path.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as handle:
                shapes.update({key: tuple(handle.get_slice(key).get_shape()) for key in handle.keys()})
        else:
            shapes.update({key: tuple(value.shape) for key, value in read_shard(path).items()})
    return shapes


def checkpoint_keys(folder: str | Path) -> set[str]:
    """All tensor names of a checkpoint, read from headers where possible (no tensor is loaded)."""
    return set(checkpoint_shapes(folder))


def detect_layout(keys: Iterable[str], source: str = "checkpoint") -> Layout:
    _register_builtin_layouts()
    keys = set(keys)
    matches = [layout for layout in LAYOUTS.values() if layout.detect(keys)]
    if len(matches) != 1:
        found = "no known layout" if not matches else f"several layouts ({', '.join(m.name for m in matches)})"
        raise ValueError(f"{source}: its keys match {found}; pass --layout (one of {', '.join(list_layouts())})")
    return matches[0]


def convert_state_dict(state: dict[str, torch.Tensor], layout: Layout, source: str = "checkpoint",
                       side: dict[str, dict] | None = None) -> dict[str, torch.Tensor]:
    """The model's tensors under our names; keys of a side file go to ``side[filename]`` (skipped if None)."""
    out: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        if (target := layout.side_file(key)) is not None:
            if side is not None:
                side.setdefault(target.filename, {})[key.removeprefix(target.prefix)] = tensor
            continue
        new = layout.rename(key, source)
        if new is None:
            continue
        if new in out:
            raise ValueError(f"{source}: two keys map to {new!r} under the {layout.name!r} layout")
        out[new] = tensor
    return out


def converted_shards(folder: str | Path, layout: Layout,
                     side: dict[str, dict] | None = None) -> Iterator[tuple[Path, dict[str, torch.Tensor]]]:
    for path in checkpoint_files(folder):
        yield path, convert_state_dict(read_shard(path), layout, source=str(path), side=side)


def converted_config(folder: str | Path, layout: Layout) -> dict | None:
    """The source ``config.json`` in our form (None when the folder has none)."""
    config_path = Path(folder) / "config.json"
    if not config_path.is_file():
        return None
    try:
        config = json.loads(config_path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{config_path}: not valid JSON ({error})") from None
    if layout.convert_config is not None:
        config = layout.convert_config(config)
    if layout.finish_config is not None:
        config = layout.finish_config(config, checkpoint_shapes(folder))
    return config


def convert_checkpoint(source: str | Path, destination: str | Path, layout: str | None = None,
                       progress: Callable[[Iterable], Iterable] = lambda items: items) -> Path:
    """Write ``source`` (a checkpoint folder in ``layout``, detected when None) to ``destination`` in ours."""
    source, destination = Path(source), Path(destination)
    if destination.exists() and (destination.resolve() == source.resolve() or any(destination.iterdir())):
        raise ValueError(f"{destination}: the output folder must be new or empty (never the source folder)")
    _register_builtin_layouts()
    if layout is None:
        chosen = detect_layout(checkpoint_keys(source), str(source))
    elif layout not in LAYOUTS:
        raise ValueError(f"unknown checkpoint layout {layout!r}; choose from {', '.join(list_layouts())}")
    else:
        chosen = LAYOUTS[layout]
    config = converted_config(source, chosen)
    staging = destination.with_name(f".{destination.name}.partial")
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    try:
        files = list(checkpoint_files(source))
        weight_map: dict[str, str] = {}
        side: dict[str, dict] = {}
        for number, (_, tensors) in enumerate(progress(converted_shards(source, chosen, side)), start=1):
            name = "model.safetensors" if len(files) == 1 else f"model-{number:05d}-of-{len(files):05d}.safetensors"
            save_safetensors(dict(sorted(tensors.items())), staging / name, metadata={"format": "pt"})
            weight_map.update({key: name for key in tensors})
        for target in chosen.side_files:
            if target.filename in side:
                save_safetensors(dict(sorted(target.convert(side[target.filename]).items())), staging / target.filename,
                                 metadata={"format": "pt"})
        if len(files) > 1:
            write_json(staging / "model.safetensors.index.json", {"metadata": {}, "weight_map": dict(sorted(weight_map.items()))})
        if config is not None:
            write_json(staging / "config.json", config, sort_keys=True)
        for name in SIDE_FILES:
            if (source / name).is_file():
                shutil.copy2(source / name, staging / name)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)  # a failed conversion leaves nothing behind
        raise
    if destination.exists():
        destination.rmdir()
    staging.rename(destination)
    return destination
