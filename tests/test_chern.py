"""Chern numbers: Kubo integral vs Fukui–Hatsugai–Suzuki plaquettes vs a Dirac-point count.

Closed form (third, independent route). For a two-band H = d_0 + d·σ the Chern number of the lower
band, C = (1/2π) ∫_BZ Ω_−^{xy}, is the degree of k ↦ d̂(k): C = ½ Σ_{K: d_x = d_y = 0}
sign(det ∂(d_x, d_y)/∂(k_x, k_y)|_K) · sign(d_z(K)). Each node K is a massive Dirac cone
(valley ξ = sign det, mass d_z(K)) contributing ξ sign(m)/2 — the half-integer Dirac result
(1/2π)∫Ω_− d²k = ξ sign(m)/2, which is itself tested on the continuum below. This reproduces
Qi, Wu, Zhang, PRB 74, 085308 (2006) (|C| = 1 for 0 < |u| < 2|t|) and Haldane, PRL 61, 2015 (1988)
(|C| = 1 for |Δ| < 3√3 |t₂ sin φ|), with signs fixed by the package convention
C = (1/2π) Σ_occ ∫ Ω^{xy}, Ω^{xy} = −2 Im Σ v^x_{nm} v^y_{mn}/(E_n − E_m)².
"""

import jax.numpy as jnp
import numpy as np
import pytest
from conftest import assert_close

import qgeo_jax._bz as bz
from qgeo_jax._bz import integrate
from qgeo_jax._chern import chern_number
from qgeo_jax._geometry import band_geometry
from qgeo_jax._responses import chern_number_kubo
from qgeo_jax.models import (
    Haldane,
    MassiveDirac,
    QiWuZhang,
    Rashba,
    RashbaLattice,
    TightBinding,
    from_function,
)

SQ3 = np.sqrt(3.0)
# Haldane geometry written out again here (not imported from the model): NN distance 1.
NN = np.array([[SQ3 / 2, 0.5], [-SQ3 / 2, 0.5], [0.0, -1.0]])
NNN = np.array([[SQ3, 0.0], [-SQ3 / 2, 1.5], [-SQ3 / 2, -1.5]])
K_POINT = np.array([4 * np.pi / (3 * SQ3), 0.0])


def dirac_point_chern(nodes):
    """C of the lower band from a list of (det J, d_z) at the nodes of (d_x, d_y)."""
    return 0.5 * sum(np.sign(det) * np.sign(dz) for det, dz in nodes)


def haldane_closed_form(t1, t2, phi, delta):
    """Nodes K, K' = ±K_POINT of d_x − i d_y = t1 Σ_δ e^{ik·δ}.

    d_z = Δ − 2 t2 sin φ Σ_b sin(k·b)."""
    nodes = []
    for k in (K_POINT, -K_POINT):
        assert abs(np.sum(np.exp(1j * NN @ k))) < 1e-12
        c, s = np.cos(NN @ k), np.sin(NN @ k)
        grad_dx = -t1 * (s[:, None] * NN).sum(0)  # d_x = t1 Σ cos(k·δ)
        grad_dy = -t1 * (c[:, None] * NN).sum(0)  # d_y = −t1 Σ sin(k·δ)
        det = grad_dx[0] * grad_dy[1] - grad_dx[1] * grad_dy[0]
        dz = delta - 2 * t2 * np.sin(phi) * np.sum(np.sin(NNN @ k))
        nodes.append((det, dz))
    return dirac_point_chern(nodes)


def qwz_closed_form(u, t):
    """Nodes at the four TRIMs: J = diag(t cos k_x, t cos k_y), d_z = u + t cos k_x + t cos k_y."""
    nodes = []
    for kx in (0.0, np.pi):
        for ky in (0.0, np.pi):
            nodes.append((t * np.cos(kx) * t * np.cos(ky), u + t * np.cos(kx) + t * np.cos(ky)))
    return dirac_point_chern(nodes)


