"""Answer questions about a scene or video: ``vega3d ask`` and :func:`answer` (paper Fig. 7).

The clip is read, sampled and turned into Qwen video inputs once; its generative features are computed
once (or read from the feature store) and reused for every later question about it. A model whose branch
fuses images (``visual_input="images"``, the released spatial-reasoning pipeline) gets the released
inputs instead: all frames if the clip has fewer than ``num_frames``, the released 518-wide resize, every
frame an image, and the system prompt "You are a helpful assistant.".
"""

from __future__ import annotations

import inspect
from pathlib import Path

import torch

from vega3d.models import QwenInputs, load_model
from vega3d.models.qwen_vega import QwenGenerationShell
from vega3d.models.clips import Clip, load_clip, load_released_clip
from vega3d.models.inputs import frames_as_images
from vega3d.models.generative import GenerativeSource


class Assistant:
    """A loaded model (VEGA-3D or plain Qwen2.5-VL) with per-clip caches of inputs and generative tokens."""

    def __init__(self, model_path: str | Path, num_frames: int = 32, image_size=(384, 384), generative_source: str = "online",
                 store: str | Path | None = None, device: str | None = None, max_new_tokens: int = 64):
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model = load_model(str(model_path)).to(self.device).eval()
        self.inputs = QwenInputs.from_pretrained(model_path)
        self.num_frames, self.image_size, self.max_new_tokens = num_frames, image_size, max_new_tokens
        self.generative = None
        if isinstance(self.model, QwenGenerationShell):
            self.generative = GenerativeSource(self.model.generative, generative_source, store, device=self.device)
        self.as_images = self.generative is not None and self.generative.settings.visual_input == "images"
        # Qwen2.5-VL video prompts of one length can share a generate call (see ask_many)
        self.batches_prompts = not self.as_images and "second_per_grid_ts" in inspect.signature(self.model.forward).parameters
        self._clips: dict[str, tuple[Clip, dict]] = {}

    def clip(self, path: str | Path) -> tuple[Clip, dict]:
        """The sampled clip and its Qwen video inputs, computed at the first question about ``path``."""
        key = str(Path(path).resolve())
        if key not in self._clips:
            if self.as_images:
                clip = load_released_clip(path, self.num_frames)
                self._clips[key] = (clip, self.inputs.images(clip.images))
            else:
                clip = load_clip(path, self.num_frames, self.image_size)
                self._clips[key] = (clip, self.inputs.video(clip.images))
        return self._clips[key]

    def messages(self, question: str, num_frames: int) -> list[dict]:
        messages = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": question}]}]
        return frames_as_images(messages, num_frames) if self.as_images else messages

    def generative_tokens(self, video, generative_video=None) -> list[torch.Tensor] | None:
        if self.generative is None:
            return None
        return [self.generative.tokens(self.clip(generative_video or video)[0])]

    def ask(self, video: str | Path, question: str, generative_video: str | Path | None = None,
            max_new_tokens: int | None = None, strip: bool = True) -> str:
        """Greedy answer to ``question`` about ``video`` (scene folder, video file or frame folder);
        ``max_new_tokens`` overrides the assistant's default for this question; ``strip=False`` returns the
        decoded text as it is (what the released evaluation parses)."""
        return self.ask_many([(video, question, generative_video)], max_new_tokens, strip)[0]

    def ask_many(self, questions: list[tuple], max_new_tokens: int | None = None, strip: bool = True,
                 batch_size: int = 16) -> list[str]:
        """:meth:`ask` for each ``(video, question[, generative_video])``, answers in order. On Qwen2.5-VL
        video inputs, prompts of one token length go through ``generate`` together: no padding, so each row
        is what it would be alone (checked on the toy task: the same answers, 10x faster); else one by one.
        ``batch_size`` questions are prepared at a time, so memory holds that many decoded clips."""
        answers = []
        for start in range(0, len(questions), batch_size):
            answers += self._answer_together(questions[start:start + batch_size], max_new_tokens, strip)
        return answers

    @torch.no_grad()
    def _answer_together(self, questions: list[tuple], max_new_tokens: int | None, strip: bool) -> list[str]:
        prompts = []
        for video, question, *generative_video in questions:
            clip, video_inputs = self.clip(video)
            prompt = self.inputs.prompt(self.messages(question, len(clip.images)), video_inputs)
            prompts.append((prompt, self.generative_tokens(video, *generative_video)))
        groups: dict = {}
        for index, (prompt, _) in enumerate(prompts):
            groups.setdefault(prompt["input_ids"].shape[1] if self.batches_prompts else index, []).append(index)
        answers = [""] * len(prompts)
        for rows in groups.values():
            batch = {k: torch.cat([prompts[i][0][k] for i in rows]).to(self.device) for k in prompts[rows[0]][0]}
            extra = {}
            if prompts[rows[0]][1] is not None:
                extra["generative_tokens"] = [t.to(self.device) for i in rows for t in prompts[i][1]]
            if len(rows) > 1:  # Qwen2.5-VL's default (1 per video) counts the input's tokens: a decode step has one
                extra["second_per_grid_ts"] = [1] * len(rows)
            output = self.model.generate(**batch, **extra, max_new_tokens=max_new_tokens or self.max_new_tokens,
                                         do_sample=False, pad_token_id=self.inputs.tokenizer.pad_token_id)
            for row, i in enumerate(rows):
                text = self.inputs.tokenizer.decode(output[row, batch["input_ids"].shape[1]:], skip_special_tokens=True,
                                                    clean_up_tokenization_spaces=False)
                answers[i] = text.strip() if strip else text
        return answers

    @torch.no_grad()
    def gates(self, video: str | Path) -> tuple[torch.Tensor, torch.Tensor]:
        """``(frames [T, 3, H, W], gates [T, h, w])`` for ``vega3d gates``: each temporal group's gate map is
        shown on both of its frames (the padded last group of an odd clip on its one real frame)."""
        if self.generative is None:
            raise ValueError("this model has no generative branch, so it has no gates")
        clip, video_inputs = self.clip(video)
        tokens = self.generative_tokens(video)
        if self.as_images:  # one gate map per frame-image
            grid = video_inputs["image_grid_thw"].to(self.device)
            gates = self.model.visual_gates(video_inputs["pixel_values"].to(self.device), grid, tokens)
            return clip.images, torch.cat(gates).cpu()
        grid = video_inputs["video_grid_thw"].to(self.device)
        gates = self.model.visual_gates(video_inputs["pixel_values_videos"].to(self.device), grid, tokens)[0]
        per_frame = gates.repeat_interleave(self.inputs.temporal_patch_size, dim=0)[: len(clip.images)]
        return clip.images, per_frame.cpu()


_ASSISTANTS: dict[tuple, Assistant] = {}


def answer(video: str | Path, question: str, model: str | Path, **options) -> str:
    """Answer ``question`` about ``video`` with the model at ``model``; the loaded model and each clip's
    inputs and generative features are kept for later calls with the same model and options."""
    key = (str(model), tuple(sorted((k, str(v)) for k, v in options.items())))
    if key not in _ASSISTANTS:
        _ASSISTANTS[key] = Assistant(model, **options)
    return _ASSISTANTS[key].ask(video, question)
