"""The toy proof's parts on a real robosuite Lift: the scripted expert succeeds from what a policy can observe,
DART demos record the clean expert actions, the height image shows the cube."""

from __future__ import annotations

import numpy as np
import pytest

from vega3d.policies.envs import DUMMY_ACTION, RobosuiteAdapter
from vega3d.policies.expert import HOVER, LIFT, LiftExpert
from vega3d.policies.toy import collect_demos


def state(offset, gap, eef=(0.0, 0.0, 1.0)) -> dict:
    eef = np.asarray(eef)
    return {"robot0_eef_pos": eef, "cube_pos": eef + offset, "robot0_gripper_qpos": np.array([gap / 2, -gap / 2])}


def test_expert_lifts_the_cube(lift_env):
    env, expert = lift_env, LiftExpert()
    obs = env.reset(env.tasks()[0], 0)
    start = obs["cube_pos"][2]
    for _ in range(5):
        obs, _ = env.step(DUMMY_ACTION)
    phases, done = [], False
    for _ in range(80):
        phases.append(expert.phase(obs))
        obs, done = env.step(expert.act(obs))
        if done:
            break
    assert done and obs["cube_pos"][2] > start + 0.005  # Lift: cube above table + 4 cm
    order = [p for i, p in enumerate(phases) if i == 0 or p != phases[i - 1]]
    assert order == ["approach", "grasp", "lift"]


def test_expert_acts_on_observable_state_only():
    expert = LiftExpert(gain=8.0)
    far = expert.act(state([0.05, -0.01, -0.1], gap=0.08))  # open, off to the side: to hover height above the cube
    np.testing.assert_allclose(far, [0.4, -0.08, 8 * (-0.1 - 0.005 + HOVER), 0, 0, 0, -1], atol=1e-12)
    # at the grasp point the finger gap alone decides: open -> close; closed on the cube -> lift; closed on nothing -> retry
    assert expert.phase(state([0, 0, 0.005], gap=0.08)) == "grasp"
    lift = expert.act(state([0, 0, 0.005], gap=0.05))
    np.testing.assert_allclose(lift, [0, 0, 8 * LIFT, 0, 0, 0, 1], atol=1e-12)
    assert expert.phase(state([0, 0, 0.005], gap=0.005)) == "approach"


def test_noisy_demos_record_the_clean_expert_action(lift_env, monkeypatch):
    executed, seen = [], []
    step = lift_env.step

    def recording_step(action):
        executed.append(np.asarray(action, dtype=float))
        obs, done = step(action)
        seen.append(obs)
        return obs, done

    def numbered_images(obs):
        # Stands in for the renderer (~0.1 s a frame on CPU; the rendering tests are below): each image
        # holds the number of steps taken before it, so the check below sees which state each one shows.
        marker = np.full((2, 2, 3), len(executed), dtype=np.uint8)
        return {**obs, "agentview_image": marker, "agentview_height": marker}

    monkeypatch.setattr(lift_env, "step", recording_step)
    monkeypatch.setattr(lift_env, "with_images", numbered_images)
    monkeypatch.setattr(lift_env, "cameras", ("agentview",))
    (demo,) = collect_demos(lift_env, [0], noise=0.1, sticky=0.5)
    executed, before = np.asarray(executed[lift_env.wait_steps:]), seen[lift_env.wait_steps - 1: -1]
    assert len(demo.actions) == len(executed) == len(demo.images[0]) == len(demo.generative_images[0])
    shown = lift_env.wait_steps + np.arange(len(executed))  # image k: the state action k was chosen in
    np.testing.assert_array_equal(demo.images[0][:, 0, 0, 0], shown)
    np.testing.assert_array_equal(demo.generative_images[0][:, 0, 0, 0], shown)
    np.testing.assert_allclose(demo.actions, [LiftExpert().act(obs) for obs in before])  # the clean action of each state
    # each executed action: the clean one plus translation noise, or the previous executed action repeated
    repeated = np.all(executed == np.r_[[DUMMY_ACTION], executed[:-1]], axis=1)
    assert 0.3 < repeated.mean() < 0.7
    noise = (executed - demo.actions)[~repeated]
    np.testing.assert_array_equal(noise[:, 3:], 0)  # rotation and gripper as the expert chose them
    assert 0.07 < noise[:, :3].std() < 0.13 and abs(noise[:, :3].mean()) < 0.03
    assert np.all(demo.proprio[:, 6] - demo.proprio[:, 7] > 0)  # the finger gap the expert decides on is in the proprio


def test_adapter_renders_only_the_cameras_asked_for(lift_env, monkeypatch):
    monkeypatch.setattr(lift_env, "cameras", ("agentview",))
    seen = lift_env.with_images(lift_env.reset(lift_env.tasks()[0], 0))
    assert "agentview_image" in seen and "agentview_height" in seen and "robot0_eye_in_hand_image" not in seen
    with pytest.raises(ValueError, match="unknown camera"):
        RobosuiteAdapter(cameras=("frontview",))


def test_adapter_builds_the_same_model_for_the_same_seed(monkeypatch):
    """robosuite draws parts of the model (Lift's cube size) with numpy when it builds it: the adapter seeds them."""
    import types

    import vega3d.policies.envs as envs

    def make(*args, **kwargs):  # stands in for robosuite.make: a model drawn from numpy's global state
        return types.SimpleNamespace(cube_size=np.random.uniform(0.020, 0.022, 3))

    monkeypatch.setattr(envs, "import_robosuite", lambda: types.SimpleNamespace(make=make))
    np.random.seed(123)
    first = RobosuiteAdapter(seed=3).env.cube_size
    np.random.uniform(size=10)  # whatever ran in between
    np.testing.assert_array_equal(RobosuiteAdapter(seed=3).env.cube_size, first)
    assert not np.array_equal(RobosuiteAdapter(seed=4).env.cube_size, first)


def test_height_image_shows_the_cube(lift_env):
    seen = lift_env.with_images(lift_env.reset(lift_env.tasks()[0], 1))
    height, rgb = seen["agentview_height"][..., 0].astype(int), seen["agentview_image"].astype(int)
    red = rgb[..., 0] - rgb[..., 1:].max(axis=-1) > 30  # the red cube in the RGB render
    assert red.sum() >= 1
    table = np.median(height[height.shape[0] // 4: 3 * height.shape[0] // 4])  # mostly table: height ~ 0
    assert height[red].mean() > table + 40  # the cube stands out by its height, not its colour
