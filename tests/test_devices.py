"""Multi-device reduction: identical results (to round-off) on 1 and 2 devices.

JAX fixes its device count at import, so the 2-device run happens in a subprocess with
``--xla_force_host_platform_device_count=2`` (two CPU "devices" that share this machine's cores).
The models are 2-band (closed-form 2×2 eigensystem), which keeps the subprocess cheap; larger
models go through the per-matrix LAPACK loop of qgeo_jax._linalg.eigh (jaxlib's batched eigh
deadlocked two host devices with jax 0.10.2). Processes: tests/test_parallel.py.
"""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np

SCRIPT = textwrap.dedent(
    """
    import json, os
    import jax, jax.numpy as jnp, numpy as np
    import qgeo_jax as qg
    assert len(jax.devices()) == 2, jax.devices()
    model = qg.models.Haldane(t2=0.15, phi=1.1, delta=0.3)
    spin_model = qg.models.RashbaLattice(alpha=0.6, exchange=(0.1, 0.0, 0.3))
    mus = jnp.linspace(-1.5, 1.5, 7)
    out = {}
    for label, devs in (("one", jax.devices()[:1]), ("two", jax.devices())):
        # 41x37 = 1517 points: not a multiple of the chunk or of the device count.
        mesh = qg.with_devices(qg.monkhorst_pack(model, (41, 37)), devs)
        smesh = qg.with_devices(qg.monkhorst_pack(spin_model, (29, 31)), devs)
        mo = qg.orbital_magnetization(model, mesh, mu=mus, temperature=0.05, chunk_size=128)
        ahc = qg.anomalous_hall_conductivity(model, mesh, mu=mus, temperature=0.05, chunk_size=128)
        ms = qg.spin_magnetization(spin_model, smesh, mu=mus, temperature=0.05, chunk_size=100)
        grad = jax.grad(lambda m: qg.orbital_magnetization(m, mesh, mu=0.1, temperature=0.05,
                                                           chunk_size=128)[2])(model)
        out[label] = dict(mo=np.asarray(mo).tolist(), ahc=np.asarray(ahc).tolist(),
                          ms=np.asarray(ms).tolist(), grad=[float(grad.t2), float(grad.phi)])
    print("RESULT" + json.dumps(out))
    """
)


def test_one_and_two_devices_agree():
    flags = "--xla_force_host_platform_device_count=2"
    env = dict(os.environ, XLA_FLAGS=flags, OPENBLAS_NUM_THREADS="1")
    # Hard deadline: a hung reduction (see qgeo_jax._bz.default_devices) must fail, not block CI.
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, timeout=90
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(l for l in proc.stdout.splitlines() if l.startswith("RESULT"))
    res = json.loads(line[len("RESULT"):])
    for key in ("mo", "ahc", "ms", "grad"):
        one, two = np.asarray(res["one"][key]), np.asarray(res["two"][key])
        scale = max(np.max(np.abs(one)), 1e-300)
        np.testing.assert_allclose(two, one, rtol=0, atol=1e-13 * scale, err_msg=key)
        assert np.max(np.abs(one)) > 0, key  # the comparison is not between zeros
