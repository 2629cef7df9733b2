"""Serving: answers through Qwen's generate, generative features computed once per clip, vega3d ask."""

from __future__ import annotations

import pytest
import torch

from vega3d.cli import main
from vega3d.fusion import load_gates
from vega3d.models import GenerativeSettings
from vega3d.models.tiny import build_tiny_model, save_tiny, tiny_processor
from vega3d.serving import Assistant, answer

SETTINGS = GenerativeSettings(backbone="pixels", feature_dim=3, backbone_options={"grid": [4, 4]})


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    processor = tiny_processor(image_size=56)
    return save_tiny(tmp_path_factory.mktemp("vega"), processor, build_tiny_model(processor, SETTINGS, seed=0))


def test_generative_features_are_computed_once_per_clip(checkpoint, synthetic_scene):
    assistant = Assistant(checkpoint, num_frames=3, image_size=(56, 56), device="cpu", max_new_tokens=4)
    calls = []
    backbone = assistant.generative.backbone
    backbone.register_forward_hook(lambda module, args, output: calls.append(args[0].shape))
    first = assistant.ask(synthetic_scene, "What is here?")
    second = assistant.ask(synthetic_scene, "What is there?")
    assert calls == [torch.Size([3, 3, 56, 56])]  # one encode, reused by the second question
    assert isinstance(first, str) and isinstance(second, str)
    clip, video = assistant.clip(synthetic_scene)
    messages = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "What is here?"}]}]
    batch = assistant.inputs.prompt(messages, video)
    output = assistant.model.generate(**batch, generative_tokens=[backbone(clip.images)], max_new_tokens=4, do_sample=False)
    assert first == assistant.inputs.tokenizer.decode(output[0, batch["input_ids"].shape[1]:], skip_special_tokens=True).strip()
    assert answer(synthetic_scene, "What is here?", checkpoint, num_frames=3, image_size=(56, 56), device="cpu",
                  max_new_tokens=4) == first


def test_ask_many_answers_each_question_as_ask_does(checkpoint, synthetic_scene):
    assistant = Assistant(checkpoint, num_frames=3, image_size=(56, 56), device="cpu", max_new_tokens=6)
    questions = [(synthetic_scene, "What is here?"), (synthetic_scene, "Which?", synthetic_scene),
                 (synthetic_scene, "What is that?"), (synthetic_scene, "Where is it?")]  # 13, 6, 13, 12 bytes
    batched = []
    generate = assistant.model.generate
    assistant.model.generate = lambda **kwargs: batched.append(len(kwargs["input_ids"])) or generate(**kwargs)
    many = assistant.ask_many(questions, strip=False)
    assert batched == [2, 1, 1]  # the two prompts of one length in one batch
    assert many == [assistant.ask(*q, strip=False) for q in questions] and len(set(many)) > 1
    batched.clear()
    assert assistant.ask_many(questions, strip=False, batch_size=2) == many and batched == [1, 1, 1, 1]  # two at a time


def test_ask_command_answers_and_writes_gates(checkpoint, synthetic_scene, tmp_path, capsys):
    gates_file = tmp_path / "gates.safetensors"
    code = main(["ask", str(synthetic_scene), "Where is the box?", "And the wall?", "--model", str(checkpoint),
                 "--frames", "3", "--image-size", "56", "56", "--max-new-tokens", "3", "--device", "cpu",
                 "--gates", str(gates_file)])
    out = capsys.readouterr().out
    assert code == 0 and out.count("Q: ") == 2 and out.count("A: ") == 2
    record = load_gates(gates_file)
    assert record.metadata["random_weights"] == "true" and record.frames.shape == (3, 3, 56, 56)
    assistant = Assistant(checkpoint, num_frames=3, image_size=(56, 56), device="cpu")
    clip, video = assistant.clip(synthetic_scene)
    expected = assistant.model.video_gates(video["pixel_values_videos"], video["video_grid_thw"],
                                           [assistant.generative.tokens(clip)])[0]
    # 3 frames = 2 temporal groups: frames 0 and 1 share group 0's gates, frame 2 has group 1's
    torch.testing.assert_close(record.gates, expected[[0, 0, 1]])
    assert main(["ask", str(synthetic_scene), "q", "--model", str(tmp_path)]) == 1


def test_images_model_gets_the_released_inputs(tmp_path):
    """visual_input=images: all frames of a short clip, the released 518 resize, one image per frame, the system prompt."""
    import numpy as np
    from PIL import Image

    frames = tmp_path / "frames"
    frames.mkdir()
    for i in range(3):
        Image.fromarray(np.random.default_rng(i).integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(frames / f"{i}.png")
    settings = GenerativeSettings(backbone="pixels", feature_dim=3, backbone_options={"grid": [4, 4]}, projector="merger",
                                  projector_options={"hidden_dim": 8}, resample="bilinear", visual_input="images")
    processor = tiny_processor(image_size=56)
    folder = save_tiny(tmp_path / "model", processor, build_tiny_model(processor, settings, seed=0))
    assistant = Assistant(folder, num_frames=32, device="cpu", max_new_tokens=2)
    clip, inputs = assistant.clip(frames)
    assert clip.frame_indices == [0, 1, 2] and clip.images.shape == (3, 3, 392, 504)  # 64x48 -> 518x392 -> 504x392
    assert inputs["image_grid_thw"].shape == (3, 3)
    messages = assistant.messages("Which?", 3)
    assert messages[0] == {"role": "system", "content": "You are a helpful assistant."}
    assert [item["type"] for item in messages[1]["content"]] == ["image", "image", "image", "text"]
    assert isinstance(assistant.ask(frames, "Which?", strip=False), str)
    images, gates = assistant.gates(frames)
    assert images.shape[0] == 3 and gates.shape[0] == 3
