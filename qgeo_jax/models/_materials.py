r"""Models of real materials with published parameters (energies in eV, lengths in Å).

* :class:`TMDThreeBand` — monolayer MX₂ (M = Mo, W; X = S, Se, Te) three-band d-orbital
  tight-binding model with on-site spin–orbit coupling, G.-B. Liu, W.-Y. Shan, Y. Yao, W. Yao,
  D. Xiao, PRB 88, 085433 (2013), doi:10.1103/PhysRevB.88.085433 (build with
  :func:`tmd_three_band`).
* :class:`TopologicalInsulatorKP` — the four-band k·p model of the Bi₂Se₃ family, H. Zhang,
  C.-X. Liu, X.-L. Qi, X. Dai, Z. Fang, S.-C. Zhang, Nat. Phys. 5, 438 (2009),
  doi:10.1038/nphys1270 (:func:`bi2se3`).
* :class:`TISurfaceDirac` — the surface Dirac cone of that model with an exchange field
  (:func:`bi2se3_surface`).
* :class:`BistritzerMacDonald` — twisted bilayer graphene continuum model, R. Bistritzer and
  A. H. MacDonald, PNAS 108, 12233 (2011), doi:10.1073/pnas.1108174108, as a lattice model on the
  moiré reciprocal lattice.
"""

from __future__ import annotations

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Complex, Float

from ._base import PAULI, SIGMA0, AbstractModel, as_param

_SQ3 = float(np.sqrt(3.0))

# ------------------------------------------------------------------------------------------------
# Liu et al. (2013) three-band model of monolayer group-VIB dichalcogenides
# ------------------------------------------------------------------------------------------------
# The paper's GGA fits: nearest-neighbour (NN) and up-to-third-neighbour (TNN) tables, and the
# on-site SOC λ. (Only the MoS2 and WSe2 rows are checked against the paper by the tests.)
# Columns: a (Å), ε1, ε2, t0, t1, t2, t11, t12, t22 (eV).
_TMD_NN_GGA = {
    "MoS2": (3.190, 1.046, 2.104, -0.184, 0.401, 0.507, 0.218, 0.338, 0.057),
    "WS2": (3.191, 1.130, 2.275, -0.206, 0.567, 0.536, 0.286, 0.384, -0.061),
    "MoSe2": (3.326, 0.919, 2.065, -0.188, 0.317, 0.456, 0.211, 0.290, 0.130),
    "WSe2": (3.325, 0.943, 2.179, -0.207, 0.457, 0.486, 0.263, 0.329, 0.034),
    "MoTe2": (3.557, 0.605, 1.972, -0.169, 0.228, 0.390, 0.207, 0.239, 0.252),
    "WTe2": (3.560, 0.606, 2.102, -0.175, 0.342, 0.410, 0.233, 0.270, 0.190),
}
# Columns: a, ε1, ε2, t0, t1, t2, t11, t12, t22, r0, r1, r2, r11, r12, u0, u1, u2, u11, u12, u22.
_TMD_TNN_GGA = {
    "MoS2": (
        3.190,
        0.683,
        1.707,
        -0.146,
        -0.114,
        0.506,
        0.085,
        0.162,
        0.073,
        0.060,
        -0.236,
        0.067,
        0.016,
        0.087,
        -0.038,
        0.046,
        0.001,
        0.266,
        -0.176,
        -0.150,
    ),
    "WS2": (
        3.191,
        0.717,
        1.916,
        -0.152,
        -0.097,
        0.590,
        0.047,
        0.178,
        0.016,
        0.069,
        -0.261,
        0.107,
        -0.003,
        0.109,
        -0.054,
        0.045,
        0.002,
        0.325,
        -0.206,
        -0.163,
    ),
    "MoSe2": (
        3.326,
        0.684,
        1.546,
        -0.146,
        -0.130,
        0.432,
        0.144,
        0.117,
        0.075,
        0.039,
        -0.209,
        0.069,
        0.052,
        0.060,
        -0.042,
        0.036,
        0.008,
        0.272,
        -0.172,
        -0.150,
    ),
    "WSe2": (
        3.325,
        0.728,
        1.655,
        -0.146,
        -0.124,
        0.507,
        0.117,
        0.127,
        0.015,
        0.036,
        -0.234,
        0.107,
        0.044,
        0.075,
        -0.061,
        0.032,
        0.007,
        0.329,
        -0.202,
        -0.164,
    ),
    "MoTe2": (
        3.557,
        0.588,
        1.303,
        -0.226,
        -0.234,
        0.036,
        0.400,
        0.098,
        0.017,
        0.003,
        -0.025,
        -0.169,
        0.082,
        0.051,
        0.057,
        0.103,
        0.187,
        -0.045,
        -0.141,
        0.087,
    ),
    "WTe2": (
        3.560,
        0.697,
        1.380,
        -0.109,
        -0.164,
        0.368,
        0.204,
        0.093,
        0.038,
        -0.015,
        -0.209,
        0.107,
        0.115,
        0.009,
        -0.066,
        0.011,
        -0.013,
        0.312,
        -0.177,
        -0.132,
    ),
}
_TMD_SOC = {
    "MoS2": 0.073,
    "WS2": 0.211,
    "MoSe2": 0.091,
    "WSe2": 0.228,
    "MoTe2": 0.107,
    "WTe2": 0.237,
}
_TMD_FIELDS = (
    "a",
    "eps1",
    "eps2",
    "t0",
    "t1",
    "t2",
    "t11",
    "t12",
    "t22",
    "r0",
    "r1",
    "r2",
    "r11",
    "r12",
    "u0",
    "u1",
    "u2",
    "u11",
    "u12",
    "u22",
)
# L_z in the basis (d_z², d_xy, d_x²−y²), units of ħ: d_x²−y² ± i d_xy carry m = ±2.
_LZ = np.array([[0, 0, 0], [0, 0, 2j], [0, -2j, 0]], dtype=np.complex128)


