"""The `edgekit` command: a thin typer layer over the Python API. Errors -> one line, exit 2."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from .errors import EdgekitError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Compress, export, verify and benchmark PyTorch vision models for edge devices.")
profiles_app = typer.Typer(no_args_is_help=True, help="Hardware profiles.")
app.add_typer(profiles_app, name="profiles")
out_console = Console()

# Shared options, declared once.
ARCH = typer.Option(None, "--arch", help="Architecture for a weights-only file, e.g. cifar_resnet20 "
                    "or cifar_mobilenet_v2:width=0.5 (see `edgekit models`).")
NUM_CLASSES = typer.Option(None, "--num-classes", help="Output classes (default: from the weights).")
TRUST = typer.Option(False, "--trust-pickle", help="Allow loading a fully pickled model "
                     "(can execute code: only for files you trust).")
DATA = typer.Option(..., "--data", help="ImageFolder directory (class per sub-folder, optional "
                    "train/ + test/|val/), or 'digits' (scikit-learn's bundled digits).")
LIMIT = typer.Option(1000, "--limit", help="Evaluation images (seeded subset; 0 = all).")
SEED = typer.Option(0, "--seed", help="Seed for the image subsets.")
MODEL = typer.Argument(..., help="Model file (.pt/.pth/.th state_dict or checkpoint, .pt2, "
                       "TorchScript) or a zoo name for a randomly initialised model.")


def _limit(n: int) -> Optional[int]:
    return None if n <= 0 else n


@app.callback()
def _root(debug: bool = typer.Option(False, "--debug", help="Show tracebacks.")) -> None:
    if debug:
        os.environ["EDGEKIT_DEBUG"] = "1"


@app.command("models")
def models_cmd(pattern: str = typer.Argument("*", help="Wildcard filter, e.g. 'cifar_*'.")) -> None:
    """List the model zoo (architectures usable with --arch or as a model name)."""
    from .models import describe, list_models

    for name in list_models(pattern):
        out_console.print(f"{name:32s} {describe(name)}", highlight=False)


@app.command("export")
def export_cmd(model: str = MODEL, data: str = DATA,
               out: Path = typer.Option(..., "--out", help="Output directory."),
               arch: Optional[str] = ARCH, num_classes: Optional[int] = NUM_CLASSES,
               backends: str = typer.Option("onnxruntime,openvino", "--backends"),
               precisions: str = typer.Option("fp32", "--precisions", help="fp32,fp16,int8"),
               limit: int = LIMIT, calib: int = typer.Option(300, "--calib", help="Calibration images for INT8."),
               seed: int = SEED, trust_pickle: bool = TRUST) -> None:
    """Export to each backend and precision, verifying every artifact on real images."""
    from .benchmark import export
    from .report import render_rich

    rows = export(model, out=out, data=data, arch=arch, num_classes=num_classes,
                  trust_pickle=trust_pickle, backends=backends, precisions=precisions,
                  limit=_limit(limit), calibration_images=calib, seed=seed)
    out_console.print(render_rich(rows, title=f"edgekit export -> {out}"))
    _exit_on_failure(rows)


@app.command("eval")
def eval_cmd(model: str = MODEL, data: str = DATA, arch: Optional[str] = ARCH,
             num_classes: Optional[int] = NUM_CLASSES, limit: int = typer.Option(0, "--limit", help="0 = all"),
             seed: int = SEED, threads: int = typer.Option(1, "--threads"), trust_pickle: bool = TRUST,
             as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Top-1/top-5 of a model, or of an exported .onnx/.xml artifact, on a dataset."""
    from .evaluate import evaluate

    r = evaluate(model, data=data, arch=arch, num_classes=num_classes, trust_pickle=trust_pickle,
                 limit=_limit(limit), seed=seed, threads=threads)
    if as_json:
        print(json.dumps(r.to_dict()))
    else:
        top5 = "-" if r.top5 is None else f"{r.top5:.2f}%"
        out_console.print(f"{r.model} [{r.backend} {r.precision}, executed {r.executed}] on "
                          f"{r.images} images: top-1 {r.top1:.2f}%, top-5 {top5}", highlight=False)


