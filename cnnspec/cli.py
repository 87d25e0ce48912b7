"""The `cnnspec` command line.

Exit status: 0 when there are no errors (warnings allowed), 1 when a spec has errors, 2 for usage
errors such as a missing file. No input produces a Python traceback.
"""

from __future__ import annotations

import json
import os
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from cnnspec import __version__
from cnnspec.compiler import Compilation, compile_source
from cnnspec.diagnostics import Severity, render_json, render_text
from cnnspec.source import Source

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="A declarative model-spec compiler for convolutional networks.",
)


class DiagnosticFormat(StrEnum):
    text = "text"
    json = "json"


class SummaryFormat(StrEnum):
    table = "table"
    json = "json"


SpecPath = Annotated[Path, typer.Argument(help="A .cnn spec file.", show_default=False)]


def _color(stream: object) -> bool:
    return hasattr(stream, "isatty") and stream.isatty() and "NO_COLOR" not in os.environ  # type: ignore[attr-defined]


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


def _usage_error(message: str) -> typer.Exit:
    typer.echo(f"cnnspec: error: {message}", err=True)
    raise typer.Exit(2)


def _print_diagnostics(compilation: Compilation) -> None:
    color = _color(sys.stderr)
    for diagnostic in compilation.diagnostics:
        text = render_text(diagnostic, compilation.source)
        head, _, rest = text.partition("\n")
        style = "1;31" if diagnostic.severity is Severity.ERROR else "1;33"
        label = f"{diagnostic.severity}[{diagnostic.code}]"
        head = head.replace(label, _paint(label, style, color), 1)
        typer.echo(f"{head}\n{rest}\n", err=True)


def _tally(compilations: list[Compilation]) -> tuple[int, int]:
    errors = sum(len(c.diagnostics.errors) for c in compilations)
    warnings = sum(len(c.diagnostics.warnings) for c in compilations)
    return errors, warnings


def _checked_or_exit(
    spec: Path, consequence: str = "", image_size: int | None = None
) -> Compilation:
    """The spec compiled without errors (at `image_size` x `image_size` when given); otherwise
    its diagnostics and exit status 1."""
    size = (image_size, image_size) if image_size else None
    compilation = compile_source(_load(spec), size)
    _print_diagnostics(compilation)
    if not compilation.ok or compilation.spec is None:
        errors, warnings = _tally([compilation])
        typer.echo(
            f"{_plural(errors, 'error')}, {_plural(warnings, 'warning')}{consequence}", err=True
        )
        raise typer.Exit(1)
    return compilation


def _write_or_exit(target: Path, content: str | bytes, force: bool, state: Any = None) -> str:
    """Write a generated file (see cnnspec.artifact); a refusal or an OS error is one line."""
    from cnnspec.artifact import Refused, write_generated

    try:
        return str(write_generated(target, content, force=force, state=state))
    except Refused as refused:
        typer.echo(f"cnnspec: error: {refused}", err=True)
        typer.echo("  = hint: pass --force to overwrite it, or -o to write elsewhere", err=True)
        raise typer.Exit(1) from None
    except OSError as error:
        typer.echo(f"cnnspec: error: cannot write {target}: {error.strerror}", err=True)
        raise typer.Exit(1) from None


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


@app.command()
def check(
    specs: Annotated[
        list[Path], typer.Argument(help="One or more .cnn spec files; - reads standard input.")
    ],
    format: Annotated[
        DiagnosticFormat, typer.Option("--format", "-f", help="text, or json for editors and CI.")
    ] = DiagnosticFormat.text,
) -> None:
    """Parse and check specs: shapes, parameters, data and training schedule."""
    compilations = [compile_source(_load(path)) for path in specs]
    if format is DiagnosticFormat.json:
        typer.echo(render_json((c.source, c.diagnostics) for c in compilations))
    else:
        for compilation in compilations:
            _print_diagnostics(compilation)
            spec = compilation.spec
            if compilation.ok and spec is not None:
                params = spec.model.params
                typer.echo(
                    f"{compilation.source.path}: ok: {_plural(len(spec.model.nodes), 'layer')}, "
                    f"{params.total:,} params ({params.trainable:,} trainable), "
                    f"output {spec.model.output_shape}"
                )
        errors, warnings = _tally(compilations)
        if errors or warnings:
            typer.echo(f"{_plural(errors, 'error')}, {_plural(warnings, 'warning')}", err=True)
    if any(c.diagnostics.has_errors for c in compilations):
        raise typer.Exit(1)


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


