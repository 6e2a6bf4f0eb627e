# make demo: set up, export the real EfficientNet-Lite0, explain and evaluate the bundled photos (four methods).
# make test: set up, then ruff, mypy (also against tensorrt-stubs), the CUDA kernels through nvcc, and the tests.
# make bench: the side-by-side CPU benchmark.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup demo test bench lint clean

setup: $(VENV)/.installed

$(VENV)/.installed: setup.py pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install -q -e ".[cpu,torch,dev,ray,serve,openvino]"
	$(BIN)/pip install -q --no-deps tensorrt-stubs==10.13.0.35.1  # types only: TensorRT itself cannot install here
	touch $@

demo: setup
	$(BIN)/python -m examples.demo --out demo-out

test: setup
	$(BIN)/ruff check .
	tools/typecheck.sh
	tools/typecheck_tensorrt.sh
	tools/compile_cuda.sh
	$(BIN)/python -m pytest -q

bench: setup
	$(BIN)/python -m benchmarks --preset full

clean:
	rm -rf $(VENV) demo-out build *.egg-info
