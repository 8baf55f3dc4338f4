"""Second-order Hall response: Berry-curvature dipole (BCD), nonlinear Drude, and the intrinsic
(quantum-metric-dipole) conductivity of qgeo_jax._nonlinear_hall, on the tilted massive Dirac model.

Second routes (none calls the kernels under test):

* closed forms for H = v(ξ k_x σ_x + k_y σ_y) + m σ_z + t·k, derived here. With d = (v²k² + m²)^½
  the upper band has Ω_+ = −ξ m v²/(2d³) and
  G_+^{bc} = 2g^{bc}/(E_+ − E_−) = v²/(4d³)(δ_bc − v²k_b k_c/d²),
  neither depending on the tilt. At T = 0 and μ > |m| the lower band is full (its ∫∂ vanishes on a
  centred disk), so each Fermi-sea dipole is a flux through the tilted Fermi line
  r_F(φ) (E_+ = d + (t·n̂) r = μ, solved in closed form):
  ∫_{E_+<μ} ∂_a X d²k = ∮ X n_a dl, done by scipy quadrature in φ — exact in the tilt. Finite T:
  X(μ, T) = ∫dμ' X(μ', 0) / (4T cosh²((μ'−μ)/2T)), also by quadrature. To first order in t:
  D_{az} = −3ξ m t_a (μ² − m²)/(8π μ⁴) and
  χ_int^{abc} = −(x/(8π μ²)) [t_a δ_bc − ½(δ_ab t_c + δ_ac t_b)], x = 1 − m²/μ² (derived for this
  suite; Sodemann & Fu and Wang–Gao–Xiao treat the same model, but their printed formulas were not
  available to us, so the check is against this derivation and the independent routes below).
* brute-force relaxation-time Boltzmann: the exact RTA solution for a constant force
  f(k) = ∫_0^∞ ds/τ e^{−s/τ} f0(E_n(k + E s)) (Gauss–Laguerre in s, exact for the s⁰..s² terms that
  survive at E²) plus the anomalous velocity E × Ω, current j = −Σ∫ (v + E×Ω) f, and its Hessian in
  the field by autodiff: ∂²j^a/∂E_b∂E_c = 2(τ χ_BCD + τ² χ_Drude)^{abc}.
* the wave-packet equations with field-corrected energy Ẽ = E_n − ½ E·G_n·E and Berry curvature
  Ω + ∇_k×(G_n E), with G_n from eigenvector derivatives (jax.jacfwd of numpy-convention eigh) and a
  pseudo-inverse resolvent, Hessian in the field: 2 χ_int.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import assert_close
from scipy import integrate as sint

from qgeo_jax._bz import continuum_mesh
from qgeo_jax._geometry import band_geometry
from qgeo_jax._nonlinear_hall import (
    berry_connection_polarizability,
    berry_curvature_dipole,
    intrinsic_conductivity,
    nonlinear_hall_conductivity,
    quantum_metric_dipole,
)
from qgeo_jax._occupation import fermi_dirac
from qgeo_jax._spectrum import spectrum
from qgeo_jax.models import MassiveDirac

V, MASS, MU, TEMP = 1.0, 0.1, 0.3, 0.01
TILT = (0.2, -0.07)


# --- closed form ---------------------------------------------------------------------------------
def _fermi_line(phi, mu, m, v, t):
    """Point k_F(φ) of the tilted Fermi line, d there, and the outward normal × dl/dφ."""
    n = np.array([np.cos(phi), np.sin(phi)])
    nperp = np.array([-np.sin(phi), np.cos(phi)])
    a, ap = t @ n, t @ nperp
    r = (-mu * a + np.sqrt(mu**2 * a**2 + (v**2 - a**2) * (mu**2 - m**2))) / (v**2 - a**2)
    d = mu - a * r
    rp = -ap * r / (v**2 * r / d + a)  # dr_F/dφ from d(r) + a(φ) r = μ
    normal = np.array([rp * np.sin(phi) + r * np.cos(phi), r * np.sin(phi) - rp * np.cos(phi)])
    return r * n, d, normal


def _dipoles_t0(mu, m=MASS, v=V, t=TILT, xi=1):
    """(D_xz, D_yz) and Λ^{abc} (a, b, c ∈ x, y) at T = 0, exact in the tilt (μ > |m|, |t| < v)."""
    t = np.asarray(t, float)

    def integrand(phi):
        k, d, normal = _fermi_line(phi, mu, m, v, t)
        omega = -xi * m * v**2 / (2 * d**3)
        g = v**2 / (4 * d**3) * (np.eye(2) - v**2 * np.outer(k, k) / d**2)
        return np.concatenate([omega * normal, np.einsum("a,bc->abc", normal, g).ravel()])

    out, _ = sint.quad_vec(integrand, 0.0, 2 * np.pi, epsabs=1e-14, epsrel=1e-12)
    out = out / (2 * np.pi) ** 2
    return out[:2], out[2:].reshape(2, 2, 2)


@functools.lru_cache  # shared by both routes' tests (nested quadrature, ~1 s each)
def _dipoles(mu, temperature, **kw):
    """The same at T > 0: convolution of the T = 0 result with −∂f0/∂μ.

    Cut at μ' = |m|: the tilted band bottom lies at |m|(1 − t²/v²)^½ < |m|, and the small pockets
    below |m| do not enclose k = 0 (the Fermi-line parametrisation above needs that), so the
    parameters must make their weight e^{−(μ−|m|)/T} negligible (e^{−20} here)."""
    lower = max(-36.0, (abs(kw.get("m", MASS)) - mu) / temperature)

    def integrand(x):  # x = (μ' − μ)/T
        dz, lam = _dipoles_t0(mu + temperature * x, **kw)
        return np.concatenate([dz, lam.ravel()]) / (4 * np.cosh(x / 2) ** 2)

    out, _ = sint.quad_vec(integrand, lower, 36.0, epsabs=1e-13, epsrel=1e-11)
    return out[:2], out[2:].reshape(2, 2, 2)


@pytest.fixture(scope="module")
def dirac_mesh():
    # T = 0.01: 160 radial nodes resolve the thermal layer (error 2e-10 vs the closed form; 3e-7
    # with 120); the rim (|k| = 0.8, E_+ ≥ 0.63) is 33 T above μ.
    return continuum_mesh(MassiveDirac(), k_max=0.8, n=(160, 32))


def test_first_order_in_tilt_limit():
    """The exact-tilt quadrature reduces to the first-order closed forms for a small tilt."""
    eps = 1e-4
    t = np.array([0.6, -0.8]) * eps
    for xi, m in ((1, 0.1), (-1, 0.1), (1, -0.17)):
        dz, lam = _dipoles_t0(MU, m=m, t=t, xi=xi)
        assert_close(dz, -3 * xi * m * t * (MU**2 - m**2) / (8 * np.pi * MU**4), rtol=1e-3)
        x = 1 - m**2 / MU**2
        chi = -(x / (8 * np.pi * MU**2)) * (
            np.einsum("a,bc->abc", t, np.eye(2))
            - 0.5 * (np.einsum("ab,c->abc", np.eye(2), t) + np.einsum("ac,b->abc", np.eye(2), t))
        )
        assert_close(
            np.asarray(intrinsic_conductivity(_pad_lambda(lam)))[:2, :2, :2],
            chi,
            rtol=1e-3,
            atol=1e-12,
        )


def _pad_lambda(lam2):
    lam = np.zeros((3, 3, 3))
    lam[:2, :2, :2] = lam2
    return jnp.asarray(lam)


# the Fermi-sea route is also checked against the surface route on lattices (default run)
@pytest.mark.parametrize(
    "route", ["fermi_surface", pytest.param("fermi_sea", marks=pytest.mark.slow)]
)
def test_tilted_dirac_closed_form(dirac_mesh, route):
    """BCD and quantum-metric dipole of one tilted Dirac valley vs the exact-tilt closed form
    (both valleys, both signs of the mass)."""
    for xi, m in ((1, MASS), (1, -0.07), (-1, MASS)):
        model = MassiveDirac(v=V, m=m, tilt=TILT, valley=xi)
        dz_ref, lam_ref = _dipoles(MU, TEMP, m=m, t=TILT, xi=xi)
        d = np.asarray(
            berry_curvature_dipole(model, dirac_mesh, mu=MU, temperature=TEMP, route=route)
        )
        lam = np.asarray(
            quantum_metric_dipole(model, dirac_mesh, mu=MU, temperature=TEMP, route=route)
        )
        assert_close(d[:2, 2], dz_ref, rtol=5e-9, what=f"D_az ξ={xi} m={m}")
        scale = np.max(np.abs(lam_ref))
        assert_close(
            lam[:2, :2, :2], lam_ref, rtol=0, atol=5e-9 * scale, what=f"Λ^abc ξ={xi} m={m}"
        )
        # 2D: nothing else may be non-zero
        mask = np.zeros((3, 3), bool)
        mask[:2, 2] = True
        assert np.max(np.abs(d[~mask])) < 1e-12
        assert (
            np.max(np.abs(lam[2])) + np.max(np.abs(lam[:, 2])) + np.max(np.abs(lam[:, :, 2]))
            < 1e-15
        )


def test_conductivity_assembly(dirac_mesh):
    """χ from nonlinear_hall_conductivity = the contractions of the dipoles; Hall property and τ, μ
    broadcasting."""
    model = MassiveDirac(v=V, m=MASS, tilt=TILT)
    mus = jnp.array([0.25, 0.3])
    taus = jnp.array([2.0, 5.0])
    d = berry_curvature_dipole(model, dirac_mesh, mu=mus, temperature=TEMP)
    chi = np.asarray(
        nonlinear_hall_conductivity(model, dirac_mesh, mu=mus, temperature=TEMP, tau=taus)
    )
    assert chi.shape == (2, 3, 3, 3)
    for i in range(2):
        dd = np.asarray(d[i])
        # explicit components: j_x = τ E_y (E_x D_xz + E_y D_yz) etc. (module docstring)
        ref = np.zeros((3, 3, 3))
        for a, b, c in np.ndindex(2, 2, 2):
            eps = (
                {(0, 1): 1.0, (1, 0): -1.0}.get((a, b), 0.0),
                {(0, 1): 1.0, (1, 0): -1.0}.get((a, c), 0.0),
            )
            ref[a, b, c] = 0.5 * float(taus[i]) * (eps[0] * dd[c, 2] + eps[1] * dd[b, 2])
        assert_close(chi[i], ref, rtol=1e-13, atol=1e-16)
        # BCD current is Hall: E·j = 0 for any E
        e = np.array([0.3, -1.1, 0.0])
        assert abs(np.einsum("abc,a,b,c->", chi[i], e, e, e)) < 1e-15
    chi_int = np.asarray(
        nonlinear_hall_conductivity(
            model, dirac_mesh, mu=MU, temperature=TEMP, mechanism="intrinsic"
        )
    )
    e = np.array([0.7, 0.4, 0.0])
    assert abs(np.einsum("abc,a,b,c->", chi_int, e, e, e)) < 1e-14 * np.max(np.abs(chi_int))
    assert_close(chi_int, np.swapaxes(chi_int, 1, 2), rtol=1e-13, atol=1e-18)


def test_time_reversed_valley_pair(dirac_mesh):
    """Time reversal maps (ξ, t) → (−ξ, −t): D is T-even (valleys add), Λ and χ_int are T-odd
    (valleys cancel), so a TR-symmetric valley pair has BCD only."""
    kw = dict(mu=MU, temperature=TEMP)
    a, b = (
        MassiveDirac(m=MASS, tilt=TILT, valley=1),
        MassiveDirac(m=MASS, tilt=tuple(-x for x in TILT), valley=-1),
    )
    da, db = (np.asarray(berry_curvature_dipole(x, dirac_mesh, **kw)) for x in (a, b))
    la, lb = (np.asarray(quantum_metric_dipole(x, dirac_mesh, **kw)) for x in (a, b))
    assert np.max(np.abs(da)) > 1e-3
    assert_close(da, db, rtol=1e-12, atol=1e-17)
    assert np.max(np.abs(la + lb)) < 1e-12 * np.max(np.abs(la))


# --- brute-force relaxation-time Boltzmann -------------------------------------------------------
_XG, _WG = np.polynomial.laguerre.laggauss(4)  # ∫_0^∞ e^{-x} g(x) dx, exact for deg ≤ 7


@jax.jit
def _rta_current_hessian(model, k, w, mu, temperature, taus):
    """Σ_k w ∂²j/∂E∂E at E = 0 from the exact RTA distribution (no formula of the module), for
    each τ in ``taus``."""

    def current(field, k, tau):
        def occ(q):
            return fermi_dirac(jnp.linalg.eigvalsh(model.hamiltonian(q)), mu, temperature)

        f = sum(wg * occ(k + field * tau * x) for x, wg in zip(_XG, _WG, strict=True))
        geo = band_geometry(model, k)
        e3 = jnp.concatenate([field, jnp.zeros(1)])
        rdot = geo.velocity + jnp.cross(e3[None, :], geo.berry_curvature)
        return -jnp.einsum("n,na->a", f, rdot)

    hess = jax.jacfwd(jax.jacfwd(current))
    per_k = jax.vmap(lambda kk: jax.vmap(lambda t: hess(jnp.zeros(2), kk, t))(taus))
    return jnp.einsum("k,ktabc->tabc", w, per_k(k))


def test_brute_force_relaxation_time():
    """2χ(τ) = Hessian of the exact RTA current = 2(τ χ_BCD + τ² χ_Drude), at two τ (all signs and
    factors of the derivation at once); both routes of the module."""
    model = MassiveDirac(v=V, m=MASS, tilt=TILT)
    # the rim |k| = 1.2 lies > 20 T above μ: by-parts boundary terms are below 1e-9
    mesh = continuum_mesh(model, k_max=1.2, n=(120, 32))
    temperature = 0.03
    taus = jnp.array([1.0, 4.0])
    k, w = mesh.all_points()
    brute = 0.5 * np.asarray(_rta_current_hessian(model, k, w, MU, temperature, taus))
    for route in ("fermi_surface", "fermi_sea"):
        kw = dict(mu=MU, temperature=temperature, route=route)
        bcd = np.asarray(nonlinear_hall_conductivity(model, mesh, tau=1.0, **kw))
        drude = np.asarray(
            nonlinear_hall_conductivity(model, mesh, tau=1.0, mechanism="drude", **kw)
        )
        assert (
            np.max(np.abs(drude)) > 1e-3 and np.max(np.abs(bcd)) > 1e-3
        )  # both mechanisms present
        for i, tau in enumerate(np.asarray(taus)):
            ours = tau * bcd + tau**2 * drude
            assert_close(
                brute[i],
                ours[:, :2, :2],
                rtol=0,
                atol=5e-8 * np.max(np.abs(ours)),
                what=f"{route} τ={tau}",
            )


# --- intrinsic: wave-packet route ----------------------------------------------------------------
def _bcp_resolvent(h_fn, k):
    """G_n^{ab} = 2 Re ⟨∂_a n|Q_n (E_n − H)^+ Q_n|∂_b n⟩ with |∂n⟩ by autodiff of eigenvectors."""
    e, u = jnp.linalg.eigh(h_fn(k))
    du = jax.jacfwd(lambda q: jnp.linalg.eigh(h_fn(q))[1])(k)  # [i, n, a]
    n = e.shape[0]
    out = []
    for b in range(n):
        proj = jnp.eye(n) - jnp.outer(u[:, b], jnp.conj(u[:, b]))
        res = sum(jnp.outer(u[:, m], jnp.conj(u[:, m])) / (e[b] - e[m]) for m in range(n) if m != b)
        dn = proj @ du[:, b, :]  # Q|∂_a n⟩, columns a
        out.append(2 * jnp.real(jnp.conj(dn).T @ res @ dn))
    return e, jnp.stack(out)


def test_polarizability_kernel_vs_resolvent(rng):
    """G_n from the sum over states (module) vs the resolvent route, on a random 3-band 3D model;
    two bands: G_± = ±2g/(E_+ − E_−)."""
    mats = rng.normal(size=(4, 3, 3)) + 1j * rng.normal(size=(4, 3, 3))
    mats = jnp.asarray(mats + np.conj(np.swapaxes(mats, -1, -2)))

    def h(k):
        return (
            mats[0]
            + jnp.sin(k[0]) * mats[1]
            + jnp.cos(k[1] + 0.3) * mats[2]
            + jnp.sin(k[0] - k[2]) * mats[3]
        )

    from qgeo_jax.models import from_function

    model = from_function(h, dim=3, lattice=np.eye(3))
    resolvent = jax.jit(lambda k: _bcp_resolvent(h, k))
    for k in (np.array([0.3, -1.2, 0.7]), np.array([2.0, 0.1, -0.4])):
        g_mod = berry_connection_polarizability(spectrum(model, jnp.asarray(k)))
        _, g_res = resolvent(jnp.asarray(k))
        assert_close(g_mod, g_res, rtol=1e-9, atol=1e-12)
    dirac = MassiveDirac(m=0.3, tilt=(0.4, 0.1))
    k = jnp.array([0.5, -0.2])
    geo = band_geometry(dirac, k)
    gap = float(geo.energies[1] - geo.energies[0])
    g = berry_connection_polarizability(spectrum(dirac, k))
    assert_close(g[1], 2 * geo.quantum_metric[1] / gap, rtol=1e-12, atol=1e-16)
    assert_close(g[0], -2 * geo.quantum_metric[0] / gap, rtol=1e-12, atol=1e-16)
    assert float(g[0, 0, 0]) < 0  # the lowest band's centre moves along the force −E


@jax.jit
def _wave_packet_hessian(model, k, w, mu, temperature):
    def current(field, k):
        def corrected(q):  # Ẽ_n and the field-induced connection a'_n = G_n E, at q
            e, g = _bcp_resolvent(model.hamiltonian, q)
            return e - 0.5 * jnp.einsum("b,nbc,c->n", field, g, field), jnp.einsum(
                "nab,b->na", g, field
            )

        e_t, _ = corrected(k)
        de, da = jax.jacfwd(corrected)(k)  # de [n, a] = ∂_a Ẽ, da [n, b, a] = ∂_a a'_b
        omega = band_geometry(model, k).berry_curvature[:, 2] + da[:, 1, 0] - da[:, 0, 1]
        anomalous = jnp.stack([field[1] * omega, -field[0] * omega], axis=-1)  # (E × Ω̃ ẑ)
        return -jnp.einsum("n,na->a", fermi_dirac(e_t, mu, temperature), de + anomalous)

    # lax.map, not vmap: this route calls jnp.linalg.eigh directly, and two independent *batched*
    # LAPACK eighs in one program hung (jaxlib 0.10.2, see qgeo_jax._linalg); one matrix per call.
    hess = jax.lax.map(lambda kk: jax.jacfwd(jax.jacfwd(current))(jnp.zeros(2), kk), k)
    return jnp.einsum("k,kabc->abc", w, hess)


def test_intrinsic_vs_wave_packet_route():
    """χ_int equals the Hessian of the wave-packet current j = −Σ∫(∂Ẽ + E×Ω̃) f0(Ẽ) with the
    field-corrected energy and Berry curvature (G by the resolvent route). The energy terms cancel
    only after integration (a total derivative): agreement to quadrature accuracy."""
    model = MassiveDirac(v=V, m=MASS, tilt=TILT)
    mesh = continuum_mesh(model, k_max=1.2, n=(120, 32))
    temperature = 0.03
    k, w = mesh.all_points()
    brute = 0.5 * np.asarray(_wave_packet_hessian(model, k, w, MU, temperature))
    for route in ("fermi_sea", "fermi_surface"):
        chi = np.asarray(
            nonlinear_hall_conductivity(
                model, mesh, mu=MU, temperature=temperature, mechanism="intrinsic", route=route
            )
        )
        assert_close(brute, chi[:2, :2, :2], rtol=0, atol=5e-8 * np.max(np.abs(chi)), what=route)
