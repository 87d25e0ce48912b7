"""The framework-neutral code of the generated scripts: loading the libraries, the
command line, data sources, which examples a run sees, the run folder, weight files,
MLflow and plots. Copied into both backends' scripts by name (see
cnnspec.backends.runtime); the imports and the script's constants below are for the
linter, the type checker and the unit tests.

A script holds one `load_data` and one `class_weights`: here each data source's loader
(load_cifar10, load_digits_splits, load_folders, load_without_source) and each kind of
class weights (balanced_class_weights, spec_class_weights) has a name of its own, and
cnnspec.backends.common renames the one a spec needs as it copies it."""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import itertools
import json
import os
import pickle
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from PIL import Image
from safetensors import safe_open
from sklearn.datasets import load_digits
from sklearn.metrics import roc_curve
from sklearn.model_selection import train_test_split

from cnnspec.runtime.script import (
    ARTIFACTS,
    BATCH_SIZE,
    CIFAR10_URL,
    CLASS_COUNT,
    CLASS_NAMES,
    CLASS_WEIGHT,
    COLOR_MODE,
    DEFAULT_OUTPUT_DIR,
    DETERMINISTIC,
    IMAGE_SUFFIXES,
    INPUT_SHAPE,
    MLFLOW,
    MLFLOW_EXPERIMENT,
    PATCH_GRID,
    PHASES,
    RESUME,
    RUN_FILES,
    SEED,
    SPEC_FILE,
    SPEC_NAME,
    SPEC_PARAMS,
    SPEC_SHA256,
    SPEC_TEXT,
    TENSORBOARD,
    TEST_FRACTION,
    THRESHOLD,
    TORCHVISION_KEYS,
)

# --- Loading the libraries


@contextlib.contextmanager
def native_stderr_held_back():
    """Hold back what native code writes to stderr while the libraries load
    (TensorFlow's notes on CUDA and oneDNN come before any log level applies);
    show it if loading fails."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
        except BaseException:
            os.dup2(saved, 2)
            held.seek(0)
            sys.stderr.write(held.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


# --- The command line


# parse_args's <PARSER> slot makes `parser` (its description names the spec and the
# framework, on one line or three as the name's length allows); this stands in for it.
parser = argparse.ArgumentParser()


def parse_args(argv=None):
    # <PARSER>
    parser.add_argument(
        "--data-dir",
        # <DATA_DIR>
    )
    parser.add_argument(
        "--output-dir",
        help=f"where the run writes (default {DEFAULT_OUTPUT_DIR}, numbered past the "
        "earlier runs there: 2, 3, ...)",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the run the output folder holds",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="carry on from the last epoch the output folder's run saved (without "
        "--output-dir: the latest run)",
    )
    parser.add_argument(
        "--epochs",
        type=int,
        help="at most N epochs in each phase (with --resume, those it trained count)",
    )
    parser.add_argument("--batch-size", type=int, default=BATCH_SIZE)
    parser.add_argument(
        "--subset",
        type=int,
        help="use N examples of each split, drawn at random (seeded) from every class",
    )
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument(
        "--deterministic",
        action=argparse.BooleanOptionalAction,
        default=DETERMINISTIC,
        help="bitwise-reproducible training (deterministic kernels: slower on a GPU)",
    )
    parser.add_argument("--image-size", type=int, help="resize images to N x N")
    # <WEIGHTS>
    parser.add_argument(
        "--init-weights",
        metavar="FILE",
        help="start from these weights: a .safetensors file in cnnspec's layout "
        "(cnnspec import's, or a run's weights.safetensors)",
    )
    parser.add_argument(
        "--tensorboard",
        action=argparse.BooleanOptionalAction,
        default=TENSORBOARD,
        help="write TensorBoard event files to --output-dir/tensorboard",
    )
    parser.add_argument(
        "--mlflow",
        metavar="URI",
        default=MLFLOW,
        help="log an MLflow run to this store: a folder, sqlite:///file.db or a URL",
    )
    parser.add_argument("--no-mlflow", dest="mlflow", action="store_const", const=None)
    # <EXTRA_FLAGS>
    return parser.parse_args(argv)


# --- Data


class DataError(Exception):
    """The data is missing, empty or unreadable; main() prints it as one line."""


def find_cifar10(data_dir):
    """The cifar-10-batches-py folder in `data_dir`, as Keras's cache keeps it."""
    data_dir = Path(data_dir)
    for folder in (
        data_dir / "cifar-10-batches-py",
        data_dir / "cifar-10-batches-py-target" / "cifar-10-batches-py",
        data_dir,
    ):
        if (folder / "data_batch_1").is_file():
            return folder
    raise DataError(
        f"no CIFAR-10 data at {data_dir / 'cifar-10-batches-py'}: download "
        f"{CIFAR10_URL} and extract it into {data_dir}, or pass --data-dir"
    )


