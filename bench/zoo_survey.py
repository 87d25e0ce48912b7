"""How much of torchvision's classification zoo, and of timm's popular CNNs, `cnnspec import`
brings in exactly? A survey, not a test.

    .venv/bin/python bench/zoo_survey.py --zoo torchvision|timm [--models a,b] [--timeout 300]
        [--max-params 200e6] [--fresh] [--keep DIR]

Each model goes the way a user's does, each step a subprocess under the timeout so that a hang
or a crash stops one model, not the survey:

1. `cnnspec import tests.frameworks.zoo:tv_NAME --input-size 224x224x3 -o NAME.cnn` (timm's:
   `timm_NAME`; inception_v3 at 299x299x3): the model as tests/frameworks/zoo.py builds it,
   seeded random weights, trained-like batchnorm statistics, no constant parameters, eval mode;
2. `cnnspec check NAME.cnn`;
3. `cnnspec export NAME.cnn --weights NAME.safetensors -o NAME.onnx`;
4. this script's `--compare` worker: the original model again (the same seed), on two seeded
   standard-normal images, against the export under onnxruntime (loaded from its file, beside
   which a model over 2 GiB keeps its weights),
   after the softmax the import says it adds, as tests/frameworks/test_import_onnx.py compares.

A model is `exact` where every probability is within 1e-4 of the original's, `wrong output`
where one is not, `refused` where the import says what the language lacks (or another one-line
error that is not an internal error), `crashed` where a step prints a traceback, an internal
error or a spec that does not check or export, and `timeout` where a step runs past --timeout.
Models over --max-params are `skipped` (listed, not counted). The maximum difference of the
log-probabilities, and of the softmax's input against the source's logits (the exported graph's
Softmax input made its output), are recorded beside it: with random weights the probabilities
are near uniform over 1,000 classes (each about 1e-3, where 1e-4 alone says little) or saturated
at 0 and 1 (deep residual stacks), and the logits show what the probabilities hide.

Results merge into bench/zoo_<zoo>.json (one record per model; --fresh starts over) and are
written as bench/zoo_<zoo>.md after each model, so an interrupted survey keeps what it did.
torchvision's models run smallest of each family first, then the others by size."""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

CNNSPEC = str(Path(sys.executable).parent / "cnnspec")
TOLERANCE = 1e-4

# torchvision's families, the longer prefix first where one is another's start.
TORCHVISION_FAMILIES = [
    "alexnet",
    "vgg",
    "wide_resnet",
    "resnext",
    "resnet",
    "densenet",
    "squeezenet",
    "googlenet",
    "inception",
    "mobilenet_v2",
    "mobilenet_v3",
    "mnasnet",
    "shufflenet_v2",
    "efficientnet_v2",
    "efficientnet",
    "regnet",
    "convnext",
    "vit",
    "swin",
    "maxvit",
]
TIMM_FAMILIES = {
    "resnet18d": "resnet",
    "resnet50": "resnet",
    "efficientnet_b0": "efficientnet",
    "mobilenetv3_large_100": "mobilenetv3",
    "regnety_008": "regnet",
    "convnext_tiny": "convnext",
    "ghostnet_100": "ghostnet",
    "cspresnet50": "cspnet",
    "cspdarknet53": "cspnet",
    "dpn68": "dpn",
    "mixnet_s": "mixnet",
    "rexnet_100": "rexnet",
    "hrnet_w18_small": "hrnet",
    "densenet121": "densenet",
    "vit_tiny_patch16_224": "vit",
}
PREFIX = {"torchvision": "tv_", "timm": "timm_"}
STATUSES = ["exact", "wrong output", "refused", "crashed", "timeout", "skipped"]


def family(zoo: str, name: str) -> str:
    if zoo == "timm":
        return TIMM_FAMILIES.get(name, name.split("_")[0].rstrip("0123456789"))
    return next((f for f in TORCHVISION_FAMILIES if name.startswith(f)), name)


