"""``vega3d libero-eval --suite SUITE --policy DIR``: OpenVLA-OFT's LIBERO protocol (or a robosuite task)."""

from __future__ import annotations

from pathlib import Path


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "libero-eval",
        help="roll out a policy on a LIBERO suite under the OpenVLA-OFT protocol (success per task and suite)",
        description="50 episodes per task from LIBERO's initial states, 10 wait steps, the suite's step limit, "
                    "whole action chunks, OFT's image processing; resumable per episode. SUITE is libero_spatial, "
                    "libero_object, libero_goal, libero_10 or libero_90, or robosuite:ENV (e.g. robosuite:Lift) for "
                    "a plain robosuite task with the same loop. See docs/policy.md.",
    )
    parser.add_argument("--suite", required=True)
    parser.add_argument("--policy", required=True, type=Path, help="policy folder (vega3d train-policy output or OFT layout)")
    parser.add_argument("--out", type=Path, help="results folder (default: DIR/eval-SUITE)")
    parser.add_argument("--episodes", type=int, help="episodes per task (default: 50 for LIBERO)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--assets", type=Path, help="LIBERO scene assets folder (or set $VEGA3D_LIBERO_ASSETS)")
    parser.add_argument("--unnorm-key", help="key in dataset_statistics.json (default: the suite, else the only one)")
    parser.add_argument("--no-center-crop", action="store_true", help="for policies trained without image augmentation")
    parser.add_argument("--videos", action="store_true", help="write one MP4 per episode")
    parser.add_argument("--device", default="cpu")
    parser.set_defaults(func=run)


def run(args) -> int:
    from vega3d.backbones.registry import RANDOM_WEIGHTS_LABEL, is_random_weights
    from vega3d.cli import CommandError
    from vega3d.policies.envs import RobosuiteAdapter
    from vega3d.policies.evaluate import evaluate, format_table
    from vega3d.policies.libero import LiberoAdapter, check_suite, find_assets
    from vega3d.policies.runner import PolicyRunner

    if args.episodes is not None and args.episodes < 1:
        raise CommandError(f"--episodes must be >= 1; got {args.episodes}")
    if args.suite.startswith("robosuite:"):
        env = RobosuiteAdapter(args.suite.split(":", 1)[1])
        key = args.unnorm_key
    else:
        check_suite(args.suite)
        find_assets(args.assets)  # before the policy is loaded: a missing download fails fast
        key = args.unnorm_key or args.suite
        env = None
    runner = PolicyRunner.from_folder(args.policy, key, args.device)
    runner.center_crop = not args.no_center_crop
    env = env or LiberoAdapter(args.suite, args.assets)
    label = RANDOM_WEIGHTS_LABEL if is_random_weights(args.policy) else None
    try:
        summary = evaluate(env, runner, args.out or args.policy / f"eval-{args.suite.replace(':', '-')}", args.episodes,
                           args.seed, args.videos, label)
    finally:
        env.close()
    print(format_table(summary) + (f"\n({label})" if label else ""))
    return 0
