"""The public surface of the attnkit package: names, signatures, docs, stubs, build_info and explain."""

import ast
import inspect
import pathlib
import re

import numpy as np
import pytest

import attnkit
from attnkit import _ext

REPO = pathlib.Path(__file__).resolve().parents[2]

OPTIONS = {"causal": False, "window": (-1, -1), "softcap": 0.0, "sinks": None, "scale": None, "return_lse": False,
           "deterministic": False, "backend": "auto"}


def keyword_defaults(function):
    return {name: p.default for name, p in inspect.signature(function).parameters.items()
            if p.kind is inspect.Parameter.KEYWORD_ONLY}


def positional_names(function):
    return [name for name, p in inspect.signature(function).parameters.items()
            if p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD]


def test_public_names():
    assert sorted(attnkit.__all__) == sorted(["attention", "attention_varlen", "attention_backward", "explain",
                                              "build_info", "linear_attention", "linear_attention_backward",
                                              "linear_decode", "LinearGradients", "Gradients",
                                              "Explanation", "BackendVerdict", "BuildInfo"])
    for name in attnkit.__all__:
        assert hasattr(attnkit, name), name


def test_signatures():
    forward_options = dict(OPTIONS, out=None, lse_out=None)
    assert positional_names(attnkit.attention) == ["q", "k", "v"]
    assert keyword_defaults(attnkit.attention) == forward_options
    assert positional_names(attnkit.attention_varlen) == ["q", "k", "v", "cu_seqlens_q", "cu_seqlens_k",
                                                          "max_seqlen_q", "max_seqlen_k"]
    assert keyword_defaults(attnkit.attention_varlen) == forward_options
    assert positional_names(attnkit.attention_backward) == ["dout", "q", "k", "v", "out", "lse"]


@pytest.mark.parametrize("function", [attnkit.attention, attnkit.attention_varlen, attnkit.attention_backward])
def test_docstrings_state_the_conventions(function):
    doc = " ".join(function.__doc__.split())
    for phrase in ("bottom right", "natural", "lse_i = -inf", "o_i = 0", "ValueError", "NotImplementedError",
                   "RuntimeError", "j <= i + Sk - Sq"):
        assert phrase in doc, f"{function.__name__}: docstring lacks {phrase!r}"


def test_stubs_ship_with_the_package_and_match_the_extension():
    package = pathlib.Path(attnkit.__file__).parent
    assert (package / "py.typed").exists()
    stub = package / "_ext.pyi"
    declared = {node.name for node in ast.parse(stub.read_text()).body if isinstance(node, ast.FunctionDef)}
    exported = {name for name in dir(_ext) if not name.startswith("_")}
    assert declared == exported


def test_stub_parameters_match_the_extension():
    """nanobind's signatures name every parameter; the stub must list the same ones in the same order."""
    package = pathlib.Path(attnkit.__file__).parent
    tree = ast.parse((package / "_ext.pyi").read_text())
    for node in tree.body:
        if not isinstance(node, ast.FunctionDef):
            continue
        stub_names = [a.arg for a in node.args.args]
        signature = getattr(_ext, node.name).__nb_signature__[0][0]
        parameters = re.match(r"def \w+\((.*)\)", signature).group(1)
        extension_names = [p.split(":")[0].strip() for p in parameters.split(", ") if p and p != "/"]
        assert stub_names == extension_names, node.name


def test_build_info():
    info = attnkit.build_info()
    assert isinstance(info, attnkit.BuildInfo)
    version = re.search(r"project\(attnkit VERSION ([0-9.]+)", (REPO / "CMakeLists.txt").read_text()).group(1)
    assert info.version == version == attnkit.__version__
    assert "cpu" in info.compiled_backends
    assert info.cuda_enabled == bool(info.cuda_archs)
    if not info.cuda_devices:
        assert info.cuda_devices_note, "no CUDA device must come with the reason"


def test_explain_numpy_on_the_cpu():
    rng = np.random.default_rng(7)
    q = rng.standard_normal((1, 4, 2, 32)).astype(np.float32)
    explanation = attnkit.explain(q, q, q, causal=True)
    assert explanation.valid and explanation.chosen == "cpu"
    assert [v.backend for v in explanation.verdicts] == ["sm90", "sm80", "cpu"]
    assert [v.usable for v in explanation.verdicts] == [False, False, True]
    assert str(explanation).startswith("runs on cpu")
    backward = attnkit.explain(q, q, q, backward=True, deterministic=True)
    assert backward.valid and backward.chosen == "cpu"


def test_explain_reports_invalid_arguments_instead_of_raising():
    q = np.zeros((1, 4, 2, 32), np.float32)
    explanation = attnkit.explain(q, q[..., :16], q)
    assert not explanation.valid and explanation.status == "invalid argument"
    assert "k: expected shape" in explanation.message and explanation.chosen is None
    explanation = attnkit.explain(q[0], q, q)
    assert explanation.status == "invalid argument" and "q: expected rank 4" in explanation.message
