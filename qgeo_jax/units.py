r"""Physical constants (CODATA 2018, SI) and conversions out of model units.

Inside the package ħ = e = k_B = 1; a model's energies are in its *energy unit* (e.g. eV) and its
lengths in its *length unit* (e.g. Å). The outputs then carry these model units:

=============================  ==========================================  ==============================
quantity                        model unit                                  converter
=============================  ==========================================  ==============================
orbital magnetization M^O       e·E·L²/ħ per L^d                            :func:`orbital_magnetization`
spin magnetization M^S          μ_B per L^d                                 :func:`spin_magnetization`
anomalous Hall σ                e²/ħ per L^(d−2)                            :func:`hall_conductivity`
Berry curvature, metric         L²                                          —
orbital moment m_n              e·E·L²/ħ                                    :func:`orbital_moment`
=============================  ==========================================  ==============================

with E the energy unit, L the length unit and d the model dimension. ``per_cell`` conversions
multiply by the unit-cell volume (in L^d) and express the result in Bohr magnetons.
"""

from __future__ import annotations

import numpy as np

# CODATA 2018 (exact where the SI defines them).
ELEMENTARY_CHARGE = 1.602176634e-19  # C
PLANCK = 6.62607015e-34  # J s
HBAR = PLANCK / (2 * np.pi)  # J s
ELECTRON_MASS = 9.1093837015e-31  # kg
BOHR_MAGNETON = ELEMENTARY_CHARGE * HBAR / (2 * ELECTRON_MASS)  # J/T = A m²
BOLTZMANN = 1.380649e-23  # J/K

ENERGY_UNITS = {"eV": ELEMENTARY_CHARGE, "meV": 1e-3 * ELEMENTARY_CHARGE, "J": 1.0, "Ry": 2.1798723611035e-18,
                "Ha": 4.3597447222071e-18}
LENGTH_UNITS = {"angstrom": 1e-10, "nm": 1e-9, "bohr": 5.29177210903e-11, "m": 1.0}


def _lookup(table, name, what):
    try:
        return table[name]
    except KeyError:
        raise ValueError(f"unknown {what} unit {name!r}; choose one of {sorted(table)}.") from None


def moment_unit_si(energy: str = "eV", length: str = "angstrom") -> float:
    """SI value (A·m² = J/T) of the model's moment unit e·E·L²/ħ."""
    return ELEMENTARY_CHARGE * _lookup(ENERGY_UNITS, energy, "energy") * _lookup(LENGTH_UNITS, length, "length") ** 2 / HBAR


def orbital_moment(m, *, energy: str = "eV", length: str = "angstrom", to: str = "bohr_magneton"):
    """Orbital moment m_n from e·E·L²/ħ to Bohr magnetons (``to="bohr_magneton"``) or A·m² (``"SI"``)."""
    si = np.asarray(m) * moment_unit_si(energy, length)
    return si if to == "SI" else si / BOHR_MAGNETON


def orbital_magnetization(M, *, dim: int, energy: str = "eV", length: str = "angstrom", to: str = "SI",
                          cell_volume=None):
    """Convert M^O from model units (e·E·L²/ħ per L^d).

    ``to="SI"``: A (2D, moment per area) or A/m (3D). ``to="bohr_magneton_per_cell"``: needs
    ``cell_volume`` in L^d (``model.cell_volume()``).
    """
    M = np.asarray(M)
    L = _lookup(LENGTH_UNITS, length, "length")
    if to == "SI":
        return M * moment_unit_si(energy, length) / L**dim
    if to == "bohr_magneton_per_cell":
        if cell_volume is None:
            raise ValueError("to='bohr_magneton_per_cell' needs cell_volume= (model.cell_volume()).")
        return M * np.asarray(cell_volume) * moment_unit_si(energy, length) / BOHR_MAGNETON
    raise ValueError(f"unknown target {to!r}; use 'SI' or 'bohr_magneton_per_cell'.")


def spin_magnetization(M, *, dim: int, length: str = "angstrom", to: str = "SI", cell_volume=None):
    """Convert M^S from μ_B per L^d to SI (A·m²/m^d) or μ_B per cell (needs ``cell_volume``)."""
    M = np.asarray(M)
    if to == "SI":
        return M * BOHR_MAGNETON / _lookup(LENGTH_UNITS, length, "length") ** dim
    if to == "bohr_magneton_per_cell":
        if cell_volume is None:
            raise ValueError("to='bohr_magneton_per_cell' needs cell_volume= (model.cell_volume()).")
        return M * np.asarray(cell_volume)
    raise ValueError(f"unknown target {to!r}; use 'SI' or 'bohr_magneton_per_cell'.")


def hall_conductivity(sigma, *, dim: int, length: str = "angstrom", to: str = "SI"):
    """σ from e²/ħ per L^(d−2) to SI (S in 2D, S/m in 3D) or to e²/h (``to="e2_over_h"``, 2D)."""
    sigma = np.asarray(sigma)
    if to == "e2_over_h":
        return sigma * 2 * np.pi
    if to == "SI":
        return sigma * ELEMENTARY_CHARGE**2 / HBAR / _lookup(LENGTH_UNITS, length, "length") ** (dim - 2)
    raise ValueError(f"unknown target {to!r}; use 'SI' or 'e2_over_h'.")


def temperature_to_energy(kelvin, *, energy: str = "eV"):
    """k_B T in the model's energy unit."""
    return np.asarray(kelvin) * BOLTZMANN / _lookup(ENERGY_UNITS, energy, "energy")
