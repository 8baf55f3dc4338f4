r"""PT-symmetric antiferromagnet: which kinetic responses of the uniform magnetization survive.

Model (two sublattices τ, spin σ, basis τ ⊗ σ; a Kramers-degenerate metal at every k):
H = ε(k) + f(k) τ_x + g(k) τ_y + τ_z[λ(sin k_x σ_y − 0.7 sin k_y σ_x + 0.4 sin(k_x+k_y) σ_z) + J·σ]
with f even and g odd in k. Inversion P = τ_x (k → −k) and time reversal T = iσ_y K are both
broken (the staggered exchange τ_z J·σ is odd under each), PT is kept.

Analysis for the uniform magnetization (X is P-even, T-odd; τ → −τ under T):

=======================  ======  ======  =========  ===============
response                  P       T       PT         expected here
=======================  ======  ======  =========  ===============
linear, τ¹ (Edelstein)    odd     even    odd        0
linear, τ⁰ (intrinsic)    odd     odd     even       finite
second order, τ⁰, τ²      even    odd     odd        0
second order, τ¹          even    even    even       finite
=======================  ======  ======  =========  ===============

The zeros hold pointwise only after averaging over each Kramers pair (the eigenvectors inside a
pair are an arbitrary gauge), so this also tests the degenerate-set handling, including the
two-dimensional set projectors of the intrinsic term.
"""

import jax.numpy as jnp
import numpy as np

from qgeo_jax._bz import monkhorst_pack
from qgeo_jax._kinetic import kinetic_magnetization
from qgeo_jax._nonlinear_kinetic import nonlinear_kinetic_magnetization
from qgeo_jax.models import from_function
from qgeo_jax.models._base import PAULI

T = np.asarray(PAULI)


def _h_pt(k, p):
    kx, ky = k[0], k[1]
    f = -p["t1"] * (1 + jnp.cos(kx) + jnp.cos(ky) + jnp.cos(kx + ky))
    g = p["t2"] * (jnp.sin(kx) + 0.5 * jnp.sin(ky))
    eps = -2 * p["t"] * (jnp.cos(kx) + 0.6 * jnp.cos(ky))
    soc = p["l"] * (jnp.sin(kx) * T[1] - 0.7 * jnp.sin(ky) * T[0] + 0.4 * jnp.sin(kx + ky) * T[2])
    exchange = jnp.einsum("a,aij->ij", p["J"], T)
    return (
        eps * jnp.eye(4)
        + f * jnp.kron(T[0], jnp.eye(2))
        + g * jnp.kron(T[1], jnp.eye(2))
        + jnp.kron(T[2], soc + exchange)
    )


def pt_antiferromagnet():
    spin = np.stack([np.kron(np.eye(2), s / 2) for s in T])
    params = dict(t=0.2, t1=0.5, t2=0.3, l=0.4, J=np.array([0.3, 0.2, 0.5]))
    return from_function(
        _h_pt, params, dim=2, spin=spin, lattice=np.eye(2), positions=np.zeros((4, 2))
    )


def test_pt_antiferromagnet_selection_rules():
    m = pt_antiferromagnet()
    mesh = monkhorst_pack(m, (12, 12))
    kw = dict(mu=-0.4, temperature=0.2)
    lin = {}
    for part in ("spin", "orbital"):
        lin[(part, "extrinsic")] = kinetic_magnetization(
            m, mesh, part=part, mechanism="extrinsic", tau=1.0, **kw
        )
        lin[(part, "intrinsic")] = kinetic_magnetization(
            m, mesh, part=part, mechanism="intrinsic", **kw
        )
    size = {key: np.abs(val).max() for key, val in lin.items()}
    assert size[("spin", "extrinsic")] <= 1e-12 and size[("orbital", "extrinsic")] <= 1e-12
    assert size[("spin", "intrinsic")] > 1e-2 and size[("orbital", "intrinsic")] > 1e-3
    second = {}
    for part, mech in (
        ("spin", "extrinsic"),
        ("spin", "intrinsic"),
        ("spin", "tau_linear"),
        ("orbital", "extrinsic"),
        ("orbital", "tau_linear"),
    ):
        tau = {} if mech == "intrinsic" else dict(tau=1.0)
        chi = nonlinear_kinetic_magnetization(m, mesh, part=part, mechanism=mech, **tau, **kw)
        second[(part, mech)] = np.abs(chi).max()
    # measured: 4e-18, 6e-17, 0.011, 7e-19, 0.0061
    assert second[("spin", "tau_linear")] > 1e-3 and second[("orbital", "tau_linear")] > 1e-3
    for key in (("spin", "extrinsic"), ("spin", "intrinsic"), ("orbital", "extrinsic")):
        assert second[key] <= 1e-13, (key, second[key])
