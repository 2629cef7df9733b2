"""Feature store: round trip, cache, atomic writes, corruption and mismatch detection, resume, sharding."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from vega3d.backbones import Backbone, register_backbone
from vega3d.store import FeatureStore, StoreError, StoreMiss, encode_scene, shard

CONFIG = {"name": "wan2.1-t2v-1.3b", "timestep": 300, "block": 20, "seed": 0}


class CountingBackbone(Backbone):
    """Mean colour per cell; records every scene it encodes and can 'die' on chosen scenes."""

    name = "test-counting"

    def __init__(self):
        super().__init__()
        self.calls, self.fail_on = [], set()

    def encode(self, frames, scene_id=None):
        self.calls.append(scene_id)
        if scene_id in self.fail_on:
            raise RuntimeError(f"killed while encoding {scene_id}")
        return F.adaptive_avg_pool2d(frames, (2, 2)).permute(0, 2, 3, 1).contiguous()


COUNTING = CountingBackbone()
register_backbone("test-counting", "test backbone that counts calls")(lambda weights=None: COUNTING)


@pytest.fixture
def counting():
    COUNTING.calls.clear()
    COUNTING.fail_on.clear()
    return COUNTING


def test_round_trip_with_metadata(tmp_path):
    tokens = torch.randn(3, 2, 2, 5)
    path = FeatureStore(tmp_path).save("scene0000_00", CONFIG, [0, 5, 9], tokens, metadata={"note": "x"})
    fresh = FeatureStore(tmp_path)  # no cache: read from disk
    assert torch.equal(fresh.load("scene0000_00", CONFIG, [0, 5, 9]), tokens)
    assert fresh.contains("scene0000_00", CONFIG, [0, 5, 9]) and not fresh.contains("scene0000_00", CONFIG, [0, 5])
    from safetensors import safe_open

    with safe_open(str(path), "pt") as reader:
        meta = reader.metadata()
    assert json.loads(meta["backbone_config"]) == CONFIG and json.loads(meta["frame_indices"]) == [0, 5, 9]
    assert meta["seed"] == "0" and json.loads(meta["metadata"]) == {"note": "x"}
    assert json.loads(meta["versions"])["torch"] == torch.__version__
    assert json.loads((path.parent / "config.json").read_text()) == CONFIG
    with pytest.raises(ValueError, match=r"tokens must be \[T=2"):
        fresh.save("scene0000_00", CONFIG, [0, 5], tokens)


def test_miss_is_a_key_error_naming_the_file(tmp_path):
    store = FeatureStore(tmp_path)
    with pytest.raises(KeyError) as caught:
        store.load("scene0001_00", CONFIG, [0, 1])
    assert isinstance(caught.value, StoreMiss) and "scene0001_00" in str(caught.value) and str(tmp_path) in str(caught.value)
    other = {**CONFIG, "timestep": 500}  # another configuration is another file
    store.save("scene0001_00", CONFIG, [0, 1], torch.zeros(2, 1, 1, 4))
    assert not store.contains("scene0001_00", other, [0, 1])


def test_corruption_is_detected_and_names_the_file(tmp_path):
    store = FeatureStore(tmp_path)
    path = store.save("scene0002_00", CONFIG, [0, 1], torch.randn(2, 2, 2, 8))
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF  # flip bits inside the token bytes
    path.write_bytes(bytes(data))
    with pytest.raises(StoreError, match=rf"{path.name}: content hash mismatch"):
        FeatureStore(tmp_path).load("scene0002_00", CONFIG, [0, 1])
    path.write_bytes(bytes(data[: len(data) // 2]))  # truncated
    with pytest.raises(StoreError, match=rf"{path.name}: corrupt feature file"):
        FeatureStore(tmp_path).load("scene0002_00", CONFIG, [0, 1])
    assert isinstance(StoreError("x"), ValueError)


def test_a_file_for_another_scene_is_a_mismatch(tmp_path):
    store = FeatureStore(tmp_path)
    source = store.save("scene0003_00", CONFIG, [0, 1], torch.randn(2, 2, 2, 8))
    target = store.path("scene0004_00", CONFIG, [0, 1])
    target.write_bytes(source.read_bytes())
    with pytest.raises(StoreError, match=rf"{target.name}: stored scene_id scene0003_00 does not match the requested scene0004_00"):
        FeatureStore(tmp_path).load("scene0004_00", CONFIG, [0, 1])


def test_lru_cache_is_bounded(tmp_path):
    store = FeatureStore(tmp_path, cache_items=2)
    for i in range(3):
        store.save(f"s{i}", CONFIG, [0], torch.full((1, 1, 1, 2), float(i)))
    assert len(store._cache) == 2 and store.path("s0", CONFIG, [0]) not in store._cache
    first = store.load("s1", CONFIG, [0])
    assert store.load("s1", CONFIG, [0]) is first  # served from memory
    store.load("s0", CONFIG, [0])  # evicts the least recently used (s2)
    assert store.path("s2", CONFIG, [0]) not in store._cache and len(store._cache) == 2


def test_writes_are_atomic(tmp_path, monkeypatch):
    import safetensors.torch

    def dies_midway(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"half a file")
        raise KeyboardInterrupt

    monkeypatch.setattr(safetensors.torch, "save_file", dies_midway)
    store = FeatureStore(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        store.save("scene0005_00", CONFIG, [0], torch.zeros(1, 1, 1, 1))
    assert not store.path("scene0005_00", CONFIG, [0]).exists()
    assert [p.name for p in store.path("scene0005_00", CONFIG, [0]).parent.iterdir()] == ["config.json"]


def test_encode_scene_encodes_once(tmp_path, synthetic_scene, counting):
    from vega3d.scenes import load_scene, sample_frames

    frames = sample_frames(load_scene(synthetic_scene), num_frames=3, image_size=(32, 32))
    store = FeatureStore(tmp_path)
    first = encode_scene(counting, frames, store)
    assert torch.equal(encode_scene(counting, frames, FeatureStore(tmp_path)), first)
    assert counting.calls == [frames.scene_id] and first.shape == (3, 2, 2, 3)
    assert torch.equal(encode_scene(counting, frames), first)  # without a store: always encodes
    assert len(counting.calls) == 2


def _extract(dataset, store, *extra):
    from vega3d.cli import main

    return main(["extract", str(dataset), "--backbone", "test-counting", "--out", str(store), "--frames", "3",
                 "--image-size", "32", "32", *extra])


def test_extract_resumes_after_a_kill_and_recomputes_corrupt_files(shared_data, tmp_path, counting, capsys):
    scenes = shared_data / "scenes"
    counting.fail_on.add("scannet_export/tabletop_000")
    assert _extract(scenes, tmp_path) == 1  # a crash mid-run: one line, no traceback
    assert "killed while encoding scannet_export/tabletop_000" in capsys.readouterr().err
    store_files = sorted(tmp_path.glob("*/**/*.safetensors"))
    assert [p.name.split(".")[0] for p in store_files] == ["hololens_office_000"]
    assert not list(tmp_path.glob("*/.*"))  # no temp leftovers
    counting.fail_on.clear()
    counting.calls.clear()
    assert _extract(scenes, tmp_path) == 0
    assert counting.calls == ["scannet_export/tabletop_000"]  # the finished scene was skipped
    assert "1 scene(s) encoded, 1 already stored" in capsys.readouterr().out
    index = json.loads((tmp_path / "index.json").read_text())
    assert sorted(e["scene_id"] for e in index["entries"]) == ["posed_images/hololens_office_000", "scannet_export/tabletop_000"]
    assert index["corrupt"] == []
    damaged = store_files[0]
    damaged.write_bytes(damaged.read_bytes()[:-3] + b"xyz")
    counting.calls.clear()
    assert _extract(scenes, tmp_path) == 0
    assert counting.calls == ["posed_images/hololens_office_000"]
    out = capsys.readouterr()
    assert "content hash mismatch" in out.err and "recomputing" in out.err and "1 corrupt file(s) recomputed: posed_images/hololens_office_000" in out.out


def test_shard_is_disjoint_complete_and_balanced():
    items = list(range(11))
    shares = [shard(items, r, 3) for r in range(3)]
    assert sorted(sum(shares, [])) == items and [len(s) for s in shares] == [4, 4, 3]


def test_awareness_reads_and_writes_the_store(synthetic_scene, tmp_path, counting):
    from vega3d.cli import main

    command = ["awareness", str(synthetic_scene), "--backbone", "test-counting", "--frames", "3", "--plots", "0",
               "--store", str(tmp_path / "store")]
    assert main([*command, "--out", str(tmp_path / "first")]) == 0
    assert counting.calls == [synthetic_scene.name] and len(list((tmp_path / "store").glob("*/*.safetensors"))) == 1
    assert main([*command, "--out", str(tmp_path / "second")]) == 0
    assert counting.calls == [synthetic_scene.name]  # the second run read the stored tokens
    first, second = (json.loads((tmp_path / run / "summary.json").read_text()) for run in ("first", "second"))
    assert first["scenes"][0]["score"] == second["scenes"][0]["score"] and first["statistics"]["mean"] == second["statistics"]["mean"]


def _dataset_of_copies(synthetic_scene, folder, copies=3):
    folder.mkdir()
    for i in range(copies):  # distinct scene ids, same files
        (folder / f"room_{i}").symlink_to(synthetic_scene, target_is_directory=True)
    return sorted(folder.iterdir())


def test_pipelined_extraction_stores_what_the_sequential_loop_stores(synthetic_scene, tmp_path, counting):
    from vega3d.store import extract_scenes

    scenes = _dataset_of_copies(synthetic_scene, tmp_path / "data")
    stores = {}
    for prefetch in (0, 2):
        stores[prefetch] = tmp_path / f"store{prefetch}"
        result = extract_scenes(scenes, counting, FeatureStore(stores[prefetch], cache_items=0), num_frames=3,
                                image_size=(32, 32), prefetch=prefetch, progress=False)
        assert result.encoded == ["room_0", "room_1", "room_2"] and result.seconds["wall"] > 0
    files = {p: sorted(q.relative_to(p) for q in p.rglob("*") if q.is_file()) for p in stores.values()}
    assert files[stores[0]] == files[stores[2]] and len(files[stores[0]]) == 4  # 3 scenes + config.json
    for name in files[stores[0]]:
        assert (stores[0] / name).read_bytes() == (stores[2] / name).read_bytes(), name


def test_finished_scenes_are_skipped_before_any_image_is_decoded(synthetic_scene, tmp_path, counting, monkeypatch):
    from vega3d.scenes.reader import Scene
    from vega3d.store import extract_scenes

    scenes = _dataset_of_copies(synthetic_scene, tmp_path / "data", copies=2)
    store = FeatureStore(tmp_path / "store", cache_items=0)
    extract_scenes(scenes[:1], counting, store, num_frames=3, image_size=(32, 32), progress=False)
    decoded = []
    real = Scene.color
    monkeypatch.setattr(Scene, "color", lambda self, i: decoded.append(self.scene_id) or real(self, i))
    result = extract_scenes(scenes, counting, store, num_frames=3, image_size=(32, 32), progress=False)
    assert result.skipped == ["room_0"] and result.encoded == ["room_1"]
    assert set(decoded) == {"room_1"} and len(decoded) == 3  # colour only: the depth is not read either
