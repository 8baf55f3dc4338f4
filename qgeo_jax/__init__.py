"""qgeo_jax — differentiable quantum geometry of Bloch bands and the magnetization it produces.

Public API (everything else is private):

* models: :mod:`qgeo_jax.models` (MassiveDirac, Haldane, QiWuZhang, Rashba, RashbaLattice,
  TightBinding, from_function)
* one k: :func:`spectrum`, :func:`band_geometry` and the individual kernels
* meshes: :func:`monkhorst_pack`, :func:`continuum_mesh`, :func:`integrate`
* responses: :func:`orbital_magnetization`, :func:`spin_magnetization`,
  :func:`anomalous_hall_conductivity`, :func:`chern_number`
* open boundaries: :func:`build_flake`, :func:`flake_orbital_magnetization`, local markers
* files and plots: :mod:`qgeo_jax.io` (Wannier90), :mod:`qgeo_jax.plotting` (matplotlib, lazy)
* kinetic (E-field-induced) magnetization: :func:`kinetic_magnetization`,
  :func:`orbital_magnetoelectric_tensor`, kernels :func:`spin_berry_curvature`,
  :func:`magnetoelectric_tensor`, ...
* all responses in one pass: :func:`responses` (one eigh per k, all μ in one product)
* nonlinear Hall geometry: :func:`berry_curvature_dipole`, :func:`quantum_metric_dipole`,
  :func:`nonlinear_hall_conductivity`, kernel :func:`berry_connection_polarizability`
* second-order kinetic magnetization δM = χEE: :func:`nonlinear_kinetic_magnetization`
* batches and design: :func:`sweep`, :func:`vary`, :func:`stack_models`, :mod:`qgeo_jax.design`
* precision and meshes: :func:`cast_precision` (float32 linear algebra, float64 sums),
  :func:`refine_fermi_surface` (adaptive Fermi-surface mesh)
* several processes / hosts: :mod:`qgeo_jax.parallel` (``jax.distributed``)
* units: :mod:`qgeo_jax.units`
"""

from . import _config  # noqa: F401  (sets the float64 policy before anything is traced)
from . import design as design
from . import io as io
from . import models as models
from . import parallel as parallel
from . import plotting as plotting
from . import units as units
from ._bz import AbstractMesh as AbstractMesh
from ._bz import BoxMesh as BoxMesh
from ._bz import ExplicitMesh as ExplicitMesh
from ._bz import MonkhorstPackMesh as MonkhorstPackMesh
from ._bz import PolarMesh as PolarMesh
from ._bz import continuum_mesh as continuum_mesh
from ._bz import integrate as integrate
from ._bz import monkhorst_pack as monkhorst_pack
from ._bz import default_devices as default_devices
from ._bz import with_devices as with_devices
from ._chern import chern_number as chern_number
from ._geometry import BandGeometry as BandGeometry
from ._geometry import band_geometry as band_geometry
from ._geometry import band_velocity as band_velocity
from ._geometry import berry_curvature_tensor as berry_curvature_tensor
from ._geometry import orbital_moment_tensor as orbital_moment_tensor
from ._geometry import quantum_geometric_tensor as quantum_geometric_tensor
from ._geometry import quantum_metric as quantum_metric
from ._geometry import spin_expectation as spin_expectation
from ._geometry import tensor_to_vector as tensor_to_vector
from ._kinetic import kinetic_integrand as kinetic_integrand
from ._kinetic import kinetic_magnetization as kinetic_magnetization
from ._kinetic import spin_berry_curvature as spin_berry_curvature
from ._linalg import eigh as eigh
from ._magnetoelectric import interband_berry_connection as interband_berry_connection
from ._magnetoelectric import interband_orbital_moment as interband_orbital_moment
from ._magnetoelectric import intrinsic_orbital_integrand as intrinsic_orbital_integrand
from ._magnetoelectric import magnetoelectric_interband as magnetoelectric_interband
from ._magnetoelectric import magnetoelectric_tensor as magnetoelectric_tensor
from ._magnetoelectric import orbital_magnetoelectric_tensor as orbital_magnetoelectric_tensor
from ._magnetoelectric import quantum_metric_derivative as quantum_metric_derivative
from ._nonlinear_hall import berry_connection_polarizability as berry_connection_polarizability
from ._nonlinear_hall import berry_curvature_dipole as berry_curvature_dipole
from ._nonlinear_hall import nonlinear_hall_conductivity as nonlinear_hall_conductivity
from ._nonlinear_hall import quantum_metric_dipole as quantum_metric_dipole
from ._nonlinear_hall import si_factor as nonlinear_conductivity_si_factor
from ._nonlinear_kinetic import nonlinear_kinetic_integrand as nonlinear_kinetic_integrand
from ._nonlinear_kinetic import nonlinear_kinetic_magnetization as nonlinear_kinetic_magnetization
from ._occupation import fermi_dirac as fermi_dirac
from ._pipeline import responses as responses
from ._precision import PRECISIONS as PRECISIONS
from ._precision import cast_precision as cast_precision
from ._refine import refine_fermi_surface as refine_fermi_surface
from ._occupation import fermi_dirac_derivative as fermi_dirac_derivative
from ._occupation import grand_potential_weight as grand_potential_weight
from ._realspace import Flake as Flake
from ._realspace import build_flake as build_flake
from ._realspace import flake_orbital_magnetization as flake_orbital_magnetization
from ._realspace import flake_spin_density as flake_spin_density
from ._realspace import local_chern_marker as local_chern_marker
from ._realspace import local_orbital_magnetization as local_orbital_magnetization
from ._realspace import real_space_hoppings as real_space_hoppings
from ._responses import anomalous_hall_conductivity as anomalous_hall_conductivity
from ._responses import orbital_magnetization as orbital_magnetization
from ._responses import spin_magnetization as spin_magnetization
from ._spectrum import Spectrum as Spectrum
from ._spectrum import spectrum as spectrum
from ._validate import ChernResult as ChernResult
from ._validate import Convergence as Convergence
from ._validate import InputReport as InputReport
from ._validate import InvalidValueError as InvalidValueError
from ._validate import QgeoWarning as QgeoWarning
from ._validate import check_inputs as check_inputs
from ._validate import converged as converged
from ._sweep import stack_models as stack_models
from ._sweep import sweep as sweep
from ._sweep import unstack_models as unstack_models
from ._sweep import vary as vary

__version__ = "0.1.0"
