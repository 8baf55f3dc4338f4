"""Long runs lose nothing: blocks are written atomically, an interrupted `qgeo run` resumes with
`--resume`, recomputes no finished block, and gives results identical (bit for bit) to an
uninterrupted run; partial results of another configuration, truncated, tampered or foreign block
files are reported and never merged.

The physics of the numbers is tested elsewhere (tests/test_cli.py); here the reference is the same
command run without interruption, and equality is exact (np.array_equal), because every block is a
deterministic function of the configuration on one machine.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from qgeo_jax import _resume, cli
from qgeo_jax._resume import BlockStore, PartialResultsError, atomic_write_text, run_blocks

ROOT = Path(__file__).resolve().parents[1]

CONFIG = """
quantities = ["chern", "orbital_magnetization", "ahc"]
mu = {{start = -1.0, stop = 1.0, num = {num}}}
temperature = 0.02
[model]
name = "Haldane"
t2 = 0.15
phi = 1.1
delta = 0.2
[mesh]
shape = [{n}, {n}]
[output]
dir = "{out}"
prefix = "hal"
[options]
block_size = 3
"""
KEYS = ["chern", "mu-0000", "mu-0001", "mu-0002", "mu-0003"]  # 10 μ values in blocks of 3


def write_config(tmp_path, name="run.toml", out="out", n=16, num=10):
    path = tmp_path / name
    path.write_text(CONFIG.format(n=n, num=num, out=(tmp_path / out).as_posix()))
    return path


def results(out: Path):
    with np.load(out / "hal.npz", allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    doc = json.loads((out / "hal.json").read_text(encoding="utf-8"))
    return arrays, doc


def assert_identical(a: dict, b: dict):
    assert set(a) == set(b)
    for key in a:
        assert a[key].dtype == b[key].dtype and np.array_equal(a[key], b[key]), key


class Counter:
    """Wraps cli._compute_block: counts computed blocks, optionally Ctrl-C before the n-th one."""

    def __init__(self, monkeypatch, interrupt_at=None):
        self.calls, self.interrupt_at, self.inner = 0, interrupt_at, cli._compute_block
        monkeypatch.setattr(cli, "_compute_block", self)

    def __call__(self, *args):
        self.calls += 1
        if self.calls == self.interrupt_at:
            raise KeyboardInterrupt
        return self.inner(*args)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted run."""
    tmp = tmp_path_factory.mktemp("ref")
    assert cli.main(["run", str(write_config(tmp)), "--quiet"]) == 0
    assert not (tmp / "out" / "hal.partial").exists(), "a finished run leaves no partial directory"
    return results(tmp / "out")


def interrupted_run(tmp_path, monkeypatch, capsys, at=3):
    """Ctrl-C before the third block: 'chern' and 'mu-0000' are finished and on disk."""
    path = write_config(tmp_path)
    counter = Counter(monkeypatch, interrupt_at=at)
    assert cli.main(["run", str(path)]) == 130
    err = capsys.readouterr().err
    monkeypatch.setattr(cli, "_compute_block", counter.inner)
    partial = tmp_path / "out" / "hal.partial"
    assert f"interrupted after {at - 1} of 5 blocks" in err and "--resume" in err, err
    assert sorted(p.name for p in partial.iterdir()) == [
        "block-chern.npz",
        "block-mu-0000.npz",
        "manifest.json",
    ]
    return path, partial


def test_interrupt_then_resume_recomputes_nothing_finished(
    tmp_path, monkeypatch, capsys, reference
):
    path, partial = interrupted_run(tmp_path, monkeypatch, capsys)
    counter = Counter(monkeypatch)
    assert cli.main(["run", str(path), "--resume"]) == 0
    err = capsys.readouterr().err
    assert counter.calls == 3, "only the three unfinished blocks are computed"
    assert (
        "block 1/5 [Chern number] loaded from" in err
        and "block 2/5 [μ 1-3 of 10] loaded from" in err
    )
    arrays, doc = results(tmp_path / "out")
    assert doc["blocks"]["loaded"] == ["chern", "mu-0000"]
    assert doc["blocks"]["computed"] == ["mu-0001", "mu-0002", "mu-0003"]
    assert_identical(arrays, reference[0])
    assert not partial.exists()


