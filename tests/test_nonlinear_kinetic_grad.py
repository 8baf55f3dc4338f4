"""Gradients of the second-order kinetic magnetization w.r.t. model parameters."""

import jax
import numpy as np
from conftest import assert_close
from test_nonlinear_kinetic import altermagnet

from qgeo_jax._bz import monkhorst_pack
from qgeo_jax._nonlinear_kinetic import nonlinear_kinetic_magnetization


def test_gradients_vs_central_differences():
    """d χ/d J (exchange) for τ², τ¹ (metal) and τ⁰ (insulator) vs central differences (at the
    largest entry)."""

    def chi(jz, mech, t, mu, temp):
        m = altermagnet(J=jz, t=t)
        mesh = monkhorst_pack(m, (10, 10))
        kw = dict(tau=0.8) if mech != "intrinsic" else {}
        return nonlinear_kinetic_magnetization(
            m, mesh, mu=mu, temperature=temp, part="spin", mechanism=mech, **kw
        )

    for mech, t, mu, temp in (
        ("extrinsic", 0.3, -0.5, 0.3),
        ("tau_linear", 0.3, -0.5, 0.3),
        ("intrinsic", 0.15, 0.0, 0.0),
    ):
        idx = np.unravel_index(np.argmax(np.abs(chi(1.0, mech, t, mu, temp))), (3, 3, 3))
        entry = lambda jz, *a, idx=idx: chi(jz, *a)[idx]
        grad = jax.grad(entry)(1.0, mech, t, mu, temp)
        h = 1e-4
        fd = (entry(1.0 + h, mech, t, mu, temp) - entry(1.0 - h, mech, t, mu, temp)) / (2 * h)
        assert abs(fd) > 1e-4
        assert_close(grad, fd, rtol=1e-6)
