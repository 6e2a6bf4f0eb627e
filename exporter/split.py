"""Split a CNN at a target layer into a feature graph (image -> activations) and a head (activations -> logits).

The split uses torch.fx with the target module kept as one opaque call, so containers such as resnet's
``layer4`` or vgg's ``features`` can be targets.  A module called more than once in ``forward`` (a shared
activation module, for example) is cut at its LAST call: the feature graph ends with that call's output.
"""

from __future__ import annotations

import builtins
import difflib
import inspect
import operator
from collections.abc import Sequence
from typing import Any

import torch
from torch import fx, nn

from camrt.errors import ExportError, first_line
from camrt.runtime.bundle import ACTIVATIONS, IMAGE

# Modules that only resample or pass on the previous layer's output; never picked as the default layer.
_PASS_THROUGH = (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.Dropout, nn.Dropout2d, nn.Identity, nn.Flatten)
# torch vs torch: the split graphs run the very same kernels in the same order, so they match to rounding.
SPLIT_RTOL = 1e-5

Shape = tuple[int, ...]


class _CutTracer(fx.Tracer):
    """fx tracer that keeps the target module as one call, whatever its type (containers included)."""

    def __init__(self, target: str) -> None:
        super().__init__()
        self.target = target

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return module_qualified_name == self.target or super().is_leaf_module(m, module_qualified_name)


def split_model(
    model: nn.Module, target_layer: str | None, input_shape: Sequence[int]
) -> tuple[fx.GraphModule, fx.GraphModule, str]:
    """Split ``model`` (left in eval mode) at ``target_layer`` (None: the default layer) into (features, head, name).

    ``head(features(x))`` equals ``model(x)``: checked in torch on a random batch before returning.
    """
    shape = check_input_shape(input_shape)
    model.eval()
    example = example_input(shape, batch=2)
    finished, reference = _dry_run(model, example)
    if target_layer is None:
        layer, (features, head) = _first_clean_cut(model, default_layers(model, finished))
    else:
        layer = _check_layer_name(model, target_layer)
        features, head = cut_at(model, layer)
    verify_split(model, features, head, layer, example, reference)
    return features, head, layer


def check_input_shape(input_shape: Sequence[int]) -> tuple[int, int, int]:
    """Validate ``input_shape`` as (C, H, W) positive ints: the graphs are traced for one image size."""
    try:
        values = tuple(int(v) for v in input_shape)
    except (TypeError, ValueError):
        values = ()
    if len(values) != 3 or min(values) <= 0:
        raise ExportError(f"input_shape: expected (channels, height, width) positive integers, got {input_shape!r}")
    return values[0], values[1], values[2]


