"""An FP16 copy of an FP32 ONNX graph, with FP32 inputs and outputs: how TensorRT 11 (strongly typed) gets FP16.

TensorRT 11 dropped the FP16 builder flag: precision comes from the graph, and a strongly typed network takes
every tensor's type as written, with no implicit casts, so each node's inputs must agree. This conversion
(onnxconverter-common's ``keep_io_types`` idea, in a few rules) makes the data path float16: float inputs get a
Cast to float16, float outputs a Cast back, float initializers and constants (``value``, ``value_float``,
``value_floats``) become float16, and a Cast to FLOAT on the data path becomes a Cast to FLOAT16. Shape
arithmetic stays float32: a Cast to FLOAT of an integer tensor (a Shape, a Gather of it) starts it, everything
computed from it alone follows, and the constants only it reads stay float32; so do the inputs ONNX fixes to
float32 (Resize's scales). Where the two meet, a Cast makes the types agree. Needs the ``onnx`` package.
"""

from __future__ import annotations

from typing import Any

from camrt.errors import CamrtError

# inputs that ONNX requires to stay float32 whatever the data type: (op, input position)
_FLOAT32_ONLY = {("Resize", 2), ("Upsample", 1)}
# inputs whose float type is free of the node's other inputs (never cast to match them)
_UNTIED = {("Resize", 1)}
# ops whose inputs may be of any type (their float outputs, where any, are set by attributes)
_ANY_INPUT = {"Shape", "Size", "Cast", "CastLike", "ConstantOfShape", "EyeLike", "NonZero", "Constant"}
DATA, SHAPE, CONST = "data", "shape", "const"  # a float tensor's role: float16 data, float32 shape arithmetic, free


def import_onnx() -> Any:
    try:
        import onnx
    except ImportError:
        raise CamrtError("FP16 engines need the onnx package to convert the graph: pip install onnx") from None
    return onnx


def _float_types(onnx: Any, model: Any) -> dict[str, int]:
    """The element type of every typed tensor of ``model``'s graph (inputs, outputs, initializers, inferred)."""
    inferred = onnx.shape_inference.infer_shapes(model)
    graph = inferred.graph
    types = {v.name: v.type.tensor_type.elem_type for v in (*graph.input, *graph.output, *graph.value_info)}
    types.update({init.name: init.data_type for init in graph.initializer})
    return types


def _roles(model: Any, types: dict[str, int], float_type: int) -> dict[str, str]:
    """Each float tensor's role, in the graph's (topological) node order."""
    graph = model.graph
    roles = {v.name: DATA for v in graph.input if types.get(v.name) == float_type}
    roles.update({init.name: CONST for init in graph.initializer if init.data_type == float_type})
    for node in graph.node:
        floats = [o for o in node.output if types.get(o) == float_type]
        if not floats:
            continue
        if node.op_type == "Cast":
            source = roles.get(node.input[0]) if types.get(node.input[0]) == float_type else SHAPE
            role = source or SHAPE
        else:
            seen = {roles[i] for pos, i in enumerate(node.input)
                    if i in roles and (node.op_type, pos) not in _FLOAT32_ONLY | _UNTIED}
            role = DATA if DATA in seen else SHAPE if SHAPE in seen else CONST
        for name in floats:
            roles[name] = role
    return roles


