"""The TensorRT API the engine and builder code use exists in the installed TensorRT (CPU only).

The attribute accesses are read from the source (`ast`), not listed by hand: every expression
derived from the `trt` module (`trt.X`, calls, results assigned to names or `self.<attr>`) is
followed, and each access is resolved against the real module. Method return types come from
the pybind11 signatures in the docstrings (`deserialize_cuda_engine(...) -> ...ICudaEngine`), so
`self.engine.num_io_tensors` is checked on `ICudaEngine`. Accesses written as
`getattr(x, "name", default)` or `hasattr(x, "name")` are optional (version-dependent) and not
required to exist.

The runtime module is the full `tensorrt`, or the lean runtime, which installs from PyPI and
imports without a GPU: `pip install tensorrt-lean-cu12`. It has no builder classes (`Builder`,
`OnnxParser`); the builder's remaining names are checked against the compiled full bindings
(`pip install --no-deps tensorrt-cu12-bindings`: it cannot be imported without the TensorRT
libraries, which do not install from PyPI, but its extension module names every attribute it
binds), and against the full module where it imports.
"""

from __future__ import annotations

import ast
import importlib
import importlib.metadata
import importlib.util
import inspect
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
ENGINE_SOURCE = ROOT / "export" / "engines" / "trt_engine.py"
BUILDER_SOURCE = ROOT / "export" / "tensorrt.py"
LEAN_HINT = "pip install tensorrt-lean-cu12"
BINDINGS_HINT = "pip install --no-deps tensorrt-cu12-bindings"

Chain = tuple[str, ...]  # steps from the module: "X" (attribute X) or "()" (a call)


@dataclass(frozen=True)
class Access:
    base: Chain
    attr: str
    line: int
    optional: bool

    def __str__(self) -> str:
        return "trt" + "".join(s if s == "()" else f".{s}" for s in self.base) + f".{self.attr} (line {self.line})"


# ------------------------------------------------------------------ static analysis
class _Analyzer:
    """Expressions derived from the module names `roots`, and the attributes read on them."""

    def __init__(self, source: str, roots: frozenset[str] = frozenset({"trt"})) -> None:
        self.tree = ast.parse(source)
        self.roots = roots
        self.symbols: dict[str, tuple[Chain, bool]] = {}
        for _ in range(8):  # assignments to a fixed point (source order does not matter)
            before = dict(self.symbols)
            for node in ast.walk(self.tree):
                if isinstance(node, ast.Assign | ast.AnnAssign) and node.value is not None:
                    targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                    derived = self._chain(node.value)
                    for target in targets:
                        key = self._key(target)
                        if derived is not None and key is not None and key not in self.symbols:
                            self.symbols[key] = derived
            if self.symbols == before:
                break

    @staticmethod
    def _key(node: ast.AST) -> str | None:
        if isinstance(node, ast.Name):
            return node.id
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "self":
            return f"self.{node.attr}"
        return None

    @staticmethod
    def _named_attr(node: ast.Call, func: str) -> str | None:
        if isinstance(node.func, ast.Name) and node.func.id == func and len(node.args) >= 2:
            arg = node.args[1]
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                return arg.value
        return None

    def _chain(self, node: ast.AST) -> tuple[Chain, bool] | None:
        """(chain from the module, optional) for a module-derived expression, else None."""
        if isinstance(node, ast.Name):
            return ((), False) if node.id in self.roots else self.symbols.get(node.id)
        if isinstance(node, ast.Attribute):
            key = self._key(node)
            if key is not None and key.startswith("self."):
                return self.symbols.get(key)
            base = self._chain(node.value)
            return None if base is None else (base[0] + (node.attr,), base[1])
        if isinstance(node, ast.Call):
            name = self._named_attr(node, "getattr")
            if name is not None:
                base = self._chain(node.args[0])
                return None if base is None else (base[0] + (name,), base[1] or len(node.args) > 2)
            base = self._chain(node.func)
            return None if base is None else (base[0] + ("()",), base[1])
        return None

    def accesses(self) -> list[Access]:
        out = []
        for node in ast.walk(self.tree):
            if isinstance(node, ast.Attribute):
                base = self._chain(node.value)
                if base is not None:
                    out.append(Access(base[0], node.attr, node.lineno, base[1]))
            elif isinstance(node, ast.Call):
                for func, optional in (("getattr", len(node.args) > 2), ("hasattr", True)):
                    name = self._named_attr(node, func)
                    base = self._chain(node.args[0]) if name is not None else None
                    if base is not None and name is not None:
                        out.append(Access(base[0], name, node.lineno, optional or base[1]))
        return sorted(set(out), key=lambda a: (a.line, a.attr))


