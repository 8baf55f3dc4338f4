r"""Two coupled tilted massive Dirac cones: the band-anticrossing model used for bilayer WTe₂.

Source: Z. Z. Du, C. M. Wang, H.-Z. Lu, X. C. Xie, "Band Signatures for Strong Nonlinear Hall
Effect in Bilayer WTe₂", Phys. Rev. Lett. 121, 266601 (2018), doi:10.1103/PhysRevLett.121.266601
(arXiv:1812.10357): strong Berry-curvature-dipole (nonlinear Hall) signals appear near *tilted
band anticrossings* and band inversions.

.. warning::
   The published equation and parameter table could not be read in the reference corpus
   available when this module was written (only the abstract and introduction of the arXiv
   version were visible). The single-cone blocks h_i below follow a third-party transcription
   of that paper (a MATLAB script citing the DOI); the inter-cone coupling γσ₀ is this
   package's minimal choice (the transcription uses an 8-band variant). Neither is verified
   against the paper's text, and no parameter defaults are provided for the same reason. Check
   the equation and the values against the PRL before quoting results as "Du et al.".
"""

from __future__ import annotations

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Complex, Float

from ._base import PAULI, SIGMA0, AbstractModel, as_param


class TiltedDiracPair(AbstractModel):
    r"""Two tilted massive 2D Dirac cones of chiralities η₁, η₂ coupled by a hybridization γ.

    .. math::
        H(\mathbf k) = \begin{pmatrix} h_1(\mathbf k) & γ σ_0 \\
                       γ σ_0 & h_2(\mathbf k)\end{pmatrix},
        \qquad h_i = E_i + t_i q_x + v_i\,(q_y σ_x + η_i q_x σ_y) + \tfrac{m}{2} σ_z,
        \quad \mathbf q = \mathbf k − \mathbf K_i

    (basis: cone 1 pseudospin ↑↓, cone 2 pseudospin ↑↓). K_i (``centers``, default 0) is the
    position of cone i in k-space, t_i tilts cone i along x, E_i offsets it in energy, m is
    the Dirac mass (gap m at γ = 0), and γ couples the cones. With η₁ = −η₂ and E₁ ≠ E₂ the
    crossing of the two cones becomes a tilted band anticrossing — the band signature of strong
    nonlinear Hall response identified by Du et al., PRL 121, 266601 (2018),
    doi:10.1103/PhysRevLett.121.266601 (see the module warning: form and parameters not verified
    against that paper).

    Closed forms at γ = 0 (the single-cone results, e.g. Sodemann & Fu, PRL 115, 216806 (2015)):
    E_{i,±} = E_i + t_i q_x ± d_i, d_i = (v_i²q² + m²/4)^{1/2}, and Berry curvature
    Ω^z_{i,±} = ±η_i m v_i² / (4 d_i³) (this package's sign, Ω = −2 Im Σ v^x v^y/ΔE²).

    Time reversal: ``valley=-1`` is the Kramers/time-reversed partner, H_{−}(k) = H_{+}(−k)*,
    with E_{−}(k) = E_{+}(−k) and Ω_{−}(k) = −Ω_{+}(−k); the Berry curvature dipole of the two
    partners is equal, so a time-reversal-invariant system has twice the single-valley dipole.
    Spinless (pseudospin) model: ``spin_operators()`` is ``None``. Continuum model, units of the
    parameters (e.g. eV and Å: v, t in eV·Å; E_i, m, γ in eV); ``cutoff`` (1/length) bounds the
    default integration disk.
    """

    energy: Float[Array, "2"]
    tilt: Float[Array, "2"]
    velocity: Float[Array, "2"]
    centers: Float[Array, "2 2"]
    mass: Float[Array, ""]
    gamma: Float[Array, ""]
    chirality: tuple[int, int] = eqx.field(static=True, default=(-1, 1))
    valley: int = eqx.field(static=True, default=1)
    cutoff: float = eqx.field(static=True, default=0.5)

    def __init__(
        self,
        *,
        energy,
        tilt,
        velocity,
        mass,
        gamma,
        centers=((0.0, 0.0), (0.0, 0.0)),
        chirality=(-1, 1),
        valley: int = 1,
        cutoff: float = 0.5,
    ):
        chirality = tuple(int(c) for c in chirality)
        if len(chirality) != 2 or any(c not in (1, -1) for c in chirality):
            raise ValueError(f"TiltedDiracPair: chirality must be two of ±1, got {chirality!r}.")
        if valley not in (1, -1):
            raise ValueError(f"TiltedDiracPair: valley must be +1 or -1, got {valley!r}.")
        if not float(cutoff) > 0:
            raise ValueError(f"TiltedDiracPair: cutoff must be positive, got {cutoff!r}.")
        pair = lambda x, name: _pair(x, name)  # noqa: E731
        self.energy = pair(energy, "energy")
        self.tilt = pair(tilt, "tilt")
        self.velocity = pair(velocity, "velocity")
        self.centers = as_param(centers)
        if self.centers.shape != (2, 2):
            raise ValueError(
                f"TiltedDiracPair: centers must be two 2D points, got shape {np.shape(centers)}."
            )
        self.mass, self.gamma = as_param(mass), as_param(gamma)
        self.chirality = chirality
        self.valley = valley
        self.cutoff = float(cutoff)

    @property
    def dim(self) -> int:
        return 2

    @property
    def k_cutoff(self) -> float:
        return self.cutoff

    def cone(self, i: int, k: Float[Array, "2"]) -> Complex[Array, "2 2"]:
        """h_i(k) of cone i ∈ {0, 1} (valley +1)."""
        kx, ky = k[0] - self.centers[i, 0], k[1] - self.centers[i, 1]
        v, eta = self.velocity[i], self.chirality[i]
        return (
            (self.energy[i] + self.tilt[i] * kx) * SIGMA0
            + v * (ky * PAULI[0] + eta * kx * PAULI[1])
            + (self.mass / 2) * PAULI[2]
        )

    def _valley_plus(self, k):
        coupling = self.gamma * jnp.asarray(SIGMA0)
        return jnp.block([[self.cone(0, k), coupling], [coupling, self.cone(1, k)]])

    def hamiltonian(self, k: Float[Array, "2"]) -> Complex[Array, "4 4"]:
        if self.valley == 1:
            return self._valley_plus(k)
        return jnp.conj(self._valley_plus(-k))

    def partner(self) -> TiltedDiracPair:
        """The time-reversed partner (the other valley)."""
        return TiltedDiracPair(
            energy=self.energy,
            tilt=self.tilt,
            velocity=self.velocity,
            mass=self.mass,
            gamma=self.gamma,
            centers=self.centers,
            chirality=self.chirality,
            valley=-self.valley,
            cutoff=self.cutoff,
        )


def _pair(x, name):
    arr = as_param(x)
    if arr.ndim == 0:
        arr = jnp.stack([arr, arr])
    if arr.shape != (2,):
        raise ValueError(
            f"TiltedDiracPair: {name} must be a number or a pair, got shape {np.shape(x)}."
        )
    return arr
