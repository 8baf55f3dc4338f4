"""Equilibrium responses: orbital and spin magnetization, anomalous Hall conductivity.

Closed forms used here (ħ = e = k_B = 1, per unit area):

* Massive Dirac, H = v(ξk_xσ_x + k_yσ_y) + mσ_z on the disk |k| < K, T = 0 (seed eq. 5 with the
  seed's Ω_± = ∓ξmv²/(2d³), m_± = −ξmv²/(2d²)). Band by band m_n + Ω_n(μ − E_n) = μ Ω_n, so
    μ in the gap:            M^O_z = μ/(2π) · C_K,        C_K = ξ/2 [sign m − m/(m² + v²K²)^{1/2}]
    μ > |m| (k_F: d = μ):    M^O_z = μ ξ m/(4π) [1/μ − 1/(m² + v²K²)^{1/2}]
* Středa: dM^O/dμ = Σ∫ (−m_n f0' + Ω_n f0) → C/(2π) in a gap (C e/h with e = ħ = 1)
  (Středa, J. Phys. C 15, L717 (1982); Xiao, Shi, Niu PRL 95, 137204 (2005),
  doi:10.1103/PhysRevLett.95.137204). AHC σ_xy = −Σ∫Ω f0 = −C/(2π) in a gap
  (RMP 82, 1959, eq. 3.11).
* Rashba gas with exchange J_z, H = k²/2m + α(k_xσ_y − k_yσ_x) + J_zσ_z, S = σ/2, T = 0
  (⟨S_z⟩_± = ±J_z/(2s), s = (α²k² + J_z²)^{1/2}; ∫k dk/s = s/α²; the Fermi surfaces solve
  s² ∓ 2mα²s − (J² + 2mα²μ) = 0, D ≡ (m²α⁴ + J² + 2mα²μ)^{1/2}):
    −|J| < μ < |J|:                 M^S_z = g J_z (mα² + D − |J|)/(4πα²)
    μ > |J|:                         M^S_z = g J_z m/(2π)           (independent of μ)
    E_min < μ < −|J| (mα² > |J|):   M^S_z = g J_z D/(2πα²)         (annulus)
  Second route: M^S = −(g/2) ∂Ω_gp/∂J with the grand potential Ω_gp = −T Σ∫ ln(1 + e^{(μ−E)/T})
  (since ∂E_n/∂J = 2⟨S⟩_n), by autodiff through the eigenvalues only.
* Time reversal (Haldane φ = 0, Rashba without exchange): M^O = M^S = 0 and σ_xy = 0.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import assert_close

import qgeo_jax._bz as bz
from qgeo_jax._chern import chern_number
from qgeo_jax._linalg import eigh
from qgeo_jax._occupation import grand_potential_weight
from qgeo_jax._responses import (
    anomalous_hall_conductivity,
    chern_number_kubo,
    orbital_magnetization,
    spin_magnetization,
)
from qgeo_jax.models import Haldane, MassiveDirac, QiWuZhang, Rashba, RashbaLattice


def radial_mesh(edges, n_radial=40, n_angle=8):
    """ExplicitMesh on the disk |k| < edges[-1].

    Gauss–Legendre on each interval [edges[i], edges[i+1]]
    × uniform angles. Splitting at the Fermi radii makes every T = 0 integrand smooth per piece, so
    the quadrature is exact to ~1e-14 (the uniform angle rule integrates the isotropic integrands
    and the odd harmonics exactly)."""
    x, w = np.polynomial.legendre.leggauss(n_radial)
    ks, ws = [], []
    theta = 2 * np.pi * (np.arange(n_angle) + 0.5) / n_angle
    for a, b in zip(edges[:-1], edges[1:], strict=True):
        r = 0.5 * (b - a) * (x + 1) + a
        wr = 0.5 * (b - a) * w
        rr, tt = np.meshgrid(r, theta, indexing="ij")
        ks.append(np.stack([rr * np.cos(tt), rr * np.sin(tt)], -1).reshape(-1, 2))
        ws.append(
            (np.outer(r * wr, np.full(n_angle, 2 * np.pi / n_angle)) / (2 * np.pi) ** 2).reshape(-1)
        )
    return bz.ExplicitMesh(
        points=jnp.asarray(np.concatenate(ks)), weights=jnp.asarray(np.concatenate(ws))
    )


# --- massive Dirac: closed-form M^O --------------------------------------------------------------
@pytest.mark.parametrize("v, m, xi", [(1.0, 0.3, 1), (1.5, -0.4, 1), (0.8, 0.5, -1)])
def test_massive_dirac_orbital_magnetization_closed_form(v, m, xi):
    cutoff = 6.0
    model = MassiveDirac(v=v, m=m, valley=xi, cutoff=cutoff)
    big = np.sqrt(m**2 + v**2 * cutoff**2)
    c_disk = xi / 2 * (np.sign(m) - m / big)
    # μ in the gap: a smooth integrand, so the built-in polar mesh is enough
    mesh = bz.continuum_mesh(model, n=(80, 8))
    mus = np.array([-0.9, -0.2, 0.0, 0.6]) * abs(m)
    got = orbital_magnetization(model, mesh, mu=mus, temperature=0.0)
    assert got.shape == (4, 3)
    assert_close(got[:, 2], mus * c_disk / (2 * np.pi), rtol=1e-10, atol=1e-16)
    assert_close(got[:, :2], 0.0, rtol=0, atol=0)
    # μ in the upper band (metal): split the mesh at k_F, d(k_F) = μ
    for mu in (1.3 * abs(m), 2.5 * abs(m)):
        kf = np.sqrt(mu**2 - m**2) / v
        metal = orbital_magnetization(model, radial_mesh([0.0, kf, cutoff]), mu=mu, temperature=0.0)
        assert_close(metal[2], mu * xi * m / (4 * np.pi) * (1 / mu - 1 / big), rtol=1e-10)


# --- Středa, AHC, Chern in a gap -----------------------------------------------------------------
GAPPED = [
    (Haldane(t1=-1.0, t2=0.15, phi=np.pi / 2, delta=0.2), 0.1, -1),
    (Haldane(t1=-1.0, t2=0.15, phi=-np.pi / 2, delta=0.2), -0.05, 1),
    (Haldane(t1=1.0, t2=0.1, phi=0.8, delta=1.0), -0.2, 0),  # trivial insulator: ∂M/∂μ = 0
    (QiWuZhang(u=1.0), 0.2, -1),
    (QiWuZhang(u=-1.3), 0.0, 1),
]


@pytest.mark.parametrize("case", range(len(GAPPED)))
def test_streda_and_hall_in_a_gap(case):
    model, mu, c_int = GAPPED[case]
    mesh = bz.monkhorst_pack(model, (36, 36))
    kubo = float(chern_number_kubo(model, mesh, [0]))
    assert round(float(chern_number(model, mesh, [0], method="plaquette"))) == c_int
    assert abs(kubo - c_int) < 1e-8  # mesh convergence: measured ≤ 6e-11 for these gaps on 36²

    # (1) autodiff in μ at small T (f0' ∝ e^{−gap/T} ≈ e^{-30} in the gap)
    t = 0.01
    dmdmu = jax.grad(lambda x: orbital_magnetization(model, mesh, mu=x, temperature=t)[2])(mu)
    # on the same mesh the identity dM/dμ = Σ_w Ω f0 holds to round-off …
    assert_close(dmdmu, kubo / (2 * np.pi), rtol=1e-9, atol=1e-12)
    # … and to the integer up to mesh convergence
    assert abs(float(dmdmu) * 2 * np.pi - c_int) < 1e-8
    # (2) finite differences of M^O at T = 0: M^O is exactly linear in μ inside the gap
    h = 0.02
    m_minus, m_plus, m_zero, m_warm = orbital_magnetization(
        model, mesh, mu=np.array([mu - h, mu + h, mu, mu]), temperature=np.array([0.0, 0.0, 0.0, t])
    )[:, 2]
    assert_close((m_plus - m_minus) / (2 * h), kubo / (2 * np.pi), rtol=1e-8, atol=1e-12)
    # T → 0 is smooth in a gap
    assert_close(m_warm, m_zero, rtol=1e-10, atol=1e-14)
    # (3) AHC in the gap = −C/(2π)
    sigma = anomalous_hall_conductivity(model, mesh, mu=mu, temperature=0.0)
    assert_close(sigma[2], -kubo / (2 * np.pi), rtol=1e-10, atol=1e-14)
    assert_close(sigma[:2], 0.0, rtol=0, atol=0)


def test_streda_in_a_metal_has_a_fermi_surface_term():
    """Outside the gap dM/dμ = Σ∫(−m f0' + Ω f0): autodiff in μ equals this sum evaluated separately
    (a check that the ln(1 − f0) term of eq. 5 differentiates to Ω f0), and ≠ C/2π."""
    from qgeo_jax._bz import integrate
    from qgeo_jax._geometry import band_geometry
    from qgeo_jax._occupation import fermi_dirac, fermi_dirac_derivative

    model = Haldane(t1=-1.0, t2=0.15, phi=np.pi / 2, delta=0.2)
    mesh = bz.monkhorst_pack(model, (24, 24))
    mu, t = 0.9, 0.05
    auto = jax.grad(lambda x: orbital_magnetization(model, mesh, mu=x, temperature=t)[2])(mu)

    def per_k(k):
        geo = band_geometry(model, k)
        e = geo.energies
        return jnp.sum(
            -geo.orbital_moment[:, 2] * fermi_dirac_derivative(e, mu, t)
            + geo.berry_curvature[:, 2] * fermi_dirac(e, mu, t)
        )

    direct = integrate(per_k, mesh)
    assert_close(auto, direct, rtol=1e-10)
    assert abs(float(auto) * 2 * np.pi + 1) > 0.05


# --- time-reversal symmetric models: every Ω-odd quantity vanishes -------------------------------
def test_time_reversal_symmetric_models_have_no_magnetization_or_hall():
    mus = np.array([-0.5, 0.0, 0.4, 1.5])
    temps = np.array([0.0, 0.05])[:, None]
    model = Haldane(phi=0.0, delta=0.3)
    mesh = bz.monkhorst_pack(model, (16, 16))
    mo = orbital_magnetization(model, mesh, mu=mus, temperature=temps)
    sigma = anomalous_hall_conductivity(model, mesh, mu=mus, temperature=temps)
    assert mo.shape == sigma.shape == (2, 4, 3)
    assert np.max(np.abs(np.asarray(mo))) < 1e-14
    assert np.max(np.abs(np.asarray(sigma))) < 1e-14
    rl = RashbaLattice(alpha=0.6, onsite=0.2)
    ms = spin_magnetization(rl, bz.monkhorst_pack(rl, (16, 16)), mu=mus, temperature=temps)
    assert np.max(np.abs(np.asarray(ms))) < 1e-14
    # … breaking time reversal (φ ≠ 0) makes them non-zero: the zeros above are not trivial
    broken = Haldane(phi=0.5, delta=0.3)
    assert (
        abs(
            float(
                orbital_magnetization(
                    broken, bz.monkhorst_pack(broken, (16, 16)), mu=mus, temperature=temps
                )[1, 2, 2]
            )
        )
        > 1e-4
    )
    rashba = Rashba(mass=0.5, alpha=0.8)
    mesh = bz.continuum_mesh(rashba, k_max=3.0, n=(40, 16))
    for fn in (orbital_magnetization, anomalous_hall_conductivity, spin_magnetization):
        assert np.max(np.abs(np.asarray(fn(rashba, mesh, mu=mus, temperature=temps)))) < 1e-14


# --- spin magnetization --------------------------------------------------------------------------
def rashba_spin_closed_form(mass, alpha, jz, mu, g=2.0):
    """M^S_z at T = 0 and the Fermi radii (see module docstring)."""
    a2, j = alpha**2, abs(jz)
    disc = np.sqrt(mass**2 * a2**2 + jz**2 + 2 * mass * a2 * mu)
    k_of_s = lambda s: np.sqrt(max(s**2 - jz**2, 0.0)) / alpha
    if -j < mu < j:
        return g * jz * (mass * a2 + disc - j) / (4 * np.pi * a2), [k_of_s(mass * a2 + disc)]
    if mu >= j:
        return g * jz * mass / (2 * np.pi), [k_of_s(disc - mass * a2), k_of_s(mass * a2 + disc)]
    assert mass * a2 > j and disc > 0
    return g * jz * disc / (2 * np.pi * a2), [k_of_s(mass * a2 - disc), k_of_s(mass * a2 + disc)]


@pytest.mark.parametrize(
    "mass, alpha, jz, mu",
    [
        (0.5, 0.8, 0.2, 0.05),
        (0.5, 0.8, -0.2, -0.15),
        (0.5, 0.8, 0.2, 0.6),
        (1.0, 1.2, 0.3, -0.5),
        (0.7, 0.4, 0.25, 0.1),
    ],
)
def test_rashba_spin_magnetization_closed_form(mass, alpha, jz, mu):
    expected, radii = rashba_spin_closed_form(mass, alpha, jz, mu)
    edges = [0.0, *sorted(radii), 1.5 * max(radii)]
    if len(edges) == 3:  # same number of pieces in every case → one compilation for all cases
        edges.insert(1, 0.5 * edges[1])
    model = Rashba(mass=mass, alpha=alpha, exchange=(0.0, 0.0, jz))
    mesh = radial_mesh(edges)
    got = spin_magnetization(model, mesh, mu=mu, temperature=0.0)
    assert_close(got[2], expected, rtol=1e-11)
    assert_close(got[:2], 0.0, rtol=0, atol=1e-15)
    # M^S ∝ g
    assert_close(
        spin_magnetization(model, mesh, mu=mu, temperature=0.0, g_factor=2.3)[2],
        1.15 * expected,
        rtol=1e-11,
    )


def test_spin_magnetization_grand_potential_route():
    """M^S = −(g/2) ∂Ω_gp/∂J (all three components), Ω_gp from eigenvalues only, on a lattice model
    with a tilted exchange field, at T > 0 in a metal."""
    model = RashbaLattice(t=1.0, alpha=0.7, exchange=(0.15, -0.1, 0.25), onsite=0.3)
    mesh = bz.monkhorst_pack(model, (24, 24))
    mu, t = np.array([-1.0, 0.2]), 0.05

    def grand_potential(exchange):
        mod = eqx.tree_at(lambda m: m.exchange, model, exchange)

        def per_k(k):
            e = eigh(mod.hamiltonian(k))[0]
            return -jnp.sum(grand_potential_weight(e, mu[:, None], t), axis=-1)

        return bz.integrate(per_k, mesh)

    d_omega = jax.jacrev(grand_potential)(model.exchange)  # (2 μ, 3 components)
    ms = spin_magnetization(model, mesh, mu=mu, temperature=t, g_factor=2.0)
    assert_close(ms, -d_omega, rtol=1e-10, atol=1e-14)
    assert np.min(np.abs(np.asarray(ms))) > 1e-4


def test_rashba_lattice_spin_magnetization_matches_continuum_at_low_filling():
    """Near the band bottom RashbaLattice → Rashba with 1/(2m*) = t.

    The saturated value g J_z m*/(2π) (μ > |J|, closed form above) is reached up to O(k_F²)
    lattice corrections."""
    t, alpha, jz = 1.0, 0.3, 0.02
    model = RashbaLattice(t=t, alpha=alpha, exchange=(0.0, 0.0, jz), onsite=4 * t)
    mesh = bz.monkhorst_pack(model, (200, 200), shift=0.5)
    got = float(spin_magnetization(model, mesh, mu=0.06, temperature=0.004)[2])
    expected = 2.0 * jz * (1 / (2 * t)) / (2 * np.pi)
    assert abs(got / expected - 1) < 0.05, got / expected


def test_mu_temperature_broadcasting():
    model = QiWuZhang(u=1.0)
    mesh = bz.monkhorst_pack(model, (12, 12))
    mus = np.array([-0.5, 0.3, 2.0])
    temps = np.array([0.0, 0.1])[:, None]
    grid = orbital_magnetization(model, mesh, mu=mus, temperature=temps)
    assert grid.shape == (2, 3, 3)
    for i, temp in enumerate(temps[:, 0]):
        for j, mu in enumerate(mus):
            one = orbital_magnetization(model, mesh, mu=mu, temperature=temp)
            assert one.shape == (3,)
            assert_close(grid[i, j], one, rtol=1e-12, atol=1e-16)


# --- units ---------------------------------------------------------------------------------------
def test_unit_conversions_by_hand():
    """Hand calculations with CODATA 2018 values:
    * 1 e·eV·Å²/ħ in μ_B = 2 m_e·eV·Å²/ħ² = 1/(ħ²/2m_e in eV·Å²) = 1/3.80998212 = 0.2624684…
    * e²/ħ = π G_0 with G_0 = 2e²/h = 7.748091729e-5 S; σ = 1/(2π) e²/ħ is one e²/h
    * k_B · 300 K = 1.380649e-23 × 300 / 1.602176634e-19 eV = 25.851999786 meV
    * 1 μ_B/Å² = 9.2740100783e-24 J/T / 1e-20 m² = 9.2740100783e-4 A.
    """
    from qgeo_jax import units

    assert_close(units.orbital_moment(1.0), 1 / 3.80998212, rtol=3e-9)
    assert_close(
        units.orbital_moment(1.0, energy="meV", length="nm"), 1e-3 * 100 / 3.80998212, rtol=3e-9
    )
    assert_close(units.orbital_moment(1.0, to="SI"), 9.2740100783e-24 / 3.80998212, rtol=1e-7)
    assert_close(units.hall_conductivity(1 / (2 * np.pi), dim=2, to="e2_over_h"), 1.0, rtol=1e-15)
    assert_close(units.hall_conductivity(1.0, dim=2), np.pi * 7.748091729e-5, rtol=1e-9)
    assert_close(
        units.hall_conductivity(1.0, dim=3, length="nm"), np.pi * 7.748091729e-5 / 1e-9, rtol=1e-9
    )
    assert_close(units.temperature_to_energy(300.0), 0.025851999786, rtol=1e-10)
    assert_close(units.spin_magnetization(1.0, dim=2), 9.2740100783e-4, rtol=1e-9)
    assert_close(
        units.spin_magnetization(1.0, dim=2, to="bohr_magneton_per_cell", cell_volume=2.5),
        2.5,
        rtol=0,
    )
    # M^O per cell: model units × cell area × (e eV Å²/ħ in μ_B)
    assert_close(
        units.orbital_magnetization(2.0, dim=2, to="bohr_magneton_per_cell", cell_volume=1.5),
        3.0 / 3.80998212,
        rtol=3e-9,
    )
    # M^O in SI (2D: A): 1 e·eV·Å²/ħ per Å² = 0.2624684 μ_B / 1e-20 m²
    assert_close(
        units.orbital_magnetization(1.0, dim=2), 9.2740100783e-24 / 3.80998212 / 1e-20, rtol=1e-7
    )
    with pytest.raises(ValueError, match="unknown energy unit"):
        units.orbital_moment(1.0, energy="kcal")
    with pytest.raises(ValueError, match="unknown length unit"):
        units.spin_magnetization(1.0, dim=2, length="furlong")
    with pytest.raises(ValueError, match="needs cell_volume"):
        units.orbital_magnetization(1.0, dim=2, to="bohr_magneton_per_cell")