def test_closed_forms_reproduce_the_published_phase_diagrams():
    # QWZ: C = −sign(u) inside 0 < |u| < 2|t| in this convention, 0 outside
    for u, t in [(0.5, 1.0), (1.5, 1.0), (-1.0, 1.0), (1.0, -1.0), (2.5, 1.0), (-3.0, 1.0)]:
        expected = -np.sign(u) if abs(u) < 2 * abs(t) else 0.0
        assert qwz_closed_form(u, t) == expected
    # Haldane: |C| = 1 iff |Δ| < 3√3|t2 sin φ|, sign flips with sin φ (not with t1)
    for phi in (np.pi / 2, 0.6, -0.9):
        for delta in (0.0, 0.5, 1.0, -1.7):
            c = haldane_closed_form(-1.0, 0.2, phi, delta)
            assert abs(c) == (abs(delta) < 3 * SQ3 * abs(0.2 * np.sin(phi)))
            assert haldane_closed_form(1.0, 0.2, phi, delta) == c
            assert haldane_closed_form(-1.0, 0.2, -phi, delta) == -c


# Phase points (C = −1: 5, C = +1: 3, C = 0: 4) with both Dirac masses ≥ 0.25
# (so the Kubo sum converges on a 36² mesh).
HALDANE_POINTS = [
    # (t1, t2, phi, delta)
    (-1.0, 0.15, np.pi / 2, 0.0),
    (-1.0, 0.15, np.pi / 2, 0.3),
    (-1.0, 0.15, np.pi / 2, -0.5),
    (-1.0, 0.15, -np.pi / 2, 0.2),
    (-1.0, 0.15, -np.pi / 2, -0.4),
    (-1.0, 0.2, -1.0, 0.3),
    (-1.0, 0.15, np.pi / 4, 0.2),
    (1.0, 0.2, 2.2, -0.3),
    (-1.0, 0.15, np.pi / 2, 1.2),
    (-1.0, 0.15, np.pi / 2, -1.5),
    (-1.0, 0.15, 0.0, 0.3),
    (-1.0, 0.1, -np.pi / 4, 0.9),
]
QWZ_POINTS = [
    (-3.0, 1.0),
    (-1.5, 1.0),
    (-0.5, 1.0),
    (0.4, 1.0),
    (1.2, 1.0),
    (2.6, 1.0),
    (1.0, -1.0),
    (-1.0, 0.7),
]


def _check_both_routes(model, expected, shape):
    mesh = bz.monkhorst_pack(model, shape)
    kubo = float(chern_number(model, mesh, [0], method="kubo"))
    plaq = float(chern_number(model, mesh, [0], method="plaquette"))
    # plaquette: an integer up to round-off (the lattice field strength sums to 2π × integer)
    assert abs(plaq - expected) < 1e-9, (plaq, expected)
    # Kubo on a uniform mesh converges exponentially for a gapped, analytic integrand; 1e-4 at 36².
    assert abs(kubo - expected) < 1e-4, (kubo, expected)
    # the two bands together carry no Chern number (Σ_n Ω_n = 0)
    assert abs(float(chern_number(model, mesh, [0, 1], method="kubo"))) < 1e-10
    assert abs(float(chern_number(model, mesh, [0, 1], method="plaquette"))) < 1e-10
    return kubo, plaq


@pytest.mark.parametrize("point", HALDANE_POINTS)
def test_haldane_phase_diagram(point):
    expected = haldane_closed_form(*point)
    t1, t2, phi, delta = point
    _check_both_routes(Haldane(t1=t1, t2=t2, phi=phi, delta=delta), expected, (36, 36))


@pytest.mark.parametrize("point", QWZ_POINTS)
def test_qwz_phase_diagram(point):
    u, t = point
    _check_both_routes(QiWuZhang(u=u, t=t), qwz_closed_form(u, t), (36, 36))


def test_kubo_chern_converges_with_mesh():
    """|C_kubo − C| falls (exponentially) as the mesh is refined; plaquette is exact already."""
    model = QiWuZhang(u=-0.5)
    errs = []
    for n in (12, 24, 48):
        mesh = bz.monkhorst_pack(model, (n, n))
        errs.append(abs(float(chern_number(model, mesh, [0])) - 1.0))
    # the coarsest mesh already gives the exact integer by plaquettes
    assert (
        abs(
            float(chern_number(model, bz.monkhorst_pack(model, (12, 12)), [0], method="plaquette"))
            - 1
        )
        < 1e-10
    )
    assert errs[1] < errs[0] / 10 and errs[2] < errs[1] / 10, errs


