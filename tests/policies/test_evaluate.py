"""The OFT evaluation loop: wait steps, whole-chunk execution, failures, resume; the runner; a robosuite task."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from vega3d.policies import Normalizer, compute_statistics
from vega3d.policies.envs import DUMMY_ACTION, EnvAdapter, Task
from vega3d.policies.evaluate import EPISODES_FILE, evaluate, format_table
from vega3d.policies.observations import process_image, quat2axisangle
from vega3d.policies.runner import PolicyRunner
from vega3d.policies.tiny import tiny_inputs


class CountingEnv(EnvAdapter):
    suite, max_steps, wait_steps, episodes_per_task = "counting", 20, 3, 2

    def __init__(self, solve_at=None, crash_at=None):
        self.solve_at, self.crash_at, self.actions, self.resets = solve_at, crash_at, [], []

    def tasks(self):
        return [Task("t0", "do it"), Task("t1", "do that")]

    def reset(self, task, episode):
        self.resets.append((task.name, episode))
        self.t = 0
        return {"t": 0}

    def step(self, action):
        self.actions.append(list(action))
        self.t += 1
        if self.crash_at is not None and self.t == self.crash_at:
            raise RuntimeError("simulator exploded")
        return {"t": self.t}, self.solve_at is not None and self.t >= self.solve_at


class ChunkRunner:
    """Returns chunks numbered by query so the test can see which chunk each executed action came from."""

    class model:  # noqa: N801 - mimics runner.model.policy
        class policy:
            num_actions_chunk = 4

    def __init__(self):
        self.queries = 0

    def reset(self):
        pass

    def chunk(self, obs, instruction):
        self.queries += 1
        return np.array([[self.queries, k, 0, 0, 0, 0, 1.0] for k in range(4)])


def test_wait_steps_then_whole_chunks(tmp_path):
    env = CountingEnv(solve_at=12)
    summary = evaluate(env, ChunkRunner(), tmp_path, episodes_per_task=1)
    assert env.actions[:3] == [DUMMY_ACTION] * 3
    assert [a[:2] for a in env.actions[3:12]] == [[1, 0], [1, 1], [1, 2], [1, 3], [2, 0], [2, 1], [2, 2], [2, 3], [3, 0]]
    episode = json.loads((tmp_path / EPISODES_FILE).read_text())["t0/0"]
    assert episode == {"success": True, "steps": 12, "queries": 3}
    assert summary["success_rate"] == 1.0 and summary["per_task"]["t1"]["success_rate"] == 1.0


def test_failure_after_max_steps_and_crash(tmp_path):
    env = CountingEnv()
    summary = evaluate(env, ChunkRunner(), tmp_path / "a", episodes_per_task=1)
    assert summary["success_rate"] == 0.0 and len(env.actions) == 2 * (20 + 3)
    crashing = evaluate(CountingEnv(crash_at=5), ChunkRunner(), tmp_path / "b", episodes_per_task=1)
    episodes = json.loads((tmp_path / "b" / EPISODES_FILE).read_text())
    assert crashing["success_rate"] == 0.0 and episodes["t0/0"]["error"] == "RuntimeError: simulator exploded"
    assert "counting" in format_table(crashing) and "0.0%" in format_table(crashing)


def test_resume_runs_only_missing_episodes(tmp_path):
    evaluate(CountingEnv(solve_at=4), ChunkRunner(), tmp_path, episodes_per_task=1)
    env = CountingEnv(solve_at=4)
    summary = evaluate(env, ChunkRunner(), tmp_path, episodes_per_task=2)
    assert env.resets == [("t0", 1), ("t1", 1)]
    assert summary["episodes"] == 4


def test_observation_processing():
    image = np.zeros((32, 32, 3), dtype=np.uint8)
    image[:4] = 255  # top rows white: after the 180-degree rotation they are at the bottom
    out = process_image(image, 28, center_crop=False)
    assert out.shape == (28, 28, 3) and out[-1].mean() > 200 and out[0].mean() < 30
    np.testing.assert_allclose(quat2axisangle([0, 0, np.sin(0.25), np.cos(0.25)]), [0, 0, 0.5], atol=1e-9)
    np.testing.assert_array_equal(quat2axisangle([0, 0, 0, 1]), [0, 0, 0])


def _obs(rng):
    return {"agentview_image": rng.integers(0, 256, (32, 32, 3), dtype=np.uint8),
            "robot0_eye_in_hand_image": rng.integers(0, 256, (32, 32, 3), dtype=np.uint8),
            "robot0_eef_pos": rng.normal(size=3), "robot0_eef_quat": np.array([0, 0, 0, 1.0]),
            "robot0_gripper_qpos": rng.normal(size=2)}


def _normalizer(seed=0):
    rng = np.random.default_rng(seed)
    actions = np.c_[rng.uniform(-0.5, 0.5, (200, 6)), rng.integers(0, 2, 200)]
    return Normalizer(compute_statistics(actions, rng.normal(size=(200, 8)), 4))


def test_runner_unnormalises_and_converts_the_gripper(config, policy):
    rng = np.random.default_rng(0)
    obs, normalizer = _obs(rng), _normalizer()
    runner = PolicyRunner(policy, tiny_inputs(config, policy.num_action_tokens), normalizer)
    actions = runner.chunk(obs, "lift the cube")
    images = runner.images(obs)
    batch = runner.inputs(["lift the cube"], [images])
    with torch.no_grad():
        proprio = torch.from_numpy(normalizer.normalize_proprio(runner_proprio(obs))[None])
        raw = policy(**batch, proprio=proprio)["actions"][0].numpy()
    expected = normalizer.unnormalize_actions(raw)
    np.testing.assert_allclose(actions[:, :6], expected[:, :6], atol=1e-5)
    np.testing.assert_array_equal(actions[:, 6], np.where(raw[:, 6] > 0.5, -1.0, 1.0))


def runner_proprio(obs):
    return np.r_[obs["robot0_eef_pos"], [0, 0, 0], obs["robot0_gripper_qpos"]].astype(np.float32)


def test_runner_refuses_mismatched_statistics(config, policy):
    stats = compute_statistics(np.zeros((4, 14)), np.zeros((4, 8)), 1)
    with pytest.raises(ValueError, match="14 action dimensions; the policy predicts 7"):
        PolicyRunner(policy, tiny_inputs(config, 56), Normalizer(stats))


def test_loop_runs_a_robosuite_task_headless(tmp_path, config, policy, lift_env):
    env = lift_env
    env.max_steps, env.wait_steps = 8, 1
    first = env.reset(env.tasks()[0], 3)["cube_pos"]
    runner = PolicyRunner(policy, tiny_inputs(config, policy.num_action_tokens), _normalizer())
    summary = evaluate(env, runner, tmp_path, episodes_per_task=1, label="RANDOM WEIGHTS")
    again = env.reset(env.tasks()[0], 3)["cube_pos"]
    np.testing.assert_array_equal(first, again)  # an episode's initial state is fixed by its seed
    episode = json.loads((tmp_path / EPISODES_FILE).read_text())["Lift/0"]
    assert episode["steps"] == 9 and episode["queries"] == 1 and "error" not in episode
    assert summary["suite"] == "robosuite_lift" and summary["episodes"] == 1


def test_zero_episodes_runs_none(tmp_path):
    summary = evaluate(CountingEnv(solve_at=4), ChunkRunner(), tmp_path, episodes_per_task=0)
    assert summary["episodes"] == 0 and summary["success_rate"] is None and summary["episodes_per_task"] == 0


def test_install_warm_up_warns_where_robosuite_cannot_run(monkeypatch):
    # `make install` runs compile_robosuite (via compile_all); robosuite without a renderer must not fail it.
    from vega3d.policies import envs

    def no_renderer(**kwargs):
        raise RuntimeError("Cannot initialize a EGL device display")

    monkeypatch.setattr(envs, "RobosuiteAdapter", no_renderer)
    with pytest.warns(UserWarning, match=r"robosuite's loops were not compiled ahead \(RuntimeError: Cannot initialize"):
        envs.compile_robosuite()
