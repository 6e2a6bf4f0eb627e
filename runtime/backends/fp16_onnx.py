"""An FP16 copy of an FP32 ONNX graph, with FP32 inputs and outputs: how TensorRT 11 (strongly typed) gets FP16.

TensorRT 11 dropped the FP16 builder flag: precision comes from the graph. This cast (onnxconverter-common's
``keep_io_types`` idea, in a few lines) turns float initializers, constants and casts to float16 and puts a Cast
at each float input and output, so callers keep feeding and reading float32. Needs the ``onnx`` package.
"""

from __future__ import annotations

from typing import Any

from camrt.errors import CamrtError

# inputs that ONNX requires to stay float32 whatever the data type: (op, input position)
_FLOAT32_ONLY = {("Resize", 1), ("Resize", 2), ("Upsample", 1)}


def import_onnx() -> Any:
    try:
        import onnx
    except ImportError:
        raise CamrtError("FP16 engines need the onnx package to convert the graph: pip install onnx") from None
    return onnx


def convert_to_fp16(model: Any) -> Any:
    """A float16 copy of ``model`` (an onnx.ModelProto) whose graph inputs and outputs stay float32."""
    onnx = import_onnx()
    from onnx import TensorProto, helper, numpy_helper

    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    keep = {node.input[i] for node in graph.node for (op, i) in _FLOAT32_ONLY
            if node.op_type == op and i < len(node.input)}
    for index, init in enumerate(graph.initializer):
        if init.data_type == TensorProto.FLOAT and init.name not in keep:
            half = numpy_helper.to_array(init).astype("float16")
            graph.initializer[index].CopyFrom(numpy_helper.from_array(half, init.name))
    for node in graph.node:
        for attr in node.attribute:
            if node.op_type in ("Constant", "ConstantOfShape") and attr.type == onnx.AttributeProto.TENSOR:
                if attr.t.data_type == TensorProto.FLOAT and not (set(node.output) & keep):
                    attr.t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(attr.t).astype("float16"),
                                                            attr.t.name))
            if node.op_type == "Cast" and attr.name == "to" and attr.i == TensorProto.FLOAT:
                attr.i = TensorProto.FLOAT16
    casts_in, casts_out = [], []
    for value in graph.input:
        if value.type.tensor_type.elem_type == TensorProto.FLOAT:
            inner = f"{value.name}__fp16"
            for node in graph.node:
                node.input[:] = [inner if name == value.name else name for name in node.input]
            casts_in.append(helper.make_node("Cast", [value.name], [inner], to=TensorProto.FLOAT16))
    for value in graph.output:
        if value.type.tensor_type.elem_type == TensorProto.FLOAT:
            inner = f"{value.name}__fp16"
            for node in graph.node:
                node.output[:] = [inner if name == value.name else name for name in node.output]
            casts_out.append(helper.make_node("Cast", [inner], [value.name], to=TensorProto.FLOAT))
    nodes = [*casts_in, *graph.node, *casts_out]
    del graph.node[:]
    graph.node.extend(nodes)
    del graph.value_info[:]  # stale float32 shapes; the consumers infer them again
    return out


def fp16_onnx_bytes(model: bytes) -> bytes:
    """The FP16 conversion of a serialised ONNX model, serialised."""
    onnx = import_onnx()
    return bytes(convert_to_fp16(onnx.load_from_string(model)).SerializeToString())