def test_other_configuration_is_reported_not_merged(tmp_path, monkeypatch, capsys):
    _, partial = interrupted_run(tmp_path, monkeypatch, capsys)
    before = {p.name: p.read_bytes() for p in partial.iterdir()}
    other = write_config(tmp_path, "other.toml", num=11)  # another μ list, same output
    assert cli.main(["run", str(other), "--resume"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "different configuration" in err and "config.mu" in err, err
    assert {p.name: p.read_bytes() for p in partial.iterdir()} == before, "nothing touched"
    assert cli.main(["run", str(other), "--resume", "--block-size", "4"]) == 2
    assert "config.options.block_size" in capsys.readouterr().err


def test_truncated_block_is_reported_then_recomputed(tmp_path, monkeypatch, capsys, reference):
    path, partial = interrupted_run(tmp_path, monkeypatch, capsys)
    block = partial / "block-mu-0000.npz"
    block.write_bytes(block.read_bytes()[:300])  # a crash outside our atomic writes, a bad disk...
    assert cli.main(["run", str(path), "--resume"]) == 2
    err = capsys.readouterr().err
    assert "unreadable or corrupted" in err and str(block) in err and "delete" in err, err
    block.unlink()  # the fix the message names
    counter = Counter(monkeypatch)
    assert cli.main(["run", str(path), "--resume", "--quiet"]) == 0
    assert counter.calls == 4  # mu-0000 again, and the three never finished
    assert_identical(results(tmp_path / "out")[0], reference[0])


def test_tampered_foreign_and_manifest_corruption(tmp_path, monkeypatch, capsys):
    path, partial = interrupted_run(tmp_path, monkeypatch, capsys)
    block = partial / "block-mu-0000.npz"
    good = block.read_bytes()
    data = _resume.load_npz(block)
    data["ahc"] = data["ahc"] + 1e-9  # valid zip, valid arrays, but not what was computed
    np.savez(block, **data)
    assert cli.main(["run", str(path), "--resume"]) == 2
    assert "do not match their checksum" in capsys.readouterr().err

    block.write_bytes(good)
    (partial / "block-mu-0001.npz").write_bytes(good)  # a block file under another block's name
    assert cli.main(["run", str(path), "--resume"]) == 2
    assert "belongs to block 'mu-0000'" in capsys.readouterr().err

    (partial / "block-mu-0001.npz").unlink()
    (partial / "manifest.json").write_text('{"format": ')
    assert cli.main(["run", str(path), "--resume"]) == 2
    assert "manifest.json: corrupted" in capsys.readouterr().err


def test_restart_without_resume_discards_and_stale_tmp_is_removed(
    tmp_path, monkeypatch, capsys, reference
):
    path, partial = interrupted_run(tmp_path, monkeypatch, capsys)
    stale = partial / ".block-mu-0001.npz.abc123.tmp"  # what a kill during a write could leave
    stale.write_bytes(b"half a file")
    counter = Counter(monkeypatch, interrupt_at=2)
    assert cli.main(["run", str(path), "--resume"]) == 130  # interrupted again, after mu-0001
    assert not stale.exists()
    capsys.readouterr()
    monkeypatch.setattr(cli, "_compute_block", counter.inner)
    counter = Counter(monkeypatch)
    assert cli.main(["run", str(path)]) == 0  # no --resume: start over
    err = capsys.readouterr().err
    assert "discarding the partial results" in err and counter.calls == 5
    assert_identical(results(tmp_path / "out")[0], reference[0])
    counter.calls = 0
    assert cli.main(["run", str(path), "--resume"]) == 0  # nothing left to resume: full run
    assert "nothing to resume" in capsys.readouterr().err and counter.calls == 5


def test_block_store_api(tmp_path):
    """The store is generic (a parameter sweep in a script uses it the same way)."""
    config = {"model": "QWZ", "u": [0.5, 1.5, 2.5]}
    blocks = [
        (f"u-{i}", lambda i=i: ({"x": np.arange(3.0) * i}, {"u": config["u"][i]})) for i in range(3)
    ]
    store = BlockStore(tmp_path / "p", config, [k for k, _ in blocks], resume=False)
    state = {}
    first = run_blocks(blocks[:2], store, state=state)
    assert state["computed"] == ["u-0", "u-1"] and set(first) == {"u-0", "u-1"}
    again = BlockStore(tmp_path / "p", config, [k for k, _ in blocks], resume=True)
    lines = []
    out = run_blocks(blocks, again, progress=lines.append, state=state)
    assert state["loaded"] == ["u-0", "u-1"] and state["computed"] == ["u-2"] and len(lines) == 3
    assert np.array_equal(out["u-2"][0]["x"], [0.0, 2.0, 4.0]) and out["u-1"][1] == {"u": 1.5}
    with pytest.raises(PartialResultsError, match=r"differs in: config\.u"):
        BlockStore(tmp_path / "p", config | {"u": [0.5]}, [k for k, _ in blocks], resume=True)
    with pytest.raises(ValueError, match="plain file name"):
        BlockStore(tmp_path / "q", config, ["../evil"], resume=False)
    again.finish()
    assert not (tmp_path / "p").exists()


def test_atomic_write_keeps_old_file_on_failure(tmp_path):
    target = tmp_path / "result.json"
    atomic_write_text(target, "old\n")

    def explode(fh):
        fh.write(b"new but incomplete")
        raise KeyboardInterrupt  # a Ctrl-C in the middle of the write

    with pytest.raises(KeyboardInterrupt):
        _resume.atomic_write(target, explode)
    assert target.read_text() == "old\n" and [p.name for p in tmp_path.iterdir()] == ["result.json"]


def test_sigterm_subprocess_then_resume(tmp_path):
    """A real `python -m qgeo_jax.cli run` killed with SIGTERM once its first block file exists."""
    path = write_config(tmp_path, n=48, num=10)
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    cmd = [sys.executable, "-m", "qgeo_jax.cli", "run", str(path)]
    partial = tmp_path / "out" / "hal.partial"
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 120
    while not list(partial.glob("block-*.npz")):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "no block file appeared"
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "--resume" in err and "Traceback" not in err, err
    finished = sorted(p.name[len("block-") : -len(".npz")] for p in partial.glob("block-*.npz"))
    assert finished and len(finished) < len(KEYS), finished  # killed mid-way
    assert not list(partial.glob(".*.tmp")), "no half-written file survives"

    resumed = subprocess.run(
        cmd + ["--resume"], capture_output=True, text=True, env=env, timeout=120
    )
    assert resumed.returncode == 0, resumed.stderr
    arrays, doc = results(tmp_path / "out")
    loaded, computed = doc["blocks"]["loaded"], doc["blocks"]["computed"]
    assert sorted(loaded) == finished, "every finished block was loaded"
    assert sorted(loaded + computed) == sorted(KEYS) and not set(loaded) & set(computed)
    assert resumed.stderr.count("loaded from") == len(finished)
    assert resumed.stderr.count("computed in") == len(KEYS) - len(finished)

    straight = subprocess.run(
        cmd + ["--quiet"], capture_output=True, text=True, env=env, timeout=120, cwd=tmp_path
    )
    assert straight.returncode == 0, straight.stderr
    assert_identical(arrays, results(tmp_path / "out")[0])