def haldane_tight_binding(t1, t2, phi, delta, convention="positions"):
    """Haldane's model as a hopping table (reduced positions A = 0, B = (1/3, 1/3))."""
    lattice = np.array([[SQ3, 0.0], [SQ3 / 2, 1.5]])
    hops = [(t1, 0, 1, (0, 0)), (t1, 0, 1, (-1, 0)), (t1, 0, 1, (0, -1))]
    for R in [(1, 0), (-1, 1), (0, -1)]:  # b1 = a1, b2 = a2 − a1, b3 = −a2
        hops += [(t2 * np.exp(1j * phi), 0, 0, R), (t2 * np.exp(-1j * phi), 1, 1, R)]
    return TightBinding(
        lattice, [[0, 0], [1 / 3, 1 / 3]], [delta, -delta], hops, convention=convention
    )


@pytest.mark.parametrize("convention", ["positions", "cell"])
def test_tight_binding_haldane_chern(convention):
    """Same Chern number from the hopping-table Haldane model in either Bloch convention (the Kubo
    curvature differs locally between conventions, its BZ integral does not)."""
    point = (-1.0, 0.15, np.pi / 2, 0.2)
    model = haldane_tight_binding(*point, convention=convention)
    _check_both_routes(model, haldane_closed_form(*point), (36, 36))


def test_three_band_model_chern_sets():
    """A three-band model with two gaps (QWZ ⊕ flat band far away): C of {0}, {0,1} and {0,1,2}."""
    qwz = QiWuZhang(u=1.2)

    def h(k):
        return jnp.zeros((3, 3), complex).at[:2, :2].set(qwz.hamiltonian(k)).at[2, 2].set(10.0)

    model = from_function(h, dim=2, lattice=np.eye(2))
    mesh = bz.monkhorst_pack(model, (30, 30))
    for bands, expected in [([0], -1.0), ([0, 1], 0.0), ([1], 1.0), ([2], 0.0), ([0, 1, 2], 0.0)]:
        for method in ("kubo", "plaquette"):
            c = float(chern_number(model, mesh, bands, method=method))
            assert abs(c - expected) < 1e-4, (bands, method, c)


def test_time_reversal_symmetric_kubo_chern_vanishes():
    """Ω(−k) = −Ω(k) with time reversal: the Kubo sum cancels pairwise on the symmetric mesh."""
    for model in (Haldane(phi=0.0, delta=0.3), RashbaLattice(alpha=0.7)):
        mesh = bz.monkhorst_pack(model, (20, 20))
        assert abs(float(chern_number_kubo(model, mesh, [0]))) < 1e-12


def test_massive_dirac_half_integer_chern():
    """(1/2π)∫_{|k|<K} Ω_− d²k = ξ/2 [sign(m) − m/(m² + v²K²)^{1/2}] (exact for the cutoff disk)."""
    for v, m, xi in [(1.0, 0.3, 1), (1.7, -0.2, 1), (0.8, 0.5, -1)]:
        model = MassiveDirac(v=v, m=m, valley=xi, cutoff=8.0)
        mesh = bz.continuum_mesh(model, n=(200, 8))  # Ω is isotropic: few angles suffice
        total = integrate(
            lambda k, model=model: band_geometry(model, k).berry_curvature[0, 2], mesh
        )
        c = 2 * np.pi * float(total)  # ∫d²k/(2π)² → (1/2π)∫d²k
        expected = xi / 2 * (np.sign(m) - m / np.sqrt(m**2 + v**2 * 8.0**2))
        assert_close(c, expected, rtol=1e-10)


def test_chern_number_errors():
    model = QiWuZhang()
    mesh = bz.monkhorst_pack(model, (8, 8))
    with pytest.raises(ValueError, match="unknown Chern method"):
        chern_number(model, mesh, [0], method="wilson")
    with pytest.raises(ValueError, match="band indices"):
        chern_number(model, mesh, [2])
    with pytest.raises(ValueError, match="band indices"):
        chern_number(model, mesh, [])
    with pytest.raises(ValueError, match="unshifted"):
        chern_number(model, bz.monkhorst_pack(model, (8, 8), shift=0.5), [0], method="plaquette")
    cont = Rashba()
    with pytest.raises(ValueError, match="2D lattice model"):
        chern_number(cont, bz.continuum_mesh(cont, n=(4, 4)), [0])
