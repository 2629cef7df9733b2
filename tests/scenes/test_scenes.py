import shutil
import warnings

import numpy as np
import pytest
import torch

from vega3d.analysis import scene_correspondence
from vega3d.backbones import load_backbone
from vega3d.scenes import (SceneError, find_scenes, load_scene, resize_frames, sample_frames, token_world_coordinates,
                           uniform_frame_indices, unproject_depth)


def test_uniform_indices_rule():
    assert uniform_frame_indices(8, 3) == [0, 3, 7]  # linspace 0, 3.5, 7 -> floor
    assert uniform_frame_indices(6, 4) == [0, 1, 3, 5]  # 0, 1.67, 3.33, 5
    assert uniform_frame_indices(10, 4) == [0, 3, 6, 9]
    assert uniform_frame_indices(7, 3) == [0, 3, 6]
    assert uniform_frame_indices(5, 5) == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError, match="only 3 usable"):
        uniform_frame_indices(3, 4)


def test_unproject_hand_computed():
    k = np.array([[100.0, 0, 2.0], [0, 50.0, 1.0], [0, 0, 1]])
    depth = np.zeros((3, 4))
    depth[2, 3] = 2.0
    pose = np.eye(4)
    pose[:3, 3] = [1.0, 2.0, 3.0]
    world = unproject_depth(depth, k, pose)
    # u=3, v=2: x = (3-2)/100*2 = 0.02, y = (2-1)/50*2 = 0.04, z = 2, plus the translation
    np.testing.assert_allclose(world[2, 3], [1.02, 2.04, 5.0])
    np.testing.assert_allclose(world[0, 0], [1.0, 2.0, 3.0])  # zero depth lands on the camera centre
    rot = np.array([[0, -1, 0], [1, 0, 0], [0, 0, 1.0]])
    pose[:3, :3] = rot
    np.testing.assert_allclose(unproject_depth(depth, k, pose)[2, 3], rot @ [0.02, 0.04, 2.0] + [1, 2, 3])
    with pytest.raises(ValueError, match="intrinsics must be 3x3 or 4x4"):
        unproject_depth(depth, np.eye(2), pose)


def test_token_coordinates_average_and_valid_fraction():
    world = torch.arange(4 * 4 * 3, dtype=torch.float64).reshape(4, 4, 3)
    valid = torch.ones(4, 4, dtype=torch.bool)
    valid[0, 0] = False
    coords, fraction = token_world_coordinates(world, valid, (2, 2), image_size=None)
    np.testing.assert_allclose(coords[0, 0], world[:2, :2].reshape(-1, 3).mean(0))  # paper: invalid averaged in
    assert fraction[0, 0] == pytest.approx(0.75) and fraction[1, 1] == 1
    masked, _ = token_world_coordinates(world, valid, (2, 2), image_size=None, ignore_invalid=True)
    np.testing.assert_allclose(masked[0, 0], world[:2, :2].reshape(-1, 3)[1:].mean(0))


def test_posed_images_layout(hololens_scene):
    scene = load_scene(hololens_scene)
    assert scene.layout == "posed_images" and len(scene) == 94
    assert scene.depth_intrinsic[0, 0] == pytest.approx(495.567757009)
    np.testing.assert_array_equal(scene.axis_align, np.eye(4))
    frames = sample_frames(scene, num_frames=8, image_size=(96, 96))
    assert frames.images.shape == (8, 3, 96, 96) and 0 <= frames.images.min() and frames.images.max() <= 1
    assert frames.frame_indices == uniform_frame_indices(94, 8)
    assert frames.depth.shape == (8, 360, 540) and frames.world.shape == (8, 360, 540, 3)
    assert 0.6 < float(frames.valid.float().mean()) < 0.9  # README: ~77 % valid