def accesses_in(path: Path) -> list[Access]:
    return _Analyzer(path.read_text()).accesses()


# ------------------------------------------------------------------ resolution against a module
MISSING, UNKNOWN = object(), object()


@dataclass(frozen=True)
class _Instance:
    cls: type


def _return_class(module: Any, func: Any, name: str) -> type | None:
    """The class a pybind11 method returns, from the `-> a.b.Class` of its docstring signature."""
    m = re.search(rf"\b{re.escape(name)}\([^\n]*\)\s*->\s*([\w.]+)", getattr(func, "__doc__", None) or "")
    if not m:
        return None
    parts = m.group(1).split(".")
    for start in range(len(parts)):
        obj: Any = module
        for p in parts[start:]:
            obj = getattr(obj, p, None)
        if isinstance(obj, type):
            return obj
    return None


def resolve(module: Any, chain: Chain) -> Any:
    """The object (or _Instance) a chain denotes in `module`, MISSING, or UNKNOWN (a value whose
    type the signatures do not tell, e.g. a property)."""
    obj: Any = module
    last = ""
    for step in chain:
        if step == "()":
            if isinstance(obj, type):
                obj = _Instance(obj)
            else:
                cls = _return_class(module, obj, last)
                if cls is None:
                    return UNKNOWN
                obj = _Instance(cls)
            continue
        target = obj.cls if isinstance(obj, _Instance) else obj
        if not hasattr(target, step):
            return MISSING
        if isinstance(obj, _Instance) and isinstance(inspect.getattr_static(target, step, None), property):
            return UNKNOWN
        obj, last = getattr(target, step), step
    return obj


def check(module: Any, accesses: list[Access]) -> tuple[list[Access], list[Access], list[Access]]:
    """(verified, missing, unverifiable) required accesses; accesses on a missing base are left out
    (the base's own access is the one reported)."""
    ok, missing, unknown = [], [], []
    for a in accesses:
        if a.optional:
            continue
        base = resolve(module, a.base)
        if base is MISSING:
            continue
        if base is UNKNOWN:
            unknown.append(a)
            continue
        target = base.cls if isinstance(base, _Instance) else base
        (ok if hasattr(target, a.attr) else missing).append(a)
    return ok, missing, unknown


def _runtime_module() -> Any:
    for name in ("tensorrt", "tensorrt_lean"):
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    pytest.skip(f"no TensorRT runtime module (tensorrt or tensorrt_lean) here: {LEAN_HINT}")


def _is_lean(module: Any) -> bool:
    return module.__name__.startswith("tensorrt_lean")


ENGINE_RUNTIME_API = {
    "Runtime", "Logger", "WARNING", "VERBOSE", "deserialize_cuda_engine", "create_execution_context",
    "num_io_tensors", "get_tensor_name", "get_tensor_shape", "get_tensor_dtype", "get_tensor_mode",
    "nptype", "TensorIOMode", "INPUT", "set_input_shape", "set_tensor_address", "execute_async_v3",
    "__version__",
}
BUILDER_API = {
    "ILogger", "Severity", "Builder", "create_network", "OnnxParser", "parse_from_file", "num_errors",
    "get_error", "create_builder_config", "set_memory_pool_limit", "MemoryPoolType", "WORKSPACE",
    "clear_flag", "BuilderFlag", "TF32", "set_flag", "create_optimization_profile", "num_inputs", "get_input",
    "set_shape", "add_optimization_profile", "create_timing_cache", "set_timing_cache",
    "build_serialized_network", "get_timing_cache", "serialize",
}


