"""The vector form of TFLite's QuantizeMultiplier decides every multiplier as the scalar form does."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from edged.model.quant import quantize_multiplier, quantize_multipliers

REALS = st.one_of(
    st.floats(min_value=-1e12, max_value=1e12, allow_nan=False, allow_infinity=False),
    st.floats(min_value=1e-15, max_value=4.0),
    st.sampled_from([0.0, 0.5, 1.0, 2.0**-31, 2.0**-32, 2.0**30, 2.0**31, 0.9999999999, 1 - 2.0**-33]),
)


@given(st.lists(REALS, min_size=1, max_size=40))
def test_the_vector_form_equals_the_scalar_form(reals):
    mult, shift = quantize_multipliers(np.array(reals))
    expected = [quantize_multiplier(r) for r in reals]
    assert [(int(m), int(s)) for m, s in zip(mult, shift, strict=True)] == expected


def test_a_mantissa_that_rounds_up_to_two_to_the_31_carries_into_the_shift():
    real = 1 - 2.0**-33  # its mantissa times 2^31 rounds to 2^31
    assert quantize_multiplier(real) == (1 << 30, 1)
    mult, shift = quantize_multipliers(np.array([real]))
    assert (int(mult[0]), int(shift[0])) == (1 << 30, 1)


def test_a_non_finite_multiplier_is_refused_with_a_reason():
    for bad in (np.inf, np.nan):
        with pytest.raises(ValueError, match="not finite"):
            quantize_multipliers(np.array([0.5, bad]))