def test_scannet_export_layout_and_axis_alignment(tabletop_scene, tmp_path):
    scene = load_scene(tabletop_scene)
    assert scene.layout == "scannet_export" and len(scene) == 50
    assert scene.frame_ids[:3] == ["0", "1", "2"]  # numeric, not lexicographic, order
    align = np.eye(4)
    align[:3, 3] = [10.0, 0, 0]
    moved = load_scene(tabletop_scene, axis_align=align)
    np.testing.assert_allclose(moved.pose(5), align @ scene.pose(5))
    copy = tmp_path / "scene0000_00"
    shutil.copytree(tabletop_scene, copy)
    (copy / "tabletop_000.txt").unlink()
    (copy / "scene0000_00.txt").write_text("axisAlignment = 0 -1 0 1 1 0 0 2 0 0 1 3 0 0 0 1\nsceneType = Office\n")
    np.testing.assert_allclose(load_scene(copy).axis_align[:3, 3], [1, 2, 3])


def test_real_depth_reprojects_consistently(hololens_scene):
    """Two nearby real frames: the same world voxel from both views; pixels features agree closely."""
    frames = sample_frames(load_scene(hololens_scene), num_frames=16, image_size=(192, 192))
    tokens = load_backbone("pixels")(frames.images)
    masked = scene_correspondence(frames, tokens, min_valid_depth=0.5)
    assert masked.num_pairs > 20 and masked.score > 0.9


def test_non_finite_poses_skipped_with_warning(tabletop_scene, tmp_path):
    copy = tmp_path / "tabletop"
    shutil.copytree(tabletop_scene, copy)
    for i in (3, 7):
        (copy / "pose" / f"{i}.txt").write_text("-inf -inf -inf -inf\n" * 4)
    scene = load_scene(copy)
    with pytest.warns(UserWarning, match=r"skipping 2 frame\(s\) with a non-finite pose.*: 3, 7"):
        usable = scene.usable_frames()
    assert len(usable) == 48 and 3 not in usable and 7 not in usable
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(SceneError, match="asked for 49 frames but only 48 usable"):
            sample_frames(scene, num_frames=49)


def test_missing_and_broken_files_are_named(tabletop_scene, tmp_path):
    with pytest.raises(SceneError, match="does not exist"):
        load_scene(tmp_path / "nope")
    with pytest.raises(SceneError, match="not a scene folder"):
        load_scene(tmp_path)
    copy = tmp_path / "t"
    shutil.copytree(tabletop_scene, copy)
    (copy / "depth" / "4.png").unlink()
    with pytest.raises(SceneError, match=r"depth/4.png: missing file"):
        load_scene(copy)
    (copy / "depth" / "4.png").write_bytes(b"not a png")
    with pytest.raises(SceneError, match=r"4.png: cannot read image"):
        load_scene(copy).depth(4)
    (copy / "intrinsic" / "intrinsic_depth.txt").write_text("1 2\n3 4\n")
    with pytest.raises(SceneError, match=r"intrinsic_depth.txt: expected a 4x4 matrix"):
        load_scene(copy)


def test_find_scenes(shared_data):
    names = [p.name for p in find_scenes(shared_data / "scenes")]
    assert names == ["hololens_office_000", "tabletop_000"]


def test_synthetic_scene_is_exact_ground_truth(synthetic_scene):
    scene = load_scene(synthetic_scene)
    frames = sample_frames(scene, num_frames=12, image_size=(120, 160))
    assert bool(frames.valid.all())  # a closed room: every ray hits a surface
    # A feature that is a function of the voxel of the 3-D point is perfectly view-consistent ...
    coords, _ = frames.token_coordinates((12, 16))
    x_min = coords.reshape(-1, 3).min(0).values
    cell = torch.floor((coords - x_min) / 0.1).long()
    table = torch.randn(64, 8, generator=torch.Generator().manual_seed(0))
    tokens = table[(cell[..., 0] * 7 + cell[..., 1] * 13 + cell[..., 2] * 29) % 64]
    result = scene_correspondence(frames, tokens)
    assert result.num_pairs > 100 and result.score == pytest.approx(1.0, abs=1e-6)
    # ... a smooth function of the point nearly so, and image position is not.
    smooth = torch.cat([torch.sin(3 * coords), torch.cos(3 * coords)], -1)
    assert scene_correspondence(frames, smooth).score > 0.97
    assert scene_correspondence(frames, load_backbone("position", grid=(12, 16))(frames.images)).score < 0.8


