import numpy as np
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from lazyhess._csr import sorted_unique


@given(
    hnp.arrays(
        st.sampled_from([np.int32, np.int64]),
        hnp.array_shapes(min_dims=1, max_dims=2, min_side=0, max_side=40),
        elements=st.integers(-50, 50),
    )
)
def test_sorted_unique_is_numpys_unique(values):
    out = sorted_unique(values)
    expected = np.unique(values)
    assert out.dtype == expected.dtype
    np.testing.assert_array_equal(out, expected)
