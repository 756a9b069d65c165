"""lazyhess: the Hessian of a JAX function as an object you index, not an array you wait for."""

from importlib.metadata import version as _version

from . import ipopt as ipopt  # the lazyhess.ipopt namespace (not in __all__)
from . import scipy as scipy  # the lazyhess.scipy namespace (not in __all__)
from ._arguments import Mode
from ._cache import CacheInfo
from ._display import spy
from ._engine import Cost
from ._errors import SparsityWarning, VerificationError
from ._estimators import Eigen, Estimate, SpectralDensity
from ._formats import Format
from ._functional import (
    check_hessian_correctness,
    compressed_hessian,
    decompress,
    decompress_data,
    hessian_coloring,
    sparse_hessian,
    sparse_hessian_from_coloring,
    value_and_sparse_hessian,
)
from ._hessian import Hessian, hessian
from ._progress import set_progress_default
from ._views import HessianBlock, HessianNode
from .coloring import ColoredPattern, hessian_coloring_from_sparsity
from .sparsity import SparsityPattern, hessian_sparsity

__version__ = _version("lazyhess")

__all__ = [
    "CacheInfo",
    "ColoredPattern",
    "Cost",
    "Eigen",
    "Estimate",
    "Format",
    "Hessian",
    "HessianBlock",
    "HessianNode",
    "Mode",
    "SparsityPattern",
    "SparsityWarning",
    "SpectralDensity",
    "VerificationError",
    "__version__",
    "check_hessian_correctness",
    "compressed_hessian",
    "decompress",
    "decompress_data",
    "hessian",
    "hessian_coloring",
    "hessian_coloring_from_sparsity",
    "hessian_sparsity",
    "set_progress_default",
    "sparse_hessian",
    "sparse_hessian_from_coloring",
    "spy",
    "value_and_sparse_hessian",
]