class TMDThreeBand(AbstractModel):
    r"""Three-band tight-binding model of monolayer MX₂ (Liu et al., PRB 88, 085433 (2013)).

    Basis (d_z², d_xy, d_x²−y²) of the metal atom on a triangular lattice, a1 = (a, 0),
    a2 = (a/2, √3a/2), one orbital site per cell (so the "positions" and "cell" phase conventions
    coincide). With α = k_x a/2, β = √3 k_y a/2 (the paper's TNN Hamiltonian; NN form: eq. (4)):

    .. math::
        H_0 = \begin{pmatrix} V_0 & V_1 & V_2\\ V_1^* & V_{11} & V_{12}\\
              V_2^* & V_{12}^* & V_{22}\end{pmatrix},\qquad
        V_0 = ε_1 + 2t_0(2\cos α\cos β + \cos 2α) + 2r_0(2\cos 3α\cos β + \cos 2β)
              + 2u_0(2\cos 2α\cos 2β + \cos 4α), …

    (the remaining entries are written out in :meth:`spinless_hamiltonian`). Setting all r, u = 0
    gives the nearest-neighbour (NN) model. Spin–orbit coupling (``soc=True``) is the on-site
    λ L·S restricted to these orbitals, H = diag(H_0 + (λ/2)L_z, H_0 − (λ/2)L_z) in the spin
    "blocks" order (d_z²↑, d_xy↑, d_x²−y²↑, d_z²↓, d_xy↓, d_x²−y²↓), spin operators S = σ/2 ⊗ 1₃.

    Valleys: K = (4π/3a, 0), K' = −K. Published features reproduced by the tests: direct gap at
    ±K (MoS₂ GGA ≈ 1.6–1.7 eV), valence splitting 2λ at K (0.146 eV for MoS₂), Ω and m of opposite
    sign in the two valleys, spin–valley locking. Energies in eV, lengths in Å.
    """

    a: Float[Array, ""]
    eps1: Float[Array, ""]
    eps2: Float[Array, ""]
    t0: Float[Array, ""]
    t1: Float[Array, ""]
    t2: Float[Array, ""]
    t11: Float[Array, ""]
    t12: Float[Array, ""]
    t22: Float[Array, ""]
    r0: Float[Array, ""]
    r1: Float[Array, ""]
    r2: Float[Array, ""]
    r11: Float[Array, ""]
    r12: Float[Array, ""]
    u0: Float[Array, ""]
    u1: Float[Array, ""]
    u2: Float[Array, ""]
    u11: Float[Array, ""]
    u12: Float[Array, ""]
    u22: Float[Array, ""]
    lam: Float[Array, ""]
    soc: bool = eqx.field(static=True, default=True)

    def __init__(self, *, soc: bool = True, lam=0.0, **params):
        unknown = set(params) - set(_TMD_FIELDS)
        if unknown:
            raise ValueError(
                f"TMDThreeBand: unknown parameters {sorted(unknown)}; "
                f"allowed: {_TMD_FIELDS} and lam."
            )
        for name in _TMD_FIELDS:
            setattr(self, name, as_param(params.get(name, 0.0)))
        self.lam = as_param(lam)
        self.soc = bool(soc)

    @property
    def dim(self) -> int:
        return 2

    @property
    def lattice(self) -> Float[Array, "2 2"]:
        return self.a * jnp.array([[1.0, 0.0], [0.5, _SQ3 / 2]])

    def positions(self) -> Float[Array, "n 2"]:
        return jnp.zeros((6 if self.soc else 3, 2))

    def valley(self, tau: int = 1) -> Float[Array, "2"]:
        """Cartesian K (τ = +1) or K' (τ = −1) = τ (4π/3a, 0)."""
        return tau * jnp.array([4 * jnp.pi / (3 * self.a), 0.0])

    def spin_operators(self) -> Complex[Array, "3 n n"] | None:
        if not self.soc:
            return None
        return jnp.asarray(np.stack([np.kron(s / 2, np.eye(3)) for s in PAULI]))

    def spinless_hamiltonian(self, k: Float[Array, "2"]) -> Complex[Array, "3 3"]:
        """H_0(k) of Liu et al. (TNN form; NN when the r and u parameters vanish)."""
        al, be = k[0] * self.a / 2, _SQ3 * k[1] * self.a / 2
        c, s = jnp.cos, jnp.sin
        t0, t1, t2, t11, t12, t22 = self.t0, self.t1, self.t2, self.t11, self.t12, self.t22
        r0, r1, r2, r11, r12 = self.r0, self.r1, self.r2, self.r11, self.r12
        u0, u1, u2, u11, u12, u22 = self.u0, self.u1, self.u2, self.u11, self.u12, self.u22
        v0 = (
            self.eps1
            + 2 * t0 * (2 * c(al) * c(be) + c(2 * al))
            + 2 * r0 * (2 * c(3 * al) * c(be) + c(2 * be))
            + 2 * u0 * (2 * c(2 * al) * c(2 * be) + c(4 * al))
        )
        re1 = (
            -2 * _SQ3 * t2 * s(al) * s(be)
            + 2 * (r1 + r2) * s(3 * al) * s(be)
            - 2 * _SQ3 * u2 * s(2 * al) * s(2 * be)
        )
        im1 = (
            2 * t1 * s(al) * (2 * c(al) + c(be))
            + 2 * (r1 - r2) * s(3 * al) * c(be)
            + 2 * u1 * s(2 * al) * (2 * c(2 * al) + c(2 * be))
        )
        re2 = (
            2 * t2 * (c(2 * al) - c(al) * c(be))
            - 2 / _SQ3 * (r1 + r2) * (c(3 * al) * c(be) - c(2 * be))
            + 2 * u2 * (c(4 * al) - c(2 * al) * c(2 * be))
        )
        im2 = (
            2 * _SQ3 * t1 * c(al) * s(be)
            + 2 / _SQ3 * s(be) * (r1 - r2) * (c(3 * al) + 2 * c(be))
            + 2 * _SQ3 * u1 * c(2 * al) * s(2 * be)
        )
        v11 = (
            self.eps2
            + (t11 + 3 * t22) * c(al) * c(be)
            + 2 * t11 * c(2 * al)
            + 4 * r11 * c(3 * al) * c(be)
            + 2 * (r11 + _SQ3 * r12) * c(2 * be)
            + (u11 + 3 * u22) * c(2 * al) * c(2 * be)
            + 2 * u11 * c(4 * al)
        )
        re12 = (
            _SQ3 * (t22 - t11) * s(al) * s(be)
            + 4 * r12 * s(3 * al) * s(be)
            + _SQ3 * (u22 - u11) * s(2 * al) * s(2 * be)
        )
        im12 = 4 * t12 * s(al) * (c(al) - c(be)) + 4 * u12 * s(2 * al) * (c(2 * al) - c(2 * be))
        v22 = (
            self.eps2
            + (3 * t11 + t22) * c(al) * c(be)
            + 2 * t22 * c(2 * al)
            + 2 * r11 * (2 * c(3 * al) * c(be) + c(2 * be))
            + 2 / _SQ3 * r12 * (4 * c(3 * al) * c(be) - c(2 * be))
            + (3 * u11 + u22) * c(2 * al) * c(2 * be)
            + 2 * u22 * c(4 * al)
        )
        v1, v2, v12 = re1 + 1j * im1, re2 + 1j * im2, re12 + 1j * im12
        return jnp.array(
            [[v0, v1, v2], [jnp.conj(v1), v11, v12], [jnp.conj(v2), jnp.conj(v12), v22]],
            dtype=jnp.complex128,
        )

    def hamiltonian(self, k: Float[Array, "2"]) -> Complex[Array, "n n"]:
        h0 = self.spinless_hamiltonian(k)
        if not self.soc:
            return h0
        soc = (self.lam / 2) * jnp.asarray(_LZ)
        zero = jnp.zeros((3, 3), dtype=jnp.complex128)
        return jnp.block([[h0 + soc, zero], [zero, h0 - soc]])

    def to_tight_binding(self):
        """The same model as a :class:`~qgeo_jax.models.TightBinding` hopping table (exact)."""
        from ..io._wannier90 import to_tight_binding

        return to_tight_binding(self, max_range=2, spin=self.spin_operators())