# ------------------------------------------------------------------ static: always runs
def test_static_analysis_finds_the_tensorrt_api_used() -> None:
    engine = accesses_in(ENGINE_SOURCE)
    required = {a.attr for a in engine if not a.optional}
    assert ENGINE_RUNTIME_API <= required, ENGINE_RUNTIME_API - required
    builder = accesses_in(BUILDER_SOURCE)
    required = {a.attr for a in builder if not a.optional}
    assert BUILDER_API <= required, BUILDER_API - required
    # version-dependent names are read optionally, so neither version's absence breaks the build code
    optional = {a.attr for a in builder if a.optional} - required
    assert {"FP16", "NetworkDefinitionCreationFlag", "STRONGLY_TYPED", "platform_has_fast_fp16"} <= optional
    assert "FP16" not in required  # TensorRT 11 removed BuilderFlag.FP16


# ------------------------------------------------------------------ against the real runtime module
def test_engine_uses_only_runtime_api_that_exists() -> None:
    trt = _runtime_module()
    ok, missing, unknown = check(trt, accesses_in(ENGINE_SOURCE))
    assert not missing, f"TensorRT {trt.__version__} ({trt.__name__}) lacks: " + ", ".join(map(str, missing))
    verified = {a.attr for a in ok}
    # every name the engine needs was resolved and verified (the analysis followed the objects)
    assert ENGINE_RUNTIME_API <= verified, (ENGINE_RUNTIME_API - verified, [str(a) for a in unknown])


def test_builder_enums_and_logger_exist_in_runtime_module() -> None:
    """BuilderFlag, MemoryPoolType and ILogger are in the lean runtime too: what the builder reads
    on them unconditionally exists (BuilderFlag.FP16 would not, on TensorRT 11)."""
    trt = _runtime_module()
    accesses = accesses_in(BUILDER_SOURCE)
    ok, missing, _ = check(trt, accesses)
    if _is_lean(trt):  # builder-only classes are absent from the lean runtime: checked in the tests below
        missing = [a for a in missing if a.base]
    assert not missing, f"TensorRT {trt.__version__} ({trt.__name__}) lacks: " + ", ".join(map(str, missing))
    verified = {a.attr for a in ok}
    assert {"BuilderFlag", "TF32", "MemoryPoolType", "WORKSPACE", "ILogger", "Severity"} <= verified


def test_analysis_reports_missing_attributes() -> None:
    trt = _runtime_module()
    source = (
        "class E:\n"
        "    def __init__(self, trt):\n"
        "        self.rt = trt.Runtime(trt.Logger(trt.Logger.WARNING))\n"
        "        self.engine = self.rt.deserialize_cuda_engine(b'')\n"
        "        self.ctx = self.engine.create_execution_context()\n"
        "        self.ctx.execute_async_v2(0)\n"
        "        self.engine.no_such_property\n"
        "        trt.NoSuchClass\n"
        "        getattr(trt.BuilderFlag, 'NO_SUCH_FLAG', None)\n"
        "    def later(self, trt):\n"
        "        return self.ctx.execute_async_v3(0)\n"
    )
    ok, missing, _ = check(trt, _Analyzer(source).accesses())
    assert {a.attr for a in missing} == {"execute_async_v2", "no_such_property", "NoSuchClass"}
    assert {"execute_async_v3", "create_execution_context", "deserialize_cuda_engine"} <= {a.attr for a in ok}
    if getattr(trt.BuilderFlag, "FP16", None) is None:  # TensorRT 11: the old builder line is caught
        _, missing, _ = check(trt, _Analyzer("config.set_flag(trt.BuilderFlag.FP16)\n").accesses())
        assert [a.attr for a in missing] == ["FP16"]


# ------------------------------------------------------------------ the builder against the full bindings
def _bindings_extension() -> tuple[Path, str]:
    """The compiled full `tensorrt_bindings` module and its distribution's version (found, not imported;
    the package's Python files beside it define a few helpers such as `nptype`)."""
    try:
        spec = importlib.util.find_spec("tensorrt_bindings")
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        pytest.skip(f"the full TensorRT bindings are not installed: {BINDINGS_HINT}")
    folder = Path(next(iter(spec.submodule_search_locations)))
    found = sorted(folder.glob("tensorrt*.so")) + sorted(folder.glob("tensorrt*.pyd"))
    if not found:
        pytest.skip(f"no compiled module in {folder}")
    dists = importlib.metadata.packages_distributions().get("tensorrt_bindings", [])
    if not dists:
        pytest.skip("tensorrt_bindings has no distribution metadata")
    return found[0], importlib.metadata.version(dists[0])


