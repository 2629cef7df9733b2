"""Clips: scene folders, video files and frame folders sampled with the analysis rule; checkpoint inputs."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from vega3d.models import QwenInputs
from vega3d.models.clips import load_clip
from vega3d.models.tiny import tiny_processor


def test_video_file_is_sampled_uniformly(shared_data):
    clip = load_clip(shared_data / "videos" / "hololens_office_000_first120_10fps.mp4", 5, (56, 56))
    assert clip.scene_id == "hololens_office_000_first120_10fps"
    assert clip.frame_indices == [0, 29, 59, 89, 119]  # floor(linspace(0, 119, 5))
    assert clip.images.shape == (5, 3, 56, 56) and 0 <= float(clip.images.min()) and float(clip.images.max()) <= 1


def test_frame_folder_and_errors(tmp_path):
    for i in range(4):
        Image.new("RGB", (20, 10), (60 * i, 0, 0)).save(tmp_path / f"{i:03d}.png")
    clip = load_clip(tmp_path, 2, None)
    assert clip.frame_indices == [0, 3] and clip.frame_ids == ["000", "003"]
    torch.testing.assert_close(clip.images[:, 0, 0, 0], torch.tensor([0.0, 180 / 255]))
    with pytest.raises(ValueError, match="asked for 5 frames but only 4"):
        load_clip(tmp_path, 5)
    with pytest.raises(FileNotFoundError, match="no such scene folder, video or frame folder"):
        load_clip(tmp_path / "missing", 2)
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match="not a video file"):
        load_clip(tmp_path / "notes.txt", 2)


def test_inputs_read_a_legacy_chat_template_file(tmp_path):
    processor = tiny_processor(56)
    processor.save_pretrained(tmp_path)
    template = (tmp_path / "chat_template.jinja").read_text()
    (tmp_path / "chat_template.jinja").unlink()
    (tmp_path / "chat_template.json").write_text(json.dumps({"chat_template": template}))
    loaded = QwenInputs.from_pretrained(tmp_path)
    messages = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "Hi?"}]}]
    assert loaded.render(messages, add_generation_prompt=True) == processor.render(messages, add_generation_prompt=True)