def tmd_three_band(
    material: str = "MoS2", *, neighbours: str = "TNN", soc: bool = True, **overrides
) -> TMDThreeBand:
    """Liu et al. (PRB 88, 085433 (2013)) GGA parameters for ``material`` in MoS2, WS2, MoSe2, WSe2,
    MoTe2, WTe2 (2H monolayers). ``neighbours="NN"`` or ``"TNN"`` picks the paper's
    nearest-neighbour or up-to-third-neighbour fit; ``soc`` adds its on-site coupling λ;
    ``overrides`` replace single parameters (e.g. ``lam=0.0``).
    """
    if material not in _TMD_SOC:
        raise ValueError(
            f"tmd_three_band: unknown material {material!r}; choose one of {sorted(_TMD_SOC)}."
        )
    if neighbours == "NN":
        params = dict(zip(_TMD_FIELDS[:9], _TMD_NN_GGA[material], strict=True))
    elif neighbours == "TNN":
        params = dict(zip(_TMD_FIELDS, _TMD_TNN_GGA[material], strict=True))
    else:
        raise ValueError(f"tmd_three_band: neighbours must be 'NN' or 'TNN', got {neighbours!r}.")
    params["lam"] = _TMD_SOC[material]
    params.update(overrides)
    return TMDThreeBand(soc=soc, **params)


