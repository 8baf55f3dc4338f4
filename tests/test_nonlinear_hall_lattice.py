"""Nonlinear Hall geometry on lattice models (Monkhorst–Pack meshes, T > 0): Fermi-sea (autodiff in
k) vs Fermi-surface routes, and the symmetry zeros.

Symmetry (2D, d-vector models): time reversal T makes Ω_n(−k) = −Ω_n(k), G_n(−k) = G_n(k),
E_n(−k) = E_n(k), so D (∫f0 ∂Ω) survives while Λ (∫f0 ∂G) and the Drude term (∫f0 ∂³E) vanish;
inversion P makes Ω, G, E even, so all three vanish; PT makes Ω_n = 0 (Kramers pairs summed), so
D = 0 while Λ and Drude survive; C3 rotation forbids any in-plane vector, so D_{az} = 0.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import assert_close

from qgeo_jax._bz import monkhorst_pack
from qgeo_jax._nonlinear_hall import (
    berry_curvature_dipole,
    nonlinear_hall_conductivity,
    quantum_metric_dipole,
)
from qgeo_jax.models import Haldane, QiWuZhang, from_function
from qgeo_jax.models._base import PAULI, AbstractModel, as_param

TEMP = 0.1


def _tr_h(k, p):
    s, c = jnp.sin(k), jnp.cos(k)
    e0 = p["e0"] * c[0] + 0.1 * jnp.cos(k[0] - k[1])
    dx = 0.5 + c[0] + p["tx"] * c[1]
    dy = s[0] + 0.7 * s[1] + 0.3 * jnp.sin(k[0] + k[1])
    return e0 * jnp.eye(2) + dx * PAULI[0] + dy * PAULI[1] + p["m"] * PAULI[2]


def tr_model(m=0.25, e0=0.3, tx=0.4):
    """Spinless, time-reversal symmetric (H(−k)* = H(k): d_x, d_z, ε0 even, d_y odd), inversion
    broken (constant mass with even d_x), no rotation or mirror symmetry; gapped (|d| ≥ m)."""
    return from_function(_tr_h, dict(m=m, e0=e0, tx=tx), dim=2, lattice=np.eye(2))


# PT-symmetric four-band model (copied from tests/test_gradients.py): five anticommuting Γ matrices,
# each even under PT = (1 ⊗ iσ_y)K, so every band is a Kramers pair; P and T are separately broken.
_GAMMA = np.array(
    [np.kron(PAULI[0], np.eye(2)), np.kron(PAULI[2], np.eye(2))]
    + [np.kron(PAULI[1], s) for s in PAULI]
)


class PTModel(AbstractModel):
    m: jax.Array
    t1: jax.Array
    t0: jax.Array
    delta: jax.Array
    t3: jax.Array
    lam: jax.Array
    lamz: jax.Array

    def __init__(self, m=1.5, t1=0.5, t0=0.2, delta=0.3, t3=0.4, lam=0.6, lamz=0.3):
        self.m, self.t1, self.t0, self.delta = (
            as_param(m),
            as_param(t1),
            as_param(t0),
            as_param(delta),
        )
        self.t3, self.lam, self.lamz = as_param(t3), as_param(lam), as_param(lamz)

    @property
    def dim(self):
        return 2

    @property
    def lattice(self):
        return jnp.eye(2)

    def hamiltonian(self, k):
        c, s = jnp.cos(k), jnp.sin(k)
        d = jnp.stack(
            [
                self.m + self.t1 * (c[0] + c[1]),
                self.delta + self.t3 * s[0],
                self.lam * s[1],
                -self.lam * s[0],
                self.lamz * jnp.sin(k[0] + k[1]),
            ]
        )
        return -self.t0 * (c[0] + c[1]) * jnp.eye(4) + jnp.einsum(
            "a,aij->ij", d, jnp.asarray(_GAMMA)
        )


def _rel(a, b):
    return np.max(np.abs(np.asarray(a) - np.asarray(b))) / np.max(np.abs(np.asarray(b)))


def test_routes_agree_bcd_time_reversal_model():
    """TR-symmetric, inversion-broken metal: D ≠ 0, Fermi sea = Fermi surface to mesh accuracy
    (exponential in the mesh: relative difference 2.5e-3 at 24², 3e-6 at 40², 3e-7 at 48²);
    Λ = Drude = 0 (TR)."""
    model = tr_model()
    mesh = monkhorst_pack(model, (40, 40))
    kw = dict(mu=0.6, temperature=TEMP)
    surf = berry_curvature_dipole(model, mesh, **kw)
    sea = berry_curvature_dipole(model, mesh, route="fermi_sea", **kw)
    assert np.max(np.abs(surf)) > 1e-2
    assert _rel(sea, surf) < 1e-5
    lam = quantum_metric_dipole(model, mesh, **kw)
    drude = nonlinear_hall_conductivity(model, mesh, tau=1.0, mechanism="drude", **kw)
    assert np.max(np.abs(lam)) < 1e-14 and np.max(np.abs(drude)) < 1e-14


def test_routes_agree_intrinsic_pt_model():
    """PT-symmetric magnetic metal (Kramers pairs everywhere): D = 0, the intrinsic (Λ) and Drude
    terms survive; Fermi sea = Fermi surface for both (autodiff through exact degeneracies).
    Relative route difference for χ_int: 6.6e-5 at 32², 1.3e-7 at 48²; Drude 2.6e-4 at 32², 1e-7
    at 48² (exponential in the mesh)."""
    model = PTModel()
    mesh = monkhorst_pack(model, (32, 32))
    kw = dict(mu=-0.9, temperature=TEMP)
    d = berry_curvature_dipole(model, mesh, **kw)
    assert np.max(np.abs(d)) < 1e-14
    for mech in ("intrinsic", "drude"):
        extra = {} if mech == "intrinsic" else {"tau": 1.0}
        surf = nonlinear_hall_conductivity(model, mesh, mechanism=mech, **extra, **kw)
        sea = nonlinear_hall_conductivity(
            model, mesh, mechanism=mech, route="fermi_sea", **extra, **kw
        )
        assert np.max(np.abs(surf)) > 1e-4, mech
        assert _rel(sea, surf) < 5e-4, mech


def test_inversion_and_c3_zeros():
    """Inversion-symmetric QWZ (T broken): D = Λ = Drude = 0. Haldane (C3): D = 0 while Λ ≠ 0."""
    qwz = QiWuZhang(u=1.0)
    mesh = monkhorst_pack(qwz, (24, 24))
    kw = dict(mu=0.9, temperature=TEMP)
    assert np.max(np.abs(berry_curvature_dipole(qwz, mesh, **kw))) < 1e-14
    assert np.max(np.abs(quantum_metric_dipole(qwz, mesh, **kw))) < 1e-14
    assert (
        np.max(np.abs(nonlinear_hall_conductivity(qwz, mesh, tau=1.0, mechanism="drude", **kw)))
        < 1e-14
    )
    hal = Haldane()
    mesh = monkhorst_pack(hal, (24, 24))
    kw = dict(mu=0.9, temperature=TEMP)
    assert np.max(np.abs(berry_curvature_dipole(hal, mesh, **kw))) < 1e-14
    assert np.max(np.abs(quantum_metric_dipole(hal, mesh, **kw))) > 1e-4


def test_insulator_intrinsic_vanishes():
    """In a gap the intrinsic current vanishes: Λ = ∫ ∂G over filled bands is a total derivative.
    Fermi-sea route at T = 0 on a periodic mesh: the sum of a derivative of a periodic analytic
    function decays exponentially with the mesh (max |Λ| = 1.1e-3, 1.9e-6, 2.9e-7, 4e-12 at 16²,
    24², 32², 48², against 7e-4 in the metal)."""
    model = PTModel()
    mesh = monkhorst_pack(model, (48, 48))
    lam = quantum_metric_dipole(model, mesh, mu=0.4, temperature=0.0, route="fermi_sea")
    assert np.max(np.abs(lam)) < 1e-10
    chi = nonlinear_hall_conductivity(model, mesh, mu=0.4, mechanism="intrinsic", route="fermi_sea")
    assert np.max(np.abs(chi)) < 1e-10


def test_gauge_invariance_degenerate_bands(rng):
    """A random unitary basis change H → V H V† keeps Λ of the Kramers-degenerate model."""
    base = PTModel()
    q, _ = np.linalg.qr(rng.normal(size=(4, 4)) + 1j * rng.normal(size=(4, 4)))
    rotated = from_function(
        lambda k: jnp.asarray(q) @ base.hamiltonian(k) @ jnp.asarray(q.conj().T),
        dim=2,
        lattice=np.eye(2),
    )
    mesh = monkhorst_pack(base, (12, 12))
    kw = dict(mu=-0.9, temperature=TEMP)
    assert_close(
        quantum_metric_dipole(rotated, mesh, **kw),
        quantum_metric_dipole(base, mesh, **kw),
        rtol=0,
        atol=1e-13,
    )


@pytest.mark.parametrize("chunk", [7, 1000])
def test_chunk_size_independent(chunk):
    model = tr_model()
    mesh = monkhorst_pack(model, (10, 10))
    a = berry_curvature_dipole(model, mesh, mu=0.6, temperature=TEMP, chunk_size=chunk)
    b = berry_curvature_dipole(model, mesh, mu=0.6, temperature=TEMP)
    assert_close(a, b, rtol=1e-12, atol=1e-16)
