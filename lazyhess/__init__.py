"""lazyhess: the Hessian of a JAX function as an object you index, not an array you wait for."""

from importlib.metadata import version as _version

__version__ = _version("lazyhess")

__all__ = [
    "__version__",
]
