# Two commands are all the set-up a user needs: `make demo` and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: setup demo test test-library fuzz bench lock clean

setup: $(STAMP)

# Refreshed whenever pyproject.toml or constraints.txt changes. Every package is pinned by
# constraints.txt (`make lock` refreshes it), so each clone tests what CI tested. torch is
# installed first, the CPU build on this machine's wheel path: a bare `torch` requirement
# would pull gigabytes of CUDA packages. The editable install puts the checkout on sys.path
# (compat mode) rather than an import hook, which would cost every `cnnspec check` 10 ms.
$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -c constraints.txt --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt torch==2.13.0
	$(PY) -m pip install --quiet -c constraints.txt -e '.[all,dev]' \
		--config-settings editable_mode=compat
	$(PY) -m compileall -q cnnspec
	touch $(STAMP)

# The main job: check and summarise the CIFAR-10 spec, generate its Keras and PyTorch scripts,
# then generate the digits spec for both and train each on scikit-learn's bundled digits (no
# download; under a minute each on 2 cores; --overwrite: a second `make demo` replaces the
# first one's runs instead of numbering new folders beside them); export the PyTorch-trained
# model to ONNX, verify that Keras, PyTorch and onnxruntime agree on its weights, and classify
# a few digit PNGs.
demo: setup
	$(VENV)/bin/cnnspec summary specs/cifar10.cnn
	$(VENV)/bin/cnnspec build specs/cifar10.cnn --backend keras
	$(VENV)/bin/cnnspec build specs/cifar10.cnn --backend pytorch
	$(VENV)/bin/cnnspec build specs/digits.cnn --backend keras
	$(VENV)/bin/cnnspec build specs/digits.cnn --backend pytorch
	$(PY) build/digits_keras.py --overwrite
	$(PY) build/digits_pytorch.py --overwrite
	$(VENV)/bin/cnnspec export specs/digits.cnn --weights runs/digits_pytorch/weights.safetensors -o build/digits.onnx
	$(VENV)/bin/cnnspec verify specs/digits.cnn --weights runs/digits_pytorch/weights.safetensors
	$(PY) examples/write_digit_pngs.py runs/digit_images 5
	$(VENV)/bin/cnnspec predict build/digits.onnx runs/digit_images/*.png

# Two pytest processes (pytest-xdist): the suite's time is mostly scripts loading a framework.
test: setup
	$(PY) -m ruff check .
	$(PY) -m mypy
	$(PY) -m pytest -q -n 2

# The other sizes of every library backbone family (EfficientNet B1-B7, EfficientNetV2 B1-L,
# ConvNeXt Small-XLarge, DenseNet 169/201, ResNetV2 101/152, ...) against keras.applications:
# the definitions `make test` checks through the required sizes, at every size; every
# keras.applications family through `cnnspec import` and every backbone through export and
# import; backbone weights loaded under a mirrored strategy; and the slowest end-to-end runs
# (distributed training, torch.compile, a sweep, int8, Keras's recipe, the mutant searches),
# which keep `make test` within its 10 minutes (minutes).
test-library: setup
	$(PY) -m pytest -q -p no:cacheprovider -n 2 -m library tests

# The long random campaigns, kept out of CI: the property and fuzz tests with random seeds
# and 20x the examples (tests/fuzzing.py), then the semantic campaign, which builds 2,000
# random specs in Keras, PyTorch and ONNX and compares their counts and outputs, and brings each
# back through `cnnspec export` and `cnnspec import` (tests/campaign.py; about 30 minutes on
# 2 cores).
fuzz: setup
	CNNSPEC_FUZZ=1 $(PY) -m pytest -q -p no:cacheprovider tests/test_fuzz.py tests/test_property.py \
		tests/test_fmt.py tests/test_lsp.py tests/frameworks/test_keras_script.py \
		tests/frameworks/test_pytorch_script.py tests/frameworks/test_onnx_export.py \
		-k "generated or random or mutants or matches"
	$(PY) -m tests.campaign --specs 2000 --workers 2 --output runs/campaign

bench: setup
	$(PY) bench/check_speed.py
	$(PY) bench/keras_pipeline.py
	$(PY) bench/torch_train.py
	$(PY) bench/inference.py

# Re-resolve every package from pyproject.toml's ranges in a scratch environment and pin the
# result in constraints.txt. Run it on purpose (a new TensorFlow, say), then `make test`.
lock:
	rm -rf .lock-venv
	$(PYTHON) -m venv .lock-venv
	.lock-venv/bin/python -m pip install --quiet --upgrade pip
	.lock-venv/bin/python -m pip install --quiet torch==2.13.0
	.lock-venv/bin/python -m pip install --quiet '.[all,dev]'
	{ sed -n '/^#/p' constraints.txt; .lock-venv/bin/python -m pip freeze --all \
		| grep -v '^cnnspec' | sed 's/^torch==\(.*\)+cpu$$/torch==\1/'; } > constraints.txt.new
	mv constraints.txt.new constraints.txt
	rm -rf .lock-venv

clean:
	rm -rf $(VENV) build runs .pytest_cache .ruff_cache