# ------------------------------------------------------------------------------------------------
# Bi2Se3 family: Zhang et al. (2009)
# ------------------------------------------------------------------------------------------------
_BI2SE3 = dict(C=-0.0068, D1=1.3, D2=19.6, M=0.28, A1=2.2, A2=4.1, B1=10.0, B2=56.6)


class TopologicalInsulatorKP(AbstractModel):
    r"""Four-band k·p model of the Bi₂Se₃ family (Zhang et al., Nat. Phys. 5, 438 (2009), eq. (1)).

    Basis (|P1⁺_z,↑⟩, |P2⁻_z,↑⟩, |P1⁺_z,↓⟩, |P2⁻_z,↓⟩), k_± = k_x ± i k_y:

    .. math::
        H = ε_0(k) + \begin{pmatrix} M(k) & A_1k_z & 0 & A_2k_- \\ A_1k_z & −M(k) & A_2k_- & 0 \\
            0 & A_2k_+ & M(k) & −A_1k_z \\ A_2k_+ & 0 & −A_1k_z & −M(k)\end{pmatrix}

    ε_0 = C + D_1k_z² + D_2k_⊥², M(k) = M − B_1k_z² − B_2k_⊥². Bands E = ε_0 ± (M(k)² + A_1²k_z²
    + A_2²k_⊥²)^{1/2}, each doubly degenerate. M·B_{1,2} > 0 is the band inversion (topological
    phase). Spin operators: the pseudospin S = σ/2 ⊗ 1₂ on the ↑/↓ label (the basis states are
    j_z = ±½ spin–orbit states; in-plane g-factors are orbital dependent — an approximation).
    Continuum model (3D): energies eV, lengths Å; ``cutoff`` (Å⁻¹) bounds default meshes.
    """

    C: Float[Array, ""]
    D1: Float[Array, ""]
    D2: Float[Array, ""]
    M: Float[Array, ""]
    A1: Float[Array, ""]
    A2: Float[Array, ""]
    B1: Float[Array, ""]
    B2: Float[Array, ""]
    cutoff: float = eqx.field(static=True, default=0.2)

    def __init__(self, *, C, D1, D2, M, A1, A2, B1, B2, cutoff: float = 0.2):
        self.C, self.D1, self.D2, self.M = as_param(C), as_param(D1), as_param(D2), as_param(M)
        self.A1, self.A2, self.B1, self.B2 = as_param(A1), as_param(A2), as_param(B1), as_param(B2)
        self.cutoff = float(cutoff)

    @property
    def dim(self) -> int:
        return 3

    @property
    def k_cutoff(self) -> float:
        return self.cutoff

    def spin_operators(self) -> Complex[Array, "3 4 4"]:
        return jnp.asarray(np.stack([np.kron(s / 2, np.eye(2)) for s in PAULI]))

    def parity(self) -> Float[Array, "4 4"]:
        """Inversion in this basis: P = diag(+1, −1, +1, −1) (P1⁺ even, P2⁻ odd)."""
        return jnp.diag(jnp.array([1.0, -1.0, 1.0, -1.0]))

    def hamiltonian(self, k: Float[Array, "3"]) -> Complex[Array, "4 4"]:
        kx, ky, kz = k[0], k[1], k[2]
        kp2 = kx * kx + ky * ky
        eps = self.C + self.D1 * kz * kz + self.D2 * kp2
        m = self.M - self.B1 * kz * kz - self.B2 * kp2
        az = self.A1 * kz
        am, ap = self.A2 * (kx - 1j * ky), self.A2 * (kx + 1j * ky)
        z = jnp.zeros_like(am)
        h = jnp.array(
            [[m, az, z, am], [az, -m, am, z], [z, ap, m, -az], [ap, z, -az, -m]],
            dtype=jnp.complex128,
        )
        return h + eps * jnp.eye(4, dtype=jnp.complex128)


