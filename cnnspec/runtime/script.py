"""Stand-ins for the constants a generated script defines at its top from the spec.

The runtime modules import these so that ruff and mypy know every name their code uses;
the emitter copies only the runtime modules' definitions, never these imports, and the
script writes its own values (cnnspec.backends.common.Script.constants). The values here
are placeholders of the right type, which the runtime modules' unit tests may patch."""

from __future__ import annotations

from typing import Any

SPEC_NAME: str = "spec"
INPUT_SHAPE: tuple[int, ...] = (32, 32, 3)
CLASS_NAMES: list[str] | None = None
CLASS_COUNT: int = 10
SEED: int = 0
BATCH_SIZE: int = 32
RESCALE: float = 1.0
PIXEL_RANGE: tuple[float, float] = (0.0, 255.0)
MEAN: tuple[float, ...] = (0.0, 0.0, 0.0)
STD: tuple[float, ...] = (1.0, 1.0, 1.0)
PREPROCESSING: dict[str, Any] = {}
VALIDATION_FRACTION: float = 0.1
THRESHOLD: float = 0.5
CLASS_WEIGHT: dict[int, float] | None = None
BACKBONE: str = ""
BACKBONE_TOP: bool = False
BACKBONE_WEIGHTS: str = "none"
TENSORBOARD: bool = False
MLFLOW: str | None = None
MLFLOW_EXPERIMENT: str = "spec"
DEFAULT_OUTPUT_DIR: str = "runs/spec"
RUN_FILES: list[str] = []
RESUME: str = "resume"
DETERMINISTIC: bool = False
FIXED_INPUT_SIZE: bool = False
TEST_FRACTION: float = 0.2
CIFAR10_URL: str = ""
IMAGE_SUFFIXES: tuple[str, ...] = ()
DATA_PATH: str = "data"
COLOR_MODE: str = "rgb"

# Constants only the scripts of one backend define (each section is kept by that
# backend's runtime module).
# --- common
# What an MLflow run records of the spec (mlflow_run, MLflowLog).
SPEC_FILE: str = "spec.cnn"
SPEC_SHA256: str = ""
PHASES: list[str] = ["train"]
ARTIFACTS: list[str] = []
SPEC_PARAMS: dict[str, Any] = {}
SPEC_TEXT: str = ""

# --- keras
# Layers fed by a flattened (H, W, C) map, with its shape: their weights over those
# features are stored in (C, H, W) order (rules.from_keras and to_keras). Both scripts
# define it.
FLATTENED_FROM: dict[str, tuple[int, int, int]] = {}

# --- torch
# L2 factors by layer; how the geometric augmentations fill what they uncover.
L2: dict[str, float] = {}
FILL: str = "nearest"
FILL_VALUE: float = 0.0
# A backbone's Keras weights: the file, its layer classes and where their weights go.
KERAS_WEIGHTS_FILE: str = ""
KERAS_WEIGHTS_URL: str = ""
BACKBONE_CLASSES: dict[str, str] = {}
TORCHVISION_URL: str = ""
TORCHVISION_KEYS: list[tuple[str, str]] = []
BACKBONE_LAYERS: str = ""
PATCH_GRID: tuple[int, int] = (14, 14)
WEIGHT_LAYOUT: dict[str, dict[str, tuple[str, str]]] = {}