def convert_to_fp16(model: Any) -> Any:
    """A float16 copy of ``model`` (an onnx.ModelProto) whose graph inputs and outputs stay float32."""
    onnx = import_onnx()
    from onnx import TensorProto, helper, numpy_helper

    FLOAT, HALF = TensorProto.FLOAT, TensorProto.FLOAT16
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    types = _float_types(onnx, out)
    roles = _roles(out, types, FLOAT)

    wants32: dict[str, bool] = {}  # a constant read by float32 readers only (shape arithmetic, fixed inputs)

    def computes32(node: Any) -> bool:
        """True where ``node`` computes in float32: shape arithmetic, constants folding into it, compares of it."""
        outs = [roles[o] for o in node.output if o in roles]
        if outs:
            return outs[0] == SHAPE or (outs[0] == CONST and all(wants32.get(o, False) for o in node.output
                                                                  if o in roles))
        ins = {roles[i] for i in node.input if i in roles}
        return SHAPE in ins and DATA not in ins

    for node in reversed(graph.node):  # readers before writers: a constant's readers decide its type
        if node.op_type in _ANY_INPUT:
            continue
        reads32 = computes32(node)
        for pos, name in enumerate(node.input):
            if roles.get(name) == CONST and (node.op_type, pos) not in _UNTIED:
                wants32[name] = wants32.get(name, True) and ((node.op_type, pos) in _FLOAT32_ONLY or reads32)
    half = {name for name, role in roles.items() if role == DATA or (role == CONST and not wants32.get(name, False))}

    for index, init in enumerate(graph.initializer):
        if init.name in half:
            graph.initializer[index].CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init).astype("float16"),
                                                                      init.name))
    nodes: list[Any] = []
    casts = 0
    for node in graph.node:
        if node.op_type in ("Constant", "ConstantOfShape") and set(node.output) & half:
            _constant_to_half(onnx, node)
        if node.op_type == "Cast" and set(node.output) & half:
            for attr in node.attribute:
                if attr.name == "to":
                    attr.i = HALF
        if node.op_type not in _ANY_INPUT:
            reads32 = computes32(node)
            for pos, name in enumerate(node.input):
                if name not in roles or (node.op_type, pos) in _UNTIED:
                    continue
                have = HALF if name in half else FLOAT
                need = FLOAT if (node.op_type, pos) in _FLOAT32_ONLY or reads32 else HALF
                if have != need:
                    casts += 1
                    cast_name = f"{name}__as{'fp16' if need == HALF else 'fp32'}_{casts}"
                    nodes.append(helper.make_node("Cast", [name], [cast_name], to=need))
                    node.input[pos] = cast_name
        nodes.append(node)

    casts_in, casts_out = [], []
    for value in graph.input:
        if value.name in half:
            inner = f"{value.name}__fp16"
            for node in nodes:
                node.input[:] = [inner if name == value.name else name for name in node.input]
            casts_in.append(helper.make_node("Cast", [value.name], [inner], to=HALF))
    for value in graph.output:
        if value.name in half:
            inner = f"{value.name}__fp16"
            for node in nodes:
                node.output[:] = [inner if name == value.name else name for name in node.output]
                node.input[:] = [inner if name == value.name else name for name in node.input]
            casts_out.append(helper.make_node("Cast", [inner], [value.name], to=FLOAT))
    del graph.node[:]
    graph.node.extend([*casts_in, *nodes, *casts_out])
    del graph.value_info[:]  # stale float32 shapes; the consumers infer them again
    return out


def _constant_to_half(onnx: Any, node: Any) -> None:
    """A Constant's (or ConstantOfShape's) float value as a float16 tensor (``value_float(s)`` included)."""
    import numpy as np
    from onnx import TensorProto, numpy_helper

    if node.op_type == "ConstantOfShape" and not any(a.name == "value" for a in node.attribute):
        node.attribute.append(onnx.helper.make_attribute("value", numpy_helper.from_array(np.zeros(1, np.float16))))
    for attr in list(node.attribute):
        if attr.type == onnx.AttributeProto.TENSOR and attr.t.data_type == TensorProto.FLOAT:
            attr.t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(attr.t).astype("float16"), attr.t.name))
        elif attr.name in ("value_float", "value_floats"):
            values = np.asarray(attr.f if attr.name == "value_float" else list(attr.floats), np.float16)
            node.attribute.remove(attr)
            node.attribute.append(onnx.helper.make_attribute("value", numpy_helper.from_array(values)))


def fp16_onnx_bytes(model: bytes) -> bytes:
    """The FP16 conversion of a serialised ONNX model, serialised."""
    onnx = import_onnx()
    return bytes(convert_to_fp16(onnx.load_from_string(model)).SerializeToString())
