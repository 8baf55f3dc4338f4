r"""Kinetic spin magnetization δM^S = α E: extrinsic (Edelstein, seed eq. 6) and intrinsic (eq. 7).

Package conventions (DESIGN.md): ħ = e = 1, electron charge −e, field as potential energy +e E·r,
f1 = eτ(v·E)f0', S = σ/2, M^S = −g μ_B ⟨S⟩ (g = 2). Every closed form below is derived in the test
that uses it; the second routes are scipy quadratures of the same radial integrals, the Hall
conductivity (an exact identity for Rashba-type models) and finite flakes with the potential +E·r.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import assert_close
from scipy import integrate as sint
from scipy import optimize as sopt
from scipy.special import expit

import qgeo_jax as q
from qgeo_jax._kinetic import kinetic_magnetization, spin_berry_curvature
from qgeo_jax.models import PAULI

G = 2.0  # default g-factor
S0 = np.eye(2)


def alpha(model, mesh, **kw):
    return np.asarray(kinetic_magnetization(model, mesh, **kw))


# --- models built here ------------------------------------------------------------------------------
# Hamiltonians are module-level functions so that models differing only in parameter values share
# one compiled kernel (the function is a static field of the model).
def _wilson_rashba_h(k, p):
    s, c = jnp.sin(k), jnp.cos(k)
    mass = p["J"] + p["B"] * (2 - c[0] - c[1])
    return (
        -2 * p["t"] * (c[0] + c[1]) * jnp.eye(2)
        + p["a"] * (s[0] * PAULI[1] - s[1] * PAULI[0])
        + mass * PAULI[2]
        + p["Jx"] * PAULI[0]
    )


def wilson_rashba(t=0.05, a=1.0, J=0.5, B=0.3, Jx=0.2):
    """Spinful square lattice: Rashba + exchange J_z + Wilson mass B(2 − cos kx − cos ky) σ_z + J_x σ_x.

    Gapped (lower band ≤ −0.706 < upper band ≥ 0.308 for the defaults) and trivial (C = 0: the
    masses J, J + 2B, J + 4B at the four TRIM have one sign), so the flake has no in-gap edge states.
    """
    params = dict(t=t, a=a, J=J, B=B, Jx=Jx)
    return q.models.from_function(_wilson_rashba_h, params, dim=2, spin=PAULI / 2, lattice=np.eye(2))


_TZ = np.kron(PAULI[2], S0)
_PT_TERMS = dict(
    tp=np.kron(PAULI[0], S0),
    sx=np.kron(PAULI[2], PAULI[1]),  # multiplies λ sin kx
    sy=-np.kron(PAULI[2], PAULI[0]),  # multiplies λ sin ky
    mz=np.kron(PAULI[2], PAULI[2]),
    jx=np.kron(PAULI[2], PAULI[0]),
    d=np.kron(S0, PAULI[2]),
)


def _pt_bilayer_h(k, p):
    s, c = jnp.sin(k), jnp.cos(k)
    mass = p["J"] + p["B"] * (2 - c[0] - c[1])
    hk = (
        -2 * p["t"] * (c[0] + c[1]) * jnp.eye(4)
        + p["tp"] * _PT_TERMS["tp"]
        + p["lam"] * (s[0] * _PT_TERMS["sx"] + s[1] * _PT_TERMS["sy"])
        + mass * _PT_TERMS["mz"]
        + p["Jx"] * _PT_TERMS["jx"]
        + p["d"] * _PT_TERMS["d"]
    )
    return p["V"] @ hk @ jnp.conj(p["V"]).T


def pt_bilayer(delta=0.0, basis=None):
    """PT-symmetric antiferromagnetic bilayer (layer τ ⊗ spin σ), Kramers-degenerate bands.

    H = −2t(cos kx + cos ky) + t⊥ τ_x + λ τ_z(sin kx σ_y − sin ky σ_x) + τ_z[M(k) σ_z + J_x σ_x]
        + δ σ_z,  M(k) = J + B(2 − cos kx − cos ky).
    Layer inversion P = τ_x (k → −k) flips the staggered exchange τ_z σ, time reversal iσ_y K flips
    every σ term, so P and T are broken but PT holds for δ = 0 (then (PT)² = −1: doublets at every
    k). δ σ_z (uniform Zeeman) breaks PT. ``basis`` = V applies the unitary basis change H → V H V†,
    S → V S V†.
    """
    v = np.eye(4, dtype=complex) if basis is None else np.asarray(basis, complex)
    spin = np.array([v @ np.kron(S0, PAULI[i] / 2) @ v.conj().T for i in range(3)])
    params = dict(t=0.05, tp=0.3, lam=1.0, J=0.5, B=0.3, Jx=0.2, d=delta, V=jnp.asarray(v))
    return q.models.from_function(_pt_bilayer_h, params, dim=2, spin=spin, lattice=np.eye(2))


_BHZ_TERMS = dict(
    tz=np.kron(PAULI[2], S0),
    ax=np.kron(PAULI[0], PAULI[2]),
    ay=np.kron(PAULI[1], S0),
    spin=np.array([np.kron(S0, PAULI[i]) for i in range(3)]),
)


def _bhz_zeeman_h(k, p):
    s, c = jnp.sin(k), jnp.cos(k)
    mass = p["M"] - p["B"] * (2 - c[0] - c[1])
    sig = _BHZ_TERMS["spin"]
    return (
        -2 * p["t"] * (c[0] + c[1]) * jnp.eye(4)
        + mass * _BHZ_TERMS["tz"]
        + p["A"] * (s[0] * _BHZ_TERMS["ax"] + s[1] * _BHZ_TERMS["ay"])
        + jnp.einsum("a,aij->ij", p["J"], sig)
        + p["r"] * (s[0] * sig[1] - s[1] * sig[0])
    )


def bhz_zeeman(rashba=0.0):
    """BHZ-type model (orbital τ ⊗ spin σ) with a generic Zeeman field J·σ.

    H = −2t(cos kx + cos ky) + [M − B(2 − cos kx − cos ky)] τ_z + A(sin kx τ_x σ_z + sin ky τ_y) + J·σ
        + r (sin kx σ_y − sin ky σ_x).
    For r = 0 it has inversion P = τ_z: P H(k) P = H(−k), and P commutes with S = σ/2. Since S is
    P-even (axial) and E is P-odd, every linear δS = α E (and δM^O) vanishes. r ≠ 0 (a Rashba term,
    odd in k with a P-even matrix) breaks inversion.
    """
    params = dict(t=0.3, M=0.5, B=1.0, A=0.8, J=jnp.array([0.2, 0.15, 0.3]), r=rashba)
    return q.models.from_function(_bhz_zeeman_h, params, dim=2, spin=_BHZ_TERMS["spin"] / 2, lattice=np.eye(2))


# --- the spin Berry curvature kernel --------------------------------------------------------------
def test_spin_berry_curvature_two_band_closed_form(rng):
    r"""Φ_n for H = h0 + d·σ, S = σ/2 (derived here):

    ⟨n|σ_a|m⟩⟨m|σ_b|n⟩ (m the other band) = ⟨n|σ_aσ_b|n⟩ − ⟨σ_a⟩⟨σ_b⟩ = δ_ab + i s ε_abc d̂_c − d̂_a d̂_b
    (⟨σ⟩_s = s d̂, s = ±1), the interband part of ∂_jH is ∂_j d_b σ_b, (E_n − E_m)² = 4|d|², so
    Φ_s^{ij} = −2 Im(...) = −(s/(4|d|³)) (∂_j d × d)_i.
    Rashba with exchange: d = (−α k_y + J_x, α k_x + J_y, J_z).
    """
    a, jx, jy, jz = 0.7, 0.1, -0.2, 0.3
    model = q.models.Rashba(mass=0.4, alpha=a, exchange=(jx, jy, jz))
    for k in rng.normal(size=(3, 2)):
        d = np.array([-a * k[1] + jx, a * k[0] + jy, jz])
        dd = [np.array([0.0, a, 0.0]), np.array([-a, 0.0, 0.0]), np.zeros(3)]
        nd = np.linalg.norm(d)
        expected = np.array([[-s / (4 * nd**3) * np.cross(dd[j], d) for j in range(3)] for s in (-1, 1)])
        expected = np.swapaxes(expected, 1, 2)  # [s, i, j]
        phi = spin_berry_curvature(q.spectrum(model, jnp.asarray(k)))
        assert_close(phi, expected, rtol=1e-12, atol=1e-14)


def test_spin_berry_curvature_pt_doublets_gauge_invariant(rng):
    """Band-resolved Φ_n is gauge dependent inside a Kramers doublet; its doublet average is not."""
    x = rng.normal(size=(4, 4)) + 1j * rng.normal(size=(4, 4))
    v, _ = np.linalg.qr(x)
    k = jnp.array([0.37, -0.81])
    phis = [
        np.asarray(spin_berry_curvature(q.spectrum(m, k), average_degenerate=True))
        for m in (pt_bilayer(), pt_bilayer(basis=v))
    ]
    assert np.all(np.isfinite(phis[0]))
    assert np.abs(phis[0]).max() > 1e-2
    assert_close(phis[1], phis[0], rtol=1e-9, atol=1e-12)


# --- extrinsic: the Edelstein effect of the 2D Rashba gas -----------------------------------------
RASHBA_M, RASHBA_A = 0.5, 0.5  # crossing E = 0 at k = 0, band bottom −mα²/2 = −0.0625


def edelstein_closed_form(mu):
    r"""Edelstein's T → 0 result (V. M. Edelstein, Solid State Commun. 73, 233 (1990)), derived here.

    H = k²/2m + α(k_xσ_y − k_yσ_x): E_s = k²/2m + sαk, ⟨S⟩_s = (s/2)(−sinθ, cosθ, 0), v_s = (k/m + sα) k̂.
    δ⟨S_y⟩ = τ E_x Σ_s ∫d²k/(2π)² ⟨S_y⟩_s v_s^x f0'(E_s) = τ E_x Σ_s (s/8π) ∫_0^∞ k ∂_k f0(E_s) dk
           = −τ E_x Σ_s (s/8π) L_s,  L_s = length of the occupied k-interval of band s
    (angular average ⟨cos²θ⟩ = ½, then v_s f0' = ∂_k f0, then integration by parts).
    μ > 0: L_± = ∓mα + (m²α² + 2mμ)^{1/2} → Σ s L_s = −2mα → δ⟨S_y⟩ = τ E_x mα/(4π) (μ-independent).
    −mα²/2 < μ < 0: only band −, L_− = 2(m²α² + 2mμ)^{1/2} → δ⟨S_y⟩ = τ E_x (m²α² + 2mμ)^{1/2}/(4π).
    α^{yx} = −g δ⟨S_y⟩/E_x, and α^{xy} = −α^{yx} by the rotation symmetry.
    """
    m, a = RASHBA_M, RASHBA_A
    return np.where(mu > 0, -G * m * a / (4 * np.pi), -G * np.sqrt(np.maximum(m * m * a * a + 2 * m * mu, 0.0)) / (4 * np.pi))


def edelstein_quad(mu, temperature, k_max):
    """Second route at finite T: the same radial integral by scipy.quad, after the integration by
    parts ∫_0^K k ∂_k f0 dk = K f0(E(K)) − ∫_0^K f0 dk (no f0' and no package code involved)."""
    m, a = RASHBA_M, RASHBA_A
    total = 0.0
    for s in (1, -1):
        f0 = lambda k, s=s: expit(-((k * k / (2 * m) + s * a * k) - mu) / temperature)
        roots = [r for r in np.roots([1 / (2 * m), s * a, -mu]) if np.isreal(r) and 0 < r.real < k_max]
        integral = sint.quad(f0, 0, k_max, points=[r.real for r in roots] or None, limit=200, epsabs=1e-14, epsrel=1e-13)[0]
        total += s / (8 * np.pi) * (k_max * f0(k_max) - integral)
    return -G * total


def test_edelstein_rashba_finite_temperature_against_quadrature():
    model = q.models.Rashba(mass=RASHBA_M, alpha=RASHBA_A)
    k_max, temperature = 1.6, 0.01
    mesh = q.continuum_mesh(model, k_max=k_max, n=(400, 8))  # 8 angles integrate cos², sin² exactly
    mus = np.array([0.3, 0.1, -0.02, -0.045])
    tau = 2.5
    a = alpha(model, mesh, mu=mus, temperature=temperature, part="spin", mechanism="extrinsic", tau=tau)
    expected = tau * np.array([edelstein_quad(mu, temperature, k_max) for mu in mus])
    assert_close(a[:, 1, 0], expected, rtol=1e-9, what="α^{yx} vs quad")
    assert_close(a[:, 0, 1], -expected, rtol=1e-9, what="α^{xy} = −α^{yx}")
    for i, j in [(0, 0), (1, 1), (2, 0), (2, 1), (0, 2), (1, 2), (2, 2)]:
        assert_close(a[:, i, j], 0.0, atol=1e-12 * np.abs(expected).max(), what=f"α^{i}{j} = 0")


def test_edelstein_rashba_zero_temperature_closed_form():
    model = q.models.Rashba(mass=RASHBA_M, alpha=RASHBA_A)
    # Above the band crossing α(μ) is constant in μ, so α(μ, T) = ∫dε(−f0'(ε − μ)) α(ε, 0) differs
    # from it only by e^{−μ/T} (= e^{−30} here): the closed form must hold up to the mesh error
    # (6e-10 with 400 radial nodes at T = 0.01).
    mesh = q.continuum_mesh(model, k_max=1.6, n=(400, 8))
    a = alpha(model, mesh, mu=0.3, temperature=0.01, part="spin", mechanism="extrinsic", tau=1.0)
    assert_close(a[1, 0], edelstein_closed_form(0.3), rtol=2e-9)
    assert_close(a[0, 1], -edelstein_closed_form(0.3), rtol=2e-9)
    # Below the crossing α(μ, 0) = c √x, x = m²α² + 2mμ (dx/dμ = 2m = 1 here), is curved. Sommerfeld:
    # α(μ, T) = α0 + (π²/6) T² α0″ + (7π⁴/360) T⁴ α0⁗ + O(T⁶) with α0″ = −α0/(4x²) and
    # α0⁗ = −15 α0/(16 x⁴) (the kinks at μ = 0 and at the band bottom are ≥ 30 T away).
    mu, x = -0.03, RASHBA_M**2 * RASHBA_A**2 - 0.03
    mesh = q.continuum_mesh(model, k_max=0.7, n=(400, 8))
    temps = np.array([0.002, 0.001])
    a = alpha(model, mesh, mu=mu, temperature=temps, part="spin", mechanism="extrinsic", tau=1.0)[:, 1, 0]
    a0 = edelstein_closed_form(mu)
    sommerfeld = np.pi**2 / 6 * temps**2 * (-a0 / (4 * x * x)) + 7 * np.pi**4 / 360 * temps**4 * (-15 * a0 / (16 * x**4))
    assert_close(a - a0, sommerfeld, rtol=5e-3, what="Sommerfeld corrections")
    ratio = (a[0] - a0) / (a[1] - a0)
    assert 3.9 < ratio < 4.2, f"the error should scale as T², got ratio {ratio}"


def test_edelstein_lattice_mesh_convergence():
    """On a lattice at T > 0 the integrand is smooth and periodic: the Monkhorst–Pack sum converges
    exponentially once the mesh resolves the Fermi-surface width T/v. Measured relative errors
    (vs 128²) at μ = −2.5, T = 0.2: 0.135 (16²), 2.4e-3 (32²), 2.2e-5 (48²), 6.5e-6 (64²)."""
    model = q.models.RashbaLattice(t=1.0, alpha=0.5)
    kw = dict(mu=-2.5, temperature=0.2, part="spin", mechanism="extrinsic", tau=1.0)
    ref = alpha(model, q.monkhorst_pack(model, (96, 96)), **kw)[1, 0]
    errors = [abs(alpha(model, q.monkhorst_pack(model, (n, n)), **kw)[1, 0] / ref - 1) for n in (16, 32, 48)]
    assert errors[1] < 0.05 * errors[0]
    assert errors[2] < 0.05 * errors[1]
    assert errors[2] < 1e-4


# --- intrinsic: magnetic Rashba gas and TI surface ------------------------------------------------
MR_M, MR_A, MR_J = 0.5, 0.4, 0.1  # mα² = 0.08 < J: both bands monotonic in k (no Mexican hat)


def _phi_xx(s, k):
    """Φ_s^{xx} = −s α J_z/(4|d|³), from the two-band closed form of the kernel test."""
    return -s * MR_A * MR_J / (4 * (MR_A**2 * k * k + MR_J**2) ** 1.5)


def _energy(s, k, mass=MR_M):
    return k * k / (2 * mass) + s * np.sqrt(MR_A**2 * k * k + MR_J**2)


def magnetic_rashba_closed_form(mu, k_max):
    r"""T = 0: α^{xx} = α^{yy} = −g Σ_s ∫d²k/(2π)² θ(μ − E_s) Φ_s^{xx}, with occupied disks k < k_s:
    (1/2π)∫_0^{k_s} k dk αJ/(4(α²k² + J²)^{3/2}) = (J/8πα)(1/|J| − (α²k_s² + J²)^{−1/2}) ≡ G(k_s),
    α^{xx} = −g [G(k_−) − G(k_+)].  For m → ∞ and μ in the gap (k_− = cutoff K → ∞) this is
    −g sign(J)/(8πα): Garate & Franz, PRL 104, 146802 (2010)'s intrinsic spin response of a gapped
    TI surface, equal to (g/2α) σ_xy with σ_xy = −sign(J)/(4π) (= ∓e²/2h).
    """

    def g_of(k):
        return MR_J / (8 * np.pi * MR_A) * (1 / abs(MR_J) - 1 / np.sqrt(MR_A**2 * k * k + MR_J**2))

    def k_fermi(s):
        if _energy(s, 0.0) >= mu:
            return 0.0
        return sopt.brentq(lambda k: _energy(s, k) - mu, 0.0, k_max, xtol=1e-15, rtol=1e-15)

    return -G * (g_of(k_fermi(-1)) - g_of(k_fermi(1)))


def magnetic_rashba_quad(mu, temperature, k_max):
    """Second route at finite T: radial scipy quadrature of −g Σ_s ∫ Φ_s^{xx} f0(E_s) k dk/2π."""
    total = 0.0
    for s in (1, -1):
        fn = lambda k, s=s: k / (2 * np.pi) * _phi_xx(s, k) * expit(-(_energy(s, k) - mu) / temperature)
        total += sint.quad(fn, 0, k_max, limit=400, epsabs=1e-15, epsrel=1e-13)[0]
    return -G * total


def test_intrinsic_magnetic_rashba_closed_form_quadrature_and_hall():
    model = q.models.Rashba(mass=MR_M, alpha=MR_A, exchange=(0.0, 0.0, MR_J))
    k_max = 1.0  # E_-(k_max) − μ ≥ 0.29 = 29 T at the largest T used: the cutoff is irrelevant
    mesh = q.continuum_mesh(model, k_max=k_max, n=(400, 8))
    mus = np.array([-0.05, 0.3])  # only the lower band / both bands occupied
    # (1) finite T against the radial quadrature, tight
    a = alpha(model, mesh, mu=mus, temperature=0.01, part="spin", mechanism="intrinsic")
    expected = [magnetic_rashba_quad(mu, 0.01, k_max) for mu in mus]
    assert_close(a[:, 0, 0], expected, rtol=1e-9)
    assert_close(a[:, 1, 1], expected, rtol=1e-9)
    off = [(0, 1), (1, 0), (2, 0), (2, 1), (0, 2), (1, 2), (2, 2)]
    for i, j in off:
        assert_close(a[:, i, j], 0.0, atol=1e-12, what=f"α^{i}{j}")
    # (2) second route: for H = h0(k)·1 + d·σ with v_x = α σ_y + ..., v_y = −α σ_x + ... one has
    # S_x = −v_y^{inter}/(2α) between bands, hence Φ^{xx} = Ω^{xy}/(2α) band by band and
    # α^{xx} = −g Σ∫Φ^{xx} f0 = (g/2α) σ_xy  (σ_xy = −Σ∫Ω^{xy} f0, the package's Hall conductivity).
    sxy = np.asarray(q.anomalous_hall_conductivity(model, mesh, mu=mus, temperature=0.01))[:, 2]
    assert_close(a[:, 0, 0], G / (2 * MR_A) * sxy, rtol=1e-11)
    # (3) T → 0 against the closed form; the remainder is the Sommerfeld O(T²) term
    temps = np.array([0.004, 0.002])
    for mu in mus:
        a_t = alpha(model, mesh, mu=mu, temperature=temps, part="spin", mechanism="intrinsic")[:, 0, 0]
        a0 = magnetic_rashba_closed_form(mu, k_max)
        h = 2e-3
        second = (magnetic_rashba_closed_form(mu + h, k_max) - 2 * a0 + magnetic_rashba_closed_form(mu - h, k_max)) / h**2
        assert_close(a_t - a0, np.pi**2 * temps**2 / 6 * second, rtol=0.05, atol=1e-8, what=f"μ={mu}")


def test_intrinsic_ti_surface_garate_franz():
    """TI surface with exchange, H = v(k_xσ_y − k_yσ_x) + J σ_z (Rashba with m → ∞), μ in the gap:
    α^{xx} = −g (J/8πv)(1/|J| − (v²K² + J²)^{−1/2}) with the disk cutoff K (closed form above)."""
    v, j, k_max = 0.8, -0.15, 3.0
    model = q.models.Rashba(mass=1e12, alpha=v, exchange=(0.0, 0.0, j))
    mesh = q.continuum_mesh(model, k_max=k_max, n=(120, 8))
    a = alpha(model, mesh, mu=0.0, temperature=0.0, part="spin", mechanism="intrinsic")
    expected = -G * j / (8 * np.pi * v) * (1 / abs(j) - 1 / np.sqrt(v * v * k_max**2 + j * j))
    assert_close(a[0, 0], expected, rtol=1e-10)
    assert_close(a[1, 1], expected, rtol=1e-10)
    assert abs(expected - (-G * np.sign(j) / (8 * np.pi * v))) < 0.07 * abs(expected)  # ≈ Garate–Franz K → ∞


# --- intrinsic: gapped lattice model against an open-boundary flake -------------------------------
def _hoppings(model, n=8, reach=3):
    """t(R) = (1/N) Σ_k H(k) e^{−ik·R} on an n×n grid (exact for hoppings shorter than n/2; all
    orbitals at the cell origin so H(k) is periodic). H(k) = Σ_R t(R) e^{ik·R}, t(R) = ⟨0|H|R⟩."""
    grid = 2 * np.pi * np.stack(np.meshgrid(np.arange(n) / n, np.arange(n) / n, indexing="ij"), -1).reshape(-1, 2)
    hk = np.asarray(jax.vmap(model.hamiltonian)(jnp.asarray(grid)))
    out = {}
    for r in [(x, y) for x in range(-reach, reach + 1) for y in range(-reach, reach + 1)]:
        t = np.einsum("kij,k->ij", hk, np.exp(-1j * grid @ np.array(r))) / len(grid)
        if np.abs(t).max() > 1e-12:
            out[r] = t
    return out


def flake_spin_response(model, size, mu):
    """d⟨S_i⟩/dE_j per area of an L×L open flake with H → H + E·r (e = 1), μ in the gap:
    first-order perturbation theory, d⟨S_i⟩/dE_j = Σ_{n occ, m empty} 2 Re[S^i_nm r^j_mn/(E_n − E_m)]."""
    hop, spin = _hoppings(model), np.asarray(model.spin_operators())
    nb, ncell = spin.shape[-1], size * size
    h = np.zeros((size, size, nb, size, size, nb), complex)
    for (rx, ry), t in hop.items():
        for x in range(max(0, -rx), min(size, size - rx)):
            for y in range(max(0, -ry), min(size, size - ry)):
                h[x, y, :, x + rx, y + ry, :] += t
    h = h.reshape(ncell * nb, ncell * nb)
    pos = np.array([[x, y] for x in range(size) for y in range(size)], float).repeat(nb, axis=0)
    e, u = np.linalg.eigh(h)
    occ = e < mu
    assert np.min(np.abs(e - mu)) > 0.05, "a flake state sits at μ (edge state in the gap?)"
    uo, ue = u[:, occ], u[:, ~occ]
    den = 1.0 / (e[occ][:, None] - e[~occ][None, :])
    out = np.zeros((3, 2))
    for i in range(3):
        s_oe = uo.conj().T @ np.kron(np.eye(ncell), spin[i]) @ ue
        for j in range(2):
            r_eo = ue.conj().T @ (pos[:, j][:, None] * uo)
            out[i, j] = 2 * np.real(np.einsum("nm,mn,nm->", s_oe, r_eo, den))
    return out / ncell


def test_intrinsic_spin_lattice_insulator_against_flake():
    """Bulk −g Σ∫Φ f0 vs −g d⟨S⟩/dE per area of L×L flakes (L = 8…24), extrapolated with
    M(L) = M∞ + a/L + b/L² (edges contribute ∝ perimeter). Measured agreement ≈ 1e-5 relative."""
    model, mu = wilson_rashba(), -0.2
    bulk = alpha(model, q.monkhorst_pack(model, (48, 48)), mu=mu, temperature=0.0, part="spin", mechanism="intrinsic")
    sizes = np.array([8, 12, 16, 20, 24])
    vals = np.array([-G * flake_spin_response(model, int(n), mu).ravel() for n in sizes])
    design = np.stack([np.ones(len(sizes)), 1 / sizes, 1 / sizes**2], 1)
    extrapolated = np.linalg.lstsq(design, vals, rcond=None)[0][0].reshape(3, 2)
    assert np.abs(bulk[:, :2]).max() > 1e-2  # a non-trivial response
    assert_close(extrapolated, bulk[:, :2], rtol=0, atol=2e-4 * np.abs(bulk).max())
    # and the sizes themselves approach the bulk value (not a fitting artefact)
    assert np.abs(vals[-1] - bulk[:, :2].ravel()).max() < 0.1 * np.abs(bulk).max()
    # mesh convergence in the gap is exponential: relative errors of α^{xx} vs 96² measured
    # 2.8e-2 (12²), 2.2e-3 (16²), 9.2e-5 (24²), 6.2e-6 (32²), 3.2e-9 (48²)
    err = [
        abs(alpha(model, q.monkhorst_pack(model, (n, n)), mu=mu, temperature=0.0, part="spin",
                  mechanism="intrinsic")[0, 0] / bulk[0, 0] - 1)
        for n in (16, 32)
    ]
    assert err[1] < 1e-2 * err[0] and err[1] < 1e-5


def test_rashba_lattice_insulator_intrinsic_vanishes():
    """RashbaLattice in its gap: H(k) = ε(k) + α(sin k_x σ_y − sin k_y σ_x) + J·σ is invariant under
    k_x → π − k_x up to ε(k) ∝ 1 (which does not enter a full-band sum), and v_x flips sign: so
    α^{ix} = 0 (likewise α^{iy}) for μ in the gap. In the metal the occupations break it: ≠ 0."""
    model = q.models.RashbaLattice(t=0.05, alpha=1.0, exchange=(0.1, 0.0, 0.5))
    mesh = q.monkhorst_pack(model, (32, 32))
    a = alpha(model, mesh, mu=jnp.array([0.0, -0.8]), temperature=0.0, part="spin", mechanism="intrinsic")
    assert np.abs(a[0]).max() < 1e-15
    assert np.abs(a[1]).max() > 1e-3


# --- symmetry ---------------------------------------------------------------------------------------
def test_time_reversal_kills_intrinsic_keeps_extrinsic():
    model = q.models.RashbaLattice(t=1.0, alpha=0.5)  # no exchange: time-reversal symmetric
    mesh = q.monkhorst_pack(model, (48, 48))
    kw = dict(mu=jnp.array([-2.5, -1.0]), temperature=0.1)
    intrinsic = alpha(model, mesh, part="spin", mechanism="intrinsic", **kw)
    extrinsic = alpha(model, mesh, part="spin", mechanism="extrinsic", tau=1.0, **kw)
    assert np.abs(intrinsic).max() < 1e-14
    assert np.abs(extrinsic[:, 1, 0]).min() > 1e-3
    assert_close(extrinsic[:, 0, 1], -extrinsic[:, 1, 0], rtol=1e-10)


def test_inversion_kills_every_linear_response():
    mesh = q.monkhorst_pack(bhz_zeeman(), (24, 24))
    kw = dict(mu=jnp.array([-0.9, 0.2, 1.1]), temperature=0.1)
    sizes = {}
    for r in (0.0, 0.3):
        model = bhz_zeeman(rashba=r)
        sizes[r] = [
            np.abs(alpha(model, mesh, part="spin", mechanism="extrinsic", tau=1.0, **kw)).max(),
            np.abs(alpha(model, mesh, part="spin", mechanism="intrinsic", **kw)).max(),
            np.abs(alpha(model, mesh, part="orbital", mechanism="extrinsic", tau=1.0, **kw)).max(),
        ]
    assert max(sizes[0.0]) < 1e-14, sizes[0.0]
    assert min(sizes[0.3]) > 1e-4, sizes[0.3]  # the same sums are finite once inversion is broken


def test_pt_symmetric_intrinsic_finite_gauge_invariant_and_continuous(rng):
    """PT (Kramers doublets at every k, T and P broken): intrinsic spin allowed (T-odd, P-even),
    extrinsic spin forbidden (Σ_doublet ⟨S⟩ = 0). Random unitary basis changes leave α unchanged,
    and a PT-breaking Zeeman δσ_z gives α(δ) → α(0) linearly (insulator, μ in the gap)."""
    mesh = q.monkhorst_pack(pt_bilayer(), (24, 24))
    kw = dict(mu=-0.25, temperature=0.0, part="spin", mechanism="intrinsic")
    base = alpha(pt_bilayer(), mesh, **kw)
    assert np.all(np.isfinite(base)) and np.abs(base).max() > 1e-2
    x = rng.normal(size=(4, 4)) + 1j * rng.normal(size=(4, 4))
    v, _ = np.linalg.qr(x)
    assert_close(alpha(pt_bilayer(basis=v), mesh, **kw), base, rtol=0, atol=1e-13)
    deltas = np.array([1e-2, 1e-3, 1e-4, 1e-6])
    diffs = np.array([np.abs(alpha(pt_bilayer(d), mesh, **kw) - base).max() for d in deltas])
    assert diffs[-1] < 1e-10
    assert np.all(diffs[1:3] < diffs[:2] / 5)  # → 0 with δ
    ex = alpha(pt_bilayer(), mesh, mu=-1.0, temperature=0.05, part="spin", mechanism="extrinsic", tau=1.0)
    assert np.abs(ex).max() < 1e-14
    ex_v = alpha(pt_bilayer(basis=v), mesh, mu=-1.0, temperature=0.05, part="spin", mechanism="extrinsic", tau=1.0)
    assert np.abs(ex_v).max() < 1e-13


@pytest.mark.slow
def test_intrinsic_spin_flake_larger_sizes():
    """Same as the flake test with L up to 32 (slow): the extrapolation error shrinks."""
    model, mu = wilson_rashba(), -0.2
    bulk = alpha(model, q.monkhorst_pack(model, (64, 64)), mu=mu, temperature=0.0, part="spin", mechanism="intrinsic")
    sizes = np.array([12, 16, 20, 24, 28, 32])
    vals = np.array([-G * flake_spin_response(model, int(n), mu).ravel() for n in sizes])
    design = np.stack([np.ones(len(sizes)), 1 / sizes, 1 / sizes**2], 1)
    extrapolated = np.linalg.lstsq(design, vals, rcond=None)[0][0].reshape(3, 2)
    assert_close(extrapolated, bulk[:, :2], rtol=0, atol=5e-5 * np.abs(bulk).max())
