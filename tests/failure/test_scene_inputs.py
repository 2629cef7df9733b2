"""Scene folders: what is skipped is named, what cannot be used is an error naming the file."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from PIL import Image

from vega3d.scenes import SceneError, find_scenes, load_scene, sample_frames, scene_ids


@pytest.fixture
def scene(tmp_path, synthetic_scene):
    return shutil.copytree(synthetic_scene, tmp_path / "data" / "room")


def test_singular_pose_is_skipped_with_a_warning(scene):
    (scene / "00004.txt").write_text("0 0 0 0\n" * 4)
    with pytest.warns(UserWarning, match=r"room: skipping 1 frame\(s\) with a singular pose \(not invertible\): 00004"):
        usable = load_scene(scene).usable_frames()
    assert 4 not in usable and len(usable) == 23


def test_frames_with_only_a_pose_or_only_a_colour_image_are_named(scene):
    (scene / "00003.jpg").unlink()
    (scene / "00007.txt").unlink()
    with pytest.warns(UserWarning) as caught:
        loaded = load_scene(scene)
    messages = [str(w.message) for w in caught]
    assert any("skipping 1 frame(s) with a pose without a colour image: 00003" in m for m in messages)
    assert any("skipping 1 frame(s) with a colour image without a pose: 00007" in m for m in messages)
    assert len(loaded) == 22 and "00003" not in loaded.frame_ids and "00007" not in loaded.frame_ids


def test_missing_intrinsics_is_named_not_no_scene_found(scene):
    (scene / "intrinsic.txt").unlink()
    with pytest.raises(SceneError, match=r"room/intrinsic.txt: missing file"):
        find_scenes(scene.parent)
    with pytest.raises(SceneError, match=r"room/intrinsic.txt: missing file"):
        load_scene(scene)


def test_zero_focal_length_is_named(scene):
    np.savetxt(scene / "depth_intrinsic.txt", np.diag([0.0, 0.0, 1.0, 1.0]))
    with pytest.raises(SceneError, match=r"depth_intrinsic.txt: focal lengths fx=0, fy=0 must be positive"):
        load_scene(scene)


@pytest.mark.parametrize("mode", ["L", "RGB"])
def test_depth_must_be_16_bit_single_channel(scene, mode):
    depth = np.asarray(Image.open(scene / "00000.png"))
    Image.fromarray((depth // 256).astype(np.uint8)).convert(mode).save(scene / "00000.png")
    with pytest.raises(SceneError, match=r"00000.png: depth must be a single-channel 16-bit PNG"):
        load_scene(scene).depth(0)


def test_scene_identity_is_the_path_within_the_dataset(tmp_path, synthetic_scene):
    for group in ("a", "b"):
        shutil.copytree(synthetic_scene, tmp_path / "data" / group / "scene0")
    paths = find_scenes(tmp_path / "data")
    assert scene_ids(paths, tmp_path / "data") == ["a/scene0", "b/scene0"]
    assert scene_ids(paths[:1], paths[0]) == ["scene0"]  # a single scene folder: its name
    assert sample_frames(load_scene(paths[1], scene_id="b/scene0"), 2).scene_id == "b/scene0"
    with pytest.raises(SceneError, match=r"a/scene0 and .*b/scene0: two scene folders with the same identity 'scene0'"):
        scene_ids(paths)  # identities by name only clash


def test_depth_maps_of_different_sizes_are_named(scene):
    depth = np.asarray(Image.open(scene / "00005.png"))
    Image.fromarray(depth[:-2]).save(scene / "00005.png")
    with pytest.raises(SceneError, match=r"00005.png: depth map is \d+x\d+, the other frames' \d+x\d+: depth maps differ in size"):
        sample_frames(load_scene(scene), 24)


def test_a_broken_colour_image_is_named_and_stops_the_depth_thread(scene):
    # sample_frames decodes depth on a second thread beside the colours: the colour error is the one raised,
    # and that thread is told to stop and joined before it returns
    import threading

    (scene / "00002.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(SceneError, match=r"00002.jpg: cannot read image"):
        sample_frames(load_scene(scene), 24)
    assert not [t for t in threading.enumerate() if t.name.startswith("vega3d-depth")]
