"""The OFT evaluation loop (REFERENCE-VLA F3.2-F3.6) over any :class:`~vega3d.policies.envs.EnvAdapter`.

Per episode: reset to the episode's initial state, ``wait_steps`` dummy actions, then query the policy
whenever the action queue is empty and execute the whole chunk, until success or ``max_steps + wait_steps``
steps; an exception counts as a failure (and is recorded). Every finished episode is written to
``episodes.json`` at once (atomically), so an interrupted run resumes at the next episode; ``results.json``
holds the success rate per task and for the suite.
"""

from __future__ import annotations

import json
import os
import random
from collections import deque
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from vega3d.io import write_json
from vega3d.policies.envs import DUMMY_ACTION, EnvAdapter

EPISODES_FILE, RESULTS_FILE = "episodes.json", "results.json"


def set_seed_everywhere(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def run_episode(env: EnvAdapter, runner, task, episode: int, frames: list | None = None) -> dict:
    obs = env.reset(task, episode)
    runner.reset()
    queue: deque = deque(maxlen=runner.model.policy.num_actions_chunk)
    steps, queries = 0, 0
    try:
        while steps < env.max_steps + env.wait_steps:
            if steps < env.wait_steps:
                obs, done = env.step(DUMMY_ACTION)
            else:
                if not queue:
                    queue.extend(runner.chunk(env.with_images(obs), task.language))
                    queries += 1
                obs, done = env.step(queue.popleft().tolist())
            if frames is not None:
                frames.append(np.ascontiguousarray(env.with_images(obs)["agentview_image"][::-1, ::-1]))
            steps += 1
            if done:
                return {"success": True, "steps": steps, "queries": queries}
    except Exception as error:  # OFT counts a crashed episode as a failure
        return {"success": False, "steps": steps, "queries": queries, "error": f"{type(error).__name__}: {error}"}
    return {"success": False, "steps": steps, "queries": queries}


def summarise(episodes: dict, tasks) -> dict:
    per_task = {}
    for task in tasks:
        runs = [e for key, e in episodes.items() if key.rsplit("/", 1)[0] == task.name]
        per_task[task.name] = {"language": task.language, "episodes": len(runs),
                               "success_rate": float(np.mean([e["success"] for e in runs])) if runs else None}
    total = [e["success"] for e in episodes.values()]
    return {"per_task": per_task, "episodes": len(total), "success_rate": float(np.mean(total)) if total else None}


def evaluate(env: EnvAdapter, runner, out_dir: str | Path, episodes_per_task: int | None = None, seed: int = 7,
             videos: bool = False, label: str | None = None) -> dict:
    """Run (or resume) the evaluation; returns and writes the summary."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / EPISODES_FILE
    episodes = json.loads(path.read_text()) if path.is_file() else {}
    count = env.episodes_per_task if episodes_per_task is None else episodes_per_task  # 0 means none
    tasks = env.tasks()
    todo = [(task, i) for task in tasks for i in range(count) if f"{task.name}/{i}" not in episodes]
    set_seed_everywhere(seed)
    for task, i in tqdm(todo, desc=f"{env.suite} episodes", disable=not todo):
        frames = [] if videos else None
        episodes[f"{task.name}/{i}"] = run_episode(env, runner, task, i, frames)
        write_json(path, episodes)
        if frames:
            write_video(out_dir / "videos" / f"{task.name}--episode{i:03d}--{'success' if episodes[f'{task.name}/{i}']['success'] else 'failure'}.mp4", frames)
    summary = {"suite": env.suite, "label": label, "seed": seed, "episodes_per_task": count,
               "max_steps": env.max_steps, "wait_steps": env.wait_steps, **summarise(episodes, tasks)}
    write_json(out_dir / RESULTS_FILE, summary)
    return summary


def write_video(path: Path, frames: list[np.ndarray], fps: int = 20) -> None:
    import imageio.v3 as iio

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.partial{path.suffix}")  # the container is chosen from the suffix
    iio.imwrite(tmp, np.stack(frames), plugin="pyav", fps=fps, codec="libx264")
    os.replace(tmp, path)


def format_table(summary: dict) -> str:
    rows = [f"{'task':<48} {'episodes':>8} {'success':>8}"]
    for name, task in summary["per_task"].items():
        rate = "-" if task["success_rate"] is None else f"{100 * task['success_rate']:.1f}%"
        rows.append(f"{name[:48]:<48} {task['episodes']:>8} {rate:>8}")
    rate = "-" if summary["success_rate"] is None else f"{100 * summary['success_rate']:.1f}%"
    rows.append(f"{summary['suite'][:48]:<48} {summary['episodes']:>8} {rate:>8}")
    return "\n".join(rows)
