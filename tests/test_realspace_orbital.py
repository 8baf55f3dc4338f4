"""Real-space (open-boundary) route to the orbital magnetization, against the k-space formula.

The bulk M^O of ``qgeo_jax.orbital_magnetization`` (modern theory, seed eq. 5) is compared with two
routes that never see a Bloch phase:

* the total moment −(e/2) Σ_occ ⟨r × v⟩ of finite flakes per area, extrapolated in 1/L
  (Ceresoli, Thonhauser, Vanderbilt, Resta, PRB 74, 024408 (2006), Figs. 2–3: M(L) = M∞ + O(1/L));
* the Bianco–Resta local marker in the flake interior (PRL 116, 087202 (2016)), which converges
  exponentially in L.

Models: Haldane trivial and Chern (PRL 61, 2015 (1988)), and a three-band oblique-lattice
TightBinding with orbitals displaced inside the cell and complex hoppings — the case that fixes the
Bloch phase convention (positions inside the phases agree with the flake; "cell" does not).
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import assert_close

from qgeo_jax import fermi_dirac, models, monkhorst_pack, orbital_magnetization, spin_magnetization
from qgeo_jax._chern import chern_number
from qgeo_jax._realspace import (
    build_flake,
    flake_orbital_magnetization,
    flake_spin_density,
    flake_state_moments,
    local_chern_marker,
    local_orbital_magnetization,
    real_space_hoppings,
)

# Haldane with t2 = 0.2, φ = π/3: the gap at K is |Δ − 3√3 t2 sin φ| = |Δ − 0.9|; with Δ = 1.5
# (trivial) and Δ = 0.3 (Chern) the bulk gap is the same window E ∈ (−0.9, 0.3).
HALDANE = dict(t1=-1.0, t2=0.2, phi=np.pi / 3)
GAP = (-0.9, 0.3)


def _extrapolate(sizes, values):
    """M(L) = M∞ + a/L + b/L²: least-squares intercept, and its change without the smallest L."""
    x = 1.0 / np.asarray(sizes, dtype=float)
    values = np.asarray(values)
    full = np.polyfit(x, values, 2)[-1]
    fewer = np.polyfit(x[1:], values[1:], 2)[-1]
    return full, abs(full - fewer)


def _flake_series(model, sizes):
    """Eigenvalues and per-state moments (z) of L × L flakes, one eigendecomposition per size."""
    hop = real_space_hoppings(model)
    out = []
    for L in sizes:
        flake = build_flake(model, (L, L), hoppings=hop)
        e, mom = flake_state_moments(flake)
        out.append((np.asarray(e), np.asarray(mom[:, 2]), float(flake.area)))
    return out


def _bands(model, mesh):
    """Band energies on every point of a mesh, (nk, n)."""
    eig = jax.vmap(lambda k: jnp.linalg.eigvalsh(model.hamiltonian(k)))
    return np.asarray(eig(mesh.all_points()[0]))


def _three_band(convention):
    e = lambda a: np.exp(1j * a)
    hops = [
        (0.6 * e(0.7), 0, 1, (0, 0)), (0.5 * e(-0.4), 1, 2, (0, 0)), (0.55 * e(1.1), 2, 0, (0, 0)),
        (0.3, 0, 0, (1, 0)), (0.3 * e(0.5), 0, 0, (0, 1)), (0.25 * e(0.9), 1, 1, (1, 0)),
        (0.2, 2, 2, (0, 1)), (0.35 * e(-0.6), 0, 1, (-1, 0)), (0.3 * e(0.3), 1, 2, (0, 1)),
        (0.25, 2, 0, (1, -1)),
    ]
    return models.TightBinding(
        [[1.0, 0.0], [0.3, 1.1]],  # oblique lattice
        [[0.0, 0.0], [0.5, 0.1], [0.2, 0.6]],  # reduced positions: displaced orbitals
        [-1.8, 0.2, 1.6],
        hops,
        convention=convention,
    )


# ------------------------------------------------------------------------------------------------
# hopping tables
# ------------------------------------------------------------------------------------------------
def _table(hop):
    pairs = zip(hop.vectors, hop.matrices, strict=True)
    return {tuple(int(x) for x in R): np.asarray(t) for R, t in pairs}


def test_hoppings_of_tight_binding_equal_its_table():
    """Fourier route vs the hopping list itself (with Hermitian conjugates and on-site terms)."""
    for convention in ("positions", "cell"):
        model = _three_band(convention)
        got = _table(real_space_hoppings(model))
        want = {(0, 0): np.diag([-1.8, 0.2, 1.6]).astype(complex)}
        for t, i, j, R in [
            (complex(h), int(a), int(b), tuple(int(x) for x in r))
            for h, a, b, r in zip(model.hopping, model.hop_i, model.hop_j, model.hop_R, strict=True)
        ]:
            want.setdefault(R, np.zeros((3, 3), complex))[i, j] += t
            mR = tuple(-x for x in R)
            want.setdefault(mR, np.zeros((3, 3), complex))[j, i] += np.conj(t)
        assert set(got) == set(want), convention
        for R in want:
            assert_close(got[R], want[R], atol=1e-13, what=f"{convention} R={R}")


def test_hoppings_of_haldane_closed_form():
    """Haldane (PRL 61, 2015 (1988)): on-site ±Δ, three NN bonds t1, NNN t2 e^{±iφ}; nothing else.

    a1 = (√3, 0), a2 = (√3/2, 3/2), τ_B = (√3/2, 1/2): B at R + τ_B neighbours A at 0 for
    R = 0, −a1, −a2. H_AA = Δ + 2t2 Σ_b cos(k·b + φ) = Δ + t2 Σ_b (e^{iφ} e^{ik·b} + c.c.) with
    b = a1, a2 − a1, −a2 ⇒ t_AA(b) = t2 e^{iφ}, t_AA(−b) = t2 e^{−iφ}; B has φ → −φ.
    """
    t1, t2, phi, delta = -1.0, 0.2, np.pi / 3, 0.3
    table = _table(real_space_hoppings(models.Haldane(delta=delta, **HALDANE)))
    want = {(0, 0): np.array([[delta, t1], [t1, -delta]], complex)}
    zero = lambda: np.zeros((2, 2), complex)
    for R in [(-1, 0), (0, -1)]:
        want.setdefault(R, zero())[0, 1] += t1
        want.setdefault((-R[0], -R[1]), zero())[1, 0] += t1
    for b in [(1, 0), (-1, 1), (0, -1)]:
        mb = (-b[0], -b[1])
        want.setdefault(b, zero())[0, 0] += t2 * np.exp(1j * phi)
        want.setdefault(mb, zero())[0, 0] += t2 * np.exp(-1j * phi)
        want[b][1, 1] += t2 * np.exp(-1j * phi)
        want[mb][1, 1] += t2 * np.exp(1j * phi)
    assert set(table) == set(want)
    for R in want:
        assert_close(table[R], want[R], atol=1e-13, what=str(R))


def test_hoppings_rebuild_qwz_rashba_and_function_models(rng):
    """Rebuild H(k) at random k from the table (QWZ, RashbaLattice, from_function, TightBinding)."""
    qwz_fn = lambda k, p: models.QiWuZhang(u=p["u"]).hamiltonian(k)
    cases = [
        models.QiWuZhang(u=-1.3),
        models.RashbaLattice(alpha=0.7, exchange=(0.1, -0.2, 0.4)),
        models.from_function(qwz_fn, {"u": 0.8}, dim=2, lattice=np.eye(2)),
        _three_band("positions"),
    ]
    for model in cases:
        hop = real_space_hoppings(model)
        for _ in range(5):
            k = rng.uniform(-4, 4, size=2)
            k = jnp.asarray(k)
            assert_close(hop.bloch_hamiltonian(k), model.hamiltonian(k), atol=1e-12)
    # QWZ closed form: t(±x̂) = t(σ_z ∓ iσ_x)/2, t(±ŷ) = t(σ_z ∓ iσ_y)/2, t(0) = u σ_z.
    table = _table(real_space_hoppings(models.QiWuZhang(u=-1.3, t=1.0)))
    sx, sy, sz = (np.asarray(s) for s in models._base.PAULI)
    assert_close(table[(1, 0)], 0.5 * (sz - 1j * sx), atol=1e-13)
    assert_close(table[(0, 1)], 0.5 * (sz - 1j * sy), atol=1e-13)
    assert_close(table[(0, 0)], -1.3 * sz, atol=1e-13)


def test_hoppings_errors():
    long_range = models.TightBinding(np.eye(2), [[0, 0]], [0.0], [(1.0, 0, 0, (3, 0))])
    with pytest.raises(ValueError, match="larger odd grid"):
        real_space_hoppings(long_range, grid=5)
    assert (3, 0) in _table(real_space_hoppings(long_range))  # the automatic grid grows to 9
    with pytest.raises(ValueError, match="continuum"):
        real_space_hoppings(models.MassiveDirac())
    # Positions that do not match the phases: H(k) written in the "cell" gauge but declared with τ.
    fn = lambda k: _three_band("cell").hamiltonian(k)
    lattice = np.array([[1.0, 0.0], [0.3, 1.1]])
    tau = np.array([[0.0, 0.0], [0.5, 0.1], [0.2, 0.6]]) @ lattice
    wrong = models.from_function(fn, dim=2, lattice=lattice, positions=tau)
    with pytest.raises(ValueError, match="positions"):
        real_space_hoppings(wrong, grid=9)


# ------------------------------------------------------------------------------------------------
# flake construction
# ------------------------------------------------------------------------------------------------
def test_open_chain_spectrum_closed_form():
    """1D open chain of L sites: E_j = 2t cos(πj/(L+1)), j = 1..L (standing waves)."""
    t, L = -0.7, 23
    chain = models.TightBinding([[1.0]], [[0.0]], [0.0], [(t, 0, 0, (1,))])
    flake = build_flake(chain, (L,))
    want = np.sort(2 * t * np.cos(np.pi * np.arange(1, L + 1) / (L + 1)))
    assert_close(np.linalg.eigvalsh(np.asarray(flake.hamiltonian)), want, atol=1e-13)
    assert_close(flake.area, L * 1.0)


def test_flake_geometry_and_moment_origin_independence():
    model = _three_band("positions")
    flake = build_flake(model, (4, 3))
    h = np.asarray(flake.hamiltonian)
    assert h.shape == (36, 36) and np.allclose(h, h.conj().T, atol=0)
    lat = np.array([[1.0, 0.0], [0.3, 1.1]])
    tau = np.array([[0.0, 0.0], [0.5, 0.1], [0.2, 0.6]]) @ lat
    idx = np.ravel_multi_index((2, 1), (4, 3)) * 3 + 1  # orbital 1 of cell (2, 1)
    assert_close(np.asarray(flake.positions[idx, :2]), 2 * lat[0] + 1 * lat[1] + tau[1], atol=1e-14)
    assert tuple(np.asarray(flake.cell[idx])) == (2, 1) and int(flake.orbital[idx]) == 1
    assert_close(flake.area, 12 * 1.1)
    # ⟨ψ|v|ψ⟩ = 0 for stationary states ⇒ every state's moment is independent of the origin.
    _, m0 = flake_state_moments(flake)
    moved = eqx.tree_at(lambda f: f.center, flake, flake.center + jnp.array([3.7, -2.1, 0.0]))
    e0, m1 = flake_state_moments(moved)
    assert_close(m1, m0, atol=1e-12)
    # μ and T broadcast; the result is Σ_n f0(E_n) m_n / A.
    mus, temps = np.array([-0.8, 0.3]), np.array([[0.0], [0.1]])
    got = np.asarray(flake_orbital_magnetization(flake, mus, temperature=temps))
    assert got.shape == (2, 2, 3)
    f = np.asarray(fermi_dirac(np.asarray(e0), mus[..., None], temps[..., None]))
    assert_close(got, np.einsum("...n,nc->...c", f, np.asarray(m0)) / float(flake.area), atol=1e-15)


# ------------------------------------------------------------------------------------------------
# orbital magnetization: flake vs bulk
# ------------------------------------------------------------------------------------------------
def test_haldane_trivial_flake_extrapolates_to_bulk():
    """Trivial Haldane (C = 0), μ in the gap, T = 0: the flake has no in-gap states, M(L) is smooth.

    Measured: |M∞ − M_bulk| / M_bulk = 4.5e-5 with L = 8..20 (M_bulk = 2.80e-3; the L = 20 flake
    alone is 13% off); 3e-5 with L = 8..24.
    """
    model = models.Haldane(delta=1.5, **HALDANE)
    mus = np.array([-0.6, -0.3, 0.0])
    bulk = np.asarray(orbital_magnetization(model, monkhorst_pack(model, (40, 40)), mu=mus)[:, 2])
    assert_close(bulk, bulk[1], rtol=1e-7)  # C = 0: no μ dependence inside the gap
    sizes = [8, 11, 14, 17, 20]
    series = _flake_series(model, sizes)
    for e, _, _ in series:
        assert not np.any((e > GAP[0]) & (e < GAP[1]))  # trivial flake: no edge states in the gap
    values = [np.sum(mom * (e < mus[1])) / area for e, mom, area in series]
    m_inf, spread = _extrapolate(sizes, values)
    assert abs(values[-1] - bulk[1]) > 0.05 * abs(bulk[1])  # edge correction O(1/L), not small
    assert spread < 3e-4 * abs(bulk[1])
    assert_close(m_inf, bulk[1], rtol=3e-4)


def test_haldane_chern_flake_extrapolates_to_bulk_and_streda():
    """Chern Haldane (C = −1): edge states fill the gap, so M(μ) of the flake is a staircase of
    step O(1/L); a Fermi smearing T = 0.08 (about one edge-level spacing at these sizes, well
    below the distance 0.45 from μ to the band edges) smooths it, and the bulk is evaluated at
    the same T. The extrapolated flake M tracks the bulk at two μ, and its slope is the Středa
    value dM/dμ = C/(2π) with C from ``chern_number`` (plaquettes) — an independent check of the
    sign of the Ω(μ − E) term.

    Measured with L = 8..20: |M∞ − M_bulk| = 1.5e-6 and 1.6e-5 at μ = −0.45, −0.15 (M_bulk =
    3.9e-2, −9.2e-3); slope 2π dM/dμ = −0.998. (With T = 0.05 and L = 10..26: 2e-4 relative.)
    """
    model = models.Haldane(delta=0.3, **HALDANE)
    temperature = 0.08
    mus = np.array([-0.45, -0.15])
    mesh = monkhorst_pack(model, (40, 40))
    bulk = np.asarray(orbital_magnetization(model, mesh, mu=mus, temperature=temperature)[:, 2])
    chern = float(chern_number(model, monkhorst_pack(model, (48, 48)), [0], method="plaquette"))
    assert round(chern) == -1
    sizes = [8, 11, 14, 17, 20]
    series = _flake_series(model, sizes)
    e_last = series[-1][0]
    assert np.sum((e_last > GAP[0]) & (e_last < GAP[1])) > 10  # chiral edge states in the bulk gap
    m_inf = []
    for mu in mus:
        values = [np.sum(mom * fermi_dirac(e, mu, temperature)) / area for e, mom, area in series]
        m, spread = _extrapolate(sizes, values)
        assert spread < 5e-5
        m_inf.append(m)
    assert_close(m_inf, bulk, atol=5e-5)
    slope = (m_inf[1] - m_inf[0]) / (mus[1] - mus[0])
    assert_close(slope, chern / (2 * np.pi), rtol=5e-3)


def test_local_marker_converges_exponentially_to_bulk():
    """Bianco–Resta marker at the flake centre (T = 0) vs bulk, trivial and Chern Haldane.

    Measured at L = 16 (centre 2×2 cells): |error| ≈ 1e-6 trivial and 2e-6 Chern (bulk ≈ 3e-3,
    1.5e-2); L = 12 → 2e-5: exponential, unlike the O(1/L) total moment. The local Chern marker
    gives C = 0 and −1 (same sign as ``chern_number``), and the μ-slope of the local M is C/(2π).
    """
    L = 16
    centre = [(L // 2 - a, L // 2 - b) for a in (0, 1) for b in (0, 1)]
    mus = jnp.array([-0.45, -0.15])
    for delta, c_expect in [(1.5, 0), (0.3, -1)]:
        model = models.Haldane(delta=delta, **HALDANE)
        mesh = monkhorst_pack(model, (40, 40))
        bulk = np.asarray(orbital_magnetization(model, mesh, mu=mus)[:, 2])
        flake = build_flake(model, (L, L))
        local = np.asarray(local_orbital_magnetization(flake, mus, cells=centre))  # (2, 4, 3)
        assert_close(local[..., 2].mean(axis=1), bulk, atol=1e-5)
        assert_close(local[..., :2], 0.0, atol=0)
        c_local = np.asarray(local_chern_marker(flake, -0.3, cells=centre))
        assert_close(c_local, c_expect, atol=1e-3)
        slope = (local[1, :, 2] - local[0, :, 2]).mean() / float(mus[1] - mus[0])
        assert_close(slope, c_expect / (2 * np.pi), atol=1e-4)


def test_three_band_displaced_orbitals_fix_the_phase_convention():
    """Three bands, oblique lattice, orbitals displaced inside the cell, complex hoppings (C = 0).

    The flake (physical positions r = R + τ_i, no Bloch phases) agrees with the package's bulk
    M^O in the "positions" convention at both gaps (one and two bands filled); the "cell"
    convention, whose ∂_k H omits the intra-cell positions, misses it by O(1) (documented
    negative check). Measured: relative agreement 2e-11 (filling 1) and 7e-6 (filling 2) with
    L = 8..16; "cell" gives −1.1e-4 vs 7.0e-3 and +2.4e-3 vs −3.1e-3.
    """
    model, cell_model = _three_band("positions"), _three_band("cell")
    mesh = monkhorst_pack(model, (40, 40))
    bands = _bands(model, mesh)
    sizes = [8, 10, 12, 14, 16]
    series = _flake_series(model, sizes)
    # the flake of the "cell" twin is the same physical object
    twin, flake = build_flake(cell_model, (3, 3)), build_flake(model, (3, 3))
    assert_close(twin.hamiltonian, flake.hamiltonian, atol=1e-13)
    gaps = [(bands[:, f - 1].max(), bands[:, f].min()) for f in (1, 2)]
    assert all(hi - lo > 0.3 for lo, hi in gaps)
    mus = np.array([0.5 * (lo + hi) for lo, hi in gaps])
    bulks = np.asarray(orbital_magnetization(model, mesh, mu=mus)[:, 2])
    bulks_cell = np.asarray(orbital_magnetization(cell_model, mesh, mu=mus)[:, 2])
    for filled, mu, bulk, bulk_cell in zip((1, 2), mus, bulks, bulks_cell, strict=True):
        chern = chern_number(model, monkhorst_pack(model, (36, 36)), list(range(filled)))
        assert abs(float(chern)) < 1e-6
        values = [np.sum(mom * (e < mu)) / area for e, mom, area in series]
        m_inf, spread = _extrapolate(sizes, values)
        assert_close(m_inf, bulk, rtol=1e-4)
        assert spread < 1e-4 * abs(bulk)
        assert abs(bulk_cell - m_inf) > 0.5 * abs(m_inf)  # the "cell" convention is wrong here


def test_three_dimensional_local_marker_all_components():
    """3D oblique lattice, two displaced orbitals, complex hoppings: every component of M^O.

    The Bianco–Resta marker in the central cell of an L³ flake against the bulk vector (the 3D
    path of both routes: all three (a, b) pairs of r × v). Measured: |error| ≈ 1e-6 at
    L = 5 and 6e-8 at L = 7 for M ≈ (−2.4, 7.4, −4.9)·1e-3.
    """
    e = lambda a: np.exp(1j * a)
    hops = [
        (0.5 * e(0.7), 0, 1, (0, 0, 0)), (0.3 * e(0.4), 0, 0, (1, 0, 0)),
        (0.3 * e(-0.5), 0, 0, (0, 1, 0)), (0.25 * e(0.9), 0, 0, (0, 0, 1)),
        (0.3 * e(1.0), 1, 1, (1, 0, 0)), (0.2 * e(0.2), 1, 1, (0, 1, 0)),
        (0.35 * e(-0.3), 1, 1, (0, 0, 1)), (0.3 * e(-0.6), 0, 1, (1, 0, 0)),
        (0.25 * e(0.3), 0, 1, (0, 1, 0)), (0.2 * e(1.3), 1, 0, (0, 0, 1)),
        (0.15 * e(0.5), 0, 1, (1, 1, 0)),
    ]
    lattice = [[1.0, 0.0, 0.0], [0.2, 1.0, 0.0], [0.1, 0.3, 1.2]]
    model = models.TightBinding(lattice, [[0, 0, 0], [0.4, 0.2, 0.3]], [-1.5, 1.5], hops)
    mesh = monkhorst_pack(model, (12, 12, 12))
    bands = _bands(model, mesh)
    mu = 0.5 * (bands[:, 0].max() + bands[:, 1].min())
    assert bands[:, 1].min() - bands[:, 0].max() > 0.1
    bulk = np.asarray(orbital_magnetization(model, mesh, mu=mu))
    assert np.all(np.abs(bulk) > 1e-3)
    flake = build_flake(model, (7, 7, 7))
    local = np.asarray(local_orbital_magnetization(flake, mu, cells=[(3, 3, 3)]))[0]
    assert_close(local, bulk, atol=1e-6)
    total = np.asarray(flake_orbital_magnetization(flake, mu))  # O(1/L) edge correction, same sign
    assert np.all(np.sign(total) == np.sign(bulk)) and np.all(np.abs(total) < np.abs(bulk))


# ------------------------------------------------------------------------------------------------
# fields, spin, derivatives
# ------------------------------------------------------------------------------------------------
def _rashba_insulator():
    # ε(k) ± sqrt(α²(sin²kx + sin²ky) + J²), ε ∈ [−0.4, 0.4], J = 0.5: global gap (−0.1, 0.1).
    return models.RashbaLattice(t=0.1, alpha=1.0, exchange=(0.0, 0.0, 0.5))


def test_flake_spin_density_extrapolates_to_bulk():
    """Σ_occ⟨S⟩/A of flakes (O(1/L) edges) vs bulk: spin_magnetization = −g × spin density."""
    model = _rashba_insulator()
    bulk = np.asarray(spin_magnetization(model, monkhorst_pack(model, (40, 40)), mu=0.0)) / -2.0
    sizes = [8, 12, 16, 20]
    hop = real_space_hoppings(model)
    flakes = [build_flake(model, (L, L), hoppings=hop) for L in sizes]
    values = np.array([np.asarray(flake_spin_density(f, 0.0)) for f in flakes])
    assert_close(values[:, :2], 0.0, atol=1e-12)  # C4 symmetry of the square flake about its centre
    m_inf, _ = _extrapolate(sizes, values[:, 2])
    assert_close(m_inf, bulk[2], rtol=1e-3)
    assert_close(bulk[:2], 0.0, atol=1e-14)


def test_flake_spin_operators_are_block_diagonal():
    """Dense 1 ⊗ S of a small flake gives the same spin density as the per-cell contraction."""
    flake = build_flake(_rashba_insulator(), (3, 2))
    s = np.asarray(flake.spin_operators())
    e, u = np.linalg.eigh(np.asarray(flake.hamiltonian))
    occ = u[:, e < 0.0]
    dense = np.real(np.einsum("is,aij,js->a", occ.conj(), s, occ)) / float(flake.area)
    assert_close(flake_spin_density(flake, 0.0), dense, atol=1e-13)
    assert_close(s[:, :2, :2], np.asarray(models._base.PAULI) / 2, atol=0)
    assert_close(s[:, :2, 2:], 0.0, atol=0)


def test_field_derivatives_match_finite_differences():
    """jax.jacfwd w.r.t. E of flake moment, spin density and local marker vs central differences.

    The flake is gapped at μ (T = 0), so the response is analytic in E and the difference
    quotient converges as h².
    """
    rashba = build_flake(_rashba_insulator(), (5, 5))
    three = build_flake(_three_band("positions"), (5, 5))  # no symmetry forces dM_z/dE = 0 here
    mu3 = -0.78  # in the first gap of the three-band flake
    h = 1e-4
    e0 = jnp.array([0.013, -0.007])
    fns = {
        "moment": lambda e: flake_orbital_magnetization(three, mu3, field=e)[2],
        "spin": lambda e: flake_spin_density(rashba, 0.0, field=e),
        "marker": lambda e: local_orbital_magnetization(three, mu3, field=e, cells=[(2, 2)])[0, 2],
    }
    for name, fn in fns.items():
        jac = np.asarray(jax.jacfwd(fn)(e0))
        diff = lambda d, fn=fn: (np.asarray(fn(e0 + h * d)) - np.asarray(fn(e0 - h * d))) / (2 * h)
        fd = np.stack([diff(d) for d in np.eye(2)], axis=-1)
        scale = max(np.abs(fd).max(), 1e-6)
        assert_close(jac, fd, atol=1e-6 * scale + 1e-10, what=name)
        assert np.abs(jac).max() > 1e-6, name  # the field does something