@app.command()
def fmt(
    specs: Annotated[
        list[Path],
        typer.Argument(help="Spec files to format in place; - formats standard input to stdout."),
    ],
    check_only: Annotated[
        bool,
        typer.Option("--check", help="Change nothing; exit 1 when a file would be reformatted."),
    ] = False,
    diff: Annotated[
        bool, typer.Option("--diff", help="Print the changes as a unified diff; change nothing.")
    ] = False,
) -> None:
    """Rewrite specs in the canonical layout, keeping their comments and their meaning."""
    import difflib

    from cnnspec.fmt import format_text

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
                typer.echo(f"cnnspec: error: {source.path} cannot be formatted safely", err=True)
            continue
        stdin = str(path) == "-"
        if stdin and not (check_only or diff):
            typer.echo(formatted, nl=False)
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
            typer.echo("".join(lines), nl=False)
        if check_only:
            typer.echo(f"would reformat {source.path}", err=status_err)
        elif not diff and not stdin:
            try:
                _replace_text(path, formatted)
            except OSError as error:
                typer.echo(f"cnnspec: error: cannot write {path}: {error.strerror}", err=True)
                changed, failed = changed - 1, failed + 1
                continue
            typer.echo(f"reformatted {source.path}", err=status_err)
    if not all(str(p) == "-" for p in specs) or check_only or diff:
        would = check_only or diff
        parts = [
            f"{_plural(changed, 'file')} {'would be reformatted' if would else 'reformatted'}",
            f"{_plural(unchanged, 'file')} {'already formatted' if would else 'left unchanged'}",
        ]
        if failed:
            parts.append(f"{_plural(failed, 'file')} not formatted")
        typer.echo(", ".join(parts), err=status_err)
    if failed or ((check_only or diff) and changed):
        raise typer.Exit(1)


@app.command()
def summary(
    spec: SpecPath,
    format: Annotated[
        SummaryFormat, typer.Option("--format", "-f", help="table, or json for tools.")
    ] = SummaryFormat.table,
) -> None:
    """Show every layer's output shape, parameters, MACs and receptive field."""
    from cnnspec.summary import render_table, to_json

    compilation = compile_source(_load(spec))
    _print_diagnostics(compilation)
    if not compilation.ok or compilation.spec is None:
        errors, warnings = _tally([compilation])
        typer.echo(f"{_plural(errors, 'error')}, {_plural(warnings, 'warning')}", err=True)
        raise typer.Exit(1)
    if format is SummaryFormat.json:
        typer.echo(json.dumps(to_json(compilation.spec), indent=2))
        return
    from rich.console import Console

    console = Console()
    if not console.is_terminal:
        # Piped output has no width to measure: keep rows on one line rather than wrap at 80.
        console = Console(width=120)
    console.print(render_table(compilation.spec))


class Backend(StrEnum):
    keras = "keras"
    pytorch = "pytorch"


@app.command()
def build(
    spec: SpecPath,
    backend: Annotated[
        Backend, typer.Option("--backend", "-b", help="What to generate.")
    ] = Backend.keras,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            help="Output file (default: build/<spec>_<backend>.py).",
            show_default=False,
        ),
    ] = None,
    force: Annotated[
        bool,
        typer.Option(
            "--force", help="Overwrite a file cnnspec did not write, or one edited since."
        ),
    ] = False,
) -> None:
    """Generate a standalone training script for a spec."""
    from cnnspec.backends import backend as load_backend

    compilation = _checked_or_exit(spec, "; nothing written")
    module = load_backend(backend.value)
    stem = spec.stem if str(spec) != "-" else compilation.spec.name
    source_name = spec.name if str(spec) != "-" else "<stdin>"
    target = output or Path("build") / f"{stem}{module.SUFFIX}"
    text = module.emit(compilation.spec, source_name)
    outcome = _write_or_exit(target, text, force)
    lines = text.count("\n")
    typer.echo(f"{outcome} {target} ({backend.value}, {lines} lines)")


