"""The feature store under the real ``torchrun`` launcher: ranks split the scenes, rank 0 writes one index.

A file of its own so that it is a work unit of its own, handed out last (tests/conftest.py): its two ranks
need both cores, and at the end of the run the other worker is mostly done.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest


def test_torchrun_ranks_split_scenes_and_rank0_writes_one_index(shared_data, tmp_path, monkeypatch, capfd):
    """The real launcher (``torch.distributed.run``, what ``torchrun`` runs) with 2 ranks, each a fresh
    interpreter; the launcher itself runs in this process, which has imported torch already."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import main as torchrun

    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(Path(__file__).parents[2] / "src"), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("TORCHELASTIC_SIGNALS_TO_HANDLE", "SIGTERM,SIGINT,SIGHUP,SIGQUIT")  # the launcher sets it; restored after
    handlers = {number: signal.getsignal(number) for number in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT)}
    try:
        torchrun(["--standalone", "--nproc_per_node", "2", "-m", "vega3d.cli", "extract", str(shared_data / "scenes"),
                  "--backbone", "pixels", "--out", str(tmp_path), "--frames", "2", "--image-size", "32", "32"])
    except ChildFailedError:
        pytest.fail(capfd.readouterr().err[-2000:])
    finally:
        for number, handler in handlers.items():  # the launcher forwards these to its ranks while it runs
            signal.signal(number, handler)
    stdout = capfd.readouterr().out
    assert "rank 0/2: 1 scene(s) encoded" in stdout and "rank 1/2: 1 scene(s) encoded" in stdout
    index = json.loads((tmp_path / "index.json").read_text())
    assert sorted(e["scene_id"] for e in index["entries"]) == ["posed_images/hololens_office_000", "scannet_export/tabletop_000"]