def bi2se3(**overrides) -> TopologicalInsulatorKP:
    """Bi₂Se₃ parameters of Zhang et al., Nat. Phys. 5, 438 (2009), Table 1 (eV, Å):
    C = −0.0068, D1 = 1.3, D2 = 19.6, M = 0.28, A1 = 2.2, A2 = 4.1, B1 = 10, B2 = 56.6."""
    params = dict(_BI2SE3)
    params.update(overrides)
    return TopologicalInsulatorKP(**params)


class TISurfaceDirac(AbstractModel):
    r"""Surface Dirac cone of a 3D topological insulator with an exchange field.

    .. math:: H = E_0 + D k^2 + v (k_y σ_x − k_x σ_y) + J σ_z

    (Zhang et al., Nat. Phys. 5, 438 (2009), eq. (2) with the exchange term J of a magnetic
    overlayer or doping; Qi, Hughes, Zhang, PRB 78, 195424 (2008)). σ is the (real) spin of the
    surface state, S = σ/2. For J ≠ 0 the Dirac cone is gapped and the filled lower band carries
    Chern number sign(J)/2 with this package's sign convention (half-quantized anomalous Hall
    effect, σ_xy = −sign(J) e²/2h at T = 0 in the gap). ``v`` in eV·Å (ħ v); continuum model with
    ``cutoff`` (Å⁻¹).
    """

    v: Float[Array, ""]
    exchange: Float[Array, ""]
    e0: Float[Array, ""]
    d: Float[Array, ""]
    cutoff: float = eqx.field(static=True, default=0.5)

    def __init__(self, v=4.1, exchange=0.0, e0=0.0, d=0.0, *, cutoff: float = 0.5):
        self.v, self.exchange, self.e0, self.d = (
            as_param(v),
            as_param(exchange),
            as_param(e0),
            as_param(d),
        )
        self.cutoff = float(cutoff)

    @property
    def dim(self) -> int:
        return 2

    @property
    def k_cutoff(self) -> float:
        return self.cutoff

    def spin_operators(self) -> Complex[Array, "3 2 2"]:
        return jnp.asarray(PAULI / 2)

    def hamiltonian(self, k: Float[Array, "2"]) -> Complex[Array, "2 2"]:
        kx, ky = k[0], k[1]
        return (
            (self.e0 + self.d * (kx * kx + ky * ky)) * SIGMA0
            + self.v * (ky * PAULI[0] - kx * PAULI[1])
            + self.exchange * PAULI[2]
        )


