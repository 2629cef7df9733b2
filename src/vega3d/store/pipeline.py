"""Dataset-scale extraction as a pipeline: background threads decode and resize the next scenes while the
backbone encodes the current one, and a writer thread stores finished tokens, so the accelerator never
waits for JPEG/PNG decoding or disk writes. Contents are those of the sequential loop (``prefetch=0``).

Resuming needs no image: a scene's store key is its id, the backbone configuration and the frame indices,
and the indices come from the pose files alone, so finished scenes are skipped before anything is decoded.
Threads, not processes: PIL decoding and torch kernels release the GIL, and nothing is pickled.
"""

from __future__ import annotations

import sys
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from vega3d.scenes import SceneError, load_scene, sample_frame_indices, sample_frames
from vega3d.store.encode import encode_tokens, save_tokens
from vega3d.store.features import FeatureStore, StoreError


@dataclass
class ExtractionResult:
    encoded: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    recomputed: list[str] = field(default_factory=list)  # corrupt files replaced by a fresh encoding
    failed: list[dict] = field(default_factory=list)  # {"scene", "scene_id", "error"}: unreadable scenes, failed writes
    seconds: dict = field(default_factory=lambda: {"decode": 0.0, "encode": 0.0, "write": 0.0, "wait": 0.0, "wall": 0.0})


def _warn(message: str) -> None:
    tqdm.write(message, file=sys.stderr)


class _Timed:
    """Wraps a stage so its time is summed into ``seconds[name]`` whatever thread runs it."""

    def __init__(self, seconds: dict, name: str, fn: Callable):
        self.seconds, self.name, self.fn = seconds, name, fn

    def __call__(self, *args, **kwargs):
        start = time.perf_counter()
        try:
            return self.fn(*args, **kwargs)
        finally:
            self.seconds[self.name] += time.perf_counter() - start


def extract_scenes(paths: Sequence[str | Path], backbone, store: FeatureStore, num_frames: int = 32,
                   image_size: tuple[int, int] | None = (384, 384), prefetch: int = 2, progress: bool = True,
                   warn: Callable[[str], None] = _warn, scene_ids: dict | None = None) -> ExtractionResult:
    """Encode every scene of ``paths`` not yet in ``store``; ``prefetch`` scenes are decoded ahead by as
    many threads (0: one after the other in this thread, the reference order of work). ``scene_ids`` maps a
    path to its scene id (default: the folder name). A scene that cannot be read (``SceneError``,
    ``OSError``) or written is listed in ``failed`` and the others go on."""
    result = ExtractionResult()
    config = backbone.config()
    geometry = bool(getattr(backbone, "needs_cameras", False))  # camera backbones use the depth coverage
    decode = _Timed(result.seconds, "decode", lambda scene, indices: sample_frames(
        scene, num_frames, image_size, geometry=geometry, frame_indices=indices))
    encode = _Timed(result.seconds, "encode", lambda frames: encode_tokens(backbone, frames))
    write = _Timed(result.seconds, "write", lambda frames, tokens: save_tokens(store, config, frames, tokens))
    bar = tqdm(total=len(paths), desc=f"extract {backbone.name}", unit="scene", disable=not progress)
    start = time.perf_counter()

    def failed(path, error, counted: bool = False) -> None:
        warn(f"error: {error} (scene skipped; a rerun retries it)")
        result.failed.append({"scene": str(path), "scene_id": (scene_ids or {}).get(path, Path(path).name), "error": str(error)})
        if not counted:
            bar.update()

    def todo() -> Iterable[tuple]:
        for path in paths:
            try:
                scene = load_scene(path, scene_id=(scene_ids or {}).get(path))
                indices = sample_frame_indices(scene, num_frames)
                try:
                    if store.contains(scene.scene_id, config, indices):
                        result.skipped.append(scene.scene_id)
                        bar.update()
                        continue
                except StoreError as error:  # reported, never used: the file is replaced by a fresh encoding
                    warn(f"warning: {error}; recomputing")
                    store.path(scene.scene_id, config, indices).unlink()
                    result.recomputed.append(scene.scene_id)
            except (SceneError, OSError) as error:  # one bad scene does not stop the run; a rerun retries it
                failed(path, error)
                continue
            yield path, scene, indices

    def encoded(frames) -> None:
        result.encoded.append(frames.scene_id)
        bar.update()

    if prefetch <= 0:
        for path, scene, indices in todo():
            try:
                frames = decode(scene, indices)
                write(frames, encode(frames))
            except (SceneError, OSError) as error:
                failed(path, error)
                continue
            encoded(frames)
    else:
        with ThreadPoolExecutor(max_workers=prefetch, thread_name_prefix="vega3d-decode") as readers, \
                ThreadPoolExecutor(max_workers=1, thread_name_prefix="vega3d-write") as writer:
            queue = todo()
            decoding: deque[tuple[Path, Future]] = deque()
            writing: deque[tuple[Path, str, Future]] = deque()

            def refill() -> None:
                while len(decoding) < prefetch:
                    item = next(queue, None)
                    if item is None:
                        return
                    decoding.append((item[0], readers.submit(decode, *item[1:])))

            def settle(path, scene_id, future) -> None:
                try:
                    future.result()
                except OSError as error:  # the scene is not stored; a rerun retries it
                    result.encoded.remove(scene_id)
                    failed(path, error, counted=True)

            refill()
            while decoding:
                path, pending = decoding.popleft()
                waited = time.perf_counter()
                try:
                    frames = pending.result()
                except (SceneError, OSError) as error:
                    failed(path, error)
                    refill()
                    continue
                finally:
                    result.seconds["wait"] += time.perf_counter() - waited
                refill()  # the readers start the next scene before this one is encoded
                tokens = encode(frames)
                writing.append((path, frames.scene_id, writer.submit(write, frames, tokens)))
                encoded(frames)
                while len(writing) > prefetch or (writing and writing[0][2].done()):
                    settle(*writing.popleft())
            for item in writing:
                settle(*item)
    bar.close()
    result.seconds["wall"] = time.perf_counter() - start
    return result
