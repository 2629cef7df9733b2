"""Tiny random-weight policies of the real classes (RANDOM WEIGHTS), shared by the policy tests."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vega3d.models import GenerativeSettings
from vega3d.policies import build_policy
from vega3d.policies.tiny import tiny_config, tiny_inputs


@pytest.fixture(scope="module")
def config():
    return tiny_config()


@pytest.fixture(scope="session")
def full_size():
    """The 7.7B policy at the real geometry, on the meta device (shapes only)."""
    from vega3d.policies import OpenVLAConfig

    return build_policy(OpenVLAConfig(), device="meta")


@pytest.fixture(scope="module")
def policy(config):
    return build_policy(config).eval()


@pytest.fixture(scope="module")
def vega_policy(config):
    return build_policy(config, generative=GenerativeSettings(backbone="pixels", feature_dim=3)).eval()


@pytest.fixture(scope="session")
def lift_env():
    """One headless robosuite Lift (Panda, 32 px cameras, with the height image) shared by the rollout tests."""
    import importlib.util

    if importlib.util.find_spec("robosuite") is None:
        pytest.skip("robosuite is not installed (pip install 'robosuite==1.4.*' 'mujoco<3.9'; part of the dev extra)")
    from vega3d.policies.envs import RobosuiteAdapter

    env = RobosuiteAdapter(image_size=32, max_steps=8, wait_steps=1, depth=True)
    yield env
    env.close()


@pytest.fixture(scope="module")
def batch(config, policy):
    rng = np.random.default_rng(0)
    images = [[rng.integers(0, 256, (64, 64, 3), dtype=np.uint8) for _ in range(2)] for _ in range(2)]
    inputs = tiny_inputs(config, policy.num_action_tokens)(["pick up the red cube", "lift"], images)
    return {**inputs, "proprio": torch.from_numpy(rng.uniform(-1, 1, (2, 8)).astype(np.float32))}