def bi2se3_surface(exchange=0.0, *, v=None, e0=None, cutoff: float = 0.5) -> TISurfaceDirac:
    r"""Surface Dirac cone of :func:`bi2se3` with exchange J (eV).

    Defaults from the bulk parameters of Zhang et al. (2009): the surface state of the k·p model
    has ħv = A_2 (1 − D_1²/B_1²)^{1/2} = 4.065 eV·Å and Dirac point E_0 = C + D_1 M/B_1 = 0.0296 eV
    (W.-Y. Shan, H.-Z. Lu, S.-Q. Shen, New J. Phys. 12, 043048 (2010),
    doi:10.1088/1367-2630/12/4/043048); the paper's leading-order surface model uses ħv = A_2 = 4.1.
    ARPES finds v ≈ 5×10⁵ m/s, ħv ≈ 3.3 eV·Å (Xia et al., Nat. Phys. 5, 398 (2009)): pass ``v=3.3``.
    """
    p = _BI2SE3
    if v is None:
        v = p["A2"] * np.sqrt(1 - (p["D1"] / p["B1"]) ** 2)
    if e0 is None:
        e0 = p["C"] + p["D1"] * p["M"] / p["B1"]
    return TISurfaceDirac(v=v, exchange=exchange, e0=e0, cutoff=cutoff)


# ------------------------------------------------------------------------------------------------
# Twisted bilayer graphene: Bistritzer & MacDonald (2011)
# ------------------------------------------------------------------------------------------------
def _hex_shells(n_shells: int) -> np.ndarray:
    """Integer coefficients (m1, m2) of moiré reciprocal vectors G = m1 b1 + m2 b2 (b1, b2 at 60°)
    within ``n_shells`` hexagonal shells: max(|m1|, |m2|, |m1 + m2|) ≤ n_shells."""
    r = range(-n_shells, n_shells + 1)
    pts = [(m1, m2) for m1 in r for m2 in r if max(abs(m1), abs(m2), abs(m1 + m2)) <= n_shells]
    return np.array(
        sorted(pts, key=lambda p: (max(abs(p[0]), abs(p[1]), abs(p[0] + p[1])), p)), dtype=np.int64
    )


