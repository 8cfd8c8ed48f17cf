"""Fixtures shared by the Python tests."""

import math

import numpy as np
import pytest

from attnkit import _arrays

GUARD_ELEMENTS = 64


@pytest.fixture
def guarded_outputs(monkeypatch):
    """Every output the package allocates through NumPy is placed inside a larger buffer whose every byte
    is 0xFF (NaN for fp16, bf16 and fp32), with GUARD_ELEMENTS elements of guard band on each side.
    A NaN left in an output means an element was not written; a changed guard byte, a write out of
    bounds. The guards are checked after the test."""
    buffers = []

    def empty(self, shape, dtype):
        dtype = np.dtype(dtype)
        count = math.prod(shape)
        buffer = np.empty(count + 2 * GUARD_ELEMENTS, dtype=dtype)
        buffer.view(np.uint8)[:] = 0xFF
        buffers.append(buffer)
        return buffer[GUARD_ELEMENTS:GUARD_ELEMENTS + count].reshape(shape)

    monkeypatch.setattr(_arrays.NumpyArrays, "empty", empty)
    yield buffers
    for buffer in buffers:
        raw = buffer.view(np.uint8)
        guard_bytes = GUARD_ELEMENTS * buffer.itemsize
        assert np.all(raw[:guard_bytes] == 0xFF), "a write before the start of an output"
        assert np.all(raw[-guard_bytes:] == 0xFF), "a write past the end of an output"
