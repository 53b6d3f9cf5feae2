"""Static TensorRT checks of exported ONNX graphs: supported operators and static shapes.

The operator list is `data/tensorrt_onnx_ops.json`, derived from the ONNX-TensorRT operator
support matrix for TensorRT 10.0 (onnx/onnx-tensorrt `docs/operators.md` at commit
96e781103cfc4adf4a6bb557e94bac8e693f6f4c, Apache-2.0). Regenerate it from that file with
`python -m emostream.export.trt_ops --from-markdown operators.md`.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

OPS_FILE = Path(__file__).resolve().parent / "data" / "tensorrt_onnx_ops.json"
SOURCE = {
    "project": "onnx/onnx-tensorrt",
    "file": "docs/operators.md",
    "commit": "96e781103cfc4adf4a6bb557e94bac8e693f6f4c",
    "url": "https://github.com/onnx/onnx-tensorrt/blob/96e781103cfc4adf4a6bb557e94bac8e693f6f4c/docs/operators.md",
    "license": "Apache-2.0",
}
_ROW = re.compile(r"^\|\s*([A-Za-z][A-Za-z0-9_]*)\s*\|\s*([YN])\s*\|(.*)$")
_OPSET = re.compile(r"opset (\d+) to opset (\d+)")


class TensorRTCompatibilityError(ValueError):
    """An exported graph that TensorRT 10 cannot build as is."""


@dataclass(frozen=True)
class OperatorTable:
    tensorrt: str
    min_opset: int
    max_opset: int
    supported: dict[str, dict[str, Any]]  # op -> {"types": [...], "restrictions": str}
    unsupported: frozenset[str]
    source: dict[str, str] = field(default_factory=dict)

    def is_supported(self, op_type: str) -> bool:
        return op_type in self.supported


# ------------------------------------------------------------------ the data file
def parse_operator_markdown(text: str) -> dict[str, Any]:
    """The operator matrix markdown -> the JSON document stored in `data/`."""
    supported: dict[str, dict[str, Any]] = {}
    unsupported: set[str] = set()
    for line in text.splitlines():
        m = _ROW.match(line.strip())
        if not m:
            continue
        op, flag, rest = m.groups()
        cells = [c.strip() for c in rest.split("|")]
        types = [t.strip() for t in cells[0].split(",") if t.strip()] if cells else []
        restrictions = cells[1] if len(cells) > 1 else ""
        if flag == "Y":
            supported[op] = {"types": types, "restrictions": restrictions}
        else:
            unsupported.add(op)
    unsupported -= set(supported)
    opsets = _OPSET.search(text)
    version = re.search(r"TensorRT (\d+(?:\.\d+)*) supports operators", text)
    return {
        "source": SOURCE,
        "tensorrt": version.group(1) if version else "10.0",
        "opset_range": [int(opsets.group(1)), int(opsets.group(2))] if opsets else [9, 20],
        "supported": dict(sorted(supported.items())),
        "unsupported": sorted(unsupported),
    }


def dump_operator_table(doc: dict[str, Any]) -> str:
    """JSON text with one operator per line (diff-friendly)."""
    head = {k: v for k, v in doc.items() if k not in ("supported", "unsupported")}
    lines = ["{"] + [f" {json.dumps(k)}: {json.dumps(v)}," for k, v in head.items()]
    ops = [f"  {json.dumps(op)}: {json.dumps(info)}" for op, info in doc["supported"].items()]
    lines += [' "supported": {', ",\n".join(ops), " },", f' "unsupported": {json.dumps(doc["unsupported"])}', "}"]
    return "\n".join(lines) + "\n"


@lru_cache(maxsize=4)
def load_operator_table(path: str | None = None) -> OperatorTable:
    data = json.loads(Path(path or OPS_FILE).read_text())
    lo, hi = data["opset_range"]
    return OperatorTable(
        tensorrt=data["tensorrt"], min_opset=lo, max_opset=hi, supported=data["supported"],
        unsupported=frozenset(data["unsupported"]), source=data["source"],
    )


# ------------------------------------------------------------------ graph checks
def _all_nodes(graph: Any) -> list[Any]:
    """Every node of a graph, including those of subgraphs (If/Loop/Scan bodies)."""
    import onnx

    nodes = []
    for node in graph.node:
        nodes.append(node)
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                nodes.extend(_all_nodes(attr.g))
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for g in attr.graphs:
                    nodes.extend(_all_nodes(g))
    return nodes


def _load(model: Any) -> Any:
    import onnx

    return onnx.load(str(model)) if isinstance(model, (str, Path)) else model


def op_types(model: Any) -> set[str]:
    """The op types (default ONNX domain) used anywhere in a model."""
    return {n.op_type for n in _all_nodes(_load(model).graph) if n.domain in ("", "ai.onnx")}


def unsupported_ops(model: Any, table: OperatorTable | None = None) -> list[str]:
    """Op types of `model` that are not on TensorRT's supported list (custom domains included)."""
    table = table or load_operator_table()
    graph_nodes = _all_nodes(_load(model).graph)
    bad = {n.op_type for n in graph_nodes if n.domain in ("", "ai.onnx") and not table.is_supported(n.op_type)}
    bad |= {f"{n.domain}::{n.op_type}" for n in graph_nodes if n.domain not in ("", "ai.onnx")}
    return sorted(bad)


