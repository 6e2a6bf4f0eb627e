"""ONNX Runtime sessions over a bundle's verified bytes, shared by the CPU and the CUDA/TensorRT runners."""

from __future__ import annotations

import tempfile
from typing import Any

from camrt.errors import BundleError, first_line
from camrt.runtime.bundle import FEATURES_FILE, HEAD_FILE, Bundle
from camrt.runtime.bundle_checks import check_graph_shapes


def verified_sessions(ort: Any, bundle: Bundle, options: Any, providers: list[Any], engine: str) -> dict[str, Any]:
    """The feature and head sessions, built from the bytes whose SHA-256 was checked (never reopened by path);
    external data only from the manifest's verified files, never from disk; shapes checked against the manifest."""
    external = bundle.external_data()
    if external:
        names = list(external)
        options.add_external_initializers_from_files_in_memory(names, [external[n] for n in names],
                                                               [len(external[n]) for n in names])
    sessions: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="camrt-no-external-") as empty:  # unlisted external data: not found
        options.add_session_config_entry("session.model_external_initializers_file_folder_path", empty)
        for key, name in (("features", FEATURES_FILE), ("head", HEAD_FILE)):
            path = bundle.root / name
            graph = bundle.read_verified(name)
            try:
                sessions[key] = ort.InferenceSession(graph, options, providers=providers)
            except Exception as exc:  # onnxruntime raises its own exception types
                hint = "; list its external data in the manifest with its SHA-256" if "xternal" in str(exc) else ""
                raise BundleError(f"{path}: {engine} cannot load it ({first_line(exc)}){hint}") from None
            check_graph_shapes(bundle.manifest, key, sessions[key].get_inputs(), sessions[key].get_outputs(), path)
    return sessions
