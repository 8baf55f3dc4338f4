"""No recompilation when the values of μ, T, τ, g or the model parameters change.

Two independent counters: XLA backend compilations and jaxpr traces, both reported by JAX's own
monitoring events (jax.monitoring; the same events jax.log_compiles prints). After one warm-up call
per response, calls with new values of the same shapes must add zero of either (traces made by
jax.eval_shape for shape inference, e.g. ``model.norb``, compile nothing and are not counted).
"""

import contextlib
import traceback

import jax
import numpy as np
import pytest

from qgeo_jax._bz import monkhorst_pack
from qgeo_jax._kinetic import kinetic_magnetization
from qgeo_jax._precision import cast_precision
from qgeo_jax._responses import (
    anomalous_hall_conductivity,
    chern_number_kubo,
    orbital_magnetization,
    spin_magnetization,
)
from qgeo_jax.models import RashbaLattice

_COMPILE = "/jax/core/compile/backend_compile_duration"
_TRACE = "/jax/core/compile/jaxpr_trace_duration"


@contextlib.contextmanager
def count_compiles():
    counts = {_COMPILE: 0, _TRACE: 0}

    def listener(event, duration, **kwargs):
        # jax.eval_shape (e.g. model.norb: the shape of H, never compiled) also traces; that is
        # shape inference, not a retrace of a response program, so it is not counted.
        if event in counts and not any(f.name == "eval_shape" for f in traceback.extract_stack()):
            counts[event] += 1

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        yield counts
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)


def _all_responses(model, mesh, mu, temperature, tau, g):
    out = [
        orbital_magnetization(model, mesh, mu=mu, temperature=temperature),
        spin_magnetization(model, mesh, mu=mu, temperature=temperature, g_factor=g),
        anomalous_hall_conductivity(model, mesh, mu=mu, temperature=temperature),
        chern_number_kubo(model, mesh, [0]),
    ]
    for part in ("spin", "orbital"):
        for mech in ("extrinsic", "intrinsic"):
            extra = dict(tau=tau) if mech == "extrinsic" else {}
            gk = dict(g_factor=g) if part == "spin" else {}
            out.append(kinetic_magnetization(model, mesh, mu=mu, temperature=temperature, part=part, mechanism=mech, **extra, **gk))
    return [np.asarray(x) for x in out]


def _check_no_recompile(precision):
    model = cast_precision(RashbaLattice(t=1.0, alpha=0.4, exchange=(0.1, 0.0, 0.3)), precision)
    mesh = cast_precision(monkhorst_pack(model, (8, 8)), precision)
    mu = np.array([-1.0, 0.0, 0.5])
    first = _all_responses(model, mesh, mu, 0.1, 1.0, 2.0)  # warm-up: compiles once
    other = cast_precision(RashbaLattice(t=0.9, alpha=0.7, exchange=(0.0, 0.2, 0.1), onsite=0.05), precision)
    with count_compiles() as counts:
        second = _all_responses(other, mesh, mu + 0.3, 0.05, 3.0, 2.2)
    assert counts == {_COMPILE: 0, _TRACE: 0}, counts
    # the values did change (the cache was not returning stale results)
    assert all(not np.allclose(a, b) for a, b in zip(first[:3] + first[4:], second[:3] + second[4:], strict=True))


def test_listener_sees_a_compile():
    """Control: the counter does count a genuinely new program."""
    with count_compiles() as counts:
        jax.jit(lambda x: x * 3.25 + 1)(np.arange(7.0))
    assert counts[_COMPILE] >= 1 and counts[_TRACE] >= 1


def test_no_recompile_when_values_change():
    _check_no_recompile("float64")


def test_no_recompile_when_values_change_float32():
    _check_no_recompile("float32")


@pytest.mark.slow
def test_peak_rss_of_a_1e7_point_mesh_below_2gb():
    """Haldane M^O at 101 μ on a 3163² ≈ 10^7-point mesh, in a fresh process: peak RSS < 2 GB
    (the reduction's memory is set by the chunk size, not by the mesh; ~1-3 min on 2 cores)."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_compile_memory.py"
    res = subprocess.run([sys.executable, str(script), "--rss-child", "3163"], capture_output=True, text=True, check=True)
    rec = json.loads(res.stdout.strip().splitlines()[-1])
    assert rec["kpoints"] == 3163**2
    assert rec["peak_rss_mib"] < 2048, rec
    # the integral is right too: in the gap of the Chern insulator dM^O/dμ = C/(2π) is smooth, and
    # M^O is finite (no overflow / NaN from the long scan)
    assert np.isfinite(rec["check"])
