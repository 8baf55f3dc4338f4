"""File formats and converters: Wannier90 ``_hr.dat`` / ``_tb.dat`` / ``_centres.xyz``, PythTB, TBmodels.

See :mod:`qgeo_jax.io._wannier90` for the formats, the phase conventions and the spin orderings.
"""

from ._peers import from_pythtb as from_pythtb
from ._tbmodels import from_tbmodels as from_tbmodels
from ._tbmodels import to_tbmodels as to_tbmodels
from ._wannier90 import read_centres_xyz as read_centres_xyz
from ._wannier90 import read_hr as read_hr
from ._wannier90 import read_tb as read_tb
from ._wannier90 import real_space_hamiltonian as real_space_hamiltonian
from ._wannier90 import spinor_spin_operators as spinor_spin_operators
from ._wannier90 import tight_binding_from_real_space as tight_binding_from_real_space
from ._wannier90 import to_tight_binding as to_tight_binding
from ._wannier90 import write_centres_xyz as write_centres_xyz
from ._wannier90 import write_hr as write_hr
from ._wannier90 import write_tb as write_tb