class BistritzerMacDonald(AbstractModel):
    r"""Continuum model of twisted bilayer graphene, one valley (Bistritzer & MacDonald, PNAS 108,
    12233 (2011), doi:10.1073/pnas.1108174108), as a lattice model on the moiré Bravais lattice.

    Plane-wave basis |l, G, s⟩ (layer l = 1, 2; moiré reciprocal vector G inside ``n_shells``
    hexagonal shells; sublattice s = A, B), N = 4·N_G bands. With k_θ = 2 k_D sin(θ/2),
    k_D = 4π/(3a), q_1 = k_θ(0, −1) and q_{2,3} = R(±2π/3) q_1 (valley K):

    .. math::
        H = \begin{pmatrix} h(\mathbf k + \mathbf G) & T \\
            T^† & h(\mathbf k + \mathbf G + \mathbf q_1)\end{pmatrix},\quad
        h(\mathbf p) = ħv\,\mathbf p\cdot\boldsymbol σ + Δ_l σ_z,\quad
        T_j = w_0 σ_0 + w_1\big(\cos\tfrac{2π(j−1)}{3} σ_x + \sin\tfrac{2π(j−1)}{3} σ_y\big)

    where T_j couples layer-1 momentum p to layer-2 momentum p + q_j, i.e. G' = G + q_j − q_1 with
    q_2 − q_1 = b_1, q_3 − q_1 = b_2 the moiré reciprocal vectors. The small rotation of the Pauli
    matrices by ±θ/2 is neglected (as in most later work, e.g. Bernevig et al., PRB 103, 205411
    (2021)). Valley K' (``valley=-1``) is the time-reversed copy, H_{K'}(k) = H_K(−k)*.
    ``mass`` = (Δ_1, Δ_2) is a sublattice potential per layer (hBN alignment), which gaps the
    Dirac points and gives the two central bands valley Chern numbers ±1.

    Moiré K points: K_M = 0 (layer-1 Dirac point) and K'_M = −q_1; Γ_M = q_2. Dimensionless
    coupling α = w_1/(ħv k_θ): the Dirac velocity is v*/v = (1 − 3α²)/(1 + 6α²) to leading order
    (BM's perturbative result); in the chiral limit w_0 = 0 the first magic angle is α = 0.586
    (Tarnopolsky, Kruchkov, Vishwanath, PRL 122, 106405 (2019)). Defaults: w_0 = w_1 = 110 meV
    (BM), a = 2.46 Å, ħv = 5.817 eV·Å (v k_D = 9.905 eV), with which v* vanishes at θ ≈ 1.05° as
    BM report (tested). Energies eV, lengths Å; the twist angle ``theta`` in degrees.
    """

    theta: Float[Array, ""]
    w0: Float[Array, ""]
    w1: Float[Array, ""]
    v: Float[Array, ""]
    a: Float[Array, ""]
    mass: Float[Array, "2"]
    n_shells: int = eqx.field(static=True, default=4)
    valley: int = eqx.field(static=True, default=1)

    def __init__(
        self,
        theta=1.05,
        w0=0.110,
        w1=0.110,
        v=5.817,
        *,
        a=2.46,
        mass=(0.0, 0.0),
        n_shells: int = 4,
        valley: int = 1,
    ):
        if valley not in (1, -1):
            raise ValueError(f"BistritzerMacDonald: valley must be +1 or -1, got {valley!r}.")
        if int(n_shells) < 1:
            raise ValueError(f"BistritzerMacDonald: n_shells must be >= 1, got {n_shells!r}.")
        self.theta, self.w0, self.w1, self.v, self.a = (as_param(x) for x in (theta, w0, w1, v, a))
        self.mass = as_param(np.broadcast_to(np.asarray(mass, dtype=np.float64), (2,)).copy())
        self.n_shells = int(n_shells)
        self.valley = valley

    @property
    def dim(self) -> int:
        return 2

    def k_theta(self) -> Float[Array, ""]:
        """Moiré wavevector k_θ = 2 k_D sin(θ/2) (Å⁻¹)."""
        return 2 * (4 * jnp.pi / (3 * self.a)) * jnp.sin(jnp.deg2rad(self.theta) / 2)

    def alpha(self) -> Float[Array, ""]:
        """α = w_1/(ħv k_θ)."""
        return self.w1 / (self.v * self.k_theta())

    def q_vectors(self) -> Float[Array, "3 2"]:
        """q_1 = k_θ(0, −1), q_2 = k_θ(√3/2, 1/2), q_3 = k_θ(−√3/2, 1/2)."""
        return self.k_theta() * jnp.array([[0.0, -1.0], [_SQ3 / 2, 0.5], [-_SQ3 / 2, 0.5]])

    def reciprocal(self) -> Float[Array, "2 2"]:
        q = self.q_vectors()
        return jnp.stack([q[1] - q[0], q[2] - q[0]])

    @property
    def lattice(self) -> Float[Array, "2 2"]:
        return 2 * jnp.pi * jnp.linalg.inv(self.reciprocal()).T

    def positions(self) -> Float[Array, "n 2"]:
        return jnp.zeros((self.norb, 2))

    @property
    def norb(self) -> int:
        return 4 * _hex_shells(self.n_shells).shape[0]

    def plane_waves(self) -> np.ndarray:
        """Integer coefficients (m1, m2) of the basis vectors G = m1 b1 + m2 b2, in basis order.

        The basis index is (layer, G, sublattice) → l·2N_G + 2g + s. Shifting k by b_a relabels the
        plane waves: ψ_{k+b_a}(l, G, s) = ψ_k(l, G + ξ b_a, s) up to the cutoff (ξ the valley).
        """
        return _hex_shells(self.n_shells)

    def central_bands(self) -> tuple[int, int]:
        """Indices of the two bands closest to charge neutrality (N/2 − 1, N/2)."""
        half = self.norb // 2
        return half - 1, half

    def _valley_k(self, k):
        shells = _hex_shells(self.n_shells)
        ng = shells.shape[0]
        b = self.reciprocal()
        g = jnp.asarray(shells, dtype=jnp.float64) @ b
        q = self.q_vectors()
        p1, p2 = k + g, k + g + q[0]

        def dirac(p, delta):
            off = self.v * (p[:, 0] - 1j * p[:, 1])
            blocks = jnp.zeros((ng, 2, 2), dtype=jnp.complex128)
            blocks = blocks.at[:, 0, 1].set(off).at[:, 1, 0].set(jnp.conj(off))
            blocks = blocks.at[:, 0, 0].set(delta).at[:, 1, 1].set(-delta)
            return blocks

        def block_diag(blocks):
            eye = jnp.eye(ng, dtype=jnp.complex128)
            return jnp.einsum("gh,gst->gsht", eye, blocks).reshape(2 * ng, 2 * ng)

        h11, h22 = block_diag(dirac(p1, self.mass[0])), block_diag(dirac(p2, self.mass[1]))
        # Interlayer: ⟨1, G| T |2, G'⟩ = T_j for G' = G + (0, b1, b2)[j] (shell members only).
        index = {tuple(m): i for i, m in enumerate(shells.tolist())}
        t12 = jnp.zeros((2 * ng, 2 * ng), dtype=jnp.complex128)
        for j, shift in enumerate([(0, 0), (1, 0), (0, 1)]):
            phi = 2 * np.pi * j / 3
            tj = self.w0 * SIGMA0 + self.w1 * (np.cos(phi) * PAULI[0] + np.sin(phi) * PAULI[1])
            rows, cols = [], []
            for i, (m1, m2) in enumerate(shells.tolist()):
                partner = index.get((m1 + shift[0], m2 + shift[1]))
                if partner is not None:
                    rows.append(i)
                    cols.append(partner)
            conn = np.zeros((ng, ng))
            conn[rows, cols] = 1.0
            t12 = t12 + jnp.kron(jnp.asarray(conn), tj)
        return jnp.block([[h11, t12], [jnp.conj(t12.T), h22]])

    def hamiltonian(self, k: Float[Array, "2"]) -> Complex[Array, "n n"]:
        if self.valley == 1:
            return self._valley_k(k)
        return jnp.conj(self._valley_k(-k))
