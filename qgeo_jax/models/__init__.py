"""Built-in models and the model interface."""

from ._base import AbstractModel as AbstractModel
from ._base import PAULI as PAULI
from ._continuum import MassiveDirac as MassiveDirac
from ._continuum import Rashba as Rashba
from ._function import FunctionModel as FunctionModel
from ._function import from_function as from_function
from ._lattice import Haldane as Haldane
from ._lattice import QiWuZhang as QiWuZhang
from ._lattice import RashbaLattice as RashbaLattice
from ._tight_binding import TightBinding as TightBinding
