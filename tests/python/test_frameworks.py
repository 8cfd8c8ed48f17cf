"""JAX and CuPy arrays through DLPack (skipped where the framework is not installed)."""

import numpy as np
import pytest

import attnkit
from support import check_backward, check_forward

HAS_GPU_KERNELS = "sm80-forward" in attnkit.build_info().compiled_backends


def inputs(seed=0, dtype=np.float32):
    rng = np.random.default_rng(seed)
    return tuple(rng.standard_normal(shape).astype(dtype) for shape in ((2, 9, 4, 32), (2, 11, 2, 32),
                                                                         (2, 11, 2, 32)))


def test_jax_on_the_cpu():
    jax = pytest.importorskip("jax", reason="JAX is not installed")
    cpu = jax.devices("cpu")[0]
    q, k, v = inputs(1)
    jq, jk, jv = (jax.device_put(x, cpu) for x in (q, k, v))
    out, lse = attnkit.attention(jq, jk, jv, causal=True, return_lse=True)
    assert isinstance(out, jax.Array) and isinstance(lse, jax.Array)
    check_forward(np.asarray(out), np.asarray(lse), q, k, v, causal=True)
    dout = np.random.default_rng(2).standard_normal(out.shape).astype(np.float32)
    gradients = attnkit.attention_backward(jax.device_put(dout, cpu), jq, jk, jv, out, lse, causal=True)
    check_backward(tuple(None if g is None else np.asarray(g) for g in gradients), dout, q, k, v, causal=True)


def test_jax_bf16_on_the_cpu():
    jax = pytest.importorskip("jax", reason="JAX is not installed")
    cpu = jax.devices("cpu")[0]
    q, k, v = (jax.device_put(x, cpu).astype(jax.numpy.bfloat16) for x in inputs(3))
    out = attnkit.attention(q, k, v, causal=True)
    assert out.dtype == jax.numpy.bfloat16
    check_forward(np.asarray(out), None, np.asarray(q), np.asarray(k), np.asarray(v), causal=True)


@pytest.mark.skipif(not HAS_GPU_KERNELS, reason="this build has no GPU kernels (ATTNKIT_PYTHON_CUDA=ON)")
def test_cupy_on_the_gpu():
    cupy = pytest.importorskip("cupy", reason="CuPy is not installed")
    if cupy.cuda.runtime.getDeviceCount() == 0:
        pytest.skip("no CUDA device")
    q, k, v = inputs(4, np.float16)
    out, lse = attnkit.attention(*(cupy.asarray(x) for x in (q, k, v)), causal=True, return_lse=True)
    assert isinstance(out, cupy.ndarray)
    check_forward(cupy.asnumpy(out), cupy.asnumpy(lse), q, k, v, causal=True)


@pytest.mark.skipif(not HAS_GPU_KERNELS, reason="this build has no GPU kernels (ATTNKIT_PYTHON_CUDA=ON)")
def test_jax_on_the_gpu():
    jax = pytest.importorskip("jax", reason="JAX is not installed")
    pytest.importorskip("cupy", reason="JAX arrays on a GPU need CuPy for the outputs")
    gpus = [d for d in jax.devices() if d.platform in ("gpu", "cuda")]
    if not gpus:
        pytest.skip("JAX sees no GPU")
    q, k, v = inputs(5, np.float16)
    out = attnkit.attention(*(jax.device_put(x, gpus[0]) for x in (q, k, v)), causal=True)
    assert isinstance(out, jax.Array)
    check_forward(np.asarray(out), None, q, k, v, causal=True)
