r"""Second-order kinetic magnetization χ^{ijk} (δM^i = χ^{ijk}E_jE_k): routes, closed form, API.

Models (ħ = e = 1):

* ``altermagnet`` — one site, spin ½, square lattice:
  H = −2t(cos k_x + cos k_y) + J σ_z + J_x σ_x + λ_x (cos k_x − cos k_y) σ_x
  + λ_y sin k_x sin k_y σ_y.
  Every term is even in k, so H(−k) = H(k): inversion (P, spin unchanged) holds; J, J_x and the
  d-wave textures are odd under time reversal — a centrosymmetric magnet.
* the magnetic Rashba gas :class:`qgeo_jax.models.Rashba` (closed form of the τ² term).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import assert_close
from scipy import integrate as sint

from qgeo_jax._bz import continuum_mesh, monkhorst_pack
from qgeo_jax._kinetic import spin_berry_curvature
from qgeo_jax._nonlinear_kinetic import (
    nonlinear_kinetic_magnetization,
    second_order_spin,
)
from qgeo_jax._spectrum import spectrum
from qgeo_jax.models import Rashba, from_function
from qgeo_jax.models._base import PAULI

P = jnp.asarray(PAULI)
PARAMS = dict(t=0.3, J=1.0, lx=0.6, ly=0.4, jx=0.3)


def _h(k, p):
    c, s = jnp.cos(k), jnp.sin(k)
    return (
        (-2 * p["t"] * (c[0] + c[1])) * jnp.eye(2)
        + p["J"] * P[2]
        + p["jx"] * P[0]
        + p["lx"] * (c[0] - c[1]) * P[0]
        + p["ly"] * s[0] * s[1] * P[1]
    )


def altermagnet(**kw):
    return from_function(
        _h, dict(PARAMS, **kw), dim=2, spin=PAULI / 2, lattice=np.eye(2), positions=np.zeros((2, 2))
    )


def test_first_order_projector_is_spin_berry_curvature():
    """Tr[S P_n^{(1)}] from the projector equations equals Φ_n of Garate–Franz (independent
    formula)."""
    m = altermagnet()
    fn = jax.jit(lambda k: second_order_spin(m, k)[1])
    for k in ([0.3, -0.7], [1.1, 2.0]):
        first = fn(jnp.asarray(k))
        phi = spin_berry_curvature(spectrum(m, jnp.asarray(k)))
        assert_close(first, phi, rtol=0, atol=1e-14)
        assert np.abs(phi).max() > 1e-2


@pytest.mark.parametrize("part", ["spin", "orbital"])
@pytest.mark.parametrize("mechanism", ["extrinsic", "tau_linear"])
def test_fermi_sea_equals_fermi_surface(part, mechanism):
    """On a lattice mesh ∫X ∂∂f0 = −∫∂X v f0' = ∫f0 ∂∂X exactly (periodic integrand, integration
    by parts is exact for the trapezoid rule of an analytic periodic function up to its spectral
    error)."""
    m = altermagnet()
    mesh = monkhorst_pack(m, (20, 20))
    kw = dict(mu=jnp.array([-0.5, 0.4]), temperature=0.3, part=part, mechanism=mechanism, tau=1.3)
    a = nonlinear_kinetic_magnetization(m, mesh, **kw)
    b = nonlinear_kinetic_magnetization(m, mesh, route="fermi_sea", **kw)
    assert a.shape == (2, 3, 3, 3)
    scale = np.abs(a).max()
    assert scale > 1e-4
    # measured at 24², T = 0.2: 2e-7 (spin) and 2.5e-5 (orbital: m_n is sharper) of the maximum;
    # at 20², T = 0.3 (used here) see the tolerance below.
    assert_close(a, b, rtol=0, atol=(1e-5 if part == "spin" else 1e-4) * scale)
    assert_close(a, jnp.swapaxes(a, -1, -2), rtol=0, atol=1e-15 * scale)  # symmetric in (j, k)


def _rashba_closed_form(mass, alpha, jz, mu, temperature, tau, g=2.0):
    r"""χ^{zxx} = χ^{zyy} of the τ² spin term of the magnetic Rashba gas (derived here).

    H = k²/2m + α(k_xσ_y − k_yσ_x) + J σ_z: E_± = k²/2m ± √(α²k² + J²), ⟨S_z⟩_± = ±J/(2√(α²k²+J²))
    ≡ s_±(k), isotropic. χ^{zjk} = −gτ² Σ∫ s ∂_j∂_k f0 = −gτ² δ_jk ½ Σ∫ s ∇²f0, and in polar
    coordinates ∫d²k/(2π)² s ∇²F = −(1/2π)∫_0^∞ k s'(k) F'(k) dk (F = f0(E(k)), no boundary terms).
    In-plane ⟨S⟩ ∝ k_{x,y} is odd in k: χ^{x..} = χ^{y..} = 0.
    """
    total = 0.0
    for sgn in (1.0, -1.0):

        def integrand(k, sgn=sgn):
            r = np.sqrt(alpha**2 * k**2 + jz**2)
            ds = -sgn * jz * alpha**2 * k / (2 * r**3)
            de = k / mass + sgn * alpha**2 * k / r
            e = k**2 / (2 * mass) + sgn * r
            a = np.exp(-abs(e - mu) / temperature)
            fp = -a / (temperature * (1 + a) ** 2)
            return k * ds * fp * de

        val, _ = sint.quad(integrand, 0, 8, limit=400, epsabs=1e-14, epsrel=1e-12)
        total += -val / (2 * np.pi)
    return -g * tau**2 * 0.5 * total


def test_rashba_tau_squared_closed_form():
    mass, alpha, jz, mu, temp, tau = 0.5, 0.6, 0.3, 0.4, 0.05, 2.0
    m = Rashba(mass=mass, alpha=alpha, exchange=(0.0, 0.0, jz), cutoff=4.0)
    mesh = continuum_mesh(m, k_max=4.0, n=(400, 32))
    chi = nonlinear_kinetic_magnetization(
        m, mesh, mu=mu, temperature=temp, part="spin", mechanism="extrinsic", tau=tau
    )
    ref = _rashba_closed_form(mass, alpha, jz, mu, temp, tau)
    assert abs(ref) > 1e-3
    assert_close(chi[2, 0, 0], ref, rtol=1e-11)  # measured 3e-14
    assert_close(chi[2, 1, 1], ref, rtol=1e-11)
    others = np.asarray(chi).copy()
    others[2, 0, 0] = others[2, 1, 1] = 0.0
    assert np.abs(others).max() < 1e-10 * abs(ref)
    # Fermi-sea route: valid on a continuum disk because f0(E) ≈ 0 at its edge.
    sea = nonlinear_kinetic_magnetization(
        m,
        mesh,
        mu=mu,
        temperature=temp,
        part="spin",
        mechanism="extrinsic",
        tau=tau,
        route="fermi_sea",
    )
    assert_close(sea[2, 0, 0], ref, rtol=1e-7)


def test_validation():
    m = altermagnet()
    mesh = monkhorst_pack(m, (4, 4))
    with pytest.raises(ValueError, match="tau"):
        nonlinear_kinetic_magnetization(
            m, mesh, mu=0.0, temperature=0.1, part="spin", mechanism="extrinsic"
        )
    with pytest.raises(ValueError, match="tau"):
        nonlinear_kinetic_magnetization(
            m, mesh, mu=0.0, temperature=0.1, part="spin", mechanism="intrinsic", tau=1.0
        )
    with pytest.raises(ValueError, match="insulators only"):  # μ = 0 lies in a band here
        nonlinear_kinetic_magnetization(m, mesh, mu=0.0, part="orbital", mechanism="intrinsic")
    with pytest.raises(ValueError, match="route"):
        nonlinear_kinetic_magnetization(
            m, mesh, mu=0.0, temperature=0.1, part="spin", mechanism="extrinsic", tau=1.0, route="x"
        )
    with pytest.raises(ValueError):
        nonlinear_kinetic_magnetization(
            m, mesh, mu=0.0, temperature=0.0, part="spin", mechanism="extrinsic", tau=1.0
        )


def test_integrand_sums_to_response_and_broadcasts():
    """Σ_k w(k)·integrand(k) × τ^p is the response; μ, T, τ broadcast; g enters linearly."""
    from qgeo_jax._nonlinear_kinetic import nonlinear_kinetic_integrand

    m = altermagnet()
    mesh = monkhorst_pack(m, (4, 4))
    kk, w = mesh.all_points()
    mu, tau = jnp.array([-0.5, 0.2]), jnp.array([[0.5], [2.0]])
    chi = nonlinear_kinetic_magnetization(
        m, mesh, mu=mu, temperature=0.3, part="spin", mechanism="extrinsic", tau=tau, g_factor=1.5
    )
    assert chi.shape == (2, 2, 3, 3, 3)
    dens = jax.vmap(
        lambda k: nonlinear_kinetic_integrand(
            m, k, mu=mu, temperature=0.3, part="spin", mechanism="extrinsic", g_factor=1.5
        )
    )(kk)
    ref = jnp.einsum("k,k...->...", w, dens)[None] * (tau**2)[..., None, None, None]
    assert_close(chi, ref, rtol=1e-12, atol=1e-16)