def test_builder_api_names_are_bound_by_the_full_bindings() -> None:
    """Every name the builder and the engine read (unconditionally) on TensorRT objects is a name
    the full bindings bind: pybind11 keeps each bound name as a NUL-terminated string, so a name
    removed from the API (BuilderFlag.FP16 in 11, platform_has_fast_fp16) is absent from the binary.
    Names defined in the package's Python files (`nptype`) count too."""
    path, version = _bindings_extension()
    data = path.read_bytes()
    python = "\n".join(p.read_text(errors="replace") for p in sorted(path.parent.glob("*.py")))
    major = int(version.split(".")[0])

    def bound(name: str) -> bool:
        return name.encode() + b"\0" in data or re.search(rf"^def {re.escape(name)}\(", python, re.M) is not None

    # the heuristic sees removals: FP16 is bound in 10 and gone in 11
    assert bound("FP16") == (major <= 10), version
    assert bound("STRONGLY_TYPED") and bound("build_serialized_network")
    assert not bound("emostream_no_such_tensorrt_name") and bound("nptype")
    names = {a.attr for p in (BUILDER_SOURCE, ENGINE_SOURCE) for a in accesses_in(p) if not a.optional}
    names = {n for n in names if not n.startswith("__")}
    assert BUILDER_API <= names
    unbound = sorted(n for n in names if not bound(n))
    assert not unbound, f"not bound by TensorRT {version}'s {path.name}: {unbound}"


def test_builder_api_exists_in_full_tensorrt() -> None:
    try:
        import tensorrt as trt
    except ImportError:
        pytest.skip("the full TensorRT package does not import here (tensorrt-cu12's libraries come only "
                    "from NVIDIA's package index); the builder's names are checked against its bindings")
    for source in (BUILDER_SOURCE, ENGINE_SOURCE):
        ok, missing, _ = check(trt, accesses_in(source))
        assert not missing, f"TensorRT {trt.__version__} lacks: " + ", ".join(map(str, missing))
    assert BUILDER_API <= {a.attr for a in check(trt, accesses_in(BUILDER_SOURCE))[0]}


# ------------------------------------------------------------------ the builder's branches (a fake TensorRT)
class _FakeTensorRT:
    """Just enough of the builder API to run `build_engine` on a CPU, recording what it is asked;
    `major` 10 has BuilderFlag.FP16, 11 does not (the names themselves are checked above)."""

    def __init__(self, major: int) -> None:
        import onnx

        fake = self
        self.__version__ = f"{major}.0.0"
        self.calls: dict[str, Any] = {"set_flag": [], "clear_flag": []}
        self.BuilderFlag = type("BuilderFlag", (), {"TF32": "TF32", **({"FP16": "FP16"} if major == 10 else {})})
        self.NetworkDefinitionCreationFlag = type("NetworkDefinitionCreationFlag", (), {"STRONGLY_TYPED": 1})
        self.MemoryPoolType = type("MemoryPoolType", (), {"WORKSPACE": "WORKSPACE"})
        severity = type("Severity", (), {"INTERNAL_ERROR": 0, "ERROR": 1, "WARNING": 2, "INFO": 3, "VERBOSE": 4})
        self.ILogger = type("ILogger", (), {"Severity": severity, "__init__": lambda self: None})

        class Tensor:
            def __init__(self, vi: Any) -> None:
                self.name = vi.name
                self.shape = tuple(d.dim_value for d in vi.type.tensor_type.shape.dim)

        class Network:
            inputs: list[Tensor] = []

            @property
            def num_inputs(self) -> int:
                return len(self.inputs)

            def get_input(self, i: int) -> Tensor:
                return self.inputs[i]

        class Parser:
            num_errors = 0

            def __init__(self, network: Network, logger: Any) -> None:
                self.network = network

            def parse_from_file(self, path: str) -> bool:
                model = onnx.load(path)
                fake.calls["parsed"] = path
                fake.calls["parsed_dtypes"] = {t.data_type for t in model.graph.initializer}
                fake.calls["parsed_io"] = [(vi.name, vi.type.tensor_type.elem_type)
                                           for vi in [*model.graph.input, *model.graph.output]]
                self.network.inputs = [Tensor(vi) for vi in model.graph.input]
                return True

        class Cache:
            def serialize(self) -> bytes:
                return b"timing"

        class Config:
            def set_memory_pool_limit(self, pool: Any, size: int) -> None:
                pass

            def clear_flag(self, flag: Any) -> None:
                fake.calls["clear_flag"].append(flag)

            def set_flag(self, flag: Any) -> None:
                fake.calls["set_flag"].append(flag)

            def add_optimization_profile(self, profile: Any) -> None:
                pass

            def create_timing_cache(self, data: bytes) -> Cache:
                return Cache()

            def set_timing_cache(self, cache: Cache, ignore_mismatch: bool) -> None:
                pass

            def get_timing_cache(self) -> Cache:
                return Cache()

        class Profile:
            def set_shape(self, name: str, lo: Any, opt: Any, hi: Any) -> None:
                pass

        class Builder:
            def __init__(self, logger: Any) -> None:
                pass

            def create_network(self, flags: int) -> Network:
                fake.calls["network_flags"] = flags
                return Network()

            def create_builder_config(self) -> Config:
                return Config()

            def create_optimization_profile(self) -> Profile:
                return Profile()

            def build_serialized_network(self, network: Network, config: Config) -> bytes:
                return b"engine"

        self.Builder, self.OnnxParser = Builder, Parser