def example_input(shape: tuple[int, int, int], batch: int, seed: int = 0) -> torch.Tensor:
    """A reproducible standard-normal batch, statistically like normalised images."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn((batch, *shape), generator=generator)


def _dry_run(model: nn.Module, example: torch.Tensor) -> tuple[list[tuple[str, Shape | None]], torch.Tensor]:
    """Run ``model`` once: (module name, output shape or None) in the order modules FINISH forward, and the logits."""
    finished: list[tuple[str, Shape | None]] = []

    def hook(name: str) -> Any:
        def record(_module: nn.Module, _inputs: Any, output: Any) -> None:
            finished.append((name, tuple(output.shape) if isinstance(output, torch.Tensor) else None))

        return record

    handles = [m.register_forward_hook(hook(n)) for n, m in model.named_modules() if n]
    try:
        with torch.no_grad():
            output = model(example)
    except Exception as exc:  # user code may raise anything; report it on one line
        raise ExportError(
            f"model: forward failed on a dry run with input shape {tuple(example.shape)} "
            f"({type(exc).__name__}: {first_line(exc)})"
        ) from None
    finally:
        for handle in handles:
            handle.remove()
    check_logits(output, example.shape[0])
    return finished, output


def check_logits(output: Any, batch: int) -> None:
    """Require one (N, classes) logits tensor: Score-CAM scores a class of each image."""
    if not isinstance(output, torch.Tensor):
        raise ExportError(
            f"model: forward returns a {type(output).__name__}, not a logits tensor (N, classes); "
            "wrap the model so that it returns only the logits"
        )
    if output.ndim != 2 or output.shape[0] != batch:
        raise ExportError(f"model: forward returns shape {tuple(output.shape)}; expected logits (N, classes)")


def default_layers(model: nn.Module, finished: list[tuple[str, Shape | None]]) -> list[str]:
    """Default-layer candidates, best first: modules by their LAST finish, latest first, whose output there is
    4-D with h*w > 1; pass-through modules (adaptive pools, dropout...: e.g. vgg's avgpool) are skipped."""
    modules = dict(model.named_modules())
    last: dict[str, tuple[int, Shape | None]] = {name: (i, out) for i, (name, out) in enumerate(finished)}
    usable = [
        (i, name)
        for name, (i, out) in last.items()
        if out is not None and len(out) == 4 and out[2] * out[3] > 1 and not isinstance(modules[name], _PASS_THROUGH)
    ]
    if not usable:
        raise ExportError("target_layer: no module outputs a 4-D (N, K, h, w) map with h*w > 1; name a layer")
    return [name for _, name in sorted(usable, reverse=True)]


def _first_clean_cut(
    model: nn.Module, candidates: list[str], tries: int = 5
) -> tuple[str, tuple[fx.GraphModule, fx.GraphModule]]:
    """The first candidate that cuts without a skip connection around it (normally the very first one)."""
    first_error: ExportError | None = None
    for layer in candidates[:tries]:
        try:
            return layer, cut_at(model, layer)
        except ExportError as exc:
            first_error = first_error or exc
    assert first_error is not None
    raise first_error


def _check_layer_name(model: nn.Module, target_layer: str) -> str:
    """Return ``target_layer`` if ``model`` has it, else fail naming close matches or the last candidates."""
    names = [name for name, _ in model.named_modules() if name]
    if target_layer in names:
        return target_layer
    close = difflib.get_close_matches(target_layer, names, n=3, cutoff=0.6)
    hint = f"did you mean {', '.join(close)}?" if close else f"the last layers are {', '.join(names[-5:])}"
    raise ExportError(f"target_layer {target_layer!r}: no such module in the model; {hint}")


def cut_at(model: nn.Module, layer: str) -> tuple[fx.GraphModule, fx.GraphModule]:
    """Trace ``model`` keeping ``layer`` whole, and cut the graph at its last call into (features, head)."""
    graph = _trace(model, layer)
    cut = _cut_node(graph, layer)
    head_nodes, batch_reads = _head_nodes(model, graph, cut, layer)
    return _features_module(model, graph, cut), _head_module(model, graph, cut, head_nodes, batch_reads)


def _trace(model: nn.Module, layer: str) -> fx.Graph:
    """Symbolically trace ``model``, binding extra ``forward`` arguments to their defaults."""
    params = list(inspect.signature(model.forward).parameters.values())[1:]
    if any(p.default is inspect.Parameter.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in params):
        raise ExportError("model: forward takes more than one required input; camrt exports image-only models")
    concrete = {p.name: p.default for p in params if p.default is not inspect.Parameter.empty}
    try:
        return _CutTracer(layer).trace(model, concrete_args=concrete or None)
    except Exception as exc:  # fx raises many types (TraceError, TypeError, NotImplementedError...)
        raise ExportError(
            f"model: torch.fx cannot trace forward ({type(exc).__name__}: {first_line(exc)}); "
            "data-dependent control flow is not supported"
        ) from None


def _cut_node(graph: fx.Graph, layer: str) -> fx.Node:
    """The node of the LAST call of module ``layer``."""
    calls = [n for n in graph.nodes if n.op == "call_module" and n.target == layer]
    if not calls:
        raise ExportError(
            f"target_layer {layer!r}: never called as a module in forward (a container that is only iterated, "
            "or a part of a layer traced as one op); choose one of its sub-layers or its parent"
        )
    return calls[-1]


def _output_value(graph: fx.Graph) -> fx.Node:
    """The single node the graph returns; tuples and dicts are rejected."""
    out = next(n for n in graph.nodes if n.op == "output").args[0]
    if not isinstance(out, fx.Node):
        raise ExportError(f"model: forward returns a {type(out).__name__}, not a logits tensor (N, classes)")
    return out


def _batch_read_source(node: fx.Node) -> fx.Node | None:
    """If ``node`` reads a tensor's batch size (``t.size(0)``, ``t.shape[0]``, ``t.size()[0]``), that tensor."""
    if node.op == "call_method" and node.target == "size":
        dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
        source = node.args[0]
        return source if isinstance(source, fx.Node) and isinstance(dim, int) and dim == 0 else None
    if node.op != "call_function" or node.target is not operator.getitem or len(node.args) != 2:
        return None
    sizes, index = node.args
    if not (isinstance(index, int) and index == 0 and isinstance(sizes, fx.Node) and sizes.args):
        return None
    source = sizes.args[0]
    whole_size = sizes.op == "call_method" and sizes.target == "size" and len(sizes.args) == 1 and not sizes.kwargs
    shape_attr = sizes.op == "call_function" and sizes.target is builtins.getattr and sizes.args[1:] == ("shape",)
    return source if isinstance(source, fx.Node) and (whole_size or shape_attr) else None


def _head_nodes(model: nn.Module, graph: fx.Graph, cut: fx.Node, layer: str) -> tuple[set[fx.Node], set[fx.Node]]:
    """Nodes after the cut that compute the logits, and batch-size reads of pre-cut values to rewrite.

    Fails if the head needs any input-dependent value computed before the cut (a skip connection around it).
    """
    order = {n: i for i, n in enumerate(graph.nodes)}
    dependent: set[fx.Node] = set()  # nodes whose value depends on the image
    for n in graph.nodes:
        if n.op == "placeholder" or any(a in dependent for a in n.all_input_nodes):
            dependent.add(n)
    before = {n for n in dependent if order[n] < order[cut]}
    head: set[fx.Node] = set()
    batch_reads: set[fx.Node] = set()
    stack = [(_output_value(graph), cut)]
    while stack:
        node, reader = stack.pop()
        if node is cut or node in head or node in batch_reads:
            continue
        source = _batch_read_source(node)
        if source is not None and source in before:
            batch_reads.add(node)
            continue
        if node in before:
            raise ExportError(
                f"target_layer {layer!r}: the computation after it also reads {_describe(node)} "
                f"(in {reader.name}: a skip connection around the cut); choose a layer outside the residual block"
                f"{_suggest_parent(model, layer)}"
            )
        head.add(node)
        stack.extend((a, node) for a in node.all_input_nodes)
    return head, batch_reads


def _describe(node: fx.Node) -> str:
    """How an error names a value read across the cut."""
    if node.op == "call_module":
        return f"{node.name} (the output of {node.target})"
    if node.op == "placeholder":
        return f"the model input {node.name!r}"
    shape_of = node.op == "call_method" and node.target == "size"
    shape_of |= node.op == "call_function" and node.target is builtins.getattr and node.args[1:] == ("shape",)
    if shape_of and isinstance(node.args[0], fx.Node):
        return f"the shape of {_describe(node.args[0])}"
    return node.name


def _suggest_parent(model: nn.Module, layer: str) -> str:
    """', e.g. <parent>' for the nearest enclosing module that can be cut cleanly, else ''."""
    parts = layer.split(".")
    for depth in range(len(parts) - 1, 0, -1):
        parent = ".".join(parts[:depth])
        try:
            graph = _trace(model, parent)
            _head_nodes(model, graph, _cut_node(graph, parent), parent)
        except ExportError:
            continue
        return f", e.g. {parent}"
    return ""


def _features_module(model: nn.Module, graph: fx.Graph, cut: fx.Node) -> fx.GraphModule:
    """Graph module image -> output of the cut node, with only the nodes the cut needs."""
    needed = {cut}
    stack = list(cut.all_input_nodes)
    while stack:
        node = stack.pop()
        if node not in needed:
            needed.add(node)
            stack.extend(node.all_input_nodes)
    placeholders = [n for n in needed if n.op == "placeholder"]
    if len(placeholders) != 1:
        raise ExportError(f"model: the features use {len(placeholders)} inputs; camrt exports image-only models")
    new = fx.Graph()
    env: dict[fx.Node, fx.Node] = {placeholders[0]: new.placeholder(IMAGE)}
    for node in graph.nodes:
        if node in needed and node.op != "placeholder":
            env[node] = new.node_copy(node, lambda a: env[a])
    new.output(env[cut])
    return fx.GraphModule(model, new, class_name="CamrtFeatures")


def _head_module(
    model: nn.Module, graph: fx.Graph, cut: fx.Node, head: set[fx.Node], batch_reads: set[fx.Node]
) -> fx.GraphModule:
    """Graph module activations -> logits; batch-size reads of the image now read the activations."""
    new = fx.Graph()
    env: dict[fx.Node, fx.Node] = {cut: new.placeholder(ACTIVATIONS)}
    for node in graph.nodes:
        if node in batch_reads:
            env[node] = new.call_method("size", (env[cut], 0))
        elif node in head:
            env[node] = new.node_copy(node, lambda a: env[a])
    new.output(env[_output_value(graph)])
    return fx.GraphModule(model, new, class_name="CamrtHead")


def verify_split(
    model: nn.Module,
    features: nn.Module,
    head: nn.Module,
    layer: str,
    example: torch.Tensor,
    reference: torch.Tensor | None = None,
) -> tuple[Shape, float]:
    """Check in torch that head(features(x)) == model(x) (``reference``, if already computed); return the
    activation shape and the max abs diff."""
    with torch.no_grad():
        reference = model(example) if reference is None else reference
        activations = features(example)
        if not isinstance(activations, torch.Tensor) or activations.ndim != 4:
            got = tuple(activations.shape) if isinstance(activations, torch.Tensor) else type(activations).__name__
            raise ExportError(f"target_layer {layer!r}: outputs {got}, not a 4-D (N, K, h, w) activation map")
        if activations.shape[2] * activations.shape[3] <= 1:
            raise ExportError(
                f"target_layer {layer!r}: outputs a 1x1 map {tuple(activations.shape)}; choose an earlier layer"
            )
        logits = head(activations.clone())  # clone: the head may run in-place ops on its input
    check_logits(logits, example.shape[0])
    diff = float((logits - reference).abs().max())
    tolerance = SPLIT_RTOL * max(1.0, float(reference.abs().max()))
    if not diff <= tolerance:
        raise ExportError(
            f"target_layer {layer!r}: head(features(x)) differs from model(x) by {diff:.3g} (> {tolerance:.3g}); "
            "the model may be random or stateful at inference"
        )
    return tuple(activations.shape), diff
