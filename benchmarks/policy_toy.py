"""Proof that the generative prior reaches the policy: toy imitation on robosuite Lift (CPU, headless).

A scripted expert makes demonstrations (with DART-style perturbations); the same tiny RANDOM-initialised
OpenVLA-OFT policy (third-person + wrist camera, proprio) is trained with and without the gated generative
branch (stream: the weight-free ``pixels`` backbone on the rendered depth image, a labelled stand-in for a
world model) and rolled out on held-out seeds. See docs/policy.md.

    MUJOCO_GL=egl python benchmarks/policy_toy.py [--train-episodes 30] [--eval-episodes 20] [--steps 2000]
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
from pathlib import Path

import torch

from vega3d.io import write_json

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"


def plot_losses(result: dict, path: Path) -> None:
    import matplotlib

    from vega3d.policies.toy import LOGGING_STEPS

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.2))
    for name, variant in result["variants"].items():
        ax.plot([LOGGING_STEPS * (i + 1) for i in range(len(variant["losses"]))], variant["losses"],
                label=f"{name}: held-out L1 {variant['held_out_l1']:.3f}, success {100 * variant['success_rate']:.0f}%")
    ax.set_xlabel("training step")
    ax.set_ylabel("L1 loss (normalised actions)")
    ax.set_title("toy Lift imitation, tiny policy from RANDOM init", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-episodes", type=int, default=30)
    parser.add_argument("--eval-episodes", type=int, default=20)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--video-episodes", type=int, default=1)
    parser.add_argument("--noise", type=float, default=0.1, help="DART noise on the demos' executed translation")
    parser.add_argument("--sticky", type=float, default=0.5, help="chance a demo step repeats the last executed action")
    parser.add_argument("--num-images", type=int, default=2, choices=(1, 2), help="2: third-person + wrist camera")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, default=REPO / "outputs" / "policy_toy")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--name", default="policy_toy", help="results stem: NAME.json, NAME_losses.png, NAME_videos/")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("MUJOCO_GL", "egl")
    from vega3d.policies.toy import run_toy

    start = time.perf_counter()
    if args.work.exists():
        shutil.rmtree(args.work)
    result = run_toy(args.work, args.train_episodes, args.eval_episodes, args.steps, args.seed, video_episodes=args.video_episodes,
                     noise=args.noise, sticky=args.sticky, num_images=args.num_images)
    result.update(seconds=time.perf_counter() - start, steps=args.steps, seed=args.seed, num_images=args.num_images,
                  threads=args.threads, work=str(args.work))
    print(result["label"])
    print(f"demos: {result['demos']} ({result['demo_steps']} steps); held-out episodes: {args.eval_episodes}")
    print(f"{'variant':<26} {'success':>8} {'train L1':>9} {'held-out L1':>12}")
    for name, variant in result["variants"].items():
        print(f"{name:<26} {100 * variant['success_rate']:>7.0f}% {variant['final_loss']:>9.4f} {variant['held_out_l1']:>12.4f}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    write_json(RESULTS / f"{args.name}.json", result)
    plot_losses(result, RESULTS / f"{args.name}_losses.png")
    videos = RESULTS / f"{args.name}_videos"
    shutil.rmtree(videos, ignore_errors=True)  # only this run's rollouts
    for name, variant in result["variants"].items():  # a few small rollout videos beside the figures
        for video in variant["videos"]:
            videos.mkdir(exist_ok=True)
            shutil.copyfile(args.work / name / "videos" / "videos" / video, videos / f"{name}--{video}")
    print(f"{RESULTS / args.name}.json, {args.name}_losses.png, {args.name}_videos/")


if __name__ == "__main__":
    main()