@app.command("benchmark")
def benchmark_cmd(model: str = MODEL, data: str = DATA,
                  out: Path = typer.Option(..., "--out", help="Output directory (artifacts + results.*)."),
                  arch: Optional[str] = ARCH, num_classes: Optional[int] = NUM_CLASSES,
                  backends: str = typer.Option("torch,onnxruntime,openvino", "--backends"),
                  precisions: str = typer.Option("fp32,fp16,int8", "--precisions"),
                  threads: str = typer.Option("1", "--threads", help="e.g. 1 or 1,2"),
                  limit: int = LIMIT, calib: int = typer.Option(300, "--calib"), seed: int = SEED,
                  iters: int = typer.Option(100, "--iters", help="Timed batch-1 calls per row."),
                  warmup: int = typer.Option(10, "--warmup"),
                  trust_pickle: bool = TRUST) -> None:
    """Export, verify and time every backend x precision; write results.json/.md/.csv."""
    from .bench import TimingConfig
    from .benchmark import benchmark
    from .report import render_rich

    res = benchmark(model, data=data, out=out, arch=arch, num_classes=num_classes,
                    trust_pickle=trust_pickle, backends=backends, precisions=precisions,
                    threads=threads, limit=_limit(limit), calibration_images=calib, seed=seed,
                    timing=TimingConfig(warmup=warmup, iters=iters))
    out_console.print(render_rich(res.rows, title=f"edgekit benchmark ({res.environment['eval_images']} images)"))
    out_console.print(f"results: {out / 'results.json'}", highlight=False)


@app.command("compress")
def compress_cmd(model: str = MODEL, data: str = DATA,
                 profile: str = typer.Option(..., "--profile", help="Profile name or YAML path."),
                 out: Path = typer.Option(..., "--out", help="Run directory."),
                 arch: Optional[str] = ARCH, num_classes: Optional[int] = NUM_CLASSES,
                 limit: int = typer.Option(-1, "--limit", help="Evaluation images (-1: the profile's default, 0: all)."),
                 seed: int = SEED, trust_pickle: bool = TRUST) -> None:
    """Quantize, export, verify and benchmark for a hardware profile; write report.md."""
    from .compress import compress
    from .report import render_rich

    res = compress(model, profile=profile, data=data, out=out, arch=arch, num_classes=num_classes,
                   trust_pickle=trust_pickle, limit=None if limit < 0 else (_limit(limit) or 10**9),
                   seed=seed)
    rows = [r for r in res.rows if r.status != "unsupported"]
    out_console.print(render_rich(rows, title=f"edgekit compress ({profile})"))
    out_console.print(f"report: {out / 'report.md'}", highlight=False)


@app.command("demo")
def demo_cmd(out: Path = typer.Option(Path("runs/demo"), "--out", help="Run directory."),
             epochs: int = typer.Option(6, "--epochs", help="Teacher training epochs."),
             arch: str = typer.Option("cifar_resnet20", "--arch", help="Teacher architecture.")) -> None:
    """Train a small model on scikit-learn's bundled digits, then compress it for x86 (no files needed)."""
    from .demo import demo
    from .report import render_rich

    res = demo(out, arch=arch, epochs=epochs)
    rows = [r for r in res.rows if r.status != "unsupported"]
    out_console.print(render_rich(rows, title="edgekit demo: digits, profile x86"))
    out_console.print(f"report: {out / 'report.md'}", highlight=False)


@profiles_app.command("list")
def profiles_list() -> None:
    """List the shipped hardware profiles."""
    from .profiles import get_profile, list_profiles

    for name in list_profiles():
        out_console.print(f"{name:20s} {get_profile(name).description}", highlight=False)


@profiles_app.command("show")
def profiles_show(name: str = typer.Argument(..., help="Profile name or YAML path.")) -> None:
    """Print a profile's validated fields."""
    import yaml

    from .profiles import get_profile

    print(yaml.safe_dump(get_profile(name).model_dump(), sort_keys=False), end="")


def _exit_on_failure(rows) -> None:
    if any(r.status in ("export failed", "verification failed") for r in rows):
        raise typer.Exit(1)


def main() -> None:
    """Console entry point: EdgekitError -> 'error: ...' on stderr, exit code 2."""
    debug = "--debug" in sys.argv or os.environ.get("EDGEKIT_DEBUG")
    try:
        rc = app(standalone_mode=False)
        if isinstance(rc, int) and rc:
            sys.exit(rc)
    except EdgekitError as e:
        if debug:
            raise
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except SystemExit:
        raise
    except Exception as e:  # click usage errors and the like
        import click
        if isinstance(e, click.exceptions.ClickException):
            e.show()
            sys.exit(e.exit_code)
        if isinstance(e, click.exceptions.Abort):
            sys.exit(130)
        raise


if __name__ == "__main__":
    main()
