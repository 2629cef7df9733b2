"""Shared fixtures: the real scans in ../shared/data and the bundled synthetic scene."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

torch.set_num_threads(max(1, (os.cpu_count() or 2) // int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))))

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("VEGA3D_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` (real scans and a video); tests that need it skip only where it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real test data not found at {SHARED_DATA} (set VEGA3D_SHARED_DATA)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def hololens_scene(shared_data) -> Path:
    return shared_data / "scenes" / "posed_images" / "hololens_office_000"


@pytest.fixture(scope="session")
def tabletop_scene(shared_data) -> Path:
    return shared_data / "scenes" / "scannet_export" / "tabletop_000"


@pytest.fixture(scope="session", autouse=True)
def isolated_cache(tmp_path_factory):
    """Keep the rendered default scene and other caches out of the user's home during tests."""
    os.environ["VEGA3D_CACHE"] = str(tmp_path_factory.mktemp("vega3d_cache"))


@pytest.fixture(scope="session")
def synthetic_scene(tmp_path_factory) -> Path:
    """The bundled procedural room, small: 24 frames at 120x160."""
    from vega3d.scenes import render_synthetic_scene

    return render_synthetic_scene(tmp_path_factory.mktemp("synthetic") / "synthetic_room", num_frames=24, size=(120, 160))
