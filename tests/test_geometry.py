"""Band-resolved geometry at one k: closed forms and independent second routes.

Closed forms
------------
* Massive Dirac H = v(ξ k_x σ_x + k_y σ_y) + m σ_z + (t·k) σ_0, d = (v²k² + m²)^{1/2}:
  Ω_±^z = ∓ξ m v²/(2d³), m_±^z = −ξ m v²/(2d²) (so m_+ = e d Ω_+/ħ), the seed's results below its
  eq. (4) (massive Dirac: Shen, *Topological Insulators* (2017); Xiao, Yao, Niu, PRL 99, 236809
  (2007), doi:10.1103/PhysRevLett.99.236809). Quantum metric of both bands
  g_ij = ¼ ∂_i d̂·∂_j d̂, i.e. g_xx = v²(m² + v²k_y²)/(4d⁴), g_yy = v²(m² + v²k_x²)/(4d⁴),
  g_xy = −v⁴k_xk_y/(4d⁴) (Provost & Vallee, CMP 76, 289 (1980), doi:10.1007/BF02193559).
  The tilt t·k σ_0 leaves the eigenvectors, hence Ω, g and m, unchanged and shifts v_n by t.
* Any two-band H = d_0 + d·σ: Ω_± = ∓ d·(∂_x d × ∂_y d)/(2|d|³) and m_+ = m_− = |d| Ω_+
  (same derivation as the Dirac case; used for Haldane and Qi–Wu–Zhang at random k).

Second routes (no velocity matrices, no energy denominators)
-----------------------------------------------------------
* gauge-invariant finite differences of band projectors P_n(k):
  Q_n^{ij} = ⟨n|∂_iP_n (1 − P_n) ∂_jP_n|n⟩ = g_n^{ij} − (i/2)Ω_n^{ij}, and
  m_n^{ij} = Im ⟨n|∂_iP_n (H − E_n) ∂_jP_n|n⟩ (Xiao, Chang, Niu, RMP 82, 1959 (2010), eq. 3.21,
  doi:10.1103/RevModPhys.82.1959), for random N-band tight-binding and function models;
* the small-plaquette Berry phase Ω ≈ −arg Π⟨n(k_a)|n(k_{a+1})⟩ / h² (Wilson loop) and the fidelity
  1 − |⟨n(k − h/2)|n(k + h/2)⟩|² ≈ g(ĥ) h².
Also: Σ_n Ω_n = 0 over all bands at every k; jit vs eager and vmap vs a Python loop.
"""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import assert_close

from qgeo_jax._geometry import (
    band_geometry,
    berry_curvature_tensor,
    orbital_moment_tensor,
    quantum_geometric_tensor,
    quantum_metric,
    tensor_to_vector,
)
from qgeo_jax._spectrum import spectrum
from qgeo_jax.models import (
    PAULI,
    Haldane,
    MassiveDirac,
    QiWuZhang,
    TightBinding,
    from_function,
)

# Relative accuracy demanded of closed forms in x64. The kernels are sums of a few products of
# O(1) numbers divided by (E_n − E_m)^p, so round-off is ~1e-15 × (condition of eigh); 1e-10 leaves
# five orders of margin and still catches any wrong factor or sign.
RTOL = 1e-10


def _vgeom(model, ks):
    return jax.jit(jax.vmap(lambda k: band_geometry(model, k)))(jnp.asarray(ks))