def _dims(value: Any) -> list[int | str | None] | None:
    """Shape of a ValueInfoProto: ints for static dims, names for symbolic ones, None if unknown."""
    t = value.type
    if not t.HasField("tensor_type") or not t.tensor_type.HasField("shape"):
        return None
    out: list[int | str | None] = []
    for d in t.tensor_type.shape.dim:
        if d.HasField("dim_value"):
            out.append(int(d.dim_value))
        elif d.HasField("dim_param"):
            out.append(d.dim_param)
        else:
            out.append(None)
    return out


def dynamic_shapes(model: Any) -> dict[str, list[int | str | None] | None]:
    """Tensors (inputs, outputs, value_info after shape inference) whose shape is not fully static.

    Maps the tensor name to its shape (None when even the rank is unknown). Empty when all static.
    """
    import onnx

    inferred = onnx.shape_inference.infer_shapes(_load(model), strict_mode=True, data_prop=True)
    g = inferred.graph
    bad: dict[str, list[int | str | None] | None] = {}
    for v in list(g.input) + list(g.output) + list(g.value_info):
        dims = _dims(v)
        if dims is None or any(not isinstance(d, int) for d in dims):
            bad[v.name] = dims
    return bad


def check_opset(model: Any, table: OperatorTable | None = None) -> int:
    table = table or load_operator_table()
    opset = next((o.version for o in _load(model).opset_import if o.domain in ("", "ai.onnx")), 0)
    if not table.min_opset <= opset <= table.max_opset:
        raise TensorRTCompatibilityError(
            f"opset {opset} is outside TensorRT {table.tensorrt}'s range {table.min_opset}..{table.max_opset}"
        )
    return opset


def check_tensorrt_compatible(model: Any, name: str = "model") -> None:
    """Raise `TensorRTCompatibilityError` unless every op is supported and every shape is static."""
    model = _load(model)
    table = load_operator_table()
    problems = []
    try:
        check_opset(model, table)
    except TensorRTCompatibilityError as e:
        problems.append(str(e))
    ops = unsupported_ops(model, table)
    if ops:
        problems.append(f"ops not supported by TensorRT {table.tensorrt}: {ops}")
    dyn = dynamic_shapes(model)
    if dyn:
        shown = dict(list(dyn.items())[:8])
        problems.append(f"{len(dyn)} tensors without a static shape, e.g. {shown}")
    if problems:
        raise TensorRTCompatibilityError(f"{name}: " + "; ".join(problems))
    logger.info("%s: %d op types, all on TensorRT %s's list; all shapes static", name, len(op_types(model)),
                table.tensorrt)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m emostream.export.trt_ops", description=__doc__)
    parser.add_argument("--from-markdown", type=Path, help="regenerate the data file from operators.md")
    parser.add_argument("--out", type=Path, default=OPS_FILE)
    parser.add_argument("onnx", nargs="*", type=Path, help="ONNX files to check")
    args = parser.parse_args(argv)
    if args.from_markdown:
        doc = parse_operator_markdown(args.from_markdown.read_text())
        args.out.write_text(dump_operator_table(doc))
        print(f"wrote {args.out}: {len(doc['supported'])} supported, {len(doc['unsupported'])} unsupported ops")
    rc = 0
    for path in args.onnx:
        try:
            check_tensorrt_compatible(path, name=str(path))
            print(f"{path}: ok")
        except TensorRTCompatibilityError as e:
            print(str(e))
            rc = 1
    return rc


if __name__ == "__main__":
    raise SystemExit(main())