class _FakeTorch:
    class cuda:  # noqa: N801 - torch's name
        @staticmethod
        def get_device_name() -> str:
            return "fake GPU"

        @staticmethod
        def get_device_capability() -> tuple[int, int]:
            return (9, 0)


@pytest.fixture(scope="module")
def step_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from emostream.export.onnx import export_onnx
    from emostream.model.checkpoint import default_checkpoint_path

    out = tmp_path_factory.mktemp("fake_trt")
    export_onnx(default_checkpoint_path(), out, parts=["step"])
    return out / "step.onnx"


@pytest.mark.parametrize(("major", "fp16"), [(10, True), (10, False), (11, True), (11, False)])
def test_build_engine_fp16_by_tensorrt_version(step_onnx: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               major: int, fp16: bool) -> None:
    import onnx

    import emostream.export.tensorrt as builder_module
    from emostream.export.sidecar import read_sidecar

    trt = _FakeTensorRT(major)
    monkeypatch.setattr(builder_module, "import_tensorrt", lambda: trt)
    monkeypatch.setattr(builder_module, "require_cuda", lambda: _FakeTorch)
    engine = builder_module.build_engine(step_onnx, tmp_path / "step.engine", fp16=fp16)
    assert engine.read_bytes() == b"engine" and (tmp_path / "timing.cache").read_bytes() == b"timing"
    side = read_sidecar(engine)["tensorrt"]
    assert trt.calls["clear_flag"] == ["TF32"]
    # the engine's I/O contract does not change: float32 in and out, the same names
    src = onnx.load(str(step_onnx))
    assert trt.calls["parsed_io"] == [(vi.name, vi.type.tensor_type.elem_type) for vi in [*src.graph.input,
                                                                                          *src.graph.output]]
    if major == 10:  # weakly typed network, FP16 as a builder flag, the ONNX file as exported
        assert trt.calls["network_flags"] == 0 and trt.calls["parsed"] == str(step_onnx)
        assert trt.calls["set_flag"] == (["FP16"] if fp16 else [])
        assert side["strongly_typed"] is False and side["fp16_mode"] == ("builder_flag" if fp16 else None)
    else:  # strongly typed; FP16 from a float16 conversion of the graph, in a temporary folder
        assert trt.calls["network_flags"] == 1 << 1 and trt.calls["set_flag"] == []
        assert side["strongly_typed"] is True and side["fp16_mode"] == ("onnx_graph" if fp16 else None)
        if fp16:
            assert trt.calls["parsed"] != str(step_onnx) and not Path(trt.calls["parsed"]).exists()
            assert 10 in trt.calls["parsed_dtypes"]  # TensorProto.FLOAT16 weights
        else:
            assert trt.calls["parsed"] == str(step_onnx)
    assert side["fp16"] is fp16 and side["version"] == f"{major}.0.0"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".fp16-")]
