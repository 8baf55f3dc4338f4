"""Converters from other tight-binding packages (optional; the packages are not dependencies).

* PythTB (Coh & Vanderbilt, https://www.physics.rutgers.edu/pythtb/): :func:`from_pythtb` reads a
  ``pythtb.tb_model`` (1.x layout). PythTB's Bloch convention e^{2πi k·(R + τ_j − τ_i)} is this
  package's "positions" convention, and ``set_hop(amp, i, j, R)`` means ⟨i,0|H|j,R⟩ = amp with the
  Hermitian conjugate implied — the same bond-once rule as :class:`~qgeo_jax.models.TightBinding`,
  so the conversion is one to one.
* TBmodels (Gresch et al., PRMaterials 2, 103805 (2018)) and WannierBerri read and write Wannier90
  files: exchange models with them through :func:`~qgeo_jax.io.write_hr` /
  :func:`~qgeo_jax.io.read_hr` and ``*_tb.dat``.
"""

from __future__ import annotations

import numpy as np

from ..models._tight_binding import TightBinding
from ._wannier90 import spinor_spin_operators


def from_pythtb(model) -> TightBinding:
    """A :class:`~qgeo_jax.models.TightBinding` from a ``pythtb.tb_model`` (PythTB 1.x).

    Spinful PythTB models (``nspin=2``) become 2·norb orbitals in interleaved order (orbital i ↑ at
    2i, ↓ at 2i+1), with spin operators S = σ/2. Lengths keep PythTB's units (its lattice vectors);
    only fully periodic models (``dim_k == dim_r``) are accepted.
    """
    try:
        dim_k, dim_r = int(model._dim_k), int(model._dim_r)
        lat, orb = np.asarray(model._lat, dtype=float), np.asarray(model._orb, dtype=float)
        nspin, norb = int(model._nspin), int(model._norb)
        site, hops = model._site_energies, model._hoppings
    except AttributeError as exc:
        raise ValueError(
            f"from_pythtb: {type(model).__name__} does not look like a PythTB 1.x tb_model ({exc})."
        ) from None
    if dim_k != dim_r or dim_k not in (1, 2, 3):
        raise ValueError(
            f"from_pythtb: only fully periodic models are supported (dim_k = dim_r = 1-3), got "
            f"dim_k={dim_k}, dim_r={dim_r}."
        )
    if nspin == 1:
        onsite = np.asarray(site, dtype=float).reshape(norb)
        bonds = [(complex(a), int(i), int(j), tuple(int(r) for r in R)) for a, i, j, R in hops]
        return TightBinding(lat, orb, onsite, bonds)
    if nspin != 2:
        raise ValueError(f"from_pythtb: nspin must be 1 or 2, got {nspin}.")
    positions = np.repeat(orb, 2, axis=0)
    onsite = np.zeros(2 * norb)
    bonds = []
    zero = (0,) * dim_k
    for i, block in enumerate(np.asarray(site, dtype=complex).reshape(norb, 2, 2)):
        onsite[2 * i : 2 * i + 2] = block.diagonal().real
        if block[0, 1] != 0:
            bonds.append((complex(block[0, 1]), 2 * i, 2 * i + 1, zero))
    for amp, i, j, R in hops:
        amp = np.asarray(amp, dtype=complex).reshape(2, 2)
        R = tuple(int(r) for r in R)
        for s in range(2):
            for sp in range(2):
                if amp[s, sp] != 0:
                    bonds.append((complex(amp[s, sp]), 2 * int(i) + s, 2 * int(j) + sp, R))
    if not bonds:
        raise ValueError("from_pythtb: the model has no hoppings.")
    return TightBinding(
        lat, positions, onsite, bonds, spin=spinor_spin_operators(2 * norb, "interleaved")
    )