def load_cifar10(data_dir):
    """CIFAR-10 as uint8 (N, 32, 32, 3) images and int labels, by split."""
    folder = find_cifar10(data_dir)

    def read(name):
        with open(folder / name, "rb") as stream:
            batch = pickle.load(stream, encoding="bytes")
        images = np.asarray(batch[b"data"], dtype="uint8").reshape(-1, 3, 32, 32)
        return images.transpose(0, 2, 3, 1), np.asarray(batch[b"labels"], dtype="int64")

    parts = [read(f"data_batch_{index}") for index in range(1, 6)]
    train = (
        np.concatenate([images for images, _ in parts]),
        np.concatenate([labels for _, labels in parts]),
    )
    return {"train": train, "test": read("test_batch")}


def load_digits_splits(data_dir=None):
    """scikit-learn's bundled 8x8 digits (values 0-16) with a stratified held-out test
    split: {split: (images, labels)}. Nothing is downloaded; `data_dir` is unused."""
    digits = load_digits()
    images = digits.images[..., np.newaxis].astype("float32")
    x_train, x_test, y_train, y_test = train_test_split(
        images,
        digits.target,
        test_size=TEST_FRACTION,
        stratify=digits.target,
        random_state=SEED,
    )
    return {"train": (x_train, y_train), "test": (x_test, y_test)}


def check_not_empty(splits):
    """Every split holds examples: an empty one is a problem with the data."""
    for name, (_, labels) in splits.items():
        if len(labels) == 0:
            raise DataError(f"the {name} split holds no examples")


def is_files(images):
    """Whether a split's images are image files to read (a folder's) or pixels."""
    return isinstance(images, np.ndarray) and images.dtype.kind == "U"


def load_without_source(data_dir):
    """The spec names no data source: supply {split: (images, labels)} arrays here."""
    raise DataError("the spec has no data source; add `source ...` to its data section")


# A folder of images, read the same way by both scripts: the file lists are split,
# subset and checked before training starts (a missing folder, a class folder without
# images or a damaged file is one line naming it), and every image is decoded, converted
# and resized by Pillow, so the two scripts see the same pixels.


def split_folders(data_dir):
    """train/, val/ and test/ under `data_dir`, each checked for class folders of
    images. The classes are the spec's, or else train/'s sub-folders, sorted, as Keras's
    image_dataset_from_directory and torchvision's ImageFolder name them; CLASS_NAMES
    is set to them."""
    global CLASS_NAMES
    root = Path(data_dir)
    if not root.is_dir():
        raise DataError(
            f"no data folder {root} (a relative path is read from the working "
            f"directory, {Path.cwd()}); pass --data-dir to read the data from elsewhere"
        )
    splits = {s: root / s for s in ("train", "val", "test") if (root / s).is_dir()}
    if "train" not in splits or "test" not in splits:
        raise DataError(f"{root} needs train/ and test/ folders of class sub-folders")
    found = sorted(p.name for p in splits["train"].iterdir() if p.is_dir())
    if CLASS_NAMES is None:
        if len(found) != CLASS_COUNT:
            raise DataError(
                f"{splits['train']} has {len(found)} class folders "
                f"({', '.join(found) or 'none'}), but the model tells {CLASS_COUNT} "
                "classes apart"
            )
        CLASS_NAMES = found
    for split, folder in splits.items():
        folders = sorted(p.name for p in folder.iterdir() if p.is_dir())
        if folders != sorted(CLASS_NAMES):
            raise DataError(
                f"{folder} has class folders {folders}, but the classes are "
                f"{sorted(CLASS_NAMES)}"
            )
        counts = {name: len(image_files(folder / name)) for name in CLASS_NAMES}
        empty = [name for name, count in counts.items() if not count]
        if empty and (split == "train" or len(empty) == len(counts)):
            where = folder / empty[0] if split == "train" else folder
            suffixes = ", ".join(IMAGE_SUFFIXES)
            raise DataError(f"{where} holds no image (files ending {suffixes})")
    return splits


