"""The VEGA-3D Qwen2.5-VL as an lmms-eval model (imports lmms-eval; see :mod:`vega3d.evaluation.lmms_plugin`)."""

from __future__ import annotations

import warnings

from lmms_eval.api.model import lmms

from vega3d.evaluation.lmms_plugin import answer_requests
from vega3d.serving import Assistant


class Vega3DLmms(lmms):
    """``--model_args pretrained=DIR[,num_frames=32,image_size=384,generative_source=online,store=DIR,device=cuda,max_new_tokens=64]``.

    Generation tasks only (VSI-Bench and the other open-ended / multiple-choice video tasks): the
    generative features of each video are computed once and reused for all its questions.
    """

    def __init__(self, pretrained: str, num_frames: int = 32, image_size: int = 384, generative_source: str = "online",
                 store: str | None = None, device: str | None = None, max_new_tokens: int = 64, batch_size: int = 1,
                 **unused) -> None:
        super().__init__()
        if unused:
            warnings.warn(f"vega3d lmms-eval model ignores model_args {sorted(unused)}", stacklevel=2)
        if int(batch_size) != 1:
            warnings.warn("vega3d answers one question at a time; batch_size is ignored", stacklevel=2)
        self.assistant = Assistant(pretrained, num_frames=int(num_frames), image_size=(int(image_size), int(image_size)),
                                   generative_source=generative_source, store=store, device=device,
                                   max_new_tokens=int(max_new_tokens))

    def generate_until(self, requests) -> list[str]:
        return answer_requests(self.assistant, requests, self.task_dict)

    def loglikelihood(self, requests):
        raise NotImplementedError("vega3d is evaluated generatively: lmms-eval loglikelihood tasks are not supported")

    def generate_until_multi_round(self, requests):
        raise NotImplementedError("vega3d does not support multi-round lmms-eval tasks")
