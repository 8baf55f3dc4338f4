"""Intrinsic kinetic orbital magnetization α = e Σ∫ F_n f0 (seed eqs. 9-10), checked against
independent open-boundary calculations.

Second routes used here (none shares code with qgeo_jax._magnetoelectric):

* static ribbons: a strip of the same lattice model, open along n̂ (width W = L cells), periodic
  along ŝ (Bloch phase k along ŝ; n̂ = ŝ × ẑ), with the potential +e E ρ (ρ = r·n̂, e = 1). Its
  orbital moment per length is M_z W = −e Σ_occ ⟨ψ|ρ v_s|ψ⟩ (the two halves of −(e/2)⟨r × v⟩ are
  equal in a strip), differentiated exactly in E by first-order perturbation theory on the strip
  eigenstates: dM_z/dE = −(1/W) ∫dk/2π Σ_{ab} (f_a − f_b) Re(O_ab ρ_ba)/(E_a − E_b),
  O = ½{ρ − ρ_c, v_s}. Edges add b/W (+ exponentially small terms) for a gapped
  strip, so M∞ = 2 M(2L) − M(L).
* driven ribbons: the same strip driven along its axis, E_s = −∂_t A (k_s(t) = k_s − eE t); the
  density matrix relaxes to the instantaneous equilibrium at rate 1/τ. Its τ⁰ (intrinsic) part is
  the sum over strip eigenpairs with |E_a − E_b| well above 1/τ:
  dM_z/dE = −(1/W) ∫dk/2π Σ (f_a − f_b) Re(i O_ab v_ba)/(E_a − E_b)²; pairs inside a degenerate
  set give the τ-linear (extrinsic) part.
* finite flakes (open in both directions, helper A's qgeo_jax._realspace), ∂M/∂E by jax.jacfwd.
* a closed form for the tilted massive Dirac model (derived in test_tilted_dirac_closed_form).
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import assert_close

import qgeo_jax  # noqa: F401  (x64 policy)
from qgeo_jax._bz import continuum_mesh, monkhorst_pack
from qgeo_jax._geometry import band_geometry, quantum_metric
from qgeo_jax._linalg import denominators
from qgeo_jax._magnetoelectric import (
    interband_berry_connection,
    interband_orbital_moment,
    intrinsic_orbital_integrand,
    magnetoelectric_interband,
    magnetoelectric_tensor,
    orbital_magnetoelectric_tensor,
    quantum_metric_derivative,
)
from qgeo_jax._spectrum import Spectrum, spectrum
from qgeo_jax.models import PAULI, MassiveDirac, QiWuZhang, TightBinding, from_function

S0 = np.eye(2)


# --------------------------------------------------------------------------------------------------
# models
# --------------------------------------------------------------------------------------------------
def _h_two_band(k, p):
    """Qi–Wu–Zhang plus inversion-breaking terms (b sin kx σz, tp sin kx σ0), trivial for u = 2.6."""
    sx, sy = jnp.sin(k)
    cx, cy = jnp.cos(k)
    mass = p["u"] + cx + cy + p["b"] * sx
    return sx * PAULI[0] + sy * PAULI[1] + mass * PAULI[2] + p["tp"] * sx * S0


def two_band(u=2.6, b=0.4, tp=0.3):
    return from_function(_h_two_band, dict(u=u, b=b, tp=tp), dim=2, lattice=np.eye(2), positions=np.zeros((2, 2)))


def three_band(phase=1.0):
    """Three orbitals displaced inside a square cell; complex hoppings break time reversal
    (``phase=0`` keeps all hoppings real: time-reversal symmetric)."""
    c = lambda a, ph: a * np.exp(1j * ph * phase)
    hops = [
        (c(0.4, 0.7), 0, 1, (0, 0)), (c(0.35, -0.4), 1, 2, (0, 0)), (c(0.3, 1.1), 2, 0, (0, 0)),
        (0.25, 0, 0, (1, 0)), (c(0.2, 0.3), 0, 0, (0, 1)), (-0.3, 1, 1, (1, 0)), (c(0.15, np.pi / 2), 1, 1, (0, 1)),
        (0.2, 2, 2, (0, 1)), (c(0.1, 0.5), 2, 2, (1, 0)),
        (c(0.3, 0.9), 0, 1, (1, 0)), (c(0.25, -1.3), 1, 2, (0, 1)), (c(0.2, 0.2), 2, 0, (1, 1)),
    ]
    return TightBinding(np.eye(2), [[0, 0], [0.5, 0.1], [0.2, 0.6]], [-2.0, 0.0, 2.2], hops)


# Three-band gaps: bands span [-2.94, -1.55], [-0.54, 0.87], [1.68, 2.95].
MU_GAP1, MU_GAP2 = -1.05, 1.28

# PT-symmetric four-band models: H = e0 + Σ_a d_a Γ_a with the five PT-even Γ of PT = τ_z iσ_y K.
GAMMA = np.array([np.kron(PAULI[2], S0), np.kron(PAULI[1], S0)] + [np.kron(PAULI[0], s) for s in PAULI])


def _d_pt(kx, ky, m):
    return jnp.stack([
        m + jnp.cos(kx) + 0.5 * jnp.cos(ky) + 0.2 * jnp.sin(kx),
        0.8 * jnp.sin(kx) + 0.3 * jnp.sin(ky) + 0.1 * jnp.cos(kx + ky),
        0.6 * jnp.sin(ky) + 0.2 * jnp.cos(kx),
        0.4 * jnp.sin(kx + ky) + 0.15,
        0.3 * jnp.cos(kx - ky) + 0.2 * jnp.sin(kx),
    ])


def _h_pt(k, p):
    kx, ky = k[0], k[1]
    e0 = p["t"] * (0.5 * jnp.cos(kx) + 0.3 * jnp.sin(ky) + 0.2 * jnp.cos(kx - ky))
    h = jnp.einsum("a,aij->ij", _d_pt(kx, ky, p["m"]), GAMMA) + e0 * jnp.eye(4)
    # ``breaking`` adds τ_z σ_z (PT-odd): it lifts the Kramers degeneracy.
    return h + p["breaking"] * jnp.asarray(np.kron(PAULI[2], PAULI[2]))


def pt_model(m=1.8, t=0.5, breaking=0.0):
    return from_function(_h_pt, dict(m=m, t=t, breaking=breaking), dim=2, lattice=np.eye(2), positions=np.zeros((4, 2)))


MU_PT_GAP = -0.104  # between the Kramers pairs [-3.05, -0.49] and [0.28, 3.77]


def _h_flat(k, p):
    """Two bands E = e0(ky) ± c that do not disperse along kx; generic eigenvectors, T broken."""
    kx, ky = k[0], k[1]
    d = jnp.stack([
        jnp.sin(kx) + 0.4 * jnp.cos(ky) + 0.2 * jnp.sin(kx + ky),
        jnp.sin(ky) + 0.3 * jnp.cos(kx) + 0.25,
        3.2 + jnp.cos(kx) + jnp.cos(ky) + 0.3 * jnp.sin(kx) + 0.2 * jnp.cos(kx - ky),
    ])
    e0 = p["t"] * (-jnp.cos(ky) + 0.3 * jnp.sin(ky) + 0.1 * jnp.cos(2 * ky))
    return jnp.einsum("a,aij->ij", d / jnp.linalg.norm(d), jnp.asarray(PAULI)) + e0 * S0


def flat_metal(t=0.6):
    return from_function(_h_flat, dict(t=t), dim=2, lattice=np.eye(2), positions=np.zeros((2, 2)))


# --------------------------------------------------------------------------------------------------
# independent open-boundary machinery (numpy)
# --------------------------------------------------------------------------------------------------
def _hoppings(model, n=9, tol=1e-11):
    """t_ij(R) by FFT of the cell-gauge Bloch Hamiltonian on an n×n grid (square lattice only)."""
    tau = np.asarray(model.positions())
    g = np.arange(n) / n * 2 * np.pi
    kk = np.stack(np.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2)
    hk = np.asarray(jax.vmap(model.hamiltonian)(jnp.asarray(kk)))
    v = np.exp(1j * kk @ tau.T)  # (nk, norb)
    hcell = v[:, :, None] * hk * v.conj()[:, None, :]
    tr = np.fft.fftn(hcell.reshape(n, n, *hk.shape[1:]), axes=(0, 1)).reshape(n * n, *hk.shape[1:]) / n**2
    idx = np.stack(np.meshgrid(np.arange(n), np.arange(n), indexing="ij"), -1).reshape(-1, 2)
    R = np.where(idx > (n - 1) // 2, idx - n, idx)
    keep = np.abs(tr).max(axis=(1, 2)) > tol
    # the table must rebuild H(k) (long-range hoppings need a larger grid)
    k0 = np.array([0.37, -1.21])
    rebuilt = np.einsum("r,rij->ij", np.exp(1j * R[keep] @ k0), tr[keep])
    vk = np.exp(1j * tau @ k0)
    assert np.abs(vk[:, None] * np.asarray(model.hamiltonian(jnp.asarray(k0))) * vk.conj() - rebuilt).max() < 1e-9
    return R[keep], tr[keep], tau


class Strip:
    """Strip of a square-lattice model: open along axis ``open_axis`` (L cells), periodic along the other."""

    def __init__(self, model, L, open_axis, grid=9):
        R, t, tau = _hoppings(model, grid)
        per = 1 - open_axis
        self.shat = np.eye(2)[per]
        self.nhat = np.array([self.shat[1], -self.shat[0]])  # ŝ × ẑ, so that (n̂ × ŝ)_z = +1
        n = t.shape[-1]
        pos = (np.arange(L)[:, None, None] * np.eye(2)[open_axis] + tau[None]).reshape(-1, 2)
        self.rho = pos @ self.nhat
        self.rho = self.rho - self.rho.mean()
        self.width = float(L)
        disp = (R[:, None, None, :] + tau[None, None, :, :] - tau[None, :, None, :]) @ self.shat  # (nR, n, n)
        self.blocks = []
        for r1 in np.unique(R[:, open_axis]):
            if abs(r1) >= L:
                continue
            sel = R[:, open_axis] == r1
            self.blocks.append((np.eye(L, k=int(r1)), t[sel], disp[sel]))

    def hamiltonian(self, k):
        """Strip H(k) and v_s(k) = ∂H/∂k (positions gauge along ŝ)."""
        h = v = 0.0
        for shift, t, disp in self.blocks:
            ph = t * np.exp(1j * k * disp)
            h = h + np.kron(shift, ph.sum(0))
            v = v + np.kron(shift, (1j * disp * ph).sum(0))
        return 0.5 * (h + h.conj().T), 0.5 * (v + v.conj().T)


def _fermi(e, mu, temperature):
    if temperature == 0:
        return (e < mu).astype(float)
    return 0.5 * (1 - np.tanh((e - mu) / (2 * temperature)))


def strip_response(model, L, *, open_axis, mu, temperature=0.0, nk=48, grid=9, gap=1e-3):
    """(static dM_z/dE along n̂, intrinsic driven dM_z/dE along ŝ) of one strip, model units."""
    strip = Strip(model, L, open_axis, grid)
    static = driven = 0.0
    for k in (np.arange(nk) + 0.5) / nk * 2 * np.pi:
        h, v = strip.hamiltonian(k)
        e, u = np.linalg.eigh(h)
        f = _fermi(e, mu, temperature)
        rho_b = u.conj().T @ (strip.rho[:, None] * u)
        v_b = u.conj().T @ v @ u
        o_b = 0.5 * (rho_b @ v_b + v_b @ rho_b)
        de = e[:, None] - e[None, :]
        keep = np.abs(de) > gap
        inv = np.where(keep, 1 / np.where(keep, de, 1), 0)
        df = f[:, None] - f[None, :]
        static += np.sum(df * np.real(o_b * rho_b.T) * inv)
        driven += np.sum(df * np.real(1j * o_b * v_b.T) * inv**2)
    return np.array([static, driven]) * (-1 / (nk * strip.width))


def strip_extrapolated(model, L, **kw):
    """M∞ = 2 M(2L) − M(L) (edges contribute b/L)."""
    return 2 * strip_response(model, 2 * L, **kw) - strip_response(model, L, **kw)


def alpha_z(model, shape, mu, temperature=0.0, **kw):
    """(α^{zx}, α^{zy}) of the package."""
    mesh = monkhorst_pack(model, shape)
    return np.asarray(orbital_magnetoelectric_tensor(model, mesh, mu=mu, temperature=temperature, **kw))[..., 2, :2]


def printed_eq10(model, shape, mu):
    """Seed eq. (10) first term exactly as printed: −2 Re Σ m^i_{nm} A^j_{mn}/(E_n − E_m)."""

    def per_k(k):
        spec = spectrum(model, k)
        inv1, _, _ = denominators(spec.energies, 1e-8)
        mm, a = interband_orbital_moment(spec), interband_berry_connection(spec)
        f = -2 * jnp.real(jnp.einsum("inm,jmn,nm->nij", mm, a, inv1))
        return jnp.einsum("n,nij->ij", (spec.energies < mu).astype(float), f)

    k, w = monkhorst_pack(model, shape).all_points()
    return np.asarray(jnp.tensordot(w, jax.vmap(per_k)(k), axes=(0, 0)))[2, :2]


# --------------------------------------------------------------------------------------------------
# kernels
# --------------------------------------------------------------------------------------------------
def test_kernels_consistent_with_geometry():
    """m_nn = m_n (seed eq. 4), Re Σ_m A_nm A_mn = g_n, and A_mn = ⟨m|i∂n⟩ by finite differences."""
    model = three_band()
    k = jnp.array([0.3, -1.1])
    spec = spectrum(model, k)
    mm = interband_orbital_moment(spec)
    a = interband_berry_connection(spec)
    geo = band_geometry(model, k)
    assert_close(jnp.real(jnp.diagonal(mm, axis1=1, axis2=2)).T, geo.orbital_moment, rtol=1e-12, atol=1e-14)
    assert_close(jnp.imag(jnp.diagonal(mm, axis1=1, axis2=2)), 0.0, atol=1e-14)
    g = jnp.real(jnp.einsum("inm,jmn->nij", a, a))
    assert_close(g, quantum_metric(spec), rtol=1e-12, atol=1e-14)
    # ⟨m|i∂_x n⟩ with a smooth gauge: fix the phase of each |n(k ± h)⟩ against |n(k)⟩.
    h = 1e-5
    u0 = spec.vectors
    u = [np.asarray(spectrum(model, k + s * jnp.array([h, 0.0])).vectors) for s in (1, -1)]
    u = [x * np.exp(-1j * np.angle(np.sum(np.conj(u0) * x, axis=0))) for x in u]
    du = (u[0] - u[1]) / (2 * h)
    a_fd = 1j * np.conj(np.asarray(u0)).T @ du
    off = ~np.eye(3, dtype=bool)
    assert_close(np.asarray(a[0])[off], a_fd[off], rtol=1e-6, atol=1e-9)


def test_metric_derivative_autodiff_vs_finite_difference():
    model = three_band()
    k = jnp.array([0.7, 0.2])
    dg = quantum_metric_derivative(model, k)
    h = 1e-5
    for l in range(2):
        dk = jnp.zeros(2).at[l].set(h)
        fd = (quantum_metric(spectrum(model, k + dk)) - quantum_metric(spectrum(model, k - dk))) / (2 * h)
        assert_close(dg[:, l], fd, rtol=1e-6, atol=1e-9)
    assert_close(dg[:, 2], 0.0, atol=0.0)


# --------------------------------------------------------------------------------------------------
# closed form
# --------------------------------------------------------------------------------------------------
def test_two_band_closed_form_band_resolved():
    r"""Any two-band H = ε0 + d·σ: v_+ + v_- = 2∇ε0, so m_{mn} = ∇ε0 × 𝒜_{mn} (m ≠ n) and
    F_n^{ij} = 2 ε_{iab} ∂_a ε0 g_n^{bj}/(E_n − E_m). It vanishes when ε0 is constant."""
    model = two_band(tp=0.3)
    for k in (jnp.array([0.3, -1.1]), jnp.array([2.0, 0.7])):
        spec = spectrum(model, k)
        g = quantum_metric(spec)
        grad_e0 = jnp.array([0.3 * jnp.cos(k[0]), 0.0, 0.0])
        eps = np.zeros((3, 3, 3))
        for i, j, l in ((0, 1, 2), (1, 2, 0), (2, 0, 1)):
            eps[i, j, l], eps[i, l, j] = 1.0, -1.0
        de = spec.energies - spec.energies[::-1]  # E_n − E_m
        expected = 2 * jnp.einsum("iab,a,nbj->nij", eps, grad_e0, g) / de[:, None, None]
        assert_close(magnetoelectric_interband(spec), expected, rtol=1e-10, atol=1e-15)
    flat = spectrum(two_band(tp=0.0), jnp.array([0.3, -1.1]))
    assert np.abs(np.asarray(magnetoelectric_interband(flat))).max() < 1e-15


@pytest.mark.parametrize("valley", [1, -1])
def test_tilted_dirac_closed_form(valley):
    r"""Tilted massive Dirac insulator, μ in the gap (only the lower band, T = 0).

    With two bands m_{+-} = (e/2)(v_+ + v_-) × A_{+-} = e t × A_{+-} (the tilt t is the only part
    of v_+ + v_-), so F_-^{ij} = 2 ε_{iab} t_a g^{bj}/(E_- − E_+) = −ε_{iab} t_a g^{bj}/d with the
    Dirac metric g^{ij} = v²(d² δ_ij − v² k_i k_j)/(4d⁴). On the disk |k| < K:
    α^{zx} = t_y I, α^{zy} = −t_x I, I = ∫d²k/(2π)² g^{xx}/d = [4/(3|m|) − 1/D − m²/(3D³)]/(16π),
    D = (v²K² + m²)^{1/2}; I → 1/(12π|m|) for K → ∞, independent of v and of the valley.
    """
    v, m, tilt, kmax = 1.3, 0.4, (0.25, -0.15), 30.0
    model = MassiveDirac(v=v, m=m, tilt=tilt, valley=valley)
    mesh = continuum_mesh(model, k_max=kmax, n=(600, 16))
    alpha = orbital_magnetoelectric_tensor(model, mesh, mu=0.0)
    D = np.sqrt(v**2 * kmax**2 + m**2)
    integral = (4 / (3 * abs(m)) - 1 / D - m**2 / (3 * D**3)) / (16 * np.pi)
    assert_close(alpha[2, :2], [tilt[1] * integral, -tilt[0] * integral], rtol=1e-6)
    assert_close(alpha[:2], 0.0, atol=1e-15)
    assert_close(alpha[:, 2], 0.0, atol=1e-15)


# --------------------------------------------------------------------------------------------------
# insulators against open boundaries
# --------------------------------------------------------------------------------------------------
def test_two_band_insulator_matches_ribbon_and_printed_sign_is_reversed():
    model = two_band()
    bulk = alpha_z(model, (48, 48), 0.0)
    assert abs(bulk[1]) > 1e-3  # α^{zy} ≠ 0 (the model keeps α^{zx} = 0)
    for open_axis in (0, 1):
        static, driven = strip_extrapolated(model, 24, open_axis=open_axis, mu=0.0)
        strip = Strip(model, 2, open_axis)
        # the static strip measures α·n̂, the driven strip α·ŝ
        assert_close(static, bulk @ strip.nhat, rtol=1e-6, atol=1e-11)
        assert_close(driven, bulk @ strip.shat, rtol=1e-6, atol=1e-11)
    # eq. (10) as printed has the opposite sign for two bands
    assert_close(printed_eq10(model, (48, 48), 0.0), -bulk, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("mu", [MU_GAP1, MU_GAP2])
def test_three_band_displaced_orbitals_match_ribbon(mu):
    """One or two occupied bands; orbitals displaced in the cell (positions inside the Bloch phases)."""
    model = three_band()
    bulk = alpha_z(model, (48, 48), mu)
    static, driven = strip_extrapolated(model, 10, open_axis=0, mu=mu)
    assert_close([static, driven], bulk, rtol=1e-7, atol=1e-11)
    # eq. (10) as printed fails beyond two bands even with its sign flipped: the index order of
    # the interband moment matters (2-40 % here).
    printed = -printed_eq10(model, (48, 48), mu)
    assert np.max(np.abs(printed - bulk) / np.abs(bulk)) > 0.05


def test_pt_symmetric_insulator_matches_ribbon():
    """Kramers-degenerate bands: degenerate pairs are masked and averaged; still exact."""
    model = pt_model()
    bulk = alpha_z(model, (48, 48), MU_PT_GAP)
    assert np.all(np.isfinite(bulk)) and np.abs(bulk).min() > 1e-3
    static, driven = strip_extrapolated(model, 20, open_axis=0, mu=MU_PT_GAP)
    assert_close([static, driven], bulk, rtol=5e-6, atol=1e-11)


def test_finite_flake_default():
    """A finite flake (open in both directions) of the three-band model: ∂M/∂E by jax.jacfwd."""
    rs = pytest.importorskip("qgeo_jax._realspace")
    model = three_band()
    bulk = alpha_z(model, (48, 48), MU_GAP1)
    sizes, values = (8, 12, 16), []
    for L in sizes:
        flake = rs.build_flake(model, (L, L))
        dm = jax.jacfwd(lambda e: rs.flake_orbital_magnetization(flake, MU_GAP1, field=e)[2])(jnp.zeros(2))
        values.append(np.asarray(dm))
    # M(L) = M∞ + b/L + c/L² (edges, corners)
    design = np.array([[1, 1 / L, 1 / L**2] for L in sizes])
    fit = np.linalg.solve(design, np.array(values))[0]
    assert_close(fit, bulk, rtol=1e-6)


# --------------------------------------------------------------------------------------------------
# metals
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mu", [-1.0, 0.7])
def test_metal_matches_driven_ribbon_and_rejects_metric_term(mu):
    """Metal whose bands do not disperse across the strip (E = e0(ky) ± c), T broken.

    Strip eigenpairs then split cleanly into degenerate sets (the τ-linear, extrinsic part) and
    interband pairs (the τ⁰, intrinsic part). The latter equals e Σ∫ F_n f0 with F_n as
    implemented; the metric term of seed eq. (10), with either sign, does not fit.
    """
    temperature = 0.1
    model = flat_metal()
    mesh = monkhorst_pack(model, (24, 160))
    bulk = np.asarray(orbital_magnetoelectric_tensor(model, mesh, mu=mu, temperature=temperature))[2, 1]
    with_g = np.asarray(
        orbital_magnetoelectric_tensor(model, mesh, mu=mu, temperature=temperature, metric_term="fermi_surface")
    )[2, 1]
    kw = dict(open_axis=0, mu=mu, temperature=temperature, nk=120, grid=33)
    ribbon = strip_extrapolated(model, 30, **kw)[1]
    assert_close(ribbon, bulk, rtol=1e-7)
    metric = with_g - bulk
    assert abs(metric) > 0.2 * abs(bulk)
    assert abs(ribbon - (bulk + metric)) > 20 * abs(ribbon - bulk)
    assert abs(ribbon - (bulk - metric)) > 20 * abs(ribbon - bulk)


def test_metric_term_two_routes_agree():
    """−(e/2)∫ f0 ε ∂g (autodiff) = +(e/2)∫ ε g v f0′ (by parts) on a periodic mesh, T > 0."""
    model = three_band()
    mesh = monkhorst_pack(model, (32, 32))
    mus = jnp.array([-2.2, -1.0, 0.3, 2.0])
    sea = orbital_magnetoelectric_tensor(model, mesh, mu=mus, temperature=0.15, metric_term="fermi_sea")
    surface = orbital_magnetoelectric_tensor(model, mesh, mu=mus, temperature=0.15, metric_term="fermi_surface")
    none = orbital_magnetoelectric_tensor(model, mesh, mu=mus, temperature=0.15)
    assert_close(sea, surface, rtol=1e-8, atol=1e-13)
    assert np.abs(np.asarray(sea - none)).max() > 1e-4  # the term is not trivially zero in a metal
    # in a gap at low T the metric term integrates to zero
    gap = [orbital_magnetoelectric_tensor(model, mesh, mu=MU_GAP1, temperature=1e-3, metric_term=t) for t in (None, "fermi_sea")]
    assert_close(gap[1], gap[0], rtol=1e-9, atol=1e-14)


# --------------------------------------------------------------------------------------------------
# symmetry
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("metric_term", [None, "fermi_sea"])
def test_time_reversal_and_inversion_forbid_the_response(metric_term):
    """α is T-odd (E even, M odd) and P-odd (E odd, M even): it vanishes with either symmetry."""
    kw = dict(temperature=0.1, metric_term=metric_term)
    trs = three_band(phase=0.0)  # real hoppings: time-reversal symmetric (spinless)
    out = orbital_magnetoelectric_tensor(trs, monkhorst_pack(trs, (12, 12)), mu=jnp.array([MU_GAP1, 0.2]), **kw)
    assert np.abs(np.asarray(out)).max() < 1e-13
    qwz = QiWuZhang(u=1.2)  # inversion symmetric, P = σ_z
    out = orbital_magnetoelectric_tensor(qwz, monkhorst_pack(qwz, (12, 12)), mu=jnp.array([0.0, 1.0]), **kw)
    assert np.abs(np.asarray(out)).max() < 1e-13
    # breaking both gives a finite response
    out = orbital_magnetoelectric_tensor(three_band(), monkhorst_pack(trs, (12, 12)), mu=0.2, **kw)
    assert np.abs(np.asarray(out)).max() > 1e-4


def _rotated_spectrum(spec, rng, pairs):
    """The same spectrum in another gauge: random U(2) inside each degenerate pair."""
    n = spec.energies.shape[0]
    rot = np.eye(n, dtype=complex)
    for a, b in pairs:
        x = rng.normal(size=(2, 2)) + 1j * rng.normal(size=(2, 2))
        q, _ = np.linalg.qr(x)
        rot[np.ix_([a, b], [a, b])] = q
    rot = jnp.asarray(rot)
    vel = jnp.conj(rot.T)[None] @ spec.velocity @ rot[None]
    return Spectrum(energies=spec.energies, vectors=spec.vectors @ rot, velocity=vel, spin=None)


def test_pt_symmetric_gauge_invariant_and_continuous(rng):
    """Kramers pairs: F summed over each pair is gauge invariant and finite; for an insulator α is
    the limit of a slightly PT-broken model.

    (In a metal, or at T > 0, the two limits differ by a Fermi-surface term (f_n − f_n̄)/(E_n − E_n̄):
    pairs split by less than ``degen_tol`` are treated as one degenerate set, i.e. as split by less
    than ħ/τ, where their interband coherence is not intrinsic.)
    """
    model = pt_model()
    k = jnp.array([0.4, -0.9])
    spec = spectrum(model, k)
    assert_close(spec.energies[0], spec.energies[1], atol=1e-12)
    f = magnetoelectric_interband(spec)
    for _ in range(3):
        g = magnetoelectric_interband(_rotated_spectrum(spec, rng, [(0, 1), (2, 3)]))
        assert_close(g[0] + g[1], f[0] + f[1], rtol=1e-10, atol=1e-14)
        assert_close(g[2] + g[3], f[2] + f[3], rtol=1e-10, atol=1e-14)
    assert np.all(np.isfinite(np.asarray(magnetoelectric_tensor(model, k, metric_term=True))))
    # (the split pairs' terms are large, O(1/splitting), and cancel only after k integration:
    # a 48² mesh and a splitting of 2e-4 keep round-off and the physical O(splitting) change < 3e-6)
    exact = alpha_z(model, (48, 48), MU_PT_GAP)
    assert np.abs(exact).min() > 1e-3
    assert_close(alpha_z(pt_model(breaking=1e-4), (48, 48), MU_PT_GAP), exact, rtol=3e-6)
    mesh = monkhorst_pack(model, (12, 12))
    out = orbital_magnetoelectric_tensor(model, mesh, mu=-1.0, temperature=0.1, metric_term="fermi_sea")
    assert np.all(np.isfinite(np.asarray(out))) and np.abs(np.asarray(out)).max() > 1e-4


# --------------------------------------------------------------------------------------------------
# gradients, shapes, errors
# --------------------------------------------------------------------------------------------------
def _with_param(model, name, value):
    # an array, not a Python float: a float leaf would be static under filter_jit (a recompile per value)
    return eqx.tree_at(lambda m: m.params[name], model, jnp.asarray(value, dtype=jnp.float64))


def test_gradient_with_respect_to_mass():
    """jax.grad of α^{zy} w.r.t. the mass u is finite and equals a central finite difference."""
    base = two_band()
    mesh = monkhorst_pack(base, (8, 8))
    alpha_zy = lambda u: orbital_magnetoelectric_tensor(_with_param(base, "u", u), mesh, mu=0.0, temperature=0.05)[2, 1]
    u0, h = 2.6, 1e-4
    grad = jax.grad(alpha_zy)(u0)
    assert np.isfinite(grad) and abs(grad) > 1e-5
    assert_close(grad, (alpha_zy(u0 + h) - alpha_zy(u0 - h)) / (2 * h), rtol=1e-6)


@pytest.mark.slow
def test_gradient_through_metric_term_and_kramers_degeneracies_slow():
    """Reverse mode over the autodiff metric term (reverse over forward over eigh), also with
    exact Kramers degeneracies: finite and equal to central finite differences."""
    cases = [(two_band(), "u", 2.6, 1.0), (pt_model(), "m", 1.8, -1.0)]
    for model, name, x0, mu in cases:
        mesh = monkhorst_pack(model, (4, 4))
        for metric_term in (None, "fermi_sea"):

            def alpha_zy(x):
                m = _with_param(model, name, x)
                return orbital_magnetoelectric_tensor(m, mesh, mu=mu, temperature=0.1, metric_term=metric_term)[2, 1]

            grad = jax.grad(alpha_zy)(x0)
            assert np.isfinite(grad)
            assert_close(grad, (alpha_zy(x0 + 1e-4) - alpha_zy(x0 - 1e-4)) / 2e-4, rtol=1e-5)


def test_integrand_shapes_and_mesh_sum():
    model = three_band()
    mesh = monkhorst_pack(model, (3, 3))
    mus = jnp.array([-1.0, 0.0, 1.0])
    temps = jnp.full(3, 0.05)
    out = orbital_magnetoelectric_tensor(model, mesh, mu=mus, temperature=0.05)
    assert out.shape == (3, 3, 3)
    k, w = mesh.all_points()
    dens = jax.vmap(lambda q: intrinsic_orbital_integrand(model, q, mus, temps))(k)
    assert_close(out, jnp.tensordot(w, dens, axes=(0, 0)), rtol=1e-12, atol=1e-16)
    grid = orbital_magnetoelectric_tensor(model, mesh, mu=mus[:, None], temperature=jnp.array([0.05, 0.1]))
    assert grid.shape == (3, 2, 3, 3)
    assert_close(grid[:, 0], out, rtol=1e-12, atol=1e-16)


def test_errors():
    model = three_band()
    mesh = monkhorst_pack(model, (4, 4))
    with pytest.raises(ValueError, match="metric_term"):
        orbital_magnetoelectric_tensor(model, mesh, mu=0.0, metric_term="bogus")
    with pytest.raises(ValueError, match="mesh"):
        orbital_magnetoelectric_tensor(model, _mesh_1d(), mu=0.0)
    with pytest.raises(eqx.EquinoxRuntimeError, match="temperature > 0"):
        orbital_magnetoelectric_tensor(model, mesh, mu=0.0, temperature=0.0, metric_term="fermi_surface")


def _mesh_1d():
    chain = TightBinding([[1.0]], [[0.0], [0.5]], [0.5, -0.5], [(1.0, 0, 1, (0,)), (0.3, 1, 0, (1,))])
    return monkhorst_pack(chain, (8,))


# --------------------------------------------------------------------------------------------------
# slow: larger open-boundary extrapolations
# --------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_pt_metal_flat_bands_matches_driven_ribbon_slow():
    """PT-symmetric four-band metal with E = e0(ky) ± c (no extrinsic part at all by PT)."""

    def h(k, p):
        d = _d_pt(k[0], k[1], 3.5)
        e0 = p["t"] * (-jnp.cos(k[1]) + 0.3 * jnp.sin(k[1]))
        return jnp.einsum("a,aij->ij", d / jnp.linalg.norm(d), GAMMA) + e0 * jnp.eye(4)

    model = from_function(h, dict(t=0.6), dim=2, lattice=np.eye(2), positions=np.zeros((4, 2)))
    for mu in (-1.0, -0.6, 1.0):
        bulk = alpha_z(model, (32, 200), mu, 0.1)[1]
        ribbon = strip_extrapolated(model, 40, open_axis=0, mu=mu, temperature=0.1, nk=200, grid=33)[1]
        assert_close(ribbon, bulk, rtol=5e-3)


@pytest.mark.slow
def test_finite_flake_two_band_slow():
    rs = pytest.importorskip("qgeo_jax._realspace")
    model = two_band()
    bulk = alpha_z(model, (64, 64), 0.0)
    sizes, values = (12, 18, 24, 30), []
    for L in sizes:
        flake = rs.build_flake(model, (L, L))
        dm = jax.jacfwd(lambda e: rs.flake_orbital_magnetization(flake, 0.0, field=e)[2])(jnp.zeros(2))
        values.append(np.asarray(dm))
    design = np.array([[1, 1 / L, 1 / L**2, 1 / L**3] for L in sizes])
    fit = np.linalg.solve(design, np.array(values))[0]
    assert_close(fit, bulk, rtol=1e-3, atol=1e-6)