def image_files(folder):
    """The image files in a class folder, sorted by name."""
    return sorted(
        path
        for path in folder.iterdir()
        if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file()
    )


def load_folders(data_dir):
    """train/, val/ and test/ folders of class sub-folders: {split: (files, labels)},
    each split's image files (paths as strings, by class, then by name) and their
    labels. The images are read as the batches need them (read_image)."""
    splits = {}
    for split, folder in split_folders(data_dir).items():
        files, labels = [], []
        for label, name in enumerate(CLASS_NAMES):
            paths = image_files(folder / name)
            files += [str(path) for path in paths]
            labels += [label] * len(paths)
        splits[split] = (np.array(files), np.array(labels, dtype="int64"))
    return splits


def read_image(path, size):
    """One image file as uint8 (height, width, channels) pixels at `size`: decoded by
    Pillow, converted to the spec's colours and resized bilinearly, as both scripts read
    it (and `cnnspec predict`). A JPEG much larger than `size` is decoded at a half, a
    quarter or an eighth of its size (Pillow's draft, done in the decoder: 4x faster
    for a 1024x1024 photo read at 224x224)."""
    mode = "L" if COLOR_MODE == "grayscale" else "RGB"
    try:
        with Image.open(path) as image:
            image.draft(mode, (size[1], size[0]))
            image = image.convert(mode)
            if image.size != (size[1], size[0]):
                image = image.resize((size[1], size[0]), Image.Resampling.BILINEAR)
            pixels = np.asarray(image, dtype="uint8").reshape(*size, -1)
    except (OSError, SyntaxError, ValueError) as error:  # Pillow's, for a bad file
        raise DataError(f"{path} cannot be read as an image: {error}") from None
    if pixels.shape[2] != INPUT_SHAPE[2]:
        pixels = np.repeat(pixels, INPUT_SHAPE[2], axis=2)  # grayscale to RGB
    return pixels


def image_problem(path):
    """Why Pillow cannot decode an image file, or None. A JPEG is decoded at an eighth
    of its size (draft), which still reads all of it."""
    try:
        with Image.open(path) as image:
            image.draft(None, (1, 1))
            image.load()
    except (OSError, SyntaxError, ValueError) as error:
        return str(error) or type(error).__name__
    return None


def check_images(splits):
    """Decode every image the run will read once, before training starts (in threads:
    Pillow decodes outside the GIL), so that a damaged file is one line naming it now,
    not a failure in the middle of an epoch."""
    files = [
        path for images, _ in splits.values() if is_files(images) for path in images
    ]
    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor() as pool:
        for path, problem in zip(files, pool.map(image_problem, files), strict=True):
            if problem is not None:
                raise DataError(f"{path} cannot be read as an image: {problem}")
    print(f"checked {len(files):,} images in {time.perf_counter() - started:.1f} s")


# --- Which examples a run sees: a validation split, a quick run's subset, class weights


def split_validation(splits, fraction, seed):
    """Hold a `fraction` of the training examples out for validation (rounded up, as
    scikit-learn rounds a test size), drawn from each class in proportion to its size:
    the same examples, or the same files, in both scripts."""
    images, labels = splits["train"]
    labels = np.asarray(labels)
    held = stratified(labels, int(np.ceil(fraction * len(labels))), seed)
    kept = np.setdiff1d(np.arange(len(labels)), held)
    return {
        **splits,
        "train": (images[kept], labels[kept]),
        "val": (images[held], labels[held]),
    }


