"""Turning the accepted pattern inputs into one canonical form."""

import numpy as np
import scipy.sparse as sp

from .._csr import shape_of


def square_csr(pattern) -> sp.csr_array:
    """The sparsity pattern as a boolean CSR array with sorted, unique indices.

    Args:
        pattern: a scipy sparse matrix or array, a dense 2-D array (nonzero = structural
            entry), or an object with a ``to_scipy(format)`` method (such as
            ``lazyhess.SparsityPattern``). Stored entries with value zero are dropped.

    Returns:
        ``scipy.sparse.csr_array`` of dtype bool, with int32 indices. Cost O(nnz log nnz).

    Raises:
        TypeError: for any other input.
        ValueError: if the pattern is not 2-D or not square.
    """
    if hasattr(pattern, "to_scipy"):
        matrix = sp.csr_array(pattern.to_scipy("csr"))
    elif sp.issparse(pattern):
        matrix = sp.csr_array(pattern)
    elif isinstance(pattern, np.ndarray) or hasattr(pattern, "__array__"):
        dense = np.asarray(pattern)
        if dense.ndim != 2:
            raise ValueError(
                f"a Hessian sparsity pattern must be 2-D; got an array of shape {dense.shape}"
            )
        matrix = sp.csr_array(dense != 0)
    else:
        raise TypeError(
            f"expected a sparsity pattern (a scipy sparse matrix, a dense boolean numpy "
            f"array, or an object with a to_scipy(format) method); got "
            f"{type(pattern).__name__}"
        )
    if shape_of(matrix)[0] != shape_of(matrix)[1]:
        raise ValueError(f"a Hessian sparsity pattern must be square; got shape {matrix.shape}")
    if not (matrix.dtype == bool and matrix.has_canonical_format and matrix.data.all()):
        matrix = sp.csr_array(matrix != 0, dtype=bool)
        matrix.sum_duplicates()
        matrix.sort_indices()
    if matrix.nnz >= np.iinfo(np.int32).max:
        raise ValueError(
            f"patterns with 2**31 or more entries are not supported; got {matrix.nnz}"
        )
    matrix.indptr = matrix.indptr.astype(np.int32, copy=False)
    matrix.indices = matrix.indices.astype(np.int32, copy=False)
    return matrix


def symmetric_csr(pattern) -> sp.csr_array:
    """Like ``square_csr``, and check that the pattern is symmetric.

    Raises:
        TypeError: for an input ``square_csr`` does not accept.
        ValueError: if the pattern is not 2-D, not square, or not symmetric.
    """
    matrix = square_csr(pattern)
    asymmetric = matrix != matrix.T
    if asymmetric.nnz:
        i, j = (int(a[0]) for a in asymmetric.nonzero())
        raise ValueError(
            f"a Hessian sparsity pattern must be symmetric; got {asymmetric.nnz} positions "
            f"that differ from their mirror, e.g. ({i}, {j}) is {bool(matrix[i, j])} but "
            f"({j}, {i}) is {bool(matrix[j, i])}. Pass pattern + pattern.T (or "
            f"pattern | pattern.T)."
        )
    return matrix