class InputLayout(StrEnum):
    nchw = "nchw"
    nhwc = "nhwc"


ImageSize = Annotated[
    int | None,
    typer.Option(
        "--image-size",
        min=1,
        help="Build for N x N inputs instead of the spec's size, as the scripts' --image-size.",
        show_default=False,
    ),
]


@app.command()
def export(
    spec: SpecPath,
    weights: Annotated[
        Path | None,
        typer.Option(
            "--weights",
            "-w",
            help="weights.safetensors written by a generated script (default: initialised "
            "from the spec's seed).",
            show_default=False,
        ),
    ] = None,
    image_size: ImageSize = None,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output", "-o", help="Output file (default: build/<spec>.onnx).", show_default=False
        ),
    ] = None,
    opset: Annotated[int, typer.Option("--opset", min=13, help="ONNX opset.")] = 18,
    input_layout: Annotated[
        InputLayout, typer.Option("--input-layout", help="nhwc adds a transpose in front.")
    ] = InputLayout.nchw,
    fp16: Annotated[
        bool, typer.Option("--fp16", help="float16 weights and arithmetic; float32 input/output.")
    ] = False,
    int8: Annotated[
        bool, typer.Option("--int8", help="Static int8 quantisation (needs --calibration-data).")
    ] = False,
    calibration_data: Annotated[
        str | None,
        typer.Option(
            "--calibration-data",
            help="A folder of images, or 'digits', to calibrate --int8 on.",
            show_default=False,
        ),
    ] = None,
    force: Annotated[
        bool,
        typer.Option(
            "--force", help="Overwrite a file cnnspec did not write, or one edited since."
        ),
    ] = False,
) -> None:
    """Export the spec's network to ONNX, with trained or seeded weights."""
    from cnnspec.artifact import State

    compilation = _checked_or_exit(spec, "; nothing written", image_size)
    checked = compilation.spec
    try:
        import onnx

        from cnnspec import export as onnx_export
        from cnnspec.quantize import QuantizeError
    except ImportError:
        typer.echo(
            "cnnspec: error: export needs the onnx package: pip install 'cnnspec[onnx]'", err=True
        )
        raise typer.Exit(1) from None
    if weights is None:
        tensors = onnx_export.initial_weights(checked, checked.train.seed)
        typer.echo(
            f"cnnspec: warning: no --weights: initialised from seed {checked.train.seed}; "
            "the model predicts nothing useful",
            err=True,
        )
    else:
        try:
            tensors = onnx_export.load_weights(weights)
        except FileNotFoundError:
            _usage_error(f"no such file: {weights}")
        except Exception as error:  # safetensors reports a bad header as several types
            typer.echo(f"cnnspec: error: cannot read {weights}: {error}", err=True)
            raise typer.Exit(1) from None
    try:
        if int8 and fp16:
            _usage_error("--int8 and --fp16 exclude each other")
        if int8 and calibration_data is None:
            _usage_error("--int8 needs --calibration-data DIR or --calibration-data digits")
        model = onnx_export.export(
            checked, tensors, opset, input_layout.value, fp16, calibration_data if int8 else None
        )
        onnx.checker.check_model(model, full_check=True)
    except onnx_export.WeightError as error:
        typer.echo(f"cnnspec: error: {weights} does not fit {checked.name}: {error}", err=True)
        raise typer.Exit(1) from None
    except (QuantizeError, onnx_export.ExportError) as error:
        typer.echo(f"cnnspec: error: {error}", err=True)
        raise typer.Exit(1) from None
    stem = spec.stem if str(spec) != "-" else checked.name
    target = output or Path("build") / f"{stem}.onnx"

    def state(path: Path) -> State:
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return State.absent
        except IsADirectoryError:
            return State.foreign
        return State(onnx_export.model_state(data))

    outcome = _write_or_exit(target, model.SerializeToString(), force, state)
    params = checked.model.params.total
    shape = [d.dim_param or d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    typer.echo(
        f"{outcome} {target} (ONNX opset {opset}{', float16' if fp16 else ''}"
        f"{', int8' if int8 else ''}, "
        f"{params:,} parameters, "
        f"input {onnx_export.INPUT} {shape})"
    )


@app.command()
def verify(
    spec: SpecPath,
    weights: Annotated[
        Path | None,
        typer.Option(
            "--weights", "-w", help="weights.safetensors (default: seeded).", show_default=False
        ),
    ] = None,
    tolerance: Annotated[float, typer.Option("--tolerance", help="Largest allowed error.")] = 1e-4,
    batch: Annotated[int, typer.Option("--batch", min=1, help="Random inputs to compare.")] = 4,
    image_size: ImageSize = None,
) -> None:
    """Prove that Keras, PyTorch and ONNX compute the same outputs with the same weights."""
    compilation = _checked_or_exit(spec, image_size=image_size)
    checked = compilation.spec
    assert checked is not None
    from cnnspec import export as onnx_export
    from cnnspec.verify import run_verify

    if weights is None:
        tensors = onnx_export.initial_weights(checked, checked.train.seed)
        source = f"weights initialised from seed {checked.train.seed}"
    else:
        try:
            tensors = onnx_export.load_weights(weights)
            onnx_export.check_weights(checked, tensors)
        except FileNotFoundError:
            _usage_error(f"no such file: {weights}")
        except onnx_export.WeightError as error:
            typer.echo(f"cnnspec: error: {weights} does not fit {checked.name}: {error}", err=True)
            raise typer.Exit(1) from None
        except Exception as error:
            typer.echo(f"cnnspec: error: cannot read {weights}: {error}", err=True)
            raise typer.Exit(1) from None
        source = str(weights)
    report = run_verify(checked, tensors, tolerance, batch)
    typer.echo(
        f"verify {checked.name}: {len(report.ran)} backends, {report.batch} random inputs, "
        f"{source}, tolerance {tolerance:g}"
    )
    for name, why in report.skipped.items():
        typer.echo(f"  skipped {name}: {why}")
    typer.echo(f"  {'pair':<20} {'max abs error':>14} {'max rel error':>14}")
    for c in report.comparisons:
        verdict = "ok" if c.max_abs <= tolerance else "DIFFERENT"
        pair = f"{c.first} vs {c.second}"
        typer.echo(f"  {pair:<20} {c.max_abs:>14.3g} {c.max_rel:>14.3g}  {verdict}")
        if c.first_divergence is not None:
            layer, error = c.first_divergence
            typer.echo(f"    first layer that differs: {layer} (max abs error {error:.3g})")
    trainable, fixed = report.expected
    if report.counts_agree:
        where = ["the checker", *report.counts]
        alike = ", ".join(where[:-1]) + " and " + where[-1] if len(where) > 1 else where[0]
        typer.echo(
            f"  parameters: {trainable + fixed:,} ({trainable:,} trainable) in {alike}  ok"
        )
    else:
        typer.echo(f"  parameters: {trainable:,} trainable + {fixed:,} fixed in the checker")
        for name, (got_trainable, got_fixed) in report.counts.items():
            verdict = "ok" if (got_trainable, got_fixed) == report.expected else "DIFFERENT"
            typer.echo(f"    {name}: {got_trainable:,} trainable + {got_fixed:,} fixed  {verdict}")
    for mismatch in report.shape_mismatches:
        typer.echo(f"  shape DIFFERENT: {mismatch}")
    if not report.comparisons:
        typer.echo(
            "cnnspec: error: fewer than two backends are installed: nothing to compare", err=True
        )
        raise typer.Exit(1)
    if not report.passed(tolerance):
        raise typer.Exit(1)
    typer.echo("equivalent: every pair agrees within the tolerance")


class Provider(StrEnum):
    auto = "auto"
    cuda = "cuda"
    tensorrt = "tensorrt"
    cpu = "cpu"


class PredictFormat(StrEnum):
    text = "text"
    json = "json"


@app.command()
def predict(
    model: Annotated[Path, typer.Argument(help="A model written by `cnnspec export`.")],
    images: Annotated[list[Path], typer.Argument(help="PNG or JPEG files.")],
    provider: Annotated[
        Provider, typer.Option("--provider", help="auto tries TensorRT, CUDA, then CPU.")
    ] = Provider.auto,
    top: Annotated[int, typer.Option("--top", min=1, help="Classes to show per image.")] = 3,
    format: Annotated[
        PredictFormat, typer.Option("--format", "-f", help="text, or json.")
    ] = PredictFormat.text,
) -> None:
    """Classify images with an exported ONNX model under onnxruntime."""
    try:
        from cnnspec.predict import PredictError
        from cnnspec.predict import predict as run_predict
    except ImportError:
        typer.echo(
            "cnnspec: error: predict needs onnxruntime: pip install 'cnnspec[onnx]'", err=True
        )
        raise typer.Exit(1) from None
    try:
        results, ran = run_predict(model, images, provider.value, top)
    except PredictError as error:
        typer.echo(f"cnnspec: error: {error}", err=True)
        raise typer.Exit(1) from None
    if format is PredictFormat.json:
        typer.echo(json.dumps({"provider": ran, "predictions": results}, indent=2))
        return
    typer.echo(f"ran on {ran}")
    for result in results:
        best = ", ".join(f"{t['class']} {t['probability']:.3f}" for t in result["top"])
        typer.echo(f"{result['image']}: {result['prediction']}  ({best})")


@app.command("bench")
def bench_command(
    model: Annotated[Path, typer.Argument(help="A model written by `cnnspec export`.")],
    provider: Annotated[
        Provider, typer.Option("--provider", help="auto tries TensorRT, CUDA, then CPU.")
    ] = Provider.auto,
    calls: Annotated[int, typer.Option("--calls", min=10, help="Timed calls at batch 1.")] = 200,
) -> None:
    """Latency and throughput of an exported model under onnxruntime."""
    try:
        from cnnspec.benchmark import bench
        from cnnspec.predict import PredictError
    except ImportError:
        typer.echo("cnnspec: error: bench needs onnxruntime: pip install 'cnnspec[onnx]'", err=True)
        raise typer.Exit(1) from None
    try:
        report = bench(model, provider.value, calls)
    except PredictError as error:
        typer.echo(f"cnnspec: error: {error}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"{model} on {report.provider}, full graph optimisation")
    for timing in report.timings:
        typer.echo(
            f"  batch {timing.batch:>2}: {timing.median_ms:8.3f} ms median "
            f"(p90 {timing.p90_ms:.3f}), {timing.images_per_second:,.0f} images/s"
        )
    left = report.optimised_ops.get("BatchNormalization", 0)
    typer.echo(f"  BatchNormalization nodes after optimisation: {left}")


@app.command()
def layers(
    markdown: Annotated[bool, typer.Option("--markdown", help="A markdown table.")] = False,
) -> None:
    """List every layer kind with its arguments and defaults."""
    from cnnspec.reference import layer_rows

    rows = layer_rows()
    if markdown:
        typer.echo("| layer | arguments (defaults) | what it does |\n|---|---|---|")
        for name, args, doc in rows:
            typer.echo(f"| `{name}` | {args} | {doc} |")
        return
    width = max(len(name) for name, _, _ in rows)
    for name, args, doc in rows:
        typer.echo(f"{name.ljust(width)}  {args}\n{' ' * width}  {doc}")


@app.command()
def lsp(
    debounce_ms: Annotated[
        int,
        typer.Option("--debounce-ms", min=0, help="Wait after an edit before checking again."),
    ] = 150,
    stdio: Annotated[
        bool,
        # Editors' LSP clients (vscode-languageclient, Neovim's) may pass --stdio: stdio is
        # the only transport, so the flag is accepted and means nothing more.
        typer.Option("--stdio", hidden=True),
    ] = False,
) -> None:
    """Run the language server over stdio (for editors; needs cnnspec[lsp])."""
    try:
        from cnnspec.lsp import serve
    except ImportError:
        typer.echo(
            "cnnspec: error: the language server needs pygls: pip install 'cnnspec[lsp]'",
            err=True,
        )
        raise typer.Exit(1) from None
    serve(debounce_ms / 1000)


@app.command()
def version() -> None:
    """Print the cnnspec version."""
    typer.echo(f"cnnspec {__version__}")


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as error:  # a bug in cnnspec: still no traceback, and a way to report it
        typer.echo(
            f"cnnspec: internal error: {type(error).__name__}: {error}\n"
            "please report this, with the spec that caused it",
            err=True,
        )
        sys.exit(70)
