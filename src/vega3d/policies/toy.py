"""Toy imitation proof: does the generative stream reach the policy's actions? (CPU, robosuite Lift.)

A scripted expert (:class:`~vega3d.policies.expert.LiftExpert`, privileged cube position, no memory) solves
seeded Lift episodes under DART-style perturbations; its observations and clean actions become demonstrations.
The same tiny RANDOM-initialised policy of the real classes (third-person + wrist image, proprio, parallel
decoding of 8-action chunks executed open loop, L1 head) is trained on them twice, with and without the
generative branch, and rolled out on held-out seeds.

The generative stream is the registry's weight-free ``pixels`` backbone applied to the third-person
camera's rendered depth, lifted to a height-above-table image with the camera calibration: the cube's
geometry is in that stream because its input is depth, a stand-in for the implicit 3D of a video world model
far too large to run in a CPU rollout.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vega3d.policies.demos import Demo
from vega3d.policies.envs import CAMERAS, DUMMY_ACTION, RobosuiteAdapter
from vega3d.policies.expert import LiftExpert
from vega3d.policies.observations import robot_proprio

GENERATIVE = {"backbone": "pixels", "feature_dim": 3, "backbone_options": {"grid": [24, 24]}}
DART_SEED = 5  # the noise stream of the demos, apart from the episodes' initial-state seeds
LOGGING_STEPS = 5
LABEL = "tiny OpenVLA-OFT policy trained from RANDOM initial weights on scripted Lift demos"


def collect_demos(env: RobosuiteAdapter, episodes: list[int], max_steps: int = 150, noise: float = 0.0,
                  sticky: float = 0.0) -> list[Demo]:
    """Successful expert episodes; every step's camera images (``env.cameras``), agentview height image, proprio
    and clean expert action.

    DART-style perturbations (seeded by the episode): the environment executes the expert's action plus Gaussian
    noise of standard deviation ``noise`` on the three translation dimensions, or, with probability ``sticky``, the
    previous executed action again (a random delay of every change: closing, lifting), while the demo records the
    clean action. The demos then show how the expert recovers from the states a slightly wrong or slow policy
    drifts into, among them the gripper still open at the grasp point or still low with the cube in hand.
    """
    expert, task, demos = LiftExpert(), env.tasks()[0], []
    for episode in episodes:
        rng = np.random.default_rng([DART_SEED, episode])
        obs = env.reset(task, episode)
        for _ in range(env.wait_steps):
            obs, _ = env.step(DUMMY_ACTION)
        frames, depths, actions, proprio, done = {camera: [] for camera in env.cameras}, [], [], [], False
        executed = np.asarray(DUMMY_ACTION, dtype=np.float64)
        for _ in range(max_steps):
            seen = env.with_images(obs)
            action = expert.act(obs)
            for camera, images in frames.items():
                images.append(seen[f"{camera}_image"])
            depths.append(seen["agentview_height"])
            actions.append(action)
            proprio.append(robot_proprio(obs))
            if rng.random() >= sticky:
                executed = action.copy()
                executed[:3] += noise * rng.standard_normal(3)
            obs, done = env.step(executed)
            if done:
                break
        if done:
            demos.append(Demo(f"lift-seed{episode}", task.language, np.asarray(actions), np.asarray(proprio),
                              [np.asarray(images) for images in frames.values()], [np.asarray(depths)]))
    return demos


def held_out_error(folder: str | Path, demos: list[Demo], batch_size: int = 32) -> float:
    """Mean L1 between the policy's normalised action chunks and the expert's on held-out demonstrations
    (the training loss, on episodes the policy never saw)."""
    import torch

    from vega3d.policies.normalization import load_statistics
    from vega3d.policies.runner import PolicyRunner
    from vega3d.policies.train import Collator, DemoDataset

    runner = PolicyRunner.from_folder(folder)
    _, normalizer = load_statistics(folder)
    dataset = DemoDataset(demos, normalizer, runner.model.policy, runner.inputs.image_processor.size, runner.stream, image_aug=False)
    collate, errors = Collator(runner.inputs), []
    with torch.inference_mode():
        for start in range(0, len(dataset), batch_size):
            batch = collate([dataset[i] for i in range(start, min(start + batch_size, len(dataset)))])
            errors.append(runner.model(**batch)["loss"].item() * len(batch["actions"]))
    return float(sum(errors) / len(dataset))


def toy_config(output_dir: Path, generative: bool, steps: int, seed: int, image_size: int, num_images: int = 2,
               hidden_size: int = 64, num_layers: int = 2, batch_size: int = 16, learning_rate: float = 1e-3):
    """The training configuration of one variant: every parameter trained, no augmentation, the learning rate
    divided by 10 for the last fifth of the steps (OFT's MultiStepLR, milestone moved to the toy's length)."""
    from vega3d.models.settings import GenerativeSettings
    from vega3d.policies.config import PolicySettings
    from vega3d.policies.train import TRAINING_DEFAULTS, PolicyTrainConfig

    training = {"output_dir": str(output_dir), "max_steps": steps, "per_device_train_batch_size": batch_size,
                "learning_rate": learning_rate, "weight_decay": 0.0, "logging_steps": LOGGING_STEPS, "save_strategy": "no",
                "seed": seed, "use_cpu": True, "disable_tqdm": True}
    return PolicyTrainConfig(
        base=None, demos=[], policy=PolicySettings(num_images=num_images), lora=None, dataset_key="toy_lift", image_aug=False,
        tiny={"image_size": image_size, "hidden_size": hidden_size, "num_layers": num_layers, "vision_dim": 16, "vision_depth": 3},
        generative=GenerativeSettings.from_dict(GENERATIVE) if generative else None, lr_milestone=max(1, int(0.8 * steps)),
        training_arguments={**TRAINING_DEFAULTS, **training})


def run_toy(work_dir: str | Path, train_episodes: int = 30, eval_episodes: int = 20, steps: int = 1500, seed: int = 0,
            image_size: int = 84, render_size: int = 96, max_steps: int = 120, video_episodes: int = 1,
            held_out_demos: int = 5, noise: float = 0.1, sticky: float = 0.5, num_images: int = 2,
            **model_options) -> dict:
    """Demos from seeds 0..train_episodes-1 (DART ``noise``, ``sticky``); for both variants, rollouts and the expert's clean
    held-out demos from seeds 1000..; returns the summary. ``num_images``: 2 = third-person + wrist camera (OFT's
    LIBERO setting), 1 = third-person only; ``model_options``: :func:`toy_config`'s sizes."""
    import json

    from vega3d.policies.evaluate import evaluate
    from vega3d.policies.runner import PolicyRunner
    from vega3d.policies.train import train_policy

    work_dir = Path(work_dir)
    env = RobosuiteAdapter(image_size=render_size, max_steps=max_steps, seed=0, depth=True, cameras=CAMERAS[:num_images])
    try:
        demos = collect_demos(env, list(range(train_episodes)), noise=noise, sticky=sticky)
        held_out = collect_demos(env, list(range(1000, 1000 + held_out_demos)))  # the clean expert on held-out seeds
        result = {"label": LABEL, "demos": len(demos), "demo_steps": int(sum(len(d.actions) for d in demos)),
                  "expert_success_on_demo_seeds": len(demos) / train_episodes, "dart_noise": noise, "sticky_actions": sticky,
                  "generative_stream": GENERATIVE, "variants": {}}
        for name, generative in (("gated_generative_branch", True), ("no_generative_branch", False)):
            folder = train_policy(toy_config(work_dir / name, generative, steps, seed, image_size, num_images, **model_options), demos)
            runner = PolicyRunner.from_folder(folder)
            runner.center_crop, runner.generative_keys = False, ("agentview_height",)
            env.seed = 1000  # held-out initial states
            summary = evaluate(env, runner, folder / "eval", eval_episodes, seed, label=LABEL)
            evaluate(env, runner, folder / "videos", video_episodes, seed, videos=True, label=LABEL)
            env.seed = 0
            losses = json.loads((folder / "train_summary.json").read_text())["losses"]
            result["variants"][name] = {"success_rate": summary["success_rate"], "episodes": summary["episodes"],
                                        "held_out_l1": held_out_error(folder, held_out),
                                        "losses": losses, "final_loss": float(np.mean(losses[-5:])),
                                        "videos": sorted(p.name for p in (folder / "videos" / "videos").glob("*.mp4"))}
    finally:
        env.close()
    return result
