"""Gauge invariance: a random unitary change of orbital basis (all orbitals on one site, so the
Bloch convention is unaffected) changes every eigenvector phase and, for the Kramers-degenerate
PT model, the basis inside each degenerate pair — χ must not change."""

import jax.numpy as jnp
import numpy as np
import pytest
from conftest import assert_close
from scipy.stats import unitary_group
from test_nonlinear_kinetic import altermagnet
from test_nonlinear_kinetic_pt import pt_antiferromagnet

from qgeo_jax._bz import monkhorst_pack
from qgeo_jax._nonlinear_kinetic import nonlinear_kinetic_magnetization
from qgeo_jax.models import from_function

# 12 s; gauge invariance of the linear responses is in the default run
pytestmark = pytest.mark.slow


def _rotated(model, w):
    w = jnp.asarray(w)
    spin = jnp.einsum("ij,cjk,lk->cil", w, model.spin_operators(), jnp.conj(w))
    h = lambda k: w @ model.hamiltonian(k) @ jnp.conj(w.T)
    n = w.shape[0]
    return from_function(h, dim=2, spin=spin, lattice=np.eye(2), positions=np.zeros((n, 2)))


def test_random_basis_leaves_chi_unchanged():
    cases = (
        (pt_antiferromagnet(), "spin", "tau_linear", dict(mu=-0.4, temperature=0.2, tau=1.0)),
        (pt_antiferromagnet(), "orbital", "tau_linear", dict(mu=-0.4, temperature=0.2, tau=1.0)),
        (altermagnet(t=0.15), "spin", "intrinsic", dict(mu=0.0, temperature=0.0)),
        (altermagnet(), "orbital", "extrinsic", dict(mu=-0.5, temperature=0.3, tau=1.0)),
    )
    for i, (model, part, mech, kw) in enumerate(cases):
        w = unitary_group.rvs(model.hamiltonian(jnp.zeros(2)).shape[0], random_state=7 + i)
        mesh = monkhorst_pack(model, (8, 8))
        a = nonlinear_kinetic_magnetization(model, mesh, part=part, mechanism=mech, **kw)
        b = nonlinear_kinetic_magnetization(
            _rotated(model, w), mesh, part=part, mechanism=mech, **kw
        )
        scale = np.abs(a).max()
        assert scale > 1e-4, (part, mech)
        assert_close(b, a, rtol=0, atol=1e-10 * scale, what=f"{part} {mech}")