def stratified(labels, count, seed):
    """The indices of `count` examples drawn at random (seeded) from each class in
    proportion to its size, in their order. Where the shares do not divide evenly, the
    classes with the largest remainders (ties at random) take one more each, so that a
    few examples still cover as many classes as they can."""
    generator = np.random.default_rng(seed)
    classes, sizes = np.unique(labels, return_counts=True)
    quotas = sizes * count / len(labels)
    taken = np.floor(quotas).astype(int)
    order = generator.permutation(len(classes))
    order = order[np.argsort(taken[order] - quotas[order], kind="stable")]
    taken[order[: count - taken.sum()]] += 1
    chosen = np.concatenate(
        [
            generator.permutation(np.flatnonzero(labels == label))[:number]
            for label, number in zip(classes, taken, strict=True)
        ]
    )
    return np.sort(chosen)


def subset(split, count, seed):
    """`count` examples of a split (stratified): a quick run sees every class, and both
    scripts take the same examples."""
    images, labels = split
    labels = np.asarray(labels)
    if count >= len(labels):
        return split
    chosen = stratified(labels, count, seed)
    return images[chosen], labels[chosen]


def balanced_class_weights(labels):
    """Balanced class weights, total / (classes * count), from the training
    labels: rare classes weigh more in the loss."""
    counts = np.bincount(np.asarray(labels).ravel(), minlength=len(CLASS_NAMES))
    return {
        index: len(labels) / (len(CLASS_NAMES) * count)
        for index, count in enumerate(counts)
        if count
    }


def spec_class_weights(labels):
    """The spec's class weights."""
    return CLASS_WEIGHT


# --- Around a run: where it writes, and where Ctrl-C stopped it


def holds_run(folder):
    """Whether `folder` holds what a run of this script writes."""
    return any((Path(folder) / name).exists() for name in RUN_FILES)


def clear_run(folder):
    """Remove what a run of this script wrote in `folder`, and nothing else."""
    for name in RUN_FILES:
        path = Path(folder) / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def numbered(base):
    """`base`, then base2, base3, ...: the folders runs in the default place take."""
    yield base
    for number in itertools.count(2):
        yield base.with_name(f"{base.name}{number}")


def run_folder(args, distributed=False):
    """Where this run writes: --output-dir, or else DEFAULT_OUTPUT_DIR, numbered past
    the earlier runs there (2, 3, ...) so that runs never mix; --resume without
    --output-dir carries on the latest of those. A folder that holds a run is refused
    unless --resume or --overwrite says what to do with it (and, in a distributed run,
    whose processes must agree on one folder, the default is not numbered)."""
    if args.resume and args.overwrite:
        raise DataError("--resume carries a run on, --overwrite replaces it: pick one")
    given = args.output_dir is not None
    folder = Path(args.output_dir if given else DEFAULT_OUTPUT_DIR)
    if args.overwrite:
        clear_run(folder)
        return folder
    if args.resume:
        if given or distributed:
            return folder
        runs = []
        for candidate in numbered(folder):
            if not candidate.exists():
                break
            if (candidate / RESUME).exists():
                runs.append(candidate)
        return max(runs, key=lambda run: (run / RESUME).stat().st_mtime, default=folder)
    if not holds_run(folder):
        return folder
    if given or distributed:
        raise DataError(
            f"{folder} holds an earlier run: pass --resume to carry it on, --overwrite "
            "to replace it, or another --output-dir"
        )
    fresh = next(other for other in numbered(folder) if not holds_run(other))
    print(f"{folder} holds an earlier run: this one writes to {fresh}")
    return fresh


def discard_unstarted(folder):
    """Remove the folder a run made if it failed before training started (on its data,
    say), so that no empty run folder is left behind."""
    if not (Path(folder) / RESUME).exists():
        shutil.rmtree(folder, ignore_errors=True)


class Interrupted(Exception):
    """Ctrl-C while a phase trained: where, for main() to say how to carry on."""

    def __init__(self, phase, epoch):
        super().__init__(f"interrupted in phase {phase}, epoch {epoch}")
        self.phase, self.epoch = phase, epoch


