"""Every exception and warning class lazyhess raises (the bottom layer: imports nothing)."""


class SparsityWarning(UserWarning):
    """Sparsity detection used the conservative rule for an operation it does not know."""


class VerificationError(AssertionError):
    """A sparse Hessian disagrees with its dense reference (see ``check_hessian_correctness``)."""
