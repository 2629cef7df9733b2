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

from vega3d.scenes import load_scene, sample_frame_indices, sample_frames
from vega3d.store.encode import encode_tokens, save_tokens
from vega3d.store.features import FeatureStore, StoreError


@dataclass
class ExtractionResult:
    encoded: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    recomputed: list[str] = field(default_factory=list)  # corrupt files replaced by a fresh encoding
    seconds: dict = field(default_factory=lambda: {"decode": 0.0, "encode": 0.0, "write": 0.0, "wait": 0.0, "wall": 0.0})


def _warn(message: str) -> None:
    tqdm.write(f"warning: {message}", file=sys.stderr)


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
                   warn: Callable[[str], None] = _warn) -> ExtractionResult:
    """Encode every scene of ``paths`` not yet in ``store``; ``prefetch`` scenes are decoded ahead by as
    many threads (0: one after the other in this thread, the reference order of work)."""
    result = ExtractionResult()
    config = backbone.config()
    decode = _Timed(result.seconds, "decode", lambda scene, indices: sample_frames(
        scene, num_frames, image_size, geometry=False, frame_indices=indices))
    encode = _Timed(result.seconds, "encode", lambda frames: encode_tokens(backbone, frames))
    write = _Timed(result.seconds, "write", lambda frames, tokens: save_tokens(store, config, frames, tokens))
    bar = tqdm(total=len(paths), desc=f"extract {backbone.name}", unit="scene", disable=not progress)
    start = time.perf_counter()

    def todo() -> Iterable[tuple]:
        for path in paths:
            scene = load_scene(path)
            indices = sample_frame_indices(scene, num_frames)
            try:
                if store.contains(scene.scene_id, config, indices):
                    result.skipped.append(scene.scene_id)
                    bar.update()
                    continue
            except StoreError as error:  # reported, never used: the file is replaced by a fresh encoding
                warn(f"{error}; recomputing")
                store.path(scene.scene_id, config, indices).unlink()
                result.recomputed.append(scene.scene_id)
            yield scene, indices

    def finish(frames) -> None:
        result.encoded.append(frames.scene_id)
        bar.update()

    if prefetch <= 0:
        for scene, indices in todo():
            frames = decode(scene, indices)
            write(frames, encode(frames))
            finish(frames)
    else:
        with ThreadPoolExecutor(max_workers=prefetch, thread_name_prefix="vega3d-decode") as readers, \
                ThreadPoolExecutor(max_workers=1, thread_name_prefix="vega3d-write") as writer:
            queue = todo()
            decoding: deque[Future] = deque()
            writing: deque[Future] = deque()

            def refill() -> None:
                while len(decoding) < prefetch:
                    item = next(queue, None)
                    if item is None:
                        return
                    decoding.append(readers.submit(decode, *item))

            refill()
            while decoding:
                waited = time.perf_counter()
                frames = decoding.popleft().result()
                result.seconds["wait"] += time.perf_counter() - waited
                refill()  # the readers start the next scene before this one is encoded
                tokens = encode(frames)
                writing.append(writer.submit(write, frames, tokens))
                finish(frames)
                while len(writing) > prefetch or (writing and writing[0].done()):
                    writing.popleft().result()  # a failed write stops the run here, naming its file
            for pending in writing:
                pending.result()
    bar.close()
    result.seconds["wall"] = time.perf_counter() - start
    return result