@pytest.mark.parametrize("ignore_invalid", [False, True])
def test_coordinates_from_depth_equal_the_unprojected_maps_resized_and_pooled(synthetic_scene, ignore_invalid):
    frames = sample_frames(load_scene(synthetic_scene), num_frames=3, image_size=(90, 200))
    frames.valid[:, :10, :30] = False  # a hole, so masking matters
    world = torch.stack([torch.from_numpy(unproject_depth(d.numpy(), frames.depth_intrinsic, p.numpy()))
                         for d, p in zip(frames.depth, frames.cameras.cam_to_world)])  # float64 reference maps
    for grid in [(7, 9), (14, 14)]:
        expected, fraction = token_world_coordinates(world, frames.valid, grid, frames.image_size, ignore_invalid)
        coords, got_fraction = frames.token_coordinates(grid, ignore_invalid)
        torch.testing.assert_close(coords, expected, atol=1e-5, rtol=0)  # metres
        torch.testing.assert_close(got_fraction, fraction, atol=1e-6, rtol=0)
    # pooling matrices reproduce torch's own bilinear resize + adaptive pooling of the full map
    dense = torch.nn.functional.adaptive_avg_pool2d(torch.nn.functional.interpolate(
        world.permute(0, 3, 1, 2), size=(90, 200), mode="bilinear", align_corners=False), (7, 9)).permute(0, 2, 3, 1)
    torch.testing.assert_close(token_world_coordinates(world, torch.ones_like(frames.valid), (7, 9), (90, 200))[0], dense)


def test_prepared_scenes_read_each_scene_once(synthetic_scene, monkeypatch):
    import vega3d.scenes.prepared as prepared_module
    from vega3d.scenes import PreparedScenes

    reads = []
    monkeypatch.setattr(prepared_module, "load_scene", lambda path, scene_id=None: reads.append(path) or load_scene(path))
    prepared = PreparedScenes(num_frames=4, image_size=(32, 32))
    assert prepared(synthetic_scene) is prepared(synthetic_scene) and reads == [synthetic_scene]
    torch.testing.assert_close(prepared(synthetic_scene).images, sample_frames(load_scene(synthetic_scene), 4, (32, 32)).images)
    full = PreparedScenes(num_frames=4, image_size=(32, 32), max_bytes=0)  # nothing kept: read on every call
    full(synthetic_scene), full(synthetic_scene)
    assert full.reads == 2


def test_frames_without_geometry_read_no_depth(synthetic_scene):
    frames = sample_frames(load_scene(synthetic_scene), num_frames=2, image_size=(16, 16), geometry=False)
    assert frames.images.shape == (2, 3, 16, 16) and frames.depth is None
    with pytest.raises(ValueError, match="without geometry"):
        frames.token_coordinates((2, 2))


def test_frames_are_resized_in_uint8_within_one_grey_level_of_the_float_path(hololens_scene):
    scene = load_scene(hololens_scene)
    frames = sample_frames(scene, 4, (100, 150))
    for k, i in enumerate(frames.frame_indices):
        color = torch.from_numpy(scene.color(i)).permute(2, 0, 1)
        expected = resize_frames((color.float() / 255)[None], (100, 150))[0]
        assert (frames.images[k] - expected).abs().max() <= 1.0 / 255 + 1e-6
        np.testing.assert_array_equal(frames.depth[k].numpy(), scene.depth(i))  # written in place, same metres