def run(command: list[str], timeout: float) -> tuple[int | None, str, str, float]:
    """(exit status or None on timeout, stdout, stderr, seconds)."""
    start = time.perf_counter()
    try:
        done = subprocess.run(
            command, cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired as expired:
        out = expired.stdout.decode() if isinstance(expired.stdout, bytes) else ""
        err = expired.stderr.decode() if isinstance(expired.stderr, bytes) else ""
        return None, out, err, time.perf_counter() - start
    return done.returncode, done.stdout, done.stderr, time.perf_counter() - start


def _tail(text: str, lines: int = 12) -> list[str]:
    return [line for line in text.rstrip().splitlines()[-lines:]]


def _failed_step(record: dict, step: str, code: int | None, out: str, err: str) -> dict:
    if code is None:
        record.update(status="timeout", cause=f"{step} ran past the timeout")
    else:
        record.update(status="crashed", cause=f"{step} exited {code}", lines=_tail(err or out))
    return record


def survey_one(zoo: str, name: str, timeout: float, folder: Path, keep: bool = False) -> dict:
    from tests.frameworks import zoo as zoos

    factory = PREFIX[zoo] + name
    height, width, channels = zoos.input_size(factory)
    size = f"{height}x{width}x{channels}"
    spec, weights, onnx = (
        folder / f"{factory}{suffix}" for suffix in (".cnn", ".safetensors", ".onnx")
    )
    target = f"tests.frameworks.zoo:{factory}"
    record: dict = {
        "model": name,
        "family": family(zoo, name),
        "input_size": size,
        "command": f".venv/bin/cnnspec import {target} --input-size {size} -o {factory}.cnn",
    }
    start = time.perf_counter()
    code, out, err, seconds = run(
        [CNNSPEC, "import", target, "--input-size", size, "-o", str(spec)], timeout
    )
    record["import_s"] = round(seconds, 1)
    lines = err.rstrip().splitlines()
    record["notes"] = [
        line[len("cnnspec: note: ") :] for line in lines if line.startswith("cnnspec: note: ")
    ]
    if code is None:
        record.update(status="timeout", cause="import ran past the timeout")
    elif code != 0:
        errors = [line for line in lines if not line.startswith("cnnspec: note: ")]
        text = "\n".join(errors)
        record["lines"] = errors[-12:] if "Traceback" in text else errors[:12]
        if "Traceback" in text:
            record.update(status="crashed", cause="traceback")
        elif "internal error" in text:
            record.update(status="crashed", cause="internal error", traceback=_logged(text))
        elif code == 1 and text.startswith("cnnspec: error:"):
            record.update(status="refused", cause=_refusal_kind(errors))
        else:
            record.update(status="crashed", cause=f"import exited {code}")
    else:
        record["spec_lines"] = len(spec.read_text().splitlines())
        record["parameters"] = _parameters(out)
        code, out, err, _ = run([CNNSPEC, "check", str(spec)], timeout)
        if code != 0:
            _failed_step(record, "check", code, out, err)
        else:
            code, out, err, _ = run(
                [CNNSPEC, "export", str(spec), "--weights", str(weights), "-o", str(onnx)], timeout
            )
            if code != 0:
                _failed_step(record, "export", code, out, err)
            else:
                code, out, err, _ = run(
                    [sys.executable, __file__, "--compare", factory, str(spec), str(onnx)], timeout
                )
                if code != 0:
                    _failed_step(record, "compare", code, out, err)
                else:
                    found = json.loads(out.strip().splitlines()[-1])
                    record.update(found)
                    exact = found["max_abs_prob_error"] <= TOLERANCE
                    record["status"] = "exact" if exact else "wrong output"
                    if not exact:
                        record["command_compare"] = (
                            f".venv/bin/python bench/zoo_survey.py --zoo {zoo} --models {name}"
                        )
    record["total_s"] = round(time.perf_counter() - start, 1)
    if not keep:
        for path in (spec, weights, onnx):
            path.unlink(missing_ok=True)
    return record


def _logged(text: str) -> list[str]:
    """The end of the traceback an internal error's log file holds."""
    found = re.search(r"(/\S*cnnspec-internal-error-\S*\.log)", text)
    if not found or not Path(found.group(1)).is_file():
        return []
    return _tail(Path(found.group(1)).read_text(), 8)


def _parameters(out: str) -> int | None:
    found = re.search(r"([\d,]+) parameters\)", out)
    return int(found.group(1).replace(",", "")) if found else None


def _refusal_kind(errors: list[str]) -> str:
    """What the refusal's header says, without the target: the model uses what cnnspec cannot
    express, its graph cannot be written, or the one-line error itself."""
    header = errors[0].removeprefix("cnnspec: error: ")
    if header.startswith("cannot import ") and ": " in header:
        return header.split(": ", 1)[1][:200]
    return header[:200]


# A refusal line is `  [N places, first ]WHERE: WHAT: WHY[ (and N more nodes ...)]`.
_PLACE = re.compile(r"^\s*(\d+ \w+, first )?(node|layer) '[^']*'( \([^)]*\))?: ")
_MORE = re.compile(r" \(and [^()]*\)$")
_FEEDS = re.compile(r"^(its output (also )?feeds|no tensor for) ")


def refusal_causes(record: dict) -> list[str]:
    """The causes a refusal lists, without their places and counts."""
    if record.get("status") != "refused":
        return []
    listed = [line for line in record.get("lines", [])[1:] if line != "nothing written"]
    if not listed:
        return [_refusal_kind(record.get("lines", [""]))]
    causes = []
    for line in record.get("lines", [])[1:]:
        if line == "nothing written" or re.match(r"^\s*and \d+ more cause", line):
            continue
        cause = _MORE.sub("", _PLACE.sub("", line)).strip()
        # "its output feeds A, B (the others likewise): WHY" names places: WHY is the cause.
        causes.append(cause.split(": ", 1)[-1] if _FEEDS.match(cause) else cause)
    return causes


def compare(factory: str, spec_path: str, onnx_path: str) -> None:
    """The worker: one JSON line on stdout with the differences between the original model's
    probabilities and the export's."""
    import numpy as np
    import onnx
    import torch

    from cnnspec.check import output_activation
    from cnnspec.compiler import compile_file
    from tests.frameworks import zoo as zoos

    height, width, channels = zoos.input_size(factory)
    x = np.random.default_rng(0).standard_normal((2, channels, height, width)).astype(np.float32)
    model = zoos.build(factory)
    with torch.no_grad():
        source = logits_source = model(torch.from_numpy(x))
    spec = compile_file(Path(spec_path)).spec
    # The last layer's activation, or the last layer itself (a softmax after SqueezeNet's
    # pooled class scores).
    activation = output_activation(spec.model.output_node)
    if activation is not None and activation.kind == "softmax" and source.shape[1] > 1:
        # The source ends in logits; the spec applies softmax (and says so in a note).
        source = torch.softmax(source, 1)
    expected = source.numpy()
    # Without its weights: a model over 2 GiB has them in a data file beside it (see
    # cnnspec.export), and no message that large can reach onnxruntime as bytes.
    exported = onnx.load(onnx_path, load_external_data=False)
    got = _run_beside(exported, Path(onnx_path), x)
    if got.shape != expected.shape:
        print(
            json.dumps({"max_abs_prob_error": float("inf"), "shape": [got.shape, expected.shape]})
        )
        return
    tiny = 1e-30
    log_error = np.abs(np.log(np.maximum(got, tiny)) - np.log(np.maximum(expected, tiny)))
    found = {
        "max_abs_prob_error": float(np.abs(got - expected).max()),
        "max_abs_log_prob_error": float(log_error.max()),
        "max_prob": float(expected.max()),
        "same_top1": bool((got.argmax(1) == expected.argmax(1)).all()),
    }
    # Probabilities near uniform (random weights) or saturated (deep residual stacks) say
    # little at 1e-4: the softmax's input against the source's own logits says more.
    logits = _softmax_input(exported)
    if logits is not None and source is not logits_source:
        del exported.graph.output[:]
        exported.graph.output.append(
            onnx.helper.make_tensor_value_info(logits, onnx.TensorProto.FLOAT, None)
        )
        got_logits = _run_beside(exported, Path(onnx_path), x)
        want = logits_source.numpy()
        if got_logits.shape == want.shape:
            found["max_abs_logit_error"] = float(np.abs(got_logits - want).max())
            found["max_abs_logit"] = float(np.abs(want).max())
    print(json.dumps(found))


def _run_beside(model: Any, path: Path, x: Any) -> Any:
    """The model's output under onnxruntime, from a file beside `path`, where the data file
    that an external-data model names is found."""
    import onnxruntime as ort

    probe = path.with_name(f".probe.{path.name}")
    probe.write_bytes(model.SerializeToString())
    try:
        session = ort.InferenceSession(str(probe), providers=["CPUExecutionProvider"])
    finally:
        probe.unlink()
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def _softmax_input(model: Any) -> str | None:
    """The input of the Softmax that produces the exported model's output (through the
    Identity that names it), if one does."""
    producers = {name: node for node in model.graph.node for name in node.output}
    node = producers.get(model.graph.output[0].name)
    while node is not None and node.op_type == "Identity":
        node = producers.get(node.input[0])
    return node.input[0] if node is not None and node.op_type == "Softmax" else None


def order(zoo: str, names: list[str], sizes: dict[str, int]) -> list[str]:
    """The smallest model of each family first, then the others by size."""
    by_size = sorted(names, key=lambda n: (sizes[n], n))
    first: dict[str, str] = {}
    for name in by_size:
        first.setdefault(family(zoo, name), name)
    firsts = list(first.values())
    return firsts + [n for n in by_size if n not in firsts]


def write_markdown(zoo: str, records: dict[str, dict], path: Path, max_params: float) -> None:
    rows = sorted(
        records.values(), key=lambda r: (r["family"], r.get("parameters_source") or 0, r["model"])
    )
    out = [
        f"# `cnnspec import` of the {zoo} zoo",
        "",
        "Written by `bench/zoo_survey.py` (see its docstring for the steps); models as "
        "tests/frameworks/zoo.py builds them (random seeded weights, trained-like batchnorm "
        f"statistics). `exact`: every probability within {TOLERANCE:g} of the original's.",
        "",
        "| model | family | params (M) | status | import s | spec lines | max abs prob error"
        " | max abs log-prob error | max abs logit error | max abs logit | max prob |",
        "|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        params = r.get("parameters_source")
        out.append(
            f"| {r['model']} | {r['family']} | {params / 1e6:.1f} |"
            if params
            else f"| {r['model']} | {r['family']} | |"
        )
        out[-1] += (
            f" {r['status']} | {r.get('import_s', '')} | {r.get('spec_lines', '')} |"
            f" {_number(r.get('max_abs_prob_error'))} | {_number(r.get('max_abs_log_prob_error'))} |"
            f" {_number(r.get('max_abs_logit_error'))} | {_number(r.get('max_abs_logit'))} |"
            f" {_number(r.get('max_prob'))} |"
        )
    counted = [r for r in rows if r["status"] != "skipped"]
    out += [
        "",
        "## Rate by family",
        "",
        "| family | tried | exact | rate |",
        "|---|---:|---:|---:|",
    ]
    families: dict[str, list[dict]] = defaultdict(list)
    for r in counted:
        families[r["family"]].append(r)
    for name in sorted(families):
        tried = families[name]
        exact = sum(r["status"] == "exact" for r in tried)
        out.append(f"| {name} | {len(tried)} | {exact} | {exact / len(tried):.0%} |")
    if families:
        whole = sum(all(r["status"] == "exact" for r in f) for f in families.values())
        some = sum(any(r["status"] == "exact" for r in f) for f in families.values())
        exact = sum(r["status"] == "exact" for r in counted)
        out += [
            "",
            f"Families with every tried model exact: {whole} of {len(families)} "
            f"({whole / len(families):.0%}); with at least one: {some}. "
            f"Models exact: {exact} of {len(counted)} ({exact / len(counted):.0%}).",
        ]
    statuses = Counter(r["status"] for r in rows)
    out += ["", "Statuses: " + ", ".join(f"{s} {statuses[s]}" for s in STATUSES if statuses[s])]
    skipped = [r["model"] for r in rows if r["status"] == "skipped"]
    if skipped:
        out += ["", f"Skipped (over {max_params / 1e6:.0f}M parameters): " + ", ".join(skipped)]
    causes: dict[str, list[str]] = defaultdict(list)
    for r in rows:
        for cause in dict.fromkeys(refusal_causes(r)):
            causes[cause].append(r["model"])
    if causes:
        out += ["", "## Refusal causes", "", "| cause | models | which |", "|---|---:|---|"]
        for cause, models in sorted(causes.items(), key=lambda item: -len(item[1])):
            out.append(f"| {cause.replace('|', '/')} | {len(models)} | {', '.join(models)} |")
    problems = [r for r in rows if r["status"] in ("wrong output", "crashed", "timeout")]
    if problems:
        out += ["", "## Tracebacks, internal errors, wrong outputs and timeouts", ""]
        for r in problems:
            out += [f"### {r['model']}: {r['status']} ({r.get('cause', '')})", "", "```"]
            out += [r.get("command_compare") or r["command"]]
            out += r.get("lines", [])
            out += r.get("traceback", [])
            if r["status"] == "wrong output":
                out.append(
                    f"max abs prob error {r['max_abs_prob_error']:.3g}, max abs log-prob error "
                    f"{r.get('max_abs_log_prob_error', float('nan')):.3g}, same top-1 {r.get('same_top1')}"
                )
            out += ["```", ""]
    refused = [r for r in rows if r["status"] == "refused"]
    if refused:
        out += ["", "## Refusals as printed", ""]
        for r in refused:
            out += [f"### {r['model']}", "", "```", r["command"], *r.get("lines", []), "```", ""]
    path.write_text("\n".join(out).rstrip() + "\n")


def _number(value: float | None) -> str:
    return "" if value is None else f"{value:.2g}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--zoo", choices=sorted(PREFIX))
    parser.add_argument("--models", help="comma-separated names (default: the whole zoo)")
    parser.add_argument("--timeout", type=float, default=300, help="seconds per step")
    parser.add_argument("--max-params", type=float, default=200e6)
    parser.add_argument("--fresh", action="store_true", help="forget earlier results")
    parser.add_argument("--keep", type=Path, help="keep the specs, weights and ONNX files here")
    parser.add_argument("--render", action="store_true", help="only rewrite the markdown")
    parser.add_argument(
        "--compare", nargs=3, metavar=("FACTORY", "SPEC", "ONNX"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.compare:
        compare(*args.compare)
        return
    if args.zoo is None:
        parser.error("--zoo is required")
    json_path = ROOT / "bench" / f"zoo_{args.zoo}.json"
    md_path = json_path.with_suffix(".md")
    if args.render:
        records = {r["model"]: r for r in json.loads(json_path.read_text())}
        write_markdown(args.zoo, records, md_path, args.max_params)
        return
    from tests.frameworks import zoo as zoos

    names = zoos.torchvision_names() if args.zoo == "torchvision" else list(zoos.TIMM)
    if args.models:
        names = [n.strip() for n in args.models.split(",") if n.strip()]
    sizes = {name: zoos.parameter_count(PREFIX[args.zoo] + name) for name in names}
    if not args.models:
        names = order(args.zoo, names, sizes)
    records: dict[str, dict] = {}
    if json_path.is_file() and not args.fresh:
        records = {r["model"]: r for r in json.loads(json_path.read_text())}
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    with tempfile.TemporaryDirectory(prefix="zoo_survey_") as scratch:
        folder = args.keep or Path(scratch)
        folder.mkdir(parents=True, exist_ok=True)
        for index, name in enumerate(names, 1):
            if sizes[name] > args.max_params:
                record = {"model": name, "family": family(args.zoo, name), "status": "skipped"}
            else:
                record = survey_one(args.zoo, name, args.timeout, folder, keep=bool(args.keep))
            record["parameters_source"] = sizes[name]
            records[name] = record
            print(
                f"[{index}/{len(names)}] {name}: {record['status']}"
                f" {record.get('cause', '')} {record.get('import_s', '')}s"
                f" {record.get('max_abs_prob_error', '')}",
                flush=True,
            )
            json_path.write_text(
                json.dumps(sorted(records.values(), key=lambda r: r["model"]), indent=1) + "\n"
            )
            write_markdown(args.zoo, records, md_path, args.max_params)


if __name__ == "__main__":
    main()
