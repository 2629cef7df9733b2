"""The policy at evaluation time: observation -> a whole chunk of environment actions (one forward pass)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from vega3d.policies.checkpoint import from_pretrained
from vega3d.policies.inputs import PolicyInputs, PrismaticImageProcessor
from vega3d.policies.normalization import Normalizer, gripper_for_env, load_statistics
from vega3d.policies.observations import process_image, robot_proprio
from vega3d.policies.stream import GenerativeStream


class PolicyRunner:
    """Processes observations as OFT does, runs the policy, un-normalises and converts the gripper (F2.14, F2.16)."""

    def __init__(self, model, inputs: PolicyInputs, normalizer: Normalizer, stream: GenerativeStream | None = None,
                 center_crop: bool = True, generative_keys: tuple[str, ...] = ("agentview_image", "robot0_eye_in_hand_image")):
        if (model.generative is None) != (stream is None):
            raise ValueError("a policy with a generative branch needs a GenerativeStream (and one without, none)")
        self.model, self.inputs, self.normalizer, self.stream, self.center_crop = model.eval(), inputs, normalizer, stream, center_crop
        self.generative_keys = generative_keys  # the observation images the generative stream sees
        dims = len(normalizer.statistics["action"]["q01"])
        if dims != model.policy.action_dim:
            raise ValueError(f"the normalisation statistics have {dims} action dimensions; the policy predicts {model.policy.action_dim}")

    @classmethod
    def from_folder(cls, folder: str | Path, unnorm_key: str | None = None, device: str = "cpu") -> "PolicyRunner":
        from transformers import AutoTokenizer

        folder = Path(folder)
        model = from_pretrained(folder).to(device)
        _, normalizer = load_statistics(folder, unnorm_key)
        inputs = PolicyInputs(AutoTokenizer.from_pretrained(folder), PrismaticImageProcessor.from_pretrained(folder),
                              model.num_action_tokens)
        stream = None
        if model.generative is not None:
            stream = GenerativeStream(model.generative, model.policy.generative_history, device=device)
        return cls(model, inputs, normalizer, stream)

    def reset(self) -> None:
        if self.stream is not None:
            self.stream.reset()

    def images(self, obs: dict, names=("agentview_image", "robot0_eye_in_hand_image")) -> list[np.ndarray]:
        size = self.inputs.image_processor.size
        return [process_image(obs[name], size, center_crop=self.center_crop) for name in names]

    @torch.inference_mode()
    def chunk(self, obs: dict, instruction: str) -> np.ndarray:
        """Environment actions ``[K, 7]`` for the next K steps."""
        images = self.images(obs, ("agentview_image", "robot0_eye_in_hand_image")[: self.model.policy.num_images])
        device = next(self.model.parameters()).device
        batch = {k: v.to(device) for k, v in self.inputs([instruction], [images]).items()}
        dtype = next(self.model.parameters()).dtype
        batch["pixel_values"] = batch["pixel_values"].to(dtype)
        if self.model.proprio_projector is not None:
            batch["proprio"] = torch.from_numpy(self.normalizer.normalize_proprio(robot_proprio(obs))[None]).to(device, dtype)
        if self.stream is not None:
            views = self.images(obs, self.generative_keys[: self.model.policy.generative_image_count])
            batch["generative_tokens"] = self.stream.step(views).to(device)
        normalised = self.model(**batch)["actions"][0].float().cpu().numpy()
        actions = self.normalizer.unnormalize_actions(normalised)
        actions[:, -1] = gripper_for_env(actions[:, -1])
        return actions
