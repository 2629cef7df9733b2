"""EmbodiedScan info files: restricted unpickling, conversion to JSON + safetensors, and the scene reader."""

from __future__ import annotations

import collections
import json
import os
import pickle

import numpy as np
import pytest
from PIL import Image

from vega3d.cli import main
from vega3d.scenes import SceneError, load_scene
from vega3d.scenes.embodiedscan import UnsafePickleError, read_converted_info, read_info_pickle

ALIGN = np.array([[0, -1, 0, 1], [1, 0, 0, 2], [0, 0, 1, 0], [0, 0, 0, 1]], dtype=np.float64)
DEPTH_K = np.array([[577.6, 0, 319.5, 0], [0, 578.7, 239.5, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
COLOR_K = np.array([[1170.2, 0, 647.8, 0], [0, 1170.2, 483.8, 0], [0, 0, 1, 0], [0, 0, 0, 1]])


def pose(tx: float) -> np.ndarray:
    matrix = np.eye(4)
    matrix[:3, 3] = [tx, 0.5, 1.5]
    return matrix


def info_content(with_poses: bool = True) -> dict:
    """The EmbodiedScan info layout: metainfo + data_list of per-scan dicts holding numpy arrays."""
    images = [{"img_path": f"scannet/posed_images/scene0000_00/{i:05d}.jpg",
               "depth_path": f"scannet/posed_images/scene0000_00/{i:05d}.png", "visible_instance_ids": np.array([0, 3])}
              for i in (0, 20)]
    if with_poses:
        for image, tx in zip(images, (0.25, 2.0)):
            image["cam2global"] = pose(tx)
    scannet = {"sample_idx": "scannet/scene0000_00", "images": images, "axis_align_matrix": ALIGN,
               "cam2img": COLOR_K, "depth_cam2img": DEPTH_K,
               "instances": [{"bbox_3d": [0.0] * 9, "bbox_label_3d": np.int64(3), "bbox_id": 0}]}
    other = {"sample_idx": "3rscan/0a4b8ef6-a83a-21f2-8672-dce34dd0d7ca", "images": images, "axis_align_matrix": np.eye(4),
             "cam2img": COLOR_K}
    return {"metainfo": {"categories": {"chair": 3}, "DATASET": "EmbodiedScan"}, "data_list": [other, scannet]}


def write_pickle(path, content, protocol=4):
    path.write_bytes(pickle.dumps(content, protocol=protocol))
    return path


def posed_images_folder(root, frames=(0, 10, 20), with_pose_files=True):
    """A posed_images scene: NNNNN.jpg / .png (depth) / .txt (pose) and intrinsic.txt."""
    root.mkdir(parents=True)
    for i in frames:
        Image.fromarray(np.full((6, 8, 3), 100, np.uint8)).save(root / f"{i:05d}.jpg")
        Image.fromarray(np.full((6, 8), 1000, np.uint16)).save(root / f"{i:05d}.png")
        if with_pose_files:
            np.savetxt(root / f"{i:05d}.txt", pose(-1.0))
    np.savetxt(root / "intrinsic.txt", COLOR_K)
    return root


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_restricted_unpickler_reads_numpy_content(tmp_path, protocol):
    content = read_info_pickle(write_pickle(tmp_path / "embodiedscan_infos_val.pkl", info_content(), protocol))
    scan = content["data_list"][1]
    np.testing.assert_array_equal(scan["axis_align_matrix"], ALIGN)
    assert scan["instances"][0]["bbox_label_3d"] == 3 and scan["images"][1]["cam2global"][0, 3] == 2.0


class Exploit:
    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("payload", ["exploit", "ordered_dict"])
def test_forbidden_class_refused_naming_file_and_class(tmp_path, payload, capsys):
    marker = tmp_path / "pwned"
    Exploit.marker = marker
    content = info_content()
    content["data_list"][1]["extra"] = Exploit() if payload == "exploit" else collections.OrderedDict(a=1)
    path = write_pickle(tmp_path / "embodiedscan_infos_val.pkl", content)
    forbidden = f"{os.system.__module__}.system" if payload == "exploit" else "collections.OrderedDict"
    with pytest.raises(UnsafePickleError, match=rf"embodiedscan_infos_val.pkl: refusing to unpickle {forbidden} "):
        read_info_pickle(path)
    assert not marker.exists()
    assert main(["prepare", "scenes", str(path), "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "refusing to unpickle" in err and not (tmp_path / "out").exists()


def test_truncated_pickle_is_a_one_line_error(tmp_path):
    path = tmp_path / "embodiedscan_infos_val.pkl"
    path.write_bytes(pickle.dumps(info_content())[:100])
    with pytest.raises(UnsafePickleError, match=r"embodiedscan_infos_val.pkl: not a readable pickle"):
        read_info_pickle(path)


def test_convert_is_deterministic_and_round_trips(tmp_path):
    info = write_pickle(tmp_path / "embodiedscan_infos_val.pkl", info_content())
    out = tmp_path / "out"
    assert main(["prepare", "scenes", str(info), "--out", str(out)]) == 0
    converted = out / "embodiedscan_infos_val.json"
    first = (converted.read_bytes(), (out / "embodiedscan_infos_val.poses.safetensors").read_bytes())
    assert main(["prepare", "scenes", str(info), "--out", str(out)]) == 0
    assert (converted.read_bytes(), (out / "embodiedscan_infos_val.poses.safetensors").read_bytes()) == first
    document = json.loads(converted.read_text())
    assert list(document["scenes"]) == ["scene0000_00"]  # the 3RScan item is not ScanNet
    assert document["scenes"]["scene0000_00"]["frames"] == [f"scannet/posed_images/scene0000_00/{i:05d}.jpg" for i in (0, 20)]
    scene = read_converted_info(converted)["scene0000_00"]
    np.testing.assert_array_equal(scene.axis_align, ALIGN)
    np.testing.assert_array_equal(scene.depth_intrinsic, DEPTH_K)
    np.testing.assert_array_equal(scene.poses, np.stack([pose(0.25), pose(2.0)]))


def test_scene_reader_uses_the_info(tmp_path):
    info = write_pickle(tmp_path / "embodiedscan_infos_val.pkl", info_content())
    main(["prepare", "scenes", str(info), "--out", str(tmp_path / "out")])
    converted = tmp_path / "out" / "embodiedscan_infos_val.json"
    root = posed_images_folder(tmp_path / "posed_images" / "scene0000_00")
    plain = load_scene(root)
    assert plain.frame_ids == ["00000", "00010", "00020"] and np.allclose(plain.axis_align, np.eye(4))
    scene = load_scene(root, info=converted)
    assert scene.frame_ids == ["00000", "00020"]  # the info's frame list
    np.testing.assert_array_equal(scene.depth_intrinsic, DEPTH_K)
    np.testing.assert_allclose(scene.pose(1), ALIGN @ pose(2.0))  # the info's pose, axis-aligned
    assert scene.depth(0)[0, 0] == pytest.approx(1.0)


def test_scene_without_poses_and_missing_frames(tmp_path):
    info = write_pickle(tmp_path / "embodiedscan_infos_val.pkl", info_content(with_poses=False))
    main(["prepare", "scenes", str(info), "--out", str(tmp_path / "out")])
    converted = tmp_path / "out" / "embodiedscan_infos_val.json"
    assert not (tmp_path / "out" / "embodiedscan_infos_val.poses.safetensors").exists()
    with_files = posed_images_folder(tmp_path / "a" / "scene0000_00")
    np.testing.assert_allclose(load_scene(with_files, info=converted).pose(0), ALIGN @ pose(-1.0))  # the folder's poses
    bare = posed_images_folder(tmp_path / "b" / "scene0000_00", with_pose_files=False)
    with pytest.raises(SceneError, match=r"scene scene0000_00 has no poses \(no cam2global in its info and 00000.txt is missing\)"):
        load_scene(bare, info=converted)
    partial = posed_images_folder(tmp_path / "c" / "scene0000_00", frames=(0,))
    with pytest.raises(SceneError, match=r"00020.jpg: frame listed by the info of scene0000_00 is missing"):
        load_scene(partial, info=converted)
    with pytest.raises(SceneError, match=r"no info for scene 'scene0099_00'"):
        load_scene(posed_images_folder(tmp_path / "d" / "scene0099_00"), info=converted)


def test_real_scan_sampled_through_its_info(hololens_scene):
    from vega3d.scenes import sample_frames, unproject_depth
    from vega3d.scenes.embodiedscan import SceneInfo

    plain = load_scene(hololens_scene)
    frames = [f"scannet/posed_images/{hololens_scene.name}/{name}.jpg" for name in plain.frame_ids[::10]]  # EmbodiedScan: every 10th
    info = SceneInfo(hololens_scene.name, frames, ALIGN, plain.color_intrinsic, plain.depth_intrinsic)
    scene = load_scene(hololens_scene, info=info)
    assert scene.frame_ids == plain.frame_ids[::10]
    sampled = sample_frames(scene, num_frames=3, image_size=(36, 54))
    assert sampled.frame_ids == [scene.frame_ids[i] for i in (0, 4, 9)]  # floor(linspace(0, 9, 3))
    raw = unproject_depth(scene.depth(4), plain.depth_intrinsic, plain.raw_pose(plain.frame_ids.index(scene.frame_ids[4])))
    np.testing.assert_allclose(sampled.world[1].numpy(), raw @ ALIGN[:3, :3].T + ALIGN[:3, 3], atol=1e-4)