def interrupted(stop, folder, created):
    """Ctrl-C: one line that says how to carry on (the resume point holds the last
    epoch that ended), and status 130, as a shell reports SIGINT. Before training
    started, the folder the run made goes."""
    if (Path(folder) / RESUME).exists():
        where = stop if isinstance(stop, Interrupted) else "interrupted"
        print(f"{where}: rerun with --resume", file=sys.stderr)
    else:
        if created:
            discard_unstarted(folder)
        print("interrupted before training started", file=sys.stderr)
    sys.exit(130)


# --- Weight files: checked before they are loaded, written whole


def some(names):
    """The first of `names`, and how many more."""
    return names[0] if len(names) == 1 else f"{names[0]} and {len(names) - 1} more"


def weights_to_load(path, needed):
    """The tensors of a .safetensors file (--init-weights) to load into a model whose
    tensors are `needed` ({name: shape}, in cnnspec's layout). A tensor of the model
    that the file lacks (a new head, say) keeps its initialisation, and one of the file
    that the model lacks is left out, each said in one line; a tensor of another shape,
    or a file with none of the model's tensors, is one line of error."""
    try:
        with safe_open(path, framework="numpy") as file:
            names = file.keys()
            held = {key: tuple(file.get_slice(key).get_shape()) for key in names}
    except FileNotFoundError:
        raise DataError(f"--init-weights: no file {path}") from None
    except Exception as error:  # safetensors reports a bad header as several types
        message = f"--init-weights: {path} is not a safetensors file ({error})"
        raise DataError(message) from None
    shared = [key for key in needed if key in held]
    wrong = [key for key in shared if held[key] != needed[key]]
    if wrong:
        key, more = wrong[0], f" (and {len(wrong) - 1} more)" if len(wrong) > 1 else ""
        shapes = f"{key} is {held[key]}, the model's is {needed[key]}{more}"
        raise DataError(f"--init-weights {path} does not fit: {shapes}")
    if not shared:
        raise DataError(f"--init-weights {path} holds none of the model's tensors")
    missing = sorted(key for key in needed if key not in held)
    if missing:
        print(f"--init-weights: {some(missing)} not in {path}: initialised afresh")
    unused = sorted(key for key in held if key not in needed)
    if unused:
        print(f"--init-weights: {some(unused)} of {path} fit no layer: left out")
    return shared


# --- torchvision's checkpoints: a ViT backbone's ImageNet weights, by key


def torchvision_key(key):
    """The key of torchvision's state dict that holds canonical tensor `key`: the
    library's layer names are torchvision's module paths (TORCHVISION_KEYS)."""
    for pattern, replacement in TORCHVISION_KEYS:
        renamed, count = re.subn(pattern, replacement, key)
        if count:
            return renamed
    return key


def cubic_weights(t):
    """PyTorch's bicubic convolution weights (A = -0.75) of the four neighbours of
    points at fractions `t` between the second and the third."""
    a = -0.75

    def near(x):
        return ((a + 2) * x - (a + 3)) * x * x + 1

    def far(x):
        return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a

    return np.stack([far(t + 1), near(t), near(1 - t), far(2 - t)], axis=-1)


def resize_bicubic(grid, size):
    """An (H, W, D) grid resized to `size` (rows, columns) as torch's
    interpolate(mode="bicubic", align_corners=True): the corners stay where they are,
    and a neighbour beyond an edge is the edge."""
    for axis, new in enumerate(size):
        old = grid.shape[axis]
        step = (old - 1) / (new - 1) if new > 1 else 0.0
        positions = np.arange(new) * step
        base = np.floor(positions).astype(int)
        weights = cubic_weights(positions - base)
        picks = np.clip(base[:, None] + np.arange(-1, 3), 0, old - 1)
        gathered = np.moveaxis(grid, axis, 0)[picks]
        grid = np.moveaxis(np.einsum("nk,nk...->n...", weights, gathered), 0, axis)
    return grid


