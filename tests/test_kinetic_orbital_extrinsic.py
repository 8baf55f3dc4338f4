r"""Extrinsic kinetic orbital magnetization (orbital Edelstein effect, seed eq. 8):

    α^{ij} = τ Σ_n ∫ d^dk/(2π)^d m_n^i v_n^j f0'(E_n)   (ħ = e = 1, f1 = eτ(v·E)f0').

Closed form: a tilted massive Dirac valley pair (MoS2-like, time-reversal symmetric), derived below;
second routes: a scipy quadrature of the raw Fermi-surface integral at finite T, and — for a strained
honeycomb lattice — the "shifted Fermi sea" f(k) = f0(E_n(k + eτE)) differentiated by autodiff, which
uses neither band velocities nor f0'.
"""

import jax
import jax.numpy as jnp
import numpy as np
from conftest import assert_close
from scipy import integrate as sint
from scipy.special import expit

import qgeo_jax as q
from qgeo_jax._kinetic import kinetic_magnetization

V, MASS, TILT = 1.0, 0.2, 0.3  # Dirac velocity, gap 2m, tilt t_x (type I: |t| < v)


def valley_pair():
    """Time-reversal partners: H_ξ(k) = v(ξk_xσ_x + k_yσ_y) + mσ_z + ξ t_x k_x.

    T maps valley ξ at k to valley −ξ at −k: H_{−ξ}(−k)* = v(−ξk_xσ_x + k_yσ_y) + mσ_z − t·k, i.e. the
    partner of (ξ = +1, tilt t) is (ξ = −1, tilt −t). The moments are opposite, m_ξ^z = −ξ m v²/(2d²),
    so the equilibrium M vanishes; the tilt breaks the rotation symmetry that would make the
    Fermi-surface average of m v vanish in each valley.
    """
    return [q.models.MassiveDirac(v=V, m=MASS, tilt=(xi * TILT, 0.0), valley=xi, cutoff=2.0) for xi in (1, -1)]


def k_fermi(theta, mu, tilt=TILT):
    """Conduction-band Fermi momentum along θ: √(v²k² + m²) + t k cosθ = μ (positive root)."""
    c = tilt * np.cos(theta)
    a = V * V - c * c
    return (-mu * c + np.sqrt(mu * mu * c * c + a * (mu * mu - MASS * MASS))) / a


def closed_form_zero_t(mu):
    r"""T = 0, μ in the conduction band, per unit τ, summed over the valley pair (derived here).

    In a valley, v_n^x f0'(E_n) = ∂_x f0(E_n), so integrating by parts (f0 = 0 at the cutoff; the
    full valence band has f0' = 0):  α^{zx} = −τ ∫_{E_+<μ} d²k/(2π)² ∂_x m^z, with
    ∂_x m^z = ξ m v⁴ k_x/d⁴ (d² = v²k² + m²). In polar coordinates
    ∫_0^{k_F(θ)} k² dk/d⁴ = I(k_F) = [arctan(vk/m)/(vm) − k/d²]/(2v²), so
    α_ξ^{zx} = −τ ξ m v⁴/(4π²) ∫_0^{2π} dθ cosθ I(k_F(θ)); the partner (ξ → −ξ, t → −t, i.e.
    θ → θ + π) gives the same, so the pair is twice valley +. The θ integral is periodic and smooth:
    the trapezoid rule with 256 nodes is exact to round-off.
    """
    theta = 2 * np.pi * (np.arange(256) + 0.5) / 256
    kf = k_fermi(theta, mu)
    integral = (np.arctan(V * kf / MASS) / (V * MASS) - kf / (V * V * kf * kf + MASS * MASS)) / (2 * V * V)
    single = -MASS * V**4 / (4 * np.pi**2) * np.mean(np.cos(theta) * integral) * 2 * np.pi
    return 2 * single


def quad_finite_t(mu, temperature, k_max=2.0):
    """Second route: the raw integral τ Σ_n ∫ m_n^z v_n^x f0'(E_n) of valley + (×2 for the pair) by
    nested quadrature — trapezoid in θ (periodic) × adaptive scipy.quad in k around k_F(θ).
    Only the conduction band: the valence band's f0' is e^{−(μ+m)/T} ≈ e^{−140} small here."""
    theta = 2 * np.pi * (np.arange(128) + 0.5) / 128
    total = 0.0
    for th in theta:
        c, s = np.cos(th), np.sin(th)

        def integrand(k):
            d = np.sqrt(V * V * k * k + MASS * MASS)
            energy = d + TILT * k * c
            x = (energy - mu) / temperature
            df = -expit(x) * expit(-x) / temperature
            moment = -MASS * V * V / (2 * d * d)
            vx = TILT + V * V * k * c / d
            return k * moment * vx * df

        total += sint.quad(integrand, 0, k_max, points=[k_fermi(th, mu)], limit=200, epsabs=1e-15, epsrel=1e-12)[0]
    del s
    return 2 * total * (2 * np.pi / len(theta)) / (2 * np.pi) ** 2


def pair_alpha(mu, temperature, tau=1.0, n=(600, 32)):
    out = 0.0
    for model in valley_pair():
        mesh = q.continuum_mesh(model, k_max=2.0, n=n)
        out = out + np.asarray(
            kinetic_magnetization(model, mesh, mu=mu, temperature=temperature, part="orbital", mechanism="extrinsic", tau=tau)
        )
    return out


