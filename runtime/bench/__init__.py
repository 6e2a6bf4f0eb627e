"""``camrt bench``'s runtime: engine configurations (backend x precision) against the reference (FP32 ONNX Runtime)
on the same images and targets: how close their maps are (``fidelity``) and how fast they run (``latency``), run by
``suite`` and printed by ``table``."""