def fit_positions(table, grid):
    """A ViT's position embeddings (1, 1 + G, D) for a `grid` (rows, columns) of
    patches: the class token's as it is, the patches' resized from the checkpoint's
    square grid, as torchvision's interpolate_embeddings does."""
    token, patches = table[:, :1], table[0, 1:].astype("float64")
    side = round(len(patches) ** 0.5)
    resized = resize_bicubic(patches.reshape(side, side, -1), grid)
    resized = resized.reshape(1, -1, table.shape[-1]).astype(table.dtype)
    return np.concatenate([token, resized], axis=1)


def torchvision_tensors(state, needed):
    """The canonical tensors `needed` ({key: shape}) from a torchvision state dict (its
    arrays by torchvision's keys), the position embeddings fitted to the input's grid
    of patches; a tensor missing or of another shape is one line of error."""
    # torchvision's older checkpoints name the MLP's layers linear_1 and linear_2.
    older = {".mlp.linear_1.": ".mlp.0.", ".mlp.linear_2.": ".mlp.3."}
    for old, new in older.items():
        state = {key.replace(old, new): value for key, value in state.items()}
    tensors = {}
    for key, shape in needed.items():
        source = torchvision_key(key)
        if source not in state:
            raise DataError(f"the checkpoint has no {source} (the model's {key})")
        value = np.asarray(state[source], dtype="float32")
        if value.shape != tuple(shape) and source.endswith("pos_embedding"):
            value = fit_positions(value, PATCH_GRID)
        if value.shape != tuple(shape):
            raise DataError(
                f"the checkpoint's {source} is {value.shape}, "
                f"the model's {key} {tuple(shape)}"
            )
        tensors[key] = value
    return tensors


def saved_readable(save, path):
    """Write a file with `save(partial)`, then move it into place: whole or not at all,
    with the mode the umask gives every other artifact (safetensors writes 0600)."""
    path = Path(path)
    partial = path.with_name(f".{path.name}.partial")
    save(partial)
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(partial, 0o666 & ~mask)
    os.replace(partial, path)


# --- MLflow


@contextlib.contextmanager
def mlflow_run(uri, backend, args):
    """An MLflow run in the store `uri` names (a folder, sqlite:///file.db or a tracking
    server's URL), or None without one. The run is named after the spec and the backend
    and records the spec's settings as params and its text as an artifact; a run that
    raises is marked failed. With --resume, the run the output folder's last one logged
    to carries on (its id is in mlflow_run.json there)."""
    if not uri:
        yield None
        return
    try:
        import mlflow
    except ImportError:
        raise DataError(
            "--mlflow needs MLflow: pip install mlflow-skinny "
            "(and sqlalchemy alembic for a sqlite:/// store)"
        ) from None
    if uri.startswith("sqlite:///"):
        # SQLite creates the database file, but not its folder.
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    tags = {
        "cnnspec.spec": SPEC_NAME,
        "cnnspec.backend": backend,
        "cnnspec.spec_file": SPEC_FILE,
        "cnnspec.spec_sha256": SPEC_SHA256,
    }
    record = Path(args.output_dir) / "mlflow_run.json"
    resumed = None
    if args.resume and record.is_file():
        last = json.loads(record.read_text())
        resumed = last["run_id"] if last.get("uri") == uri else None
    try:
        mlflow.set_tracking_uri(uri)
        if uri.startswith("sqlite:///") and not mlflow.get_experiment_by_name(
            MLFLOW_EXPERIMENT
        ):
            # The runs' files beside the database, not in the working directory's
            # mlruns/ (MLflow's default for a database store).
            database = Path(uri.removeprefix("sqlite:///")).resolve()
            files = database.parent / "mlartifacts"
            mlflow.create_experiment(MLFLOW_EXPERIMENT, files.as_uri())
        mlflow.set_experiment(MLFLOW_EXPERIMENT)
        if resumed is not None:
            run = mlflow.start_run(run_id=resumed)
        else:
            run = mlflow.start_run(run_name=f"{SPEC_NAME}-{backend}", tags=tags)
    except Exception as error:  # a store that cannot be opened or reached
        raise DataError(f"--mlflow {uri}: {error}") from None
    with run:
        print(f"MLflow run {run.info.run_id} in {uri}")
        if resumed is not None:
            yield MLflowLog(mlflow)
            return
        record.parent.mkdir(parents=True, exist_ok=True)
        record.write_text(json.dumps({"uri": uri, "run_id": run.info.run_id}) + "\n")
        given = {
            "batch": args.batch_size,
            "seed": args.seed,
            "epochs_cap": args.epochs,
            "subset": args.subset,
            "image_size": args.image_size,
        }
        given = {key: value for key, value in given.items() if value is not None}
        mlflow.log_params({**SPEC_PARAMS, **given})
        mlflow.log_text(SPEC_TEXT, SPEC_FILE)
        yield MLflowLog(mlflow)


