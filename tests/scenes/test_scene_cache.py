"""Prepared scenes kept across runs: equal bit for bit, keyed by the scene files and the settings."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from vega3d.scenes import PreparedScenes, load_scene, sample_frames


def assert_same_frames(a, b):
    for name in ("images", "depth", "valid"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    for name in ("cam_to_world", "intrinsics", "depth_coverage"):
        assert torch.equal(getattr(a.cameras, name), getattr(b.cameras, name)), name
    assert a.frame_ids == b.frame_ids and a.sampling == b.sampling and a.image_size == b.image_size
    np.testing.assert_array_equal(a.depth_intrinsic, b.depth_intrinsic)
    for x, y in zip(a.token_coordinates((4, 4)), b.token_coordinates((4, 4))):
        assert torch.equal(x, y)


def test_cached_frames_equal_fresh_ones_and_skip_the_decode(hololens_scene, tmp_path):
    first = PreparedScenes(num_frames=5, image_size=(48, 64), cache_dir=tmp_path / "cache")
    fresh = first(hololens_scene)
    assert first.reads == 1 and first.cache.hits == 0 and len(list((tmp_path / "cache").glob("*.safetensors"))) == 1
    second = PreparedScenes(num_frames=5, image_size=(48, 64), cache_dir=tmp_path / "cache")  # a later run
    cached = second(hololens_scene)
    assert second.reads == 0 and second.cache.hits == 1
    assert_same_frames(cached, fresh)
    assert_same_frames(cached, sample_frames(load_scene(hololens_scene), 5, (48, 64)))
    other = PreparedScenes(num_frames=5, image_size=(32, 32), cache_dir=tmp_path / "cache")  # other settings: a miss
    other(hololens_scene)
    assert other.reads == 1 and len(list((tmp_path / "cache").glob("*.safetensors"))) == 2


def test_a_changed_file_or_a_broken_cache_is_prepared_again(synthetic_scene, tmp_path):
    scene = shutil.copytree(synthetic_scene, tmp_path / "room")
    cache = tmp_path / "cache"
    frames = PreparedScenes(num_frames=4, image_size=(32, 32), cache_dir=cache)(scene)
    first = frames.frame_indices[1]
    depth_file = load_scene(scene).depth_paths[first]
    depth = np.asarray(Image.open(depth_file))
    Image.fromarray((depth // 2).astype(depth.dtype)).save(depth_file)  # same size, other metres
    again = PreparedScenes(num_frames=4, image_size=(32, 32), cache_dir=cache)
    changed = again(scene)
    assert again.reads == 1 and again.cache.hits == 0
    assert torch.equal(changed.depth[1], torch.from_numpy(load_scene(scene).depth(first)))
    for path in cache.glob("*.safetensors"):
        path.write_bytes(b"not a safetensors file")
    broken = PreparedScenes(num_frames=4, image_size=(32, 32), cache_dir=cache)
    with pytest.warns(UserWarning, match=r"room-[0-9a-f]{24}\.safetensors: unreadable prepared scene .*preparing it again"):
        assert_same_frames(broken(scene), changed)
    assert broken.reads == 1  # prepared again and rewritten
    assert PreparedScenes(num_frames=4, image_size=(32, 32), cache_dir=cache)(scene) is not None
