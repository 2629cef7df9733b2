"""The lmms-eval plugin: entry point, request handling through the real Assistant on a tiny random model."""

from __future__ import annotations

import importlib.metadata
from types import SimpleNamespace

import pytest

from vega3d.evaluation.lmms_plugin import MODEL_CLASS, answer_requests, manifest
from vega3d.models import GenerativeSettings
from vega3d.models.tiny import build_tiny_model, save_tiny, tiny_processor
from vega3d.serving import Assistant


@pytest.fixture(scope="module")
def assistant(tmp_path_factory):
    processor = tiny_processor(image_size=56)
    settings = GenerativeSettings(backbone="pixels", feature_dim=3, backbone_options={"grid": [4, 4]})
    checkpoint = save_tiny(tmp_path_factory.mktemp("vega"), processor, build_tiny_model(processor, settings, seed=0))
    return Assistant(checkpoint, num_frames=3, image_size=(56, 56), device="cpu", max_new_tokens=6)


def request(context, doc_id, gen_kwargs, visuals):
    # lmms-eval's Instance.args for generate_until: (context, gen_kwargs, doc_to_visual, doc_id, task, split)
    return SimpleNamespace(args=(context, gen_kwargs, lambda doc: doc["videos"], doc_id, "vsibench", "test"))


def test_entry_point_is_installed_for_lmms_eval():
    points = {p.name: p.value for p in importlib.metadata.entry_points(group="lmms_eval.models")}
    assert points.get("vega3d") == "vega3d.evaluation.lmms_plugin:manifest"


def test_requests_are_answered_like_the_assistant(assistant, synthetic_scene):
    docs = {"vsibench": {"test": {0: {"videos": [str(synthetic_scene)]}, 1: {"videos": [synthetic_scene]}}}}
    requests = [request("How many chairs?", 0, {"max_new_tokens": 3}, None), request("Which is closer?", 1, {}, None)]
    answers = answer_requests(assistant, requests, docs)
    assert answers == [assistant.ask(synthetic_scene, "How many chairs?", max_new_tokens=3, strip=False),
                       assistant.ask(synthetic_scene, "Which is closer?", strip=False)]


def test_until_strings_cut_the_answer(assistant, synthetic_scene):
    full = assistant.ask(synthetic_scene, "Describe it.", strip=False)
    assert len(full) > 1
    stop = full[1]
    docs = {"vsibench": {"test": {0: {"videos": [str(synthetic_scene)]}}}}
    for until in (stop, [stop]):
        assert answer_requests(assistant, [request("Describe it.", 0, {"until": until}, None)], docs) == [full.split(stop)[0]]


def test_one_video_per_question(assistant, synthetic_scene):
    docs = {"vsibench": {"test": {0: {"videos": []}, 1: {"videos": [str(synthetic_scene)] * 2}}}}
    with pytest.raises(ValueError, match=r"exactly one video.*task 'vsibench' document 0 gave 0 visual"):
        answer_requests(assistant, [request("q", 0, {}, None)], docs)
    with pytest.raises(ValueError, match=r"document 1 gave 2 visual"):
        answer_requests(assistant, [request("q", 1, {}, None)], docs)


def test_manifest_resolves_in_lmms_eval():
    pytest.importorskip("lmms_eval", reason="lmms-eval is an optional extra (it needs torchvision)")
    resolved = manifest()
    assert (resolved.model_id, resolved.simple_class_path) == ("vega3d", MODEL_CLASS)