class MLflowLog:
    """What an MLflow run records as training goes: each epoch's values as metrics.json
    has them (the epoch, counted over the phases, as the step; the phase as its number
    in PHASES), then the test metrics and the artifacts."""

    def __init__(self, mlflow):
        self.mlflow = mlflow

    def epoch(self, row):
        values = {k: float(v) for k, v in row.items() if k not in ("phase", "epoch")}
        values["phase"] = PHASES.index(row["phase"]) + 1
        self.mlflow.log_metrics(values, step=row["epoch"])

    def finish(self, test, output_dir):
        numbers = {
            f"test_{key}": float(value)
            for key, value in test.items()
            if isinstance(value, int | float)
        }
        self.mlflow.log_metrics(numbers)
        for name in ARTIFACTS:
            if (output_dir / name).is_file():
                self.mlflow.log_artifact(str(output_dir / name))


# --- Plots


def plot_curves(history, path, title):
    """Loss and accuracy per epoch, training against validation; a dotted line where a
    training phase ends and the next begins."""
    figure = Figure(figsize=(12, 4.5))
    figure.suptitle(title)
    epochs = [row["epoch"] for row in history]
    starts = [
        row["epoch"] - 0.5
        for index, row in enumerate(history)
        if index and row["phase"] != history[index - 1]["phase"]
    ]
    for axis, metric in zip(figure.subplots(1, 2), ("loss", "accuracy"), strict=True):
        for key, label in ((metric, "train"), (f"val_{metric}", "validation")):
            if all(key in row for row in history):
                axis.plot(epochs, [row[key] for row in history], label=label)
        for start in starts:
            axis.axvline(start, color="grey", linestyle=":")
        axis.set_title(metric)
        axis.set_xlabel("epoch")
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def plot_confusion_matrix(matrix, path):
    """Rows are true classes, columns predicted ones."""
    size = max(4.0, 0.6 * len(CLASS_NAMES) + 2)
    figure = Figure(figsize=(size, size))
    axis = figure.subplots()
    axis.imshow(matrix, cmap="Blues")
    ticks = range(len(CLASS_NAMES))
    axis.set_xticks(ticks, CLASS_NAMES, rotation=45, ha="right")
    axis.set_yticks(ticks, CLASS_NAMES)
    axis.set_xlabel("predicted")
    axis.set_ylabel("true")
    for row in ticks:
        for column in ticks:
            value = matrix[row, column]
            text = f"{value:.2f}" if matrix.dtype.kind == "f" else str(value)
            color = "white" if value > matrix.max() / 2 else "black"
            axis.text(column, row, text, ha="center", va="center", color=color)
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def plot_roc(y_true, scores, path):
    """The ROC curve of P(class 1), with the decision threshold marked."""
    false_positive, true_positive, thresholds = roc_curve(y_true, scores)
    figure = Figure(figsize=(5, 5))
    axis = figure.subplots()
    axis.plot(false_positive, true_positive, label="ROC")
    axis.plot([0, 1], [0, 1], linestyle="--", color="grey")
    at = int(np.argmin(np.abs(thresholds - THRESHOLD)))
    axis.scatter(false_positive[at], true_positive[at], label=f"threshold {THRESHOLD}")
    axis.set_xlabel("false positive rate")
    axis.set_ylabel("true positive rate")
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
