"""The `cnnspec` command line.

Exit status: 0 when there are no errors (warnings allowed), 1 when a spec has errors, 2 for usage
errors such as a missing file, 141 (silently) when whoever reads the output closed the pipe
early, as for a tool that SIGPIPE ends. No input produces a Python traceback.
"""

from __future__ import annotations

import argparse
import inspect
import os
import sys
import textwrap
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, NoReturn

from cnnspec import __version__, codes
from cnnspec.backends import BACKENDS
from cnnspec.compiler import Compilation, compile_source
from cnnspec.diagnostics import Diagnostics, Severity, render_json, render_text
from cnnspec.source import Source
from cnnspec.wording import plural


class Exit(Exception):
    """Leave the command with this exit status (what it had to say is already printed)."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


def echo(message: str = "", err: bool = False, nl: bool = True) -> None:
    stream = sys.stderr if err else sys.stdout
    stream.write(message + ("\n" if nl else ""))
    stream.flush()


def _color(stream: object) -> bool:
    return hasattr(stream, "isatty") and stream.isatty() and "NO_COLOR" not in os.environ


def _paint(text: str, code: str, enabled: bool) -> str:
    return f"\033[{code}m{text}\033[0m" if enabled else text


def _load(path: Path) -> Source:
    """Read a spec (`-` is standard input), turning file-system problems into usage errors."""
    if str(path) == "-":
        return Source("<stdin>", sys.stdin.read().removeprefix("\ufeff"))
    try:
        return Source.read(path)
    except FileNotFoundError:
        _usage_error(f"no such file: {path}")
    except IsADirectoryError:
        _usage_error(f"{path} is a directory, not a spec file")
    except UnicodeDecodeError:
        _usage_error(f"{path} is not UTF-8 text")
    except OSError as error:
        _usage_error(f"cannot read {path}: {error.strerror}")


def _usage_error(message: str) -> NoReturn:
    echo(f"cnnspec: error: {message}", err=True)
    raise Exit(2)


def _print_diagnostics(compilation: Compilation | Diagnostics) -> None:
    diagnostics = compilation if isinstance(compilation, Diagnostics) else compilation.diagnostics
    color = _color(sys.stderr)
    for diagnostic in diagnostics:
        text = render_text(diagnostic, diagnostics.source)
        head, _, rest = text.partition("\n")
        style = "1;31" if diagnostic.severity is Severity.ERROR else "1;33"
        label = f"{diagnostic.severity}[{diagnostic.code}]"
        head = head.replace(label, _paint(label, style, color), 1)
        echo(f"{head}\n{rest}\n", err=True)


def _tally(compilations: list[Compilation]) -> tuple[int, int]:
    errors = sum(len(c.diagnostics.errors) for c in compilations)
    warnings = sum(len(c.diagnostics.warnings) for c in compilations)
    return errors, warnings


STRICT = "--strict: warnings fail"


def _checked_or_exit(
    spec: Path, consequence: str = "", image_size: int | None = None, strict: bool = False
) -> Compilation:
    """The spec compiled without errors (at `image_size` x `image_size` when given), and with
    `strict` without warnings either; otherwise its diagnostics and exit status 1."""
    size = (image_size, image_size) if image_size else None
    compilation = compile_source(_load(spec), size)
    _print_diagnostics(compilation)
    errors, warnings = _tally([compilation])
    failed = strict and warnings
    if not compilation.ok or compilation.spec is None or failed:
        strictly = f" ({STRICT})" if failed else ""
        echo(
            f"{plural(errors, 'error')}, {plural(warnings, 'warning')}{strictly}{consequence}",
            err=True,
        )
        raise Exit(1)
    return compilation


@contextmanager
def _backend_errors(compilation: Compilation, consequence: str = "") -> Iterator[None]:
    """A layer that a backend cannot express is an error at its line (E401), and exit 1."""
    from cnnspec.registry import Unsupported

    try:
        yield
    except Unsupported as error:
        diagnostics = Diagnostics(compilation.source)
        diagnostics.error(
            codes.BACKEND_UNSUPPORTED,
            f"{error.backend} cannot express this: {error.message}",
            error.span,
            error.hint,
        )
        _print_diagnostics(diagnostics)
        echo(f"1 error{consequence}", err=True)
        raise Exit(1) from None


def _write_or_exit(target: Path, content: str | bytes, force: bool, state: Any = None) -> str:
    """Write a generated file (see cnnspec.artifact); a refusal or an OS error is one line."""
    from cnnspec.artifact import Refused, write_generated

    try:
        return str(write_generated(target, content, force=force, state=state))
    except Refused as refused:
        echo(f"cnnspec: error: {refused}", err=True)
        echo("  = hint: pass --force to overwrite it, or -o to write elsewhere", err=True)
        raise Exit(1) from None
    except OSError as error:
        echo(f"cnnspec: error: cannot write {target}: {error.strerror}", err=True)
        raise Exit(1) from None


def _weights_or_exit(path: Path, spec: Any) -> Any:
    """A weights.safetensors that fits `spec`; any problem with it is one line of error."""
    from cnnspec import export as onnx_export

    try:
        tensors = onnx_export.load_weights(path)
    except FileNotFoundError:
        _usage_error(f"no such file: {path}")
    except IsADirectoryError:
        _usage_error(f"{path} is a directory, not a weights file")
    except onnx_export.WeightError as error:  # another framework's file, not safetensors
        echo(f"cnnspec: error: {error}", err=True)
        raise Exit(1) from None
    except OSError as error:  # no permission, an I/O error
        echo(f"cnnspec: error: cannot read {path}: {error.strerror or error}", err=True)
        raise Exit(1) from None
    try:
        onnx_export.check_weights(spec, tensors)
    except onnx_export.WeightError as error:
        echo(f"cnnspec: error: {path} does not fit {spec.name}: {error}", err=True)
        raise Exit(1) from None
    return tensors


def check(args: argparse.Namespace) -> None:
    """Parse and check specs: shapes, parameters, data and training schedule."""
    compilations = [compile_source(_load(path)) for path in args.specs]
    if args.format == "json":
        echo(render_json((c.source, c.diagnostics) for c in compilations))
    else:
        for compilation in compilations:
            _print_diagnostics(compilation)
            spec = compilation.spec
            if compilation.ok and spec is not None:
                params = spec.model.params
                echo(
                    f"{compilation.source.path}: ok: {plural(len(spec.model.nodes), 'layer')}, "
                    f"{plural(params.total, 'param')} ({params.trainable:,} trainable), "
                    f"output {spec.model.output_shape}"
                )
        errors, warnings = _tally(compilations)
        if errors or warnings:
            strictly = f" ({STRICT})" if args.strict and warnings else ""
            echo(f"{plural(errors, 'error')}, {plural(warnings, 'warning')}{strictly}", err=True)
    if any(
        c.diagnostics.has_errors or (args.strict and c.diagnostics.warnings) for c in compilations
    ):
        raise Exit(1)


def _replace_text(path: Path, text: str) -> None:
    """Write `text` over `path` atomically (a temporary file in the same folder, then a rename),
    keeping its mode; through a symbolic link, the file it points to is replaced."""
    import tempfile

    real = Path(os.path.realpath(path))
    mode = real.stat().st_mode & 0o7777
    handle, temporary = tempfile.mkstemp(dir=real.parent, prefix=f".{real.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8", newline="") as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(temporary, mode)
        os.replace(temporary, real)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def fmt(args: argparse.Namespace) -> None:
    """Rewrite specs in the canonical layout, keeping their comments and their meaning."""
    import difflib

    from cnnspec.fmt import format_text

    specs, check_only, diff = args.specs, args.check, args.diff
    sources = [_load(path) for path in specs]
    # Standard output carries the diff, or standard input's formatted text: status goes aside.
    status_err = diff or (not check_only and any(str(p) == "-" for p in specs))
    changed = unchanged = failed = 0
    for path, source in zip(specs, sources, strict=True):
        formatted = format_text(source.text, source.path)
        if formatted is None:
            failed += 1
            compilation = compile_source(source)
            if compilation.spec is None and compilation.diagnostics.has_errors:
                _print_diagnostics(compilation)
            else:  # the formatter's own guard refused: a bug, reported rather than written
                echo(f"cnnspec: error: {source.path} cannot be formatted safely", err=True)
            continue
        stdin = str(path) == "-"
        if stdin and not (check_only or diff):
            echo(formatted, nl=False)
        if formatted == source.text:
            unchanged += 1
            continue
        changed += 1
        if diff:
            # A last line without its newline would run into the next line of the diff.
            before = [line.removesuffix("\n") + "\n" for line in source.text.splitlines(True)]
            lines = difflib.unified_diff(
                before, formatted.splitlines(True), source.path, source.path
            )
            echo("".join(lines), nl=False)
        if check_only:
            echo(f"would reformat {source.path}", err=status_err)
        elif not diff and not stdin:
            try:
                _replace_text(path, formatted)
            except OSError as error:
                echo(f"cnnspec: error: cannot write {path}: {error.strerror}", err=True)
                changed, failed = changed - 1, failed + 1
                continue
            echo(f"reformatted {source.path}", err=status_err)
    if not all(str(p) == "-" for p in specs) or check_only or diff:
        would = check_only or diff
        parts = [
            f"{plural(changed, 'file')} {'would be reformatted' if would else 'reformatted'}",
            f"{plural(unchanged, 'file')} {'already formatted' if would else 'left unchanged'}",
        ]
        if failed:
            parts.append(f"{plural(failed, 'file')} not formatted")
        echo(", ".join(parts), err=status_err)
    if failed or ((check_only or diff) and changed):
        raise Exit(1)


def summary(args: argparse.Namespace) -> None:
    """Show every layer's output shape, parameters, MACs and receptive field."""
    from cnnspec.summary import render_table, to_json

    compilation = compile_source(_load(args.spec))
    _print_diagnostics(compilation)
    if not compilation.ok or compilation.spec is None:
        errors, warnings = _tally([compilation])
        echo(f"{plural(errors, 'error')}, {plural(warnings, 'warning')}", err=True)
        raise Exit(1)
    if args.format == "json":
        import json

        echo(json.dumps(to_json(compilation.spec), indent=2))
        return
    from rich.console import Console

    console = Console()
    if not console.is_terminal:
        # Piped output has no width to measure: keep rows on one line rather than wrap at 80.
        console = Console(width=120)
    # Rich ends the process itself (status 1) when the pipe is closed: let `main` do it, the
    # same way for every command.
    console.on_broken_pipe = _broken_pipe  # type: ignore[method-assign]
    console.print(render_table(compilation.spec), soft_wrap=True)


