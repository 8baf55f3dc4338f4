r"""τ² and τ¹ second-order kinetic spin response vs the exact relaxation-time solution.

For a constant force −eE the RTA Boltzmann equation f − f0 = eτ E·∂_k f is solved exactly by
f_n(k) = ∫_0^∞ ds/τ e^{−s/τ} f0(E_n(k + eEs)); its second E-derivative needs no integration by
parts and no k-derivative of the band observable (both of which the module uses).
"""

import jax
import jax.numpy as jnp
import numpy as np
from conftest import assert_close
from test_nonlinear_kinetic import altermagnet

from qgeo_jax._bz import monkhorst_pack
from qgeo_jax._kinetic import spin_berry_curvature
from qgeo_jax._nonlinear_kinetic import band_observable, nonlinear_kinetic_magnetization
from qgeo_jax._spectrum import spectrum


def _rta_spin(model, mesh, mu, temperature, tau, kernel):
    """δ⟨S⟩(E) from the exact RTA solution for a constant force −eE:
    f_n(k) = ∫_0^∞ ds/τ e^{−s/τ} f0(E_n(k + eEs)) (Gauss–Laguerre in s = τx), times the band
    observable evaluated at k. ``kernel(k, E)`` gives the (n, 3) observable."""
    x, wq = np.polynomial.laguerre.laggauss(6)
    kk, w = mesh.all_points()

    def density(field):
        def per_k(k):
            shifted = k[None, :] + tau * x[:, None] * field[None, :]
            e = jax.vmap(lambda q: jnp.linalg.eigvalsh(model.hamiltonian(q)))(shifted)  # (q, n)
            f = jnp.einsum("q,qn->n", wq, jax.nn.sigmoid(-(e - mu) / temperature))
            return jnp.einsum("n,nc->c", f, kernel(k, field))

        return jnp.einsum("k,kc->c", w, jax.vmap(per_k)(kk))

    return jax.jit(jax.hessian(density))(jnp.zeros(2))  # (3, 2, 2) = 2 × (τ-polynomial coefficient)


def test_extrinsic_and_tau_linear_match_brute_force_rta():
    """τ² and τ¹ terms vs the exact RTA distribution (no integration by parts, no ∂X):
    Hessian_E of Σ∫⟨S⟩_n f_n = 2χ_τ²/(−g); of Σ∫ (Φ_n·E) f_n = 2χ_τ¹/(−g). The two sides sample
    different integrands (X∂∂f0 vs ∂X v f0'), equal only after integration by parts: measured
    2.9e-3 (20², T = 0.2), 3.7e-8 (40², T = 0.2), 1.3e-6 (20², T = 0.4), 4.7e-12 (32², T = 0.4)."""
    m = altermagnet()
    mesh = monkhorst_pack(m, (32, 32))
    mu, temp, tau = -0.5, 0.4, 0.7
    spin = lambda k, field: band_observable(m, k, part="spin")[0]
    phi = lambda k, field: jnp.einsum(
        "nij,j->ni", spin_berry_curvature(spectrum(m, k))[:, :, :2], field
    )
    chi2 = nonlinear_kinetic_magnetization(
        m, mesh, mu=mu, temperature=temp, part="spin", mechanism="extrinsic", tau=tau
    )
    chi1 = nonlinear_kinetic_magnetization(
        m, mesh, mu=mu, temperature=temp, part="spin", mechanism="tau_linear", tau=tau
    )
    ref2 = -2.0 * 0.5 * _rta_spin(m, mesh, mu, temp, tau, spin)
    ref1 = -2.0 * 0.5 * _rta_spin(m, mesh, mu, temp, tau, phi)
    assert_close(chi2[:, :2, :2], ref2, rtol=0, atol=1e-10 * np.abs(ref2).max())
    assert_close(chi1[:, :2, :2], ref1, rtol=0, atol=1e-10 * np.abs(ref1).max())
    assert np.abs(ref2).max() > 1e-3 and np.abs(ref1).max() > 1e-3


def test_orbital_terms_match_brute_force_rta():
    """Orbital counterparts: Hessian_E of Σ∫ m_n f_n = 2χ_τ², of Σ∫ (F_n·E) f_n = 2χ_τ¹."""
    from qgeo_jax._magnetoelectric import magnetoelectric_interband

    m = altermagnet()
    mesh = monkhorst_pack(m, (32, 32))
    mu, temp, tau = -0.5, 0.4, 0.7
    moment = lambda k, field: band_observable(m, k, part="orbital")[0]
    fmat = lambda k, field: jnp.einsum(
        "nij,j->ni", magnetoelectric_interband(spectrum(m, k))[:, :, :2], field
    )
    kw = dict(mu=mu, temperature=temp, part="orbital", tau=tau)
    chi2 = nonlinear_kinetic_magnetization(m, mesh, mechanism="extrinsic", **kw)
    chi1 = nonlinear_kinetic_magnetization(m, mesh, mechanism="tau_linear", **kw)
    ref2 = 0.5 * _rta_spin(m, mesh, mu, temp, tau, moment)
    ref1 = 0.5 * _rta_spin(m, mesh, mu, temp, tau, fmat)
    assert np.abs(ref2).max() > 1e-4 and np.abs(ref1).max() > 1e-5
    assert_close(chi2[:, :2, :2], ref2, rtol=0, atol=1e-8 * np.abs(ref2).max())
    assert_close(chi1[:, :2, :2], ref1, rtol=0, atol=1e-8 * np.abs(ref1).max())
