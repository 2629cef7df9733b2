"""The toy proof's parts on a real robosuite Lift: the scripted expert succeeds, the height image shows the cube."""

from __future__ import annotations

import numpy as np

from vega3d.policies.envs import DUMMY_ACTION
from vega3d.policies.expert import LiftExpert


def test_expert_lifts_the_cube(lift_env):
    env, expert = lift_env, LiftExpert()
    obs = env.reset(env.tasks()[0], 0)
    start = obs["cube_pos"][2]
    for _ in range(5):
        obs, _ = env.step(DUMMY_ACTION)
    done = False
    for _ in range(80):
        obs, done = env.step(expert.act(obs))
        if done:
            break
    assert done and expert.phase == "lift" and obs["cube_pos"][2] > start + 0.005  # Lift: cube above table + 4 cm


def test_height_image_shows_the_cube(lift_env):
    seen = lift_env.with_images(lift_env.reset(lift_env.tasks()[0], 1))
    height, rgb = seen["agentview_height"][..., 0].astype(int), seen["agentview_image"].astype(int)
    red = rgb[..., 0] - rgb[..., 1:].max(axis=-1) > 30  # the red cube in the RGB render
    assert red.sum() >= 1
    table = np.median(height[height.shape[0] // 4: 3 * height.shape[0] // 4])  # mostly table: height ~ 0
    assert height[red].mean() > table + 40  # the cube stands out by its height, not its colour
