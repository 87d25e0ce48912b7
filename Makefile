# Two commands are all the set-up a user needs: `make demo` and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: setup demo test bench clean

setup: $(STAMP)

# Refreshed whenever pyproject.toml changes. torch is pinned to the CPU build on this machine's
# wheel path first: a bare `torch` requirement would pull gigabytes of CUDA packages.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[all,dev]'
	$(PY) -m compileall -q cnnspec
	touch $(STAMP)

# The main job: check and summarise the CIFAR-10 spec, generate its Keras and PyTorch scripts,
# then generate the digits spec for both and train each on scikit-learn's bundled digits (no
# download; under a minute each on 2 cores); export the PyTorch-trained model to ONNX, verify
# that Keras, PyTorch and onnxruntime agree on its weights, and classify a few digit PNGs.
demo: setup
	$(VENV)/bin/cnnspec summary specs/cifar10.cnn
	$(VENV)/bin/cnnspec build specs/cifar10.cnn --backend keras
	$(VENV)/bin/cnnspec build specs/cifar10.cnn --backend pytorch
	$(VENV)/bin/cnnspec build specs/digits.cnn --backend keras
	$(VENV)/bin/cnnspec build specs/digits.cnn --backend pytorch
	$(PY) build/digits_keras.py --output-dir runs/digits_keras
	$(PY) build/digits_pytorch.py --output-dir runs/digits_pytorch
	$(VENV)/bin/cnnspec export specs/digits.cnn --weights runs/digits_pytorch/weights.safetensors -o build/digits.onnx
	$(VENV)/bin/cnnspec verify specs/digits.cnn --weights runs/digits_pytorch/weights.safetensors
	$(PY) examples/write_digit_pngs.py runs/digit_images 5
	$(VENV)/bin/cnnspec predict build/digits.onnx runs/digit_images/*.png

test: setup
	$(PY) -m ruff check .
	$(PY) -m pytest -q

bench: setup
	$(PY) bench/check_speed.py
	$(PY) bench/keras_pipeline.py
	$(PY) bench/torch_train.py
	$(PY) bench/inference.py

clean:
	rm -rf $(VENV) build runs .pytest_cache .ruff_cache