def _rel_err(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return np.max(np.abs(a - b)) / np.max(np.abs(b))


# --- massive Dirac -------------------------------------------------------------------------------
def _dirac_closed_forms(v, m, xi, k):
    kx, ky = k[:, 0], k[:, 1]
    d = np.sqrt(v**2 * (kx**2 + ky**2) + m**2)
    omega_plus = -xi * m * v**2 / (2 * d**3)
    moment = -xi * m * v**2 / (2 * d**2)
    gxx = v**2 * (m**2 + v**2 * ky**2) / (4 * d**4)
    gyy = v**2 * (m**2 + v**2 * kx**2) / (4 * d**4)
    gxy = -(v**4) * kx * ky / (4 * d**4)
    return d, omega_plus, moment, gxx, gyy, gxy


@pytest.mark.parametrize("valley", [1, -1])
@pytest.mark.parametrize("tilt", [(0.0, 0.0), (0.3, -0.45)])
@pytest.mark.parametrize("v, m", [(1.0, 0.1), (2.3, -0.7)])
def test_massive_dirac_closed_forms(rng, valley, tilt, v, m):
    ks = rng.uniform(-3, 3, size=(64, 2))
    ks[0] = 0.0  # the band edge, where Ω and m are largest
    model = MassiveDirac(v=v, m=m, tilt=tilt, valley=valley)
    geo = _vgeom(model, ks)
    d, omega_plus, moment, gxx, gyy, gxy = _dirac_closed_forms(v, m, valley, ks)
    t = np.asarray(tilt)
    assert_close(geo.energies, np.stack([ks @ t - d, ks @ t + d], -1), rtol=RTOL, atol=1e-14)
    # Ω^z (the seed's Ω_+^z = −m v²/(2d³) for ξ = +1); the lower band has the opposite sign.
    assert_close(geo.berry_curvature[:, 1, 2], omega_plus, rtol=RTOL, what="Ω_+^z")
    assert_close(geo.berry_curvature[:, 0, 2], -omega_plus, rtol=RTOL, what="Ω_-^z")
    # m_+^z = e d Ω_+^z / ħ (seed); the same moment for both bands of a two-band model.
    assert_close(geo.orbital_moment[:, 1, 2], moment, rtol=RTOL, what="m_+^z")
    assert_close(geo.orbital_moment[:, 1, 2], d * omega_plus, rtol=RTOL, what="m_+ = d Ω_+")
    assert_close(geo.orbital_moment[:, 0, 2], moment, rtol=RTOL, what="m_-^z")
    for band in (0, 1):
        g = geo.quantum_metric[:, band]
        assert_close(g[:, 0, 0], gxx, rtol=RTOL, what="g_xx")
        assert_close(g[:, 1, 1], gyy, rtol=RTOL, what="g_yy")
        assert_close(g[:, 0, 1], gxy, rtol=RTOL, atol=RTOL * np.max(gxx), what="g_xy")
        assert_close(g[:, 1, 0], g[:, 0, 1], rtol=0, atol=1e-15, what="g symmetric")
        # 2D model: nothing along z, and only the z component of the pseudovectors.
        assert np.all(np.asarray(g[:, 2, :]) == 0) and np.all(np.asarray(g[:, :, 2]) == 0)
        assert np.all(np.asarray(geo.berry_curvature[:, band, :2]) == 0)
        assert np.all(np.asarray(geo.orbital_moment[:, band, :2]) == 0)
    # Group velocity: ∂_k E_± = t ± v² k/d (the tilt shifts velocities only).
    vel = t[None, :] + (v**2 * ks / d[:, None])
    assert_close(geo.velocity[:, 1, :2], vel, rtol=RTOL, atol=1e-14, what="v_+")
    assert_close(geo.velocity[:, 0, :2], 2 * t[None, :] - vel, rtol=RTOL, atol=1e-14, what="v_-")
    # QGT = g − (i/2) Ω and tensor ↔ vector normalisation X^z = ½ ε_{ijz} X^{ij} = X^{xy}.
    assert_close(
        geo.quantum_geometric_tensor.imag, -0.5 * geo.berry_curvature_tensor, rtol=0, atol=1e-15
    )
    assert_close(geo.berry_curvature_tensor[..., 0, 1], geo.berry_curvature[..., 2], rtol=1e-12)
    assert_close(geo.berry_curvature_tensor[..., 1, 0], -geo.berry_curvature[..., 2], rtol=1e-12)


def test_massive_dirac_tilt_changes_only_energies_and_velocity(rng):
    ks = rng.uniform(-2, 2, size=(32, 2))
    flat = _vgeom(MassiveDirac(v=1.3, m=0.4), ks)
    tilted = _vgeom(MassiveDirac(v=1.3, m=0.4, tilt=(0.7, -0.2)), ks)
    for name in ("berry_curvature", "quantum_metric", "orbital_moment"):
        assert_close(getattr(tilted, name), getattr(flat, name), rtol=1e-12, atol=1e-15, what=name)
    shift = np.array([0.7, -0.2, 0.0])
    assert_close(
        tilted.velocity - flat.velocity,
        np.broadcast_to(shift, flat.velocity.shape),
        rtol=0,
        atol=1e-13,
    )


def test_tensor_to_vector_levi_civita(rng):
    """X^k = ½ ε_{ijk} X^{ij}, checked against an explicit Levi-Civita sum."""
    x = rng.normal(size=(4, 3, 3))
    eps = np.zeros((3, 3, 3))
    for i, j, k in itertools.permutations(range(3)):
        eps[i, j, k] = np.linalg.det(np.eye(3)[[i, j, k]])
    assert_close(
        tensor_to_vector(jnp.asarray(x)), 0.5 * np.einsum("ijk,nij->nk", eps, x), rtol=1e-14
    )


# --- general two-band closed form: Haldane and Qi–Wu–Zhang ---------------------------------------
def _two_band_d(model, ks):
    """(d0, d, ∂_x d, ∂_y d) of a 2×2 H by Pauli projection; ∂d by 4th-order central differences
    (h = 1e-3, error ~h⁴ ≈ 1e-12 relative): an independent, velocity-free input to the closed
    form."""
    ham = jax.jit(jax.vmap(model.hamiltonian))

    def dvec(k):
        h = np.asarray(ham(jnp.asarray(k)))
        # d_a = tr(H σ_a)/2, d_0 = tr(H)/2
        return np.real(np.einsum("kij,aji->ka", h, PAULI)) / 2, np.real(
            np.trace(h, axis1=1, axis2=2)
        ) / 2

    d, d0 = dvec(ks)
    h = 1e-3
    grads = []
    for a in range(2):
        e = np.zeros(2)
        e[a] = h
        f = lambda s, e=e: dvec(ks + s * e)[0]
        grads.append((8 * (f(1) - f(-1)) - (f(2) - f(-2))) / (12 * h))
    return d0, d, grads[0], grads[1]


@pytest.mark.parametrize(
    "model",
    [
        Haldane(t1=-1.0, t2=0.15, phi=np.pi / 2, delta=0.2),
        Haldane(t1=0.8, t2=-0.3, phi=0.7, delta=-0.4),
        QiWuZhang(u=1.0),
        QiWuZhang(u=-2.7, t=0.6),
    ],
    ids=["haldane_a", "haldane_b", "qwz_a", "qwz_b"],
)
def test_two_band_closed_forms(rng, model):
    ks = rng.uniform(-np.pi, np.pi, size=(40, 2))
    geo = _vgeom(model, ks)
    d0, d, dxd, dyd = _two_band_d(model, ks)
    nd = np.linalg.norm(d, axis=-1)
    omega_plus = -np.einsum("ka,ka->k", d, np.cross(dxd, dyd)) / (2 * nd**3)
    assert_close(geo.energies, np.stack([d0 - nd, d0 + nd], -1), rtol=1e-12, atol=1e-13)
    # the finite-difference ∂d limits this comparison to ~1e-9; the kernels themselves are exact.
    assert_close(
        geo.berry_curvature[:, 1, 2], omega_plus, rtol=1e-8, atol=1e-9 * np.max(np.abs(omega_plus))
    )
    assert_close(
        geo.berry_curvature[:, 0, 2], -omega_plus, rtol=1e-8, atol=1e-9 * np.max(np.abs(omega_plus))
    )
    for band in (0, 1):
        assert_close(
            geo.orbital_moment[:, band, 2],
            nd * omega_plus,
            rtol=1e-8,
            atol=1e-9 * np.max(np.abs(nd * omega_plus)),
        )
    # g = ¼ ∂_i d̂·∂_j d̂ with ∂d̂ = ∂d/|d| − d (d·∂d)/|d|³
    dh = [
        g / nd[:, None] - d * np.einsum("ka,ka->k", d, g)[:, None] / nd[:, None] ** 3
        for g in (dxd, dyd)
    ]
    g_closed = 0.25 * np.stack(
        [[np.einsum("ka,ka->k", a, b) for b in dh] for a in dh], -1
    ).transpose(1, 0, 2)
    for band in (0, 1):
        assert_close(
            geo.quantum_metric[:, band, :2, :2], g_closed, rtol=1e-8, atol=1e-9 * np.max(g_closed)
        )


# --- random N-band models: sum rule and projector route ------------------------------------------
def random_tight_binding(rng, norb=5, dim=2, spin=False):
    """Random complex hoppings to the cell itself and its nearest neighbours, random positions."""
    positions = rng.uniform(0, 1, size=(norb, dim))
    onsite = rng.normal(size=norb)
    hops = []
    cells = [(0,) * dim] + [tuple(int(i == a) for i in range(dim)) for a in range(dim)]
    cells += [tuple(1 if i == 0 else -1 if i == 1 else 0 for i in range(dim))] if dim > 1 else []
    for R in cells:
        for i, j in itertools.product(range(norb), repeat=2):
            if R == (0,) * dim and j <= i:
                continue
            hops.append(((rng.normal() + 1j * rng.normal()) / np.sqrt(norb), i, j, R))
    lattice = (
        np.array([[1.0, 0.0], [0.3, 1.1]])
        if dim == 2
        else np.eye(dim) + 0.1 * rng.normal(size=(dim, dim))
    )
    spin_ops = None
    if spin:
        spin_ops = np.stack([np.kron(np.eye(norb // 2), s) for s in PAULI / 2])
    return TightBinding(lattice, positions, onsite, hops, spin=spin_ops)


def random_function_model(rng, norb=4):
    """H(k) = Σ_a (A_a cos k_a + B_a sin k_a) + C, random Hermitian A, B, C (from_function)."""

    def herm():
        x = rng.normal(size=(norb, norb)) + 1j * rng.normal(size=(norb, norb))
        return (x + x.conj().T) / 2

    params = {"A": np.stack([herm(), herm()]), "B": np.stack([herm(), herm()]), "C": herm()}

    def h(k, p):
        return (
            jnp.einsum("a,aij->ij", jnp.cos(k), p["A"])
            + jnp.einsum("a,aij->ij", jnp.sin(k), p["B"])
            + p["C"]
        )

    return from_function(h, params, dim=2, lattice=np.eye(2))


def test_berry_curvature_sums_to_zero_over_bands(rng):
    """Σ_n Ω_n(k) = 0 (the antisymmetric pair sum cancels) for every model, at every k."""
    models = [
        Haldane(),
        QiWuZhang(u=1.3),
        random_tight_binding(rng, norb=5),
        random_function_model(rng, norb=4),
        random_tight_binding(rng, norb=3, dim=3),
    ]
    for model in models:
        ks = rng.uniform(-np.pi, np.pi, size=(20, model.dim))
        geo = _vgeom(model, ks)
        total = np.sum(np.asarray(geo.berry_curvature), axis=1)
        scale = np.max(np.abs(np.asarray(geo.berry_curvature)))
        assert scale > 1e-3, "test needs non-zero curvature"
        assert np.max(np.abs(total)) < 1e-11 * scale, type(model).__name__
        # and the quantum metric is positive semi-definite band by band
        eig = np.linalg.eigvalsh(np.asarray(geo.quantum_metric))
        assert np.min(eig) > -1e-12 * np.max(eig)


def _projector_route(model, ks, h=1e-5):
    """QGT and orbital moment from central differences of band projectors (gauge invariant)."""
    ham = jax.jit(jax.vmap(model.hamiltonian))
    dim = model.dim

    def eig(k):
        return np.linalg.eigh(np.asarray(ham(jnp.asarray(k))))

    e0, u0 = eig(ks)
    proj = lambda u: np.einsum("kin,kjn->knij", u, u.conj())  # P_n = |n⟩⟨n|
    dP = []
    for a in range(dim):
        step = np.zeros(dim)
        step[a] = h
        dP.append((proj(eig(ks + step)[1]) - proj(eig(ks - step)[1])) / (2 * h))
    hmat = np.asarray(ham(jnp.asarray(ks)))
    n = u0.shape[-1]
    ket = np.transpose(u0, (0, 2, 1))  # [k, n, i]
    q = np.eye(n)[None, None] - proj(u0)
    res = np.zeros((len(ks), n, dim, dim), complex)
    mom = np.zeros((len(ks), n, dim, dim))
    hmE = hmat[:, None] - e0[:, :, None, None] * np.eye(n)[None, None]
    for i, j in itertools.product(range(dim), repeat=2):
        left = np.einsum("kni,knij->knj", ket.conj(), dP[i])  # ⟨n|∂_iP_n
        right = np.einsum("knij,knj->kni", dP[j], ket)  # ∂_jP_n|n⟩
        res[:, :, i, j] = np.einsum("kni,knij,knj->kn", left, q, right)
        mom[:, :, i, j] = np.imag(np.einsum("kni,knij,knj->kn", left, hmE, right))
    return res, mom


@pytest.mark.parametrize("kind", ["tight_binding", "function", "tight_binding_3d"])
def test_projector_route_random_models(rng, kind):
    model = {
        "tight_binding": lambda: random_tight_binding(rng, norb=5),
        "function": lambda: random_function_model(rng, norb=4),
        "tight_binding_3d": lambda: random_tight_binding(rng, norb=3, dim=3),
    }[kind]()
    dim = model.dim
    ks = rng.uniform(-np.pi, np.pi, size=(12, dim))
    qgt_fd, mom_fd = _projector_route(model, ks)
    geo = _vgeom(model, ks)
    # central differences: truncation ~h² ≈ 1e-10, cancellation ~1e-16/h ≈ 1e-11, both relative
    # to the scale; random models have small gaps at some k, so allow 1e-6 of the largest entry.
    qgt = np.asarray(geo.quantum_geometric_tensor)[..., :dim, :dim]
    assert _rel_err(qgt, qgt_fd) < 1e-6
    mom = np.asarray(geo.orbital_moment_tensor)[..., :dim, :dim]
    assert _rel_err(mom, mom_fd) < 1e-6
    # the individual kernels agree with band_geometry (no degeneracies here, so no averaging)
    kernels = jax.jit(
        jax.vmap(
            lambda k: [
                f(spectrum(model, k))
                for f in (
                    quantum_geometric_tensor,
                    berry_curvature_tensor,
                    quantum_metric,
                    orbital_moment_tensor,
                )
            ]
        )
    )
    qgt_k, omega_k, g_k, m_k = kernels(jnp.asarray(ks))
    assert_close(qgt_k, geo.quantum_geometric_tensor, rtol=1e-13, atol=1e-14)
    assert_close(omega_k, geo.berry_curvature_tensor, rtol=1e-13, atol=1e-14)
    assert_close(g_k, geo.quantum_metric, rtol=1e-13, atol=1e-14)
    assert_close(m_k, geo.orbital_moment_tensor, rtol=1e-13, atol=1e-14)


def test_wilson_loop_and_fidelity_route(rng):
    """Ω from the Berry phase of a small square loop, g from the fidelity, on Haldane (C ≠ 0)."""
    model = Haldane(t1=-1.0, t2=0.2, phi=1.1, delta=0.3)
    ham = jax.jit(jax.vmap(model.hamiltonian))
    ks = rng.uniform(-np.pi, np.pi, size=(16, 2))
    h = 1e-4
    corners = [(-1, -1), (1, -1), (1, 1), (-1, 1)]  # counter-clockwise
    states = [
        np.linalg.eigh(np.asarray(ham(jnp.asarray(ks + 0.5 * h * np.array(c)))))[1] for c in corners
    ]
    prod = np.ones((len(ks), 2), complex)
    for a in range(4):
        prod *= np.einsum("kin,kin->kn", states[a].conj(), states[(a + 1) % 4])
    omega_loop = -np.angle(prod) / h**2
    geo = _vgeom(model, ks)
    # loop error O(h²) relative ~1e-8, round-off 1e-16/h² ~1e-8
    assert _rel_err(geo.berry_curvature[..., 2], omega_loop) < 1e-6
    for direction in (np.array([1.0, 0.0]), np.array([0.6, 0.8])):
        h = 1e-4
        a = np.linalg.eigh(np.asarray(ham(jnp.asarray(ks - 0.5 * h * direction))))[1]
        b = np.linalg.eigh(np.asarray(ham(jnp.asarray(ks + 0.5 * h * direction))))[1]
        fid = (1 - np.abs(np.einsum("kin,kin->kn", a.conj(), b)) ** 2) / h**2
        g_dir = np.einsum(
            "i,knij,j->kn", direction, np.asarray(geo.quantum_metric)[..., :2, :2], direction
        )
        assert _rel_err(g_dir, fid) < 1e-5


# --- transformations of the computation ----------------------------------------------------------
def test_jit_vs_eager_and_vmap_vs_loop(rng):
    model = random_tight_binding(rng, norb=4, spin=True)
    ks = rng.uniform(-np.pi, np.pi, size=(2, 2))
    batched = _vgeom(model, ks)
    jitted_one = jax.jit(lambda k: band_geometry(model, k))
    for i, k in enumerate(ks):
        eager = band_geometry(model, jnp.asarray(k))
        jitted = jitted_one(jnp.asarray(k))
        for field in (
            "energies",
            "velocity",
            "berry_curvature",
            "quantum_metric",
            "orbital_moment",
            "spin",
        ):
            ref = np.asarray(getattr(eager, field))
            scale = np.max(np.abs(ref))
            assert_close(
                getattr(jitted, field), ref, rtol=0, atol=1e-12 * scale, what=f"jit {field}"
            )
            assert_close(
                np.asarray(getattr(batched, field))[i],
                ref,
                rtol=0,
                atol=1e-12 * scale,
                what=f"vmap {field}",
            )


def test_spectrum_rejects_wrong_k_shape():
    with pytest.raises(ValueError, match="2D model"):
        spectrum(QiWuZhang(), jnp.zeros(3))
