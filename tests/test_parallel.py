"""Several processes joined by ``jax.distributed`` give the one-process result (qgeo_jax.parallel).

Two routes to the same Brillouin-zone sums: this process alone (one CPU device, one ``lax.scan``
over all chunks) and two fresh worker processes on 127.0.0.1 (Gloo collectives), each reducing a
contiguous half of the chunks, the two partial sums added by an all-reduce. They differ only in
summation order, so they must agree to round-off (≤ 1e-14 relative). The models include an
8-orbital one, whose eigh goes through LAPACK: the case that deadlocked with two XLA host devices
in one process (see ``qgeo_jax._bz.default_devices``).

Every multi-process test has a hard deadline (60 s) and is skipped if this platform cannot start
a local ``jax.distributed`` run (no Gloo CPU collectives, no loopback TCP).
"""

from __future__ import annotations

import itertools
import sys
import textwrap
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import qgeo_jax as qg
from qgeo_jax import parallel as _parallel
from qgeo_jax._bz import default_devices

DEADLINE_S = 60


def _random_model(norb=8, seed=3):
    """Random spinful 2D tight-binding model, complex hoppings (T broken: Ω, m, M^S ≠ 0)."""
    rng = np.random.default_rng(seed)
    hops = []
    for R in [(0, 0), (1, 0), (0, 1)]:
        for i, j in itertools.product(range(norb), repeat=2):
            if R == (0, 0) and j <= i:
                continue
            hops.append(((rng.normal() + 1j * rng.normal()) * 0.5 / np.sqrt(norb), i, j, R))
    spin = np.stack([np.kron(np.eye(norb // 2), s) for s in qg.models.PAULI / 2])
    return qg.models.TightBinding(
        np.eye(2), rng.uniform(0, 1, (norb, 2)), rng.normal(size=norb), hops, spin=spin
    )


def responses():
    """The quantities compared: module level, so that the workers can import it by name."""
    jax.config.update("jax_enable_x64", True)
    haldane = qg.models.Haldane(t2=0.15, phi=1.1, delta=0.3)
    big = _random_model()
    mus = jnp.linspace(-1.0, 1.0, 5)
    # 11 x 13 = 143 points in chunks of 16: 9 chunks, not a multiple of the process count.
    mesh = qg.monkhorst_pack(big, (11, 13))
    # 21 x 19 = 399 points in chunks of 64: 7 chunks, one process gets a padded, partly empty run.
    hmesh = qg.monkhorst_pack(haldane, (21, 19))
    grad = jax.grad(
        lambda m: qg.orbital_magnetization(m, hmesh, mu=0.1, temperature=0.05, chunk_size=64)[2]
    )(haldane)
    out = {
        "mo": qg.orbital_magnetization(big, mesh, mu=mus, temperature=0.05, chunk_size=16),
        "ms": qg.spin_magnetization(big, mesh, mu=mus, temperature=0.05, chunk_size=16),
        "grad": jnp.stack([grad.t2, grad.phi]),
        "n_devices": jnp.asarray(len(default_devices())),
        "n_processes": jnp.asarray(jax.process_count()),
    }
    return {k: np.asarray(v) for k, v in out.items()}


def _skip_if_unsupported(err: BaseException):
    text = str(err)
    for marker in (
        "gloo",
        "Gloo",
        "collectives",
        "Address family not supported",
        "Cannot assign requested address",
    ):
        if marker in text:
            pytest.skip(
                "this platform cannot run jax.distributed on localhost: "
                f"{marker!r} in {text[-300:]!r}"
            )


def test_two_processes_equal_one_process():
    one = responses()
    t0 = time.perf_counter()
    try:
        two = _parallel.run_parallel(responses, workers=2, timeout=DEADLINE_S)
    except RuntimeError as err:
        _skip_if_unsupported(err)
        raise
    wall = time.perf_counter() - t0
    assert int(one["n_processes"]) == 1 and int(one["n_devices"]) == 1
    assert int(two["n_processes"]) == 2 and int(two["n_devices"]) == 2  # the work really was split
    for key in ("mo", "ms", "grad"):
        scale = np.max(np.abs(one[key]))
        assert scale > 0, key  # not a comparison of zeros
        np.testing.assert_allclose(two[key], one[key], rtol=0, atol=1e-14 * scale, err_msg=key)
    assert wall < DEADLINE_S


def test_dead_worker_stops_the_others_and_reports(tmp_path):
    # Process 1 dies right after joining; process 0 then waits in an all-reduce that can never
    # complete. The launcher must notice the death, stop process 0 and return the exit code.
    script = tmp_path / "job.py"
    script.write_text(
        textwrap.dedent(
            """
            import os, sys
            from qgeo_jax.parallel import initialize, is_main_process
            initialize()
            import jax, jax.numpy as jnp, numpy as np
            import qgeo_jax as qg
            if not is_main_process():
                os._exit(7)  # a crash: no clean shutdown
            model = qg.models.Haldane(t2=0.15, phi=1.1, delta=0.3)
            mesh = qg.monkhorst_pack(model, (64, 64))
            print(qg.orbital_magnetization(model, mesh, mu=0.0, temperature=0.05))
            """
        )
    )
    t0 = time.perf_counter()
    code = _parallel.launch([str(script)], workers=2, timeout=DEADLINE_S)
    assert code == 7
    assert time.perf_counter() - t0 < DEADLINE_S


def test_worker_exception_is_raised_in_the_parent():
    with pytest.raises(RuntimeError, match="ZeroDivisionError"):
        _parallel.run_parallel(_fails_in_process_1, workers=2, timeout=DEADLINE_S)


def _fails_in_process_1():
    if jax.process_index() == 1:
        return 1 / 0
    return np.zeros(1)


def test_host_device_flag_is_removed_for_workers():
    flags = "--xla_cpu_foo=1 --xla_force_host_platform_device_count=2 --xla_bar"
    assert _parallel._strip_host_devices(flags) == "--xla_cpu_foo=1 --xla_bar"
    env = _parallel._worker_env(1, 2, 12345, pin=False)
    assert env["QGEO_PROCESS_ID"] == "1" and env["QGEO_NUM_PROCESSES"] == "2"
    assert env["QGEO_COORDINATOR"].endswith(":12345")


def test_single_process_cpu_default_is_one_device():
    devs = default_devices()
    assert len(devs) == 1 and devs[0].platform == "cpu"


def test_launch_rejects_no_workers():
    with pytest.raises(ValueError, match="workers"):
        _parallel.launch([sys.executable, "-c", "pass"], workers=0)


def test_importing_the_package_does_not_start_jax():
    # jax.distributed.initialize must run before JAX's backend starts, and scripts import the
    # package first: no module may create a JAX array at import time (numpy constants instead).
    code = textwrap.dedent(
        """
        import jax._src.xla_bridge as xb
        started = []
        real = xb.backends
        xb.backends = lambda *a, **k: started.append(1) or real(*a, **k)
        import qgeo_jax, qgeo_jax.cli, qgeo_jax.io, qgeo_jax.parallel
        print("STARTED" if started else "CLEAN")
        """
    )
    import subprocess

    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=DEADLINE_S
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().endswith("CLEAN"), proc.stdout[-500:]
