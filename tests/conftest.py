"""Shared fixtures: the real scans in ../shared/data and the bundled synthetic scene."""

from __future__ import annotations

import gc
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("VEGA3D_SHARED_DATA", REPO.parent / "shared" / "data"))

# `make test` runs `pytest -n 2 --dist loadfile`: one work unit per test file, except files that share a
# costly session fixture, which share a unit so that only one worker builds it; the longest units go first,
# so that no worker is left alone with one at the end (see pytest_xdist_make_scheduler below).
SHARED_UNITS = {
    "tests/policies/test_evaluate.py": "robosuite", "tests/policies/test_policy_toy.py": "robosuite",  # lift_env
    "tests/training/test_train_3d.py": "room3d", "tests/training/test_chain_3d.py": "room3d",  # trained3d
    **{f"tests/zoo/test_{name}.py": "tiny_zoo" for name in ("leaderboard", "diffusion", "seva", "vggt", "vit", "video_dits")},  # tiny_weights
    # METEOR's JVM loads its paraphrase table for ~6 s; started at the first evaluation test (tests/evaluation/
    # conftest.py), it loads while the rest of this unit runs, and the METEOR test runs last (RUN_LAST).
    **{f"tests/{path.parent.name}/{path.name}": "meteor" for folder in ("evaluation", "failure")
       for path in sorted((REPO / "tests" / folder).glob("test_*.py"))},
}
RUN_LAST = {"tests/evaluation/test_eval_captions.py::test_meteor_runs_under_java"}  # last in their unit (and run)
# Longest first (measured seconds), except that while the toy unit (the longest) trains, the other worker runs
# only units of one busy thread: METEOR's JVM loads on several threads, the torchrun test starts two more
# interpreters and MuJoCo renders; beside the toy's training they made its fixtures up to 1 s slower.
LONGEST_UNITS = ["tests/training/test_toy.py", "tiny_zoo", "tests/cli/test_awareness_cli.py", "room3d",
                 "tests/wan/test_wan_backbone.py", "meteor", "tests/store/test_feature_store.py", "robosuite",
                 "tests/policies/test_train.py"]
LAST_UNITS = ["tests/store/test_torchrun.py"]  # two ranks that need both cores: when the other worker is mostly done


def pytest_configure(config):
    """Each test process gets its share of the cores; the xdist controller runs no test and skips torch.
    The garbage collector waits until collection has imported everything (see pytest_collection_finish)."""
    if config.getoption("numprocesses", None) and not hasattr(config, "workerinput"):
        return
    gc.disable()
    import torch

    torch.set_num_threads(max(1, (os.cpu_count() or 2) // int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))))


def pytest_collection_finish(session):
    """Collection imported torch, transformers and the package: millions of long-lived objects that each full
    run of the cyclic garbage collector would scan again (accelerate calls ``gc.collect()`` before every
    training, the leaderboard after every backbone). Frozen, they are skipped: measured, the collector then
    takes 2 s instead of 10 s of a 37 s share of the suite. Nothing a test checks depends on it. While the
    imports ran, it was off: they make little garbage, and its passes over the growing heap cost 1-2 s."""
    gc.freeze()
    gc.enable()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item, nextitem):
    """After a test file (and its fixtures' teardown): collect its garbage, then freeze what survives, the
    modules and session fixtures it imported and built, for the same reason."""
    yield
    if nextitem is None or nextitem.path != item.path:
        gc.collect()
        gc.freeze()


def _work_unit(nodeid: str) -> str:
    path = nodeid.split("::")[0]
    return SHARED_UNITS.get(path, path)


def pytest_collection_modifyitems(config, items):
    items.sort(key=lambda item: item.nodeid in RUN_LAST)  # stable: collection order otherwise
    if os.environ.get("PYTEST_XDIST_WORKER"):  # the order the scheduler hands the units out
        rank = {unit: k for k, unit in enumerate(LONGEST_UNITS)}
        rank.update({unit: len(LONGEST_UNITS) + 1 + k for k, unit in enumerate(LAST_UNITS)})
        items.sort(key=lambda item: rank.get(_work_unit(item.nodeid), len(LONGEST_UNITS)))


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node):
    """Tell each xdist worker whether the work units above are in use (they are with ``--dist loadfile``)."""
    node.workerinput["work_units"] = node.config.getoption("dist") == "loadfile"


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """``--dist loadfile`` over the work units above, in the workers' order (not xdist's most-tests-first)."""
    if config.getoption("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    class WorkUnitScheduling(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return _work_unit(nodeid)

    config.option.loadscopereorder = False
    return WorkUnitScheduling(config, log)


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
