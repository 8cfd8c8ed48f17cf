"""Arrays of the frameworks other than PyTorch: NumPy, CuPy and JAX.

Inputs go to the extension through DLPack (nanobind's ndarray caster) without a copy, strides as they
are. Outputs are allocated here, in the framework of q, on q's device:

- NumPy: numpy.empty. bfloat16 is ml_dtypes.bfloat16 (what JAX uses too); NumPy cannot export that dtype
  through DLPack, so such arrays travel as uint16 views and the extension reads them as bf16
  (importer code 2). fp16 and fp32 need nothing extra.
- CuPy: cupy.empty on q's device; kernels run on CuPy's current stream.
- JAX (eager arrays only; not inside jax.jit): the inputs are waited for (block_until_ready, a host
  sync), outputs are allocated with NumPy (CPU) or CuPy (GPU; CuPy must be installed) and handed to JAX on
  q's device (jax.device_put / jax.dlpack.from_dlpack, which orders JAX's stream after CuPy's).
"""

import sys
from typing import Any, Tuple

IMPORTER_DLPACK = 1
IMPORTER_DLPACK_BF16 = 2


def _is_bf16(array) -> bool:
    # ml_dtypes' bfloat16 is a NumPy dtype of kind "V"; the kind test keeps the (slow) name lookup off
    # the path of every other dtype.
    dtype = getattr(array, "dtype", None)
    return getattr(dtype, "kind", None) == "V" and dtype.name == "bfloat16"


class NumpyArrays:
    """NumPy arrays (and the host side of JAX on the CPU)."""

    def __init__(self, bf16: bool):
        import numpy

        self.np = numpy
        self.bf16 = bf16
        self.importer = IMPORTER_DLPACK_BF16 if bf16 else IMPORTER_DLPACK

    def empty(self, shape, dtype):
        return self.np.empty(shape, dtype=dtype)

    def view(self, name: str, array):
        """What the extension receives: bf16 as a uint16 view; a real uint16 array is refused here
        (the bf16 importer would otherwise read it as bf16)."""
        if array is None or not self.bf16:
            return array
        dtype = getattr(array, "dtype", None)
        if dtype is not None and dtype == self.np.uint16:
            raise ValueError(f"{name}: dtype uint16 is not supported (fp16, bf16 or fp32; index tensors int32)")
        return array.view(self.np.uint16) if _is_bf16(array) else array

    def stream(self, like) -> int:
        return 0

    def workspace(self, nbytes: int, like) -> Tuple[Any, int]:
        buffer = self.np.empty(nbytes, dtype=self.np.uint8)
        return buffer, buffer.__array_interface__["data"][0]

    def finish(self, array):
        return array

    def wait_inputs(self, *arrays) -> None:
        pass


class CupyArrays:
    """CuPy arrays on a CUDA device."""

    importer = IMPORTER_DLPACK

    def __init__(self, device_id: int):
        import cupy

        self.cp = cupy
        self.device_id = device_id

    def empty(self, shape, dtype):
        with self.cp.cuda.Device(self.device_id):
            return self.cp.empty(shape, dtype=dtype)

    def view(self, name: str, array):
        return array

    def stream(self, like) -> int:
        return self.cp.cuda.get_current_stream().ptr

    def workspace(self, nbytes: int, like) -> Tuple[Any, int]:
        buffer = self.empty(nbytes, self.cp.uint8)
        return buffer, buffer.data.ptr

    def finish(self, array):
        return array

    def wait_inputs(self, *arrays) -> None:
        pass


class JaxArrays:
    """Eager JAX arrays: outputs are allocated by NumPy (CPU) or CuPy (GPU) and handed to JAX."""

    def __init__(self, q):
        import jax

        self.jax = jax
        self.device = next(iter(q.devices()))
        platform = self.device.platform
        self.on_gpu = platform == "gpu" or platform == "cuda"
        if self.on_gpu:
            if "cupy" not in sys.modules:
                try:
                    import cupy  # noqa: F401
                except ImportError:
                    raise NotImplementedError(
                        "JAX arrays on a GPU need CuPy to allocate the outputs (pip install cupy-cuda13x)"
                    ) from None
            self.host = CupyArrays(self.device.id)
        else:
            self.host = _numpy_arrays(_is_bf16(q))
        self.importer = self.host.importer

    def empty(self, shape, dtype):
        import numpy

        return self.host.empty(shape, numpy.dtype(dtype))

    def view(self, name: str, array):
        if array is None:
            return None
        if isinstance(array, self.jax.Array):
            return array  # exported through its own __dlpack__ (bf16 included)
        return self.host.view(name, array)

    def stream(self, like) -> int:
        return self.host.stream(like) if self.on_gpu else 0

    def workspace(self, nbytes: int, like) -> Tuple[Any, int]:
        return self.host.workspace(nbytes, like)

    def finish(self, array):
        if self.on_gpu:
            return self.jax.dlpack.from_dlpack(array)
        return self.jax.device_put(array, self.device)  # q's device (not JAX's default one)

    def wait_inputs(self, *arrays) -> None:
        self.jax.block_until_ready([a for a in arrays if isinstance(a, self.jax.Array)])


_NUMPY_ADAPTERS = {}


def _numpy_arrays(bf16: bool) -> NumpyArrays:
    adapter = _NUMPY_ADAPTERS.get(bf16)
    if adapter is None:
        adapter = _NUMPY_ADAPTERS[bf16] = NumpyArrays(bf16)
    return adapter


def arrays_for(q):
    """The adapter for q's framework; TypeError for anything attnkit cannot allocate outputs for."""
    numpy = sys.modules.get("numpy")
    if numpy is not None and type(q) is numpy.ndarray:  # the common case first
        return _numpy_arrays(_is_bf16(q))
    module = type(q).__module__
    if module.startswith("cupy"):
        return CupyArrays(q.device.id)
    if module.startswith("jax"):
        return JaxArrays(q)
    if numpy is not None and isinstance(q, numpy.ndarray):  # subclasses (np.memmap, ...)
        return _numpy_arrays(_is_bf16(q))
    raise TypeError(
        f"q: expected a numpy.ndarray, torch.Tensor, cupy.ndarray or jax.Array, got {type(q).__module__}."
        f"{type(q).__qualname__}"
    )
