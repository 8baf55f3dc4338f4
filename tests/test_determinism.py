"""Determinism: the same inputs give the same outputs — bit for bit on repeated calls and across
processes; to round-off across chunk sizes, device counts and block sizes (the summation order
changes there). Measured on CPU (x64): chunk sizes differ by ≤ 2.2e-15 and 1 vs 3 devices by
≤ 2.3e-16 relative; the asserted bound is 1e-13 relative to the largest |value|.

Several devices on one CPU need ``--xla_force_host_platform_device_count`` before JAX starts, so
those runs happen in subprocesses (1 vs 3 devices here; tests/test_devices.py compares 1 and 2).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import qgeo_jax as qg
from qgeo_jax import cli
from qgeo_jax._chern import chern_number
from qgeo_jax.models import Haldane, RashbaLattice

ROOT = Path(__file__).resolve().parents[1]
RTOL = 1e-13
MUS = jnp.linspace(-1.5, 1.5, 5)


def _close(a, b, what, rtol=RTOL):
    a, b = np.asarray(a), np.asarray(b)
    scale = max(np.max(np.abs(a)), 1e-300)
    np.testing.assert_allclose(b, a, rtol=0, atol=rtol * scale, err_msg=what)
    assert np.max(np.abs(a)) > 0, f"{what}: comparing zeros proves nothing"


def _responses(model, smodel, shape, chunk_size):
    mesh, smesh = qg.monkhorst_pack(model, shape), qg.monkhorst_pack(smodel, shape)
    return {
        "mo": qg.orbital_magnetization(
            model, mesh, mu=MUS, temperature=0.05, chunk_size=chunk_size
        ),
        "ahc": qg.anomalous_hall_conductivity(
            model, mesh, mu=MUS, temperature=0.05, chunk_size=chunk_size
        ),
        "ms": qg.spin_magnetization(smodel, smesh, mu=MUS, temperature=0.05, chunk_size=chunk_size),
        "chern": chern_number(model, mesh, [0], chunk_size=chunk_size),
    }


def test_repeated_calls_are_bitwise_identical():
    args = (
        Haldane(t2=0.15, phi=1.1, delta=0.3),
        RashbaLattice(alpha=0.6, exchange=(0.1, 0.0, 0.3)),
    )
    first = _responses(*args, (23, 19), 64)
    # Fresh model objects with the same values (no cache can make them equal by identity).
    again = _responses(
        Haldane(t2=0.15, phi=1.1, delta=0.3),
        RashbaLattice(alpha=0.6, exchange=(0.1, 0.0, 0.3)),
        (23, 19),
        64,
    )
    for key in first:
        assert np.array_equal(np.asarray(first[key]), np.asarray(again[key])), key
    k = jnp.array([0.31, -1.7])
    g1, g2 = qg.band_geometry(args[0], k), qg.band_geometry(args[0], k)
    for a, b in zip(jax.tree_util.tree_leaves(g1), jax.tree_util.tree_leaves(g2), strict=True):
        assert np.array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.slow  # 16 s; chunk sizes 1, 7, 1000 stay in the default run (test_transforms.py)
def test_chunk_sizes_agree_to_roundoff():
    """41 × 37 = 1517 points: not a multiple of any chunk size below (padding is exercised)."""
    model, smodel = (
        Haldane(t2=0.15, phi=1.1, delta=0.3),
        RashbaLattice(alpha=0.6, exchange=(0.1, 0.0, 0.3)),
    )
    ref = _responses(model, smodel, (41, 37), 1517)  # one chunk
    for chunk in (7, 256, 5000):
        got = _responses(model, smodel, (41, 37), chunk)
        for key in ref:
            _close(ref[key], got[key], f"{key}, chunk_size={chunk}")


SCRIPT = textwrap.dedent(
    """
    import json
    import jax, jax.numpy as jnp, numpy as np
    import qgeo_jax as qg
    from qgeo_jax._chern import chern_number
    assert len(jax.devices()) == 3, jax.devices()
    model = qg.models.Haldane(t2=0.15, phi=1.1, delta=0.3)
    smodel = qg.models.RashbaLattice(alpha=0.6, exchange=(0.1, 0.0, 0.3))
    mus = jnp.linspace(-1.5, 1.5, 5)
    out = {}
    for n in (1, 3):
        devs = jax.devices()[:n]
        mesh = qg.with_devices(qg.monkhorst_pack(model, (41, 37)), devs)
        smesh = qg.with_devices(qg.monkhorst_pack(smodel, (29, 31)), devs)
        vals = {
            "mo": qg.orbital_magnetization(model, mesh, mu=mus, temperature=0.05, chunk_size=64),
            "ahc": qg.anomalous_hall_conductivity(model, mesh, mu=mus, temperature=0.05,
                                                  chunk_size=64),
            "ms": qg.spin_magnetization(smodel, smesh, mu=mus, temperature=0.05, chunk_size=50),
            "chern": chern_number(model, mesh, [0], chunk_size=64),
        }
        out[n] = {k: [float(x).hex() for x in np.ravel(np.asarray(v))] for k, v in vals.items()}
    print("RESULT" + json.dumps(out))
    """
)


def _run_devices():
    env = dict(
        os.environ,
        XLA_FLAGS="--xla_force_host_platform_device_count=3",
        OPENBLAS_NUM_THREADS="1",
        PYTHONPATH=str(ROOT),
    )
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT"))
    return json.loads(line[len("RESULT") :])


@pytest.mark.slow  # 25 s; 1 vs 2 devices (test_devices.py) and processes (test_parallel.py) stay
def test_device_counts_and_processes():
    first, second = _run_devices(), _run_devices()
    assert first == second, "two processes, same inputs: bit-identical (every device count)"
    decode = lambda res, n, key: np.array([float.fromhex(x) for x in res[str(n)][key]])
    for key in ("mo", "ahc", "ms", "chern"):
        _close(decode(first, 1, key), decode(first, 3, key), f"{key}: 1 vs 3 devices")


@pytest.mark.parametrize("block_size", [2, 100])
def test_cli_block_size_changes_nothing_but_roundoff(tmp_path, capsys, block_size):
    args = [
        "--mesh",
        "20x20",
        "--mu",
        "-1:1:7",
        "--quantities",
        "orbital_magnetization,ahc",
        "--repeats",
        "0",
        "--quiet",
    ]
    outs = []
    for run in range(2):
        out = tmp_path / f"r{run}"
        assert cli.main([*args, "--out", str(out), "--block-size", str(block_size)]) == 0
        outs.append(dict(np.load(out / "qgeo_results.npz", allow_pickle=False)))
    assert outs[0].keys() == outs[1].keys()
    for key in outs[0]:  # the same command twice: bit for bit
        assert np.array_equal(outs[0][key], outs[1][key]), key
    ref = {
        "orbital_magnetization": qg.orbital_magnetization(
            Haldane(),
            qg.monkhorst_pack(Haldane(), (20, 20)),
            mu=jnp.linspace(-1, 1, 7),
            temperature=cli.DEFAULT_TEMPERATURE,
        ),
        "ahc": qg.anomalous_hall_conductivity(
            Haldane(),
            qg.monkhorst_pack(Haldane(), (20, 20)),
            mu=jnp.linspace(-1, 1, 7),
            temperature=cli.DEFAULT_TEMPERATURE,
        ),
    }
    capsys.readouterr()
    for key, value in ref.items():  # blocks of μ vs one library call over all μ
        _close(value, outs[0][key], f"{key}, block_size={block_size}")