def test_tilted_dirac_valley_pair_against_quadrature_and_closed_form():
    mu, tau = 0.5, 3.0
    # finite T: package vs the nested quadrature of the same integral
    a = pair_alpha(mu, 0.02, tau=tau)
    expected = tau * quad_finite_t(mu, 0.02)
    assert abs(expected) > 1e-4
    assert_close(a[2, 0], expected, rtol=1e-8)
    # a 2D model has m along z only, a tilt along x: every other component vanishes
    mask = np.ones((3, 3), bool)
    mask[2, 0] = False
    assert np.abs(a[mask]).max() < 1e-12 * abs(expected)
    # T → 0: closed form + Sommerfeld, α(μ, T) = α0 + (π²/6)T² α0⁽²⁾ + (7π⁴/360)T⁴ α0⁽⁴⁾ + O(T⁶)
    # (Fermi-surface quantity linear in f0: α(μ, T) = ∫dε(−f0'(ε − μ)) α0(ε)); derivatives by
    # central differences of the closed form.
    temps = np.array([0.01, 0.005])
    a_t = pair_alpha(mu, temps)[:, 2, 0]
    h = 0.02
    c = [closed_form_zero_t(mu + j * h) for j in (-2, -1, 0, 1, 2)]
    a0 = c[2]
    d2 = (-c[0] + 16 * c[1] - 30 * c[2] + 16 * c[3] - c[4]) / (12 * h * h)
    d4 = (c[0] - 4 * c[1] + 6 * c[2] - 4 * c[3] + c[4]) / h**4
    sommerfeld = np.pi**2 / 6 * temps**2 * d2 + 7 * np.pi**4 / 360 * temps**4 * d4
    assert_close(a_t - a0, sommerfeld, rtol=0.01)
    assert abs(a_t[1] - a0) < 1e-3 * abs(a0)


def test_valley_structure():
    """Each TR partner contributes the same α (so the pair doubles it); an untilted valley gives
    zero (its rotation symmetry makes the Fermi-surface average of m v vanish); so does a single
    valley whose tilt is cancelled by the partner with the same valley index (moments cancel)."""
    mu, temperature = 0.5, 0.02
    plus, minus = valley_pair()
    mesh = q.continuum_mesh(plus, k_max=2.0, n=(400, 32))
    kw = dict(mu=mu, temperature=temperature, part="orbital", mechanism="extrinsic", tau=1.0)
    a_plus = np.asarray(kinetic_magnetization(plus, mesh, **kw))
    a_minus = np.asarray(kinetic_magnetization(minus, mesh, **kw))
    assert abs(a_plus[2, 0]) > 1e-4
    assert_close(a_minus, a_plus, rtol=1e-10, atol=1e-16)
    untilted = q.models.MassiveDirac(v=V, m=MASS, valley=1, cutoff=2.0)
    assert np.abs(np.asarray(kinetic_magnetization(untilted, mesh, **kw))).max() < 1e-14
    # (ξ = +1, t) + (ξ = −1, t): the same Fermi sea shift with opposite moments → cancels
    other = q.models.MassiveDirac(v=V, m=MASS, tilt=(TILT, 0.0), valley=-1, cutoff=2.0)
    total = a_plus + np.asarray(kinetic_magnetization(other, mesh, **kw))
    assert np.abs(total).max() < 1e-12 * abs(a_plus[2, 0])


# --- a lattice model: strained, gapped honeycomb (time-reversal symmetric) ------------------------
def strained_honeycomb():
    """hBN-like honeycomb (a1 = (√3, 0), a2 = (√3/2, 3/2), B at (1/3, 1/3) reduced), staggered
    potential ±Δ, three different nearest-neighbour hoppings (generic strain: no C3 and no vertical
    mirror, which would forbid M_z ∝ E_x), real hoppings (time-reversal symmetric)."""
    lattice = [[np.sqrt(3), 0.0], [np.sqrt(3) / 2, 1.5]]
    hops = [(-1.0, 0, 1, (0, 0)), (-1.15, 0, 1, (-1, 0)), (-0.9, 0, 1, (0, -1))]
    return q.models.TightBinding(lattice, [[0, 0], [1 / 3, 1 / 3]], [0.5, -0.5], hops)


def test_strained_honeycomb_against_shifted_fermi_sea():
    """Second route: the relaxation-time steady state is the shifted Fermi sea
    f(k) = f0(E_n(k + eτE)) (k̇ = −eE for charge −e), so δM^i = Σ∫ m_n^i(k) [f0(E_n(k + τE)) − f0(E_n(k))]
    and α^{ij} = ∂δM^i/∂E_j at E = 0, here by forward-mode autodiff through eigvalsh at shifted k:
    no band velocity and no f0' enter."""
    model = strained_honeycomb()
    mesh = q.monkhorst_pack(model, (48, 48))
    mus = jnp.array([0.9, -1.2])  # conduction and valence band
    temperature, tau = 0.1, 2.0
    a = np.asarray(
        kinetic_magnetization(model, mesh, mu=mus, temperature=temperature, part="orbital", mechanism="extrinsic", tau=tau)
    )

    def moment_shifted(field):
        def per_k(k):
            moment = q.band_geometry(model, k).orbital_moment  # (n, 3), at the unshifted k
            energies = jnp.linalg.eigvalsh(model.hamiltonian(k + tau * field))
            occ = q.fermi_dirac(energies, mus[:, None], temperature)
            return occ @ moment

        return q.integrate(per_k, mesh)

    reference = np.asarray(jax.jacfwd(moment_shifted)(jnp.zeros(2)))  # (μ, 3, 2)
    assert np.abs(reference[:, 2, :]).min() > 1e-4  # a finite orbital Edelstein response
    assert_close(a[:, :, :2], reference, rtol=1e-10, atol=1e-13)
    # time reversal: the equilibrium orbital magnetization of this model vanishes
    m_eq = np.asarray(q.orbital_magnetization(model, mesh, mu=mus, temperature=temperature))
    assert np.abs(m_eq).max() < 1e-12