def _broken_pipe() -> NoReturn:
    raise BrokenPipeError(32, "Broken pipe")


def build(args: argparse.Namespace) -> None:
    """Generate a standalone training script for a spec."""
    from cnnspec.backends import backend as load_backend

    spec, output, force = args.spec, args.output, args.force
    compilation = _checked_or_exit(spec, "; nothing written", strict=args.strict)
    module = load_backend(args.backend)
    stem = spec.stem if str(spec) != "-" else compilation.checked.name
    source_name = spec.name if str(spec) != "-" else "<stdin>"
    target = output or Path("build") / f"{stem}{module.SUFFIX}"
    with _backend_errors(compilation, "; nothing written"):
        text = module.emit(compilation.checked, source_name)
    outcome = _write_or_exit(target, text, force)
    lines = text.count("\n")
    echo(f"{outcome} {target} ({args.backend}, {plural(lines, 'line')})")


def export(args: argparse.Namespace) -> None:
    """Export the spec's network to ONNX, with trained or seeded weights."""
    from cnnspec.artifact import Refused

    spec, weights, output, force = args.spec, args.weights, args.output, args.force
    opset, fp16, int8, calibration_data = args.opset, args.fp16, args.int8, args.calibration_data
    compilation = _checked_or_exit(spec, "; nothing written", args.image_size)
    checked = compilation.checked
    try:
        import onnx  # noqa: F401  (missing, it is said here, before any work)

        from cnnspec import export as onnx_export
        from cnnspec.quantize import QuantizeError
    except ImportError:
        echo("cnnspec: error: export needs the onnx package: pip install 'cnnspec[onnx]'", err=True)
        raise Exit(1) from None
    stem = spec.stem if str(spec) != "-" else checked.name
    # Each precision has its own default file, so an int8 export never replaces the float one.
    precision = ".int8" if int8 else ".fp16" if fp16 else ""
    target = output or Path("build") / f"{stem}{precision}.onnx"
    if weights is None:
        tensors = onnx_export.initial_weights(checked, checked.train.seed)
        source = f"seed {checked.train.seed}"
        earlier = onnx_export.weights_source(target.read_bytes()) if target.is_file() else ""
        if earlier and not earlier.startswith("seed ") and not force:
            echo(
                f"cnnspec: error: {target} holds an export of trained weights ({earlier}); "
                "not replacing it with weights initialised from the seed",
                err=True,
            )
            echo(f"  = hint: pass --weights {earlier}, or --force, or -o elsewhere", err=True)
            raise Exit(1)
        echo(
            f"cnnspec: warning: no --weights: initialised from seed {checked.train.seed}; "
            "the model predicts nothing useful",
            err=True,
        )
    else:
        tensors = _weights_or_exit(weights, checked)
        source = str(weights)
    try:
        if int8 and fp16:
            _usage_error("--int8 and --fp16 exclude each other")
        if int8 and calibration_data is None:
            _usage_error("--int8 needs --calibration-data DIR or --calibration-data digits")
        with _backend_errors(compilation, "; nothing written"):
            model = onnx_export.export(
                checked,
                tensors,
                opset,
                args.input_layout,
                fp16,
                calibration_data if int8 else None,
                weights_source=source,
                keep_batchnorms=args.keep_batchnorms,
            )
    except onnx_export.WeightError as error:
        echo(f"cnnspec: error: {weights} does not fit {checked.name}: {error}", err=True)
        raise Exit(1) from None
    except (QuantizeError, onnx_export.ExportError) as error:
        echo(f"cnnspec: error: {error}", err=True)
        raise Exit(1) from None
    shape = [d.dim_param or d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    try:
        outcome, data_file = onnx_export.save(model, target, force)
    except Refused as refused:
        echo(f"cnnspec: error: {refused}", err=True)
        echo("  = hint: pass --force to overwrite it, or -o to write elsewhere", err=True)
        raise Exit(1) from None
    except OSError as error:
        echo(f"cnnspec: error: cannot write {target}: {error.strerror or error}", err=True)
        raise Exit(1) from None
    params = checked.model.params.total
    # Too large for one protobuf message: the weights are in a second file, which must travel
    # with the model.
    beside = f", weights in {data_file}" if data_file is not None else ""
    echo(
        f"{outcome} {target} (ONNX opset {opset}{', float16' if fp16 else ''}"
        f"{', int8' if int8 else ''}, "
        f"{plural(params, 'parameter')}, "
        f"input {onnx_export.INPUT} {shape}){beside}"
    )


def verify(args: argparse.Namespace) -> None:
    """Prove that Keras, PyTorch and ONNX compute the same outputs with the same weights."""
    weights, tolerance = args.weights, args.tolerance
    compilation = _checked_or_exit(args.spec, image_size=args.image_size)
    checked = compilation.checked
    assert checked is not None
    from cnnspec import export as onnx_export
    from cnnspec.verify import run_verify

    if weights is None:
        tensors = onnx_export.initial_weights(checked, checked.train.seed)
        source = f"weights initialised from seed {checked.train.seed}"
    else:
        tensors = _weights_or_exit(weights, checked)
        source = str(weights)
    with _backend_errors(compilation):
        report = run_verify(checked, tensors, tolerance, args.batch)
    echo(
        f"verify {checked.name}: {plural(len(report.ran), 'backend')}, "
        f"{plural(report.batch, 'random input')}, "
        f"{source}, tolerance {tolerance:g}"
    )
    for name, why in report.skipped.items():
        echo(f"  skipped {name}: {why}")
    echo(f"  {'pair':<20} {'max abs error':>14} {'max rel error':>14}")
    for c in report.comparisons:
        verdict = "ok" if c.max_abs <= tolerance else "DIFFERENT"
        pair = f"{c.first} vs {c.second}"
        echo(f"  {pair:<20} {c.max_abs:>14.3g} {c.max_rel:>14.3g}  {verdict}")
        if c.first_divergence is not None:
            layer, error = c.first_divergence
            echo(f"    first layer that differs: {layer} (max abs error {error:.3g})")
    trainable, fixed = report.expected
    if report.counts_agree:
        where = ["the checker", *report.counts]
        alike = ", ".join(where[:-1]) + " and " + where[-1] if len(where) > 1 else where[0]
        echo(f"  parameters: {trainable + fixed:,} ({trainable:,} trainable) in {alike}  ok")
    else:
        echo(f"  parameters: {trainable:,} trainable + {fixed:,} fixed in the checker")
        for name, (got_trainable, got_fixed) in report.counts.items():
            verdict = "ok" if (got_trainable, got_fixed) == report.expected else "DIFFERENT"
            echo(f"    {name}: {got_trainable:,} trainable + {got_fixed:,} fixed  {verdict}")
    for mismatch in report.shape_mismatches:
        echo(f"  shape DIFFERENT: {mismatch}")
    if not report.comparisons:
        echo("cnnspec: error: fewer than two backends are installed: nothing to compare", err=True)
        raise Exit(1)
    if not report.passed(tolerance):
        raise Exit(1)
    echo("equivalent: every pair agrees within the tolerance")


def predict(args: argparse.Namespace) -> None:
    """Classify images with an exported ONNX model under onnxruntime.

    Each IMAGE is a file in any format Pillow reads (PNG, JPEG, GIF, BMP, TIFF, WebP, ...),
    whatever its suffix, or a folder: every file under it with an image suffix, recursively,
    in sorted order. A missing, unreadable or damaged image is reported on one line and the
    others are still classified; the exit status is then 1.
    """
    try:
        from cnnspec.predict import BadImage, PredictError
        from cnnspec.predict import predict as run_predict
    except ImportError:
        echo("cnnspec: error: predict needs onnxruntime: pip install 'cnnspec[onnx]'", err=True)
        raise Exit(1) from None
    try:
        outcomes, ran = run_predict(args.model, args.images, args.provider, args.top)
    except PredictError as error:
        echo(f"cnnspec: error: {error}", err=True)
        raise Exit(1) from None
    results: list[dict[str, Any]] = []
    bad = 0
    for outcome in outcomes:
        if isinstance(outcome, BadImage):
            bad += 1
            echo(f"cnnspec: error: {outcome.message}", err=True)
            continue
        results.append(outcome)
        if args.format == "text":
            # Only once an image is classified: with none, stdout stays empty, as it always was.
            if len(results) == 1:
                echo(f"ran on {ran}")
            best = ", ".join(f"{t['class']} {t['probability']:.3f}" for t in outcome["top"])
            echo(f"{outcome['image']}: {outcome['prediction']}  ({best})")
    if args.format == "json":
        import json

        echo(json.dumps({"provider": ran, "predictions": results}, indent=2))
    if bad:
        # After many predictions the error lines have scrolled away: say at the end that they exist.
        if bad + len(results) > 1:
            echo(
                f"cnnspec: error: {plural(bad, 'input')} failed, "
                f"{plural(len(results), 'image')} classified",
                err=True,
            )
        raise Exit(1)


def bench_command(args: argparse.Namespace) -> None:
    """Latency and throughput of an exported model under onnxruntime."""
    try:
        from cnnspec.benchmark import bench
        from cnnspec.predict import PredictError
    except ImportError:
        echo("cnnspec: error: bench needs onnxruntime: pip install 'cnnspec[onnx]'", err=True)
        raise Exit(1) from None
    model = args.model
    try:
        report = bench(model, args.provider, args.calls)
    except PredictError as error:
        echo(f"cnnspec: error: {error}", err=True)
        raise Exit(1) from None
    echo(f"{model} on {report.provider}, full graph optimisation")
    for timing in report.timings:
        echo(
            f"  batch {timing.batch:>2}: {timing.median_ms:8.3f} ms median "
            f"(p90 {timing.p90_ms:.3f}), {timing.images_per_second:,.0f} images/s"
        )
    left = report.optimised_ops.get("BatchNormalization", 0)
    echo(f"  BatchNormalization nodes after optimisation: {left}")


def layers(args: argparse.Namespace) -> None:
    """List every layer kind with its arguments and defaults."""
    from cnnspec.reference import layer_rows

    rows = layer_rows()
    if args.markdown:
        echo("| layer | arguments (defaults) | what it does |\n|---|---|---|")
        for name, arguments, doc in rows:
            echo(f"| `{name}` | {arguments} | {doc} |")
        return
    width = max(len(name) for name, _, _ in rows)
    for name, arguments, doc in rows:
        echo(f"{name.ljust(width)}  {arguments}\n{' ' * width}  {doc}")


def list_codes(args: argparse.Namespace) -> None:
    """List every diagnostic code, errors then warnings, with what it means."""
    from cnnspec.codes import CODES, markdown_table

    if args.markdown:
        echo(markdown_table().rstrip("\n"))
        return
    for code in sorted(CODES.values(), key=lambda code: (not code.is_error, str(code))):
        echo(f"{code}  {code.meaning}")


def lsp(args: argparse.Namespace) -> None:
    """Run the language server over stdio (for editors; needs cnnspec[lsp])."""
    try:
        from cnnspec.lsp import serve
    except ImportError:
        echo(
            "cnnspec: error: the language server needs pygls: pip install 'cnnspec[lsp]'",
            err=True,
        )
        raise Exit(1) from None
    serve(args.debounce_ms / 1000)


def version(args: argparse.Namespace) -> None:
    """Print the cnnspec version."""
    echo(f"cnnspec {__version__}")


# --------------------------------------------------------------------------------------------
# The command line


def _at_least(low: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        value = int(text)
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, not {value}")
        return value

    return parse


def graph(args: argparse.Namespace) -> None:
    """Draw the checked network as an SVG, an offline HTML page, or a PNG (through a headless
    Chromium), without any deep-learning framework."""
    from cnnspec.diagram import html, svg

    spec = args.spec
    compilation = _checked_or_exit(spec, "; nothing drawn")
    checked = compilation.checked
    stem = spec.stem if str(spec) != "-" else checked.name
    target = args.output or Path("build") / f"{stem}.svg"
    kind = target.suffix.lower()
    if kind not in (".svg", ".html", ".png"):
        _usage_error(f"{target}: the diagram is written as .svg, .html or .png")
    from cnnspec.artifact import png_state_of, stamp_png, stamp_xml, xml_state_of

    source_name = spec.name if str(spec) != "-" else "<stdin>"
    phases = [plan.phase.name for plan in checked.phases]
    if args.phase is not None and args.phase not in phases:
        _usage_error(f"{checked.name} has no phase {args.phase!r}; its phases: {', '.join(phases)}")
    drawing = (
        html(checked, args.phase, args.depth)
        if kind == ".html"
        else svg(checked, args.phase, args.depth)
    )
    first_line = f"drawn by cnnspec graph from {source_name}"
    if kind == ".png":
        from cnnspec.raster import RasterError, png_from_svg

        try:
            picture = png_from_svg(drawing)
        except RasterError as error:
            echo(f"cnnspec: error: cannot draw {target}: {error}", err=True)
            raise Exit(1) from None
        outcome = _write_or_exit(target, stamp_png(first_line, picture), args.force, png_state_of)
    else:
        text = stamp_xml(first_line, drawing)
        outcome = _write_or_exit(target, text, args.force, xml_state_of)
    echo(f"{outcome} {target} ({plural(len(checked.model.nodes), 'layer')})")


def sweep_command(args: argparse.Namespace) -> None:
    """Search the spec's sweep space with Optuna: each trial a spec checked, built, trained."""
    from cnnspec.sweep import Options, Sweep, SweepError

    compilation = _checked_or_exit(args.spec, "; nothing searched")
    assert compilation.spec is not None
    options = Options(
        backend=args.backend,
        trials=args.trials,
        epochs=args.epochs,
        storage=args.storage,
        workers=args.workers,
        output=args.output,
        subset=args.subset,
    )
    try:
        sweep = Sweep(compilation.spec, args.spec, options, echo)
        if args.dry_run:
            rows = sweep.dry_run()
            for row in rows:
                params = ", ".join(f"{k}={v}" for k, v in row.params.items())
                detail = row.note if row.state == "rejected" else row.counts
                echo(f"{row.number:3d} {row.state:8s} {params}: {detail}")
            rejected = sum(row.state == "rejected" for row in rows)
            echo(
                f"{plural(len(rows), 'configuration')} sampled: "
                f"{rejected} rejected without training"
            )
            return
        try:
            sweep.run()
        except KeyboardInterrupt:
            echo("interrupted: the study is kept; the same command carries on", err=True)
            raise Exit(130) from None
    except SweepError as error:
        echo(f"cnnspec: error: {error}", err=True)
        raise Exit(1) from None


def _dims(text: str) -> tuple[int, int, int]:
    parts = text.lower().split("x")
    if len(parts) != 3 or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise argparse.ArgumentTypeError(f"must be HxWxC, such as 224x224x3, not {text!r}")
    return (int(parts[0]), int(parts[1]), int(parts[2]))


def import_command(args: argparse.Namespace) -> None:
    """Bring a Keras, ONNX or PyTorch model into the language: a spec and its weights."""
    from cnnspec.artifact import State, stamp, state_of
    from cnnspec.importing import ImportFailure, import_model

    source: str = args.model
    try:
        imported = import_model(source, args.input_size)
    except ImportFailure as failure:
        from cnnspec.importing.refusal import refusal

        for line in refusal(source, failure):
            echo(line, err=True)
        raise Exit(1) from None
    network, spec = imported.network, imported.spec
    for note in imported.notes:
        echo(f"cnnspec: note: {note}", err=True)
    target: Path = args.output or Path(f"{network.name}.cnn")
    weights_target = target.with_suffix(".safetensors")
    try:
        from safetensors.numpy import save
    except ImportError:
        echo("cnnspec: error: import needs safetensors: pip install 'cnnspec[import]'", err=True)
        raise Exit(1) from None
    data = save(imported.tensors, metadata={"cnnspec.imported_from": network.source})

    def weights_state(path: Path) -> State:
        try:
            with open(path, "rb") as stream:
                head = stream.read(8 + 4096)
        except FileNotFoundError:
            return State.absent
        except OSError:
            return State.foreign
        return State.generated if b"cnnspec.imported_from" in head else State.foreign

    # Both files or neither: a refusal of the second must not leave the first written.
    for path, state in (
        (target, state_of(target)),
        (weights_target, weights_state(weights_target)),
    ):
        if state in (State.foreign, State.edited) and not args.force:
            from cnnspec.artifact import Refused

            echo(f"cnnspec: error: {Refused(path, state)}", err=True)
            echo("  = hint: pass --force to overwrite it, or -o to write elsewhere", err=True)
            raise Exit(1)
    text = stamp(f"# imported by cnnspec {__version__} from {network.source}", imported.text)
    outcome = _write_or_exit(target, text, args.force)
    _write_or_exit(weights_target, data, args.force, weights_state)
    params = spec.model.params
    echo(
        f"{outcome} {target} ({plural(len(text.splitlines()), 'line')}, "
        f"{plural(len(spec.model.nodes), 'layer')}, {plural(params.total, 'parameter')}) "
        f"and {weights_target}"
    )


class _HelpFormatter(argparse.HelpFormatter):
    """argparse's layout, but a description keeps its paragraphs (argparse runs them into one),
    and no line breaks at a hyphen or inside a word: `--image-` then `size` on the next line is
    not a flag a user can copy."""

    @staticmethod
    def _wrap(text: str, width: int) -> list[str]:
        words = " ".join(text.split())
        return textwrap.wrap(words, width, break_on_hyphens=False, break_long_words=False)

    def _split_lines(self, text: str, width: int) -> list[str]:
        return self._wrap(text, width)

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        paragraphs = [p for p in text.split("\n\n") if p.strip()]
        return "\n\n".join(
            "\n".join(indent + line for line in self._wrap(p, width - len(indent)))
            for p in paragraphs
        )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cnnspec",
        description="A declarative model-spec compiler for convolutional networks.",
        formatter_class=_HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"cnnspec {__version__}")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")

    def command(name: str, run: Callable[[argparse.Namespace], None]) -> argparse.ArgumentParser:
        doc = inspect.cleandoc(run.__doc__ or "")
        # The listing in `cnnspec --help` shows the docstring's first paragraph, all of it: its
        # first line alone can stop mid-sentence.
        summary = " ".join(doc.split("\n\n")[0].split())
        sub = commands.add_parser(
            name, help=summary, description=doc, formatter_class=_HelpFormatter
        )
        sub.set_defaults(run=run)
        return sub

    spec_help = "a .cnn spec file; - reads standard input"
    image_size_help = (
        "build for N x N inputs instead of the spec's size, as the scripts' --image-size"
    )
    force_help = "overwrite a file cnnspec did not write, or one edited since cnnspec wrote it"
    providers = ["auto", "cuda", "tensorrt", "cpu"]

    sub = command("check", check)
    sub.add_argument(
        "specs", nargs="+", type=Path, metavar="SPEC", help="spec files; - reads standard input"
    )
    sub.add_argument(
        "--format",
        "-f",
        choices=["text", "json"],
        default="text",
        help="text, or json for editors and CI",
    )
    sub.add_argument("--strict", action="store_true", help="fail on warnings too (exit 1), for CI")

    sub = command("fmt", fmt)
    sub.add_argument(
        "specs",
        nargs="+",
        type=Path,
        metavar="SPEC",
        help="spec files to format in place; - formats standard input to stdout",
    )
    sub.add_argument(
        "--check",
        action="store_true",
        help="change nothing; exit 1 when a file would be reformatted",
    )
    sub.add_argument(
        "--diff", action="store_true", help="print the changes as a unified diff; change nothing"
    )

    sub = command("summary", summary)
    sub.add_argument("spec", type=Path, metavar="SPEC", help=spec_help)
    sub.add_argument(
        "--format",
        "-f",
        choices=["table", "json"],
        default="table",
        help="table, or json for tools",
    )

    sub = command("build", build)
    sub.add_argument("spec", type=Path, metavar="SPEC", help=spec_help)
    sub.add_argument(
        "--backend",
        "-b",
        choices=BACKENDS,
        default="keras",
        help="what to generate (default: keras)",
    )
    sub.add_argument(
        "--output", "-o", type=Path, help="output file (default: build/<spec>_<backend>.py)"
    )
    sub.add_argument("--force", action="store_true", help=force_help)
    sub.add_argument(
        "--strict", action="store_true", help="write nothing when the spec has warnings, too"
    )

    sub = command("export", export)
    sub.add_argument("spec", type=Path, metavar="SPEC", help=spec_help)
    sub.add_argument(
        "--weights",
        "-w",
        type=Path,
        help="weights.safetensors written by a generated script (default: initialised from the spec's seed)",
    )
    sub.add_argument("--image-size", type=_at_least(1), metavar="N", help=image_size_help)
    sub.add_argument("--output", "-o", type=Path, help="output file (default: build/<spec>.onnx)")
    sub.add_argument("--opset", type=_at_least(13), default=18, help="ONNX opset (default: 18)")
    sub.add_argument(
        "--input-layout",
        choices=["nchw", "nhwc"],
        default="nchw",
        help="nhwc adds a transpose in front",
    )
    sub.add_argument(
        "--fp16", action="store_true", help="float16 weights and arithmetic; float32 input/output"
    )
    sub.add_argument(
        "--int8", action="store_true", help="static int8 quantisation (needs --calibration-data)"
    )
    sub.add_argument(
        "--calibration-data",
        metavar="DIR",
        help="a folder of images, or 'digits', to calibrate --int8 on",
    )
    sub.add_argument(
        "--keep-batchnorms",
        action="store_true",
        help="keep batchnorms before dense layers as nodes rather than folding them in "
        "(slower; `cnnspec import` then gives back every layer)",
    )
    sub.add_argument("--force", action="store_true", help=force_help)

    sub = command("verify", verify)
    sub.add_argument("spec", type=Path, metavar="SPEC", help=spec_help)
    sub.add_argument("--weights", "-w", type=Path, help="weights.safetensors (default: seeded)")
    sub.add_argument(
        "--tolerance", type=float, default=1e-4, help="largest allowed error (default: 1e-4)"
    )
    sub.add_argument(
        "--batch", type=_at_least(1), default=4, help="random inputs to compare (default: 4)"
    )
    sub.add_argument("--image-size", type=_at_least(1), metavar="N", help=image_size_help)

    sub = command("predict", predict)
    sub.add_argument(
        "model", type=Path, metavar="MODEL", help="a model written by `cnnspec export`"
    )
    sub.add_argument(
        "images",
        nargs="+",
        type=Path,
        metavar="IMAGE",
        help="an image file in any format Pillow reads, or a folder: every image file under it, "
        "recursively, sorted; a quoted glob pattern is expanded as the shell would",
    )
    sub.add_argument(
        "--provider", choices=providers, default="auto", help="auto tries TensorRT, CUDA, then CPU"
    )
    sub.add_argument(
        "--top", type=_at_least(1), default=3, help="classes to show per image (default: 3)"
    )
    sub.add_argument(
        "--format", "-f", choices=["text", "json"], default="text", help="text, or json"
    )

    sub = command("bench", bench_command)
    sub.add_argument(
        "model", type=Path, metavar="MODEL", help="a model written by `cnnspec export`"
    )
    sub.add_argument(
        "--provider", choices=providers, default="auto", help="auto tries TensorRT, CUDA, then CPU"
    )
    sub.add_argument(
        "--calls", type=_at_least(10), default=200, help="timed calls at batch 1 (default: 200)"
    )

    sub = command("layers", layers)
    sub.add_argument("--markdown", action="store_true", help="a markdown table")

    sub = command("codes", list_codes)
    sub.add_argument("--markdown", action="store_true", help="a markdown table")

    sub = command("lsp", lsp)
    sub.add_argument(
        "--debounce-ms",
        type=_at_least(0),
        default=150,
        help="wait after an edit before checking again (default: 150)",
    )
    # Editors' LSP clients (vscode-languageclient, Neovim's) may pass --stdio: stdio is the
    # only transport, so the flag is accepted and means nothing more.
    sub.add_argument("--stdio", action="store_true", help=argparse.SUPPRESS)

    sub = command("graph", graph)
    sub.add_argument("spec", type=Path, metavar="SPEC", help=spec_help)
    sub.add_argument(
        "--output",
        "-o",
        type=Path,
        help="OUT.svg, OUT.html or OUT.png (a PNG needs Chromium; default: build/<spec>.svg)",
    )
    sub.add_argument(
        "--phase", metavar="NAME", help="shade what the phase freezes; trainable counts per block"
    )
    sub.add_argument(
        "--depth",
        type=_at_least(0),
        metavar="N",
        help="draw blocks nested N deep; deeper ones are one box with their totals (0: every "
        "top-level block, such as a backbone, is one box)",
    )
    sub.add_argument("--force", action="store_true", help=force_help)

    sub = command("import", import_command)
    sub.add_argument(
        "model",
        metavar="MODEL",
        help="a Keras .keras or .h5 file, an ONNX file, or a PyTorch factory: "
        "package.module:function or path/to/file.py:function",
    )
    sub.add_argument("--output", "-o", type=Path, help="the spec to write (default: <model>.cnn)")
    sub.add_argument(
        "--input-size",
        type=_dims,
        metavar="HxWxC",
        help="the input a PyTorch factory's model takes, such as 224x224x3",
    )
    sub.add_argument("--force", action="store_true", help=force_help)

    sub = command("sweep", sweep_command)
    sub.add_argument("spec", type=Path, metavar="SPEC", help=spec_help)
    sub.add_argument(
        "--backend",
        choices=BACKENDS,
        default="pytorch",
        help="which script trains (default: pytorch)",
    )
    sub.add_argument(
        "--trials", type=_at_least(1), help="trials to run now (default: the spec's `trials`)"
    )
    sub.add_argument(
        "--epochs", type=_at_least(1), help="at most this many epochs per phase in each trial"
    )
    sub.add_argument(
        "--storage",
        metavar="URL",
        help="an Optuna RDB URL to share the study (default: sqlite:///DIR/study.db)",
    )
    sub.add_argument(
        "--workers", type=_at_least(1), default=1, help="trials run at once (default: 1)"
    )
    sub.add_argument("--output", "-o", type=Path, metavar="DIR", help="default: runs/<spec>_sweep")
    sub.add_argument("--subset", type=_at_least(1), help="train each trial on the first N examples")
    sub.add_argument(
        "--dry-run",
        action="store_true",
        help="sample configurations and say which the checker or the budgets reject; no training",
    )

    command("version", version)
    return parser


# The status of a Unix tool that SIGPIPE ended (128 + 13), so that `set -o pipefail` scripts see
# `cnnspec layers | head -1` as they see `yes | head -1`; 1 would read as "the spec has errors".
CLOSED_PIPE = 141


def _run(argv: list[str] | None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)  # a usage error exits here, with status 2
    if not hasattr(args, "run"):
        parser.print_help(sys.stderr)
        return 2
    try:
        args.run(args)
    except Exit as exit:
        return exit.code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        raise
    except Exception as error:  # the boundary: a bug in cnnspec, logged for its report
        echo(_internal_error(error, sys.argv[1:] if argv is None else argv), err=True)
        return 70
    return 0


def _internal_error(error: Exception, argv: list[str]) -> str:
    """What a bug in cnnspec prints: one line that says what it was, and where its traceback
    went: a log file (with the version and the command) a user can send, and standard error
    too when CNNSPEC_DEBUG is set (or when no file can be written)."""
    import platform
    import shlex
    import tempfile
    import traceback

    details = "".join(traceback.format_exception(error)).rstrip()
    lines = [f"cnnspec: internal error: {type(error).__name__}: {error}"]
    debug = os.environ.get("CNNSPEC_DEBUG", "") not in ("", "0")
    if debug:
        lines.append(details)
    try:
        handle, log = tempfile.mkstemp(prefix="cnnspec-internal-error-", suffix=".log")
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write(
                f"cnnspec {__version__}, Python {platform.python_version()} on "
                f"{platform.platform()}\ncommand: cnnspec {shlex.join(argv)}\n\n{details}\n"
            )
    except OSError:
        if not debug:
            lines.append(details)
        lines.append("  = please report this, with the traceback above and the spec that caused it")
    else:
        lines.append(
            f"  = please report this, with {log} (the traceback) and the spec that caused it"
            + ("" if debug else "; CNNSPEC_DEBUG=1 prints the traceback here")
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> NoReturn:
    try:
        try:
            code = _run(argv)
        finally:
            # Output still buffered would meet a closed pipe at the interpreter's exit, where
            # the error could no longer be caught. (The language server closes stdout when
            # its client goes: nothing is left to flush then.)
            if not sys.stdout.closed:
                sys.stdout.flush()
    except BrokenPipeError:
        # Whoever read the output has gone (`cnnspec layers | head -1`): stop quietly, as Unix
        # tools do. Both streams go to os.devnull so that the interpreter's last flush of what
        # is left in their buffers does not fail again (the recipe in Python's `signal` docs).
        devnull = os.open(os.devnull, os.O_WRONLY)
        for stream in (sys.stdout, sys.stderr):
            # A stream replaced by one without a descriptor (a test's capture) is left be.
            with suppress(AttributeError, OSError, ValueError):
                os.dup2(devnull, stream.fileno())
        sys.exit(CLOSED_PIPE)
    sys.exit(code)
