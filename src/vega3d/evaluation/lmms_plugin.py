"""lmms-eval integration: ``lmms-eval --model vega3d --model_args pretrained=DIR --tasks vsibench``.

lmms-eval (>= 0.7) finds models through the entry-point group ``lmms_eval.models``. Ours, declared in
``pyproject.toml``, is :func:`manifest`; it names :class:`vega3d.evaluation.lmms_model.Vega3DLmms`, the
only module that imports lmms-eval (an optional extra, ``pip install 'vega3d[lmms]'``: it needs
torchvision). :func:`answer_requests` holds the logic and needs no lmms-eval, so it is tested everywhere.
"""

from __future__ import annotations

import os

from tqdm.auto import tqdm

MODEL_ID = "vega3d"
MODEL_CLASS = "vega3d.evaluation.lmms_model.Vega3DLmms"


def manifest():
    """Entry point ``lmms_eval.models: vega3d``: the model's registration for lmms-eval's registry."""
    from lmms_eval.models.registry_v2 import ModelManifest

    return ModelManifest(model_id=MODEL_ID, simple_class_path=MODEL_CLASS)


def answer_requests(assistant, requests, task_dict) -> list[str]:
    """Answer lmms-eval ``generate_until`` requests with ``assistant.ask`` (a :class:`vega3d.serving.Assistant`).

    Each request's ``args`` are ``(context, gen_kwargs, doc_to_visual, doc_id, task, split)``; the visual
    must be exactly one video path (a file, a frame folder or a scene folder). Greedy decoding with the
    request's ``max_new_tokens``; the answer is the decoded text as it is (the task's own answer extraction,
    e.g. VSI-Bench's first word, sees exactly what the released evaluation saw), cut at the first of the
    request's ``until`` strings. The task builds the prompt (VSI-Bench: "These are frames of a video." and
    its post-prompts); the assistant decides how frames enter (a video, or 32 images for a model whose
    branch fuses images, the released way).
    """
    answers = []
    for request in tqdm(requests, desc="vega3d generate", disable=len(requests) < 2):
        context, gen_kwargs, doc_to_visual, doc_id, task, split = request.args
        visuals = doc_to_visual(task_dict[task][split][doc_id]) or []
        videos = [v for v in visuals if isinstance(v, (str, os.PathLike))]
        if len(videos) != 1 or len(visuals) != 1:
            raise ValueError(f"vega3d answers about exactly one video per question; task {task!r} document {doc_id} "
                             f"gave {len(visuals)} visual(s) of types {sorted({type(v).__name__ for v in visuals})}")
        gen_kwargs = gen_kwargs or {}
        text = assistant.ask(videos[0], context, max_new_tokens=gen_kwargs.get("max_new_tokens"), strip=False)
        stops = gen_kwargs.get("until") or []
        for stop in [stops] if isinstance(stops, str) else stops:
            text = text.split(stop)[0]
        answers.append(text)
    return answers
