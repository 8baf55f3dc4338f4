r"""Symmetry of the second-order kinetic magnetization χ^{ijk} (δM^i = χ^{ijk}E_jE_k).

Analysis (X = ⟨S⟩ or m is even under inversion P and odd under time reversal T; E_jE_k is even
under both; τ → −τ under T):

* linear responses α (δM = αE) are P-odd: all four kinetic ones (Edelstein, spin Berry curvature,
  orbital Edelstein, magnetoelectric) vanish in a centrosymmetric crystal, magnetic or not;
* second order: every term is P-even, so a centrosymmetric magnet allows all of them;
* τ⁰ and τ² terms are T-odd (X odd, τ² even): they vanish in a nonmagnetic (T-symmetric)
  crystal; the τ¹ term is T-even and survives there (Xiao et al., PRL 130, 166302 (2023)).

Mirror symmetries can kill more (a C4v Rashba lattice has χ = 0 for the uniform magnetization
altogether), so the T-symmetric model below has generic, mirror-free spin–orbit terms.
"""

import jax.numpy as jnp
import numpy as np
from test_nonlinear_kinetic import altermagnet

from qgeo_jax._bz import monkhorst_pack
from qgeo_jax._kinetic import kinetic_magnetization
from qgeo_jax._nonlinear_kinetic import nonlinear_kinetic_magnetization
from qgeo_jax.models import from_function
from qgeo_jax.models._base import PAULI

P = jnp.asarray(PAULI)


def _h_tr(k, p):
    """T-symmetric, P-broken, no mirrors: ε(k) even, spin–orbit d(k)·σ odd in k."""
    s = jnp.stack([jnp.sin(k[0]), jnp.sin(k[1]), jnp.sin(k[0] + k[1])])
    eps = -2 * p["t"] * (jnp.cos(k[0]) + 0.7 * jnp.cos(k[1]) + 0.4 * jnp.cos(k[0] - k[1]))
    d = p["c"] @ s
    return eps * jnp.eye(2) + jnp.einsum("a,aij->ij", d, P)


def nonmagnetic():
    c = np.array([[0.3, -0.5, 0.2], [0.6, 0.1, -0.3], [0.2, 0.4, 0.25]])
    return from_function(
        _h_tr,
        dict(t=0.5, c=c),
        dim=2,
        spin=PAULI / 2,
        lattice=np.eye(2),
        positions=np.zeros((2, 2)),
    )


def _second(model, mesh, part, mech, **kw):
    tau = {} if mech == "intrinsic" else dict(tau=1.0)
    return np.asarray(
        nonlinear_kinetic_magnetization(model, mesh, part=part, mechanism=mech, **tau, **kw)
    )


def test_centrosymmetric_magnet_linear_zero_second_order_finite():
    m = altermagnet()
    mesh = monkhorst_pack(m, (12, 12))
    kw = dict(mu=-0.5, temperature=0.2)
    for part in ("spin", "orbital"):
        for mech in ("extrinsic", "intrinsic"):
            tau = dict(tau=1.0) if mech == "extrinsic" else {}
            alpha = kinetic_magnetization(m, mesh, part=part, mechanism=mech, **tau, **kw)
            assert np.abs(alpha).max() <= 1e-12, (part, mech)
    finite = {
        ("spin", "extrinsic"): 1e-2,
        ("spin", "tau_linear"): 1e-2,
        ("spin", "intrinsic"): 1e-2,
        ("orbital", "extrinsic"): 1e-3,
        ("orbital", "tau_linear"): 1e-4,
    }
    for (part, mech), floor in finite.items():
        chi = _second(m, mesh, part, mech, **kw)
        assert np.abs(chi).max() > floor, (part, mech, np.abs(chi).max())


def test_time_reversal_kills_tau0_and_tau2_keeps_tau1():
    m = nonmagnetic()
    mesh = monkhorst_pack(m, (12, 12), shift=0.5)  # k ↔ −k symmetric, avoids the Kramers points
    kw = dict(mu=-0.3, temperature=0.2)
    sizes = {}
    for part, mech in (
        ("spin", "extrinsic"),
        ("spin", "intrinsic"),
        ("spin", "tau_linear"),
        ("orbital", "extrinsic"),
        ("orbital", "tau_linear"),
    ):
        sizes[(part, mech)] = np.abs(_second(m, mesh, part, mech, **kw)).max()
    assert sizes[("spin", "tau_linear")] > 1e-2
    assert sizes[("orbital", "tau_linear")] > 1e-4
    for key in (("spin", "extrinsic"), ("spin", "intrinsic"), ("orbital", "extrinsic")):
        assert sizes[key] <= 1e-13 * sizes[("spin", "tau_linear")] + 1e-15, (key, sizes)
    # the linear Edelstein response is allowed here (P broken) — a sanity check of the model
    edelstein = kinetic_magnetization(m, mesh, part="spin", mechanism="extrinsic", tau=1.0, **kw)
    assert np.abs(edelstein).max() > 1e-2
