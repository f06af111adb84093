"""A folder a Jetson user copies to the device: the ONNX to build from, the trtexec command that
builds and profiles the engine, a runner that scores the engine on an image folder, the model
card and a README. Engines are specific to the device and its TensorRT, so they are built there;
everything that can be checked before that (the parser's rules, the ONNX's outputs) is checked
here, before the folder is written.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .._io import atomic_write_json, atomic_write_text
from ..errors import ExportError
from ..models.clone import clone_module
from ..verify import Tolerance
from .rules import TrtRules, check_onnx, rules_for

if TYPE_CHECKING:  # pragma: no cover
    from ..backends.base import ExportContext
    from ..profiles import Profile

__all__ = ["BundleTarget", "write_bundle", "build_script", "RUNNER_SOURCE", "BUNDLE_FORMAT"]

BUNDLE_FORMAT = "edgekit-tensorrt-bundle/1"
RUNNER_SOURCE = Path(__file__).parent / "device" / "run_engine.py"


@dataclass(frozen=True)
class BundleTarget:
    """What the bundle is built for: a profile's TensorRT, shapes and accelerators."""

    rules: TrtRules
    static: bool = False
    dla: bool = False
    max_batch: int = 32
    profile: str = ""

    @classmethod
    def of(cls, profile: "Profile | None", max_batch: int = 32) -> "BundleTarget":
        if profile is None:
            return cls(rules_for(None), max_batch=max_batch)
        return cls(rules_for(profile.runtime_versions.get("tensorrt")), static=profile.static_shapes,
                   dla=profile.has("dla"), max_batch=profile.throughput_batch, profile=profile.name)

    @property
    def batch(self) -> dict[str, int]:
        top = 1 if self.static else self.max_batch
        return {"min": 1, "opt": 1, "max": top}


def _onnx(ctx: "ExportContext", precision: str, target: BundleTarget, path: Path) -> None:
    """FP32/FP16: the plain graph (FP16 is a build flag). INT8: explicit-quantization QDQ from
    edgekit's quantization path: a QAT checkpoint's learned grid, or PTQ on the calibration images."""
    from ..exporters.onnx import export_onnx
    from ..exporters.qdq import export_qdq

    opset, dynamic = target.rules.export_opset, not target.static
    if precision in ("fp32", "fp16"):  # one graph for both: exported once per run
        plain = ctx.work_path(f"trt_plain_opset{opset}_{'dynamic' if dynamic else 'static'}.onnx")
        if not plain.exists():
            export_onnx(ctx.module, ctx.card, plain, opset=opset, dynamic_batch=dynamic)
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(plain, path)
        return
    qmodel = ctx.module if ctx.quant else _ptq_int8(ctx)
    export_qdq(qmodel, ctx.card, path, target="tensorrt", work=path.parent, opset=opset, dynamic_batch=dynamic)


def _ptq_int8(ctx: "ExportContext"):
    """Symmetric INT8 (per-channel weights, per-tensor activations) calibrated on real images."""
    import torch

    from ..quant import calibrate, plan, prepare

    module = clone_module(ctx.module).eval()
    q = prepare(module, plan(module, 8), label="int8", input_size=ctx.card.input_size)
    calibrate(q, [torch.from_numpy(b) for b in ctx.calibration_batches(64)])
    return q.eval()


def write_bundle(ctx: "ExportContext", precision: str, target: BundleTarget, folder: Path) -> tuple[Path, list[str]]:
    """Export, check against `target.rules`, then write the bundle into `folder` (which must not
    exist). Returns (the bundle's ONNX, its files). A rule violation raises ExportError naming
    node and rule, and nothing is written."""
    work = ctx.work_path(f"trt_{precision}")
    onnx_path = work / "model.onnx"
    _onnx(ctx, precision, target, onnx_path)
    violations = check_onnx(onnx_path, target.rules.version, static_shapes=target.static)
    if violations:
        shown = "; ".join(str(v) for v in violations[:3])
        more = f" (+{len(violations) - 3} more)" if len(violations) > 3 else ""
        raise ExportError(f"TensorRT {target.rules.version} rules: {shown}{more}")
    stage = folder.with_name(f".{folder.name}.tmp")
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir(parents=True)
    shutil.move(str(onnx_path), stage / "model.onnx")
    card = ctx.card.with_(notes={**ctx.card.notes, "backend": "tensorrt", "precision": precision})
    card.write(type(card).sidecar_path(stage / "model.onnx"))  # model.onnx.card.json, as every artifact
    engine = f"model_{precision}.engine"
    reference = _write_reference(ctx, stage)
    meta = {
        "format": BUNDLE_FORMAT, "model": ctx.card.source, "arch": ctx.card.arch, "precision": precision,
        "onnx": "model.onnx", "engine": engine, "input_name": "input", "output_name": "logits",
        "input_size": list(ctx.card.input_size), "resize": ctx.card.resize,
        "mean": list(ctx.card.mean), "std": list(ctx.card.std), "class_names": list(ctx.card.class_names or []),
        "batch": target.batch, "throughput_batch": target.batch["max"],
        # the device runner's pass mark: edgekit's own verification tolerance for this precision
        "min_agreement": Tolerance().min_agreement.get("quantized" if ctx.quant else precision, 0.95),
        "profile": target.profile or None,
        "tensorrt_version": target.rules.version, "reference": reference,
    }
    atomic_write_json(stage / "bundle.json", meta)
    script = stage / "build_engine.sh"
    atomic_write_text(script, build_script(meta, target))
    script.chmod(0o755)
    if RUNNER_SOURCE.exists():
        shutil.copyfile(RUNNER_SOURCE, stage / "run_engine.py")
    atomic_write_text(stage / "README.md", _readme(meta, target))
    if folder.exists():
        shutil.rmtree(folder)
    stage.rename(folder)
    return folder / "model.onnx", sorted(p.name for p in folder.iterdir())


def _write_reference(ctx: "ExportContext", stage: Path) -> str | None:
    """The source model's top-1 on the images edgekit checked, keyed by path inside the
    evaluation folder: the device runner reports agreement on any of them it is given."""
    ref = getattr(ctx, "reference", None)
    if not ref:
        return None
    atomic_write_json(stage / "reference.json", ref)
    return "reference.json"


def _shape(name: str, batch: int, size) -> str:
    return f"{name}:{batch}x" + "x".join(str(d) for d in size)


def build_script(meta: dict, target: BundleTarget) -> str:
    """`trtexec` build (+ timing cache) and a per-layer profile run, with flags that exist in
    every TensorRT this checker knows (8.2 to 10.x: no --memPoolSize, --stronglyTyped)."""
    p, size, name = meta["precision"], meta["input_size"], meta["input_name"]
    flags = {"fp32": ["--noTF32"], "fp16": ["--fp16"]}.get(p, ["--int8", "--fp16"])  # int8, mixed: QDQ
    shapes = [] if target.static else [
        f"--minShapes={_shape(name, 1, size)}", f"--optShapes={_shape(name, 1, size)}",
        f"--maxShapes={_shape(name, meta['batch']['max'], size)}"]
    run_shape = [] if target.static else [f"--shapes={_shape(name, 1, size)}"]
    engine = meta["engine"]
    dla = target.dla and p != "fp32"
    lines = [
        "#!/usr/bin/env bash",
        f"# Build the TensorRT engine for {meta['arch']} ({p}) on the device, then profile it per layer.",
        f"# Written by edgekit for profile {target.profile or '-'} (TensorRT {target.rules.version} rules checked).",
        "# Usage: ./build_engine.sh" + (" [--dla]   (--dla: DLA core $DLA_CORE, default 0, GPU fallback)" if dla else ""),
        "set -euo pipefail",
        'cd "$(dirname "$0")"',
        'TRTEXEC="${TRTEXEC:-$(command -v trtexec || echo /usr/src/tensorrt/bin/trtexec)}"',
        '[ -x "$TRTEXEC" ] || { echo "error: trtexec not found: set TRTEXEC=/path/to/trtexec" >&2; exit 2; }',
        "ACCEL=()  # empty unless --dla; expanded so that bash's set -u accepts it empty",
    ]
    if dla:
        lines += ['if [ "${1:-}" = "--dla" ]; then ACCEL=(--useDLACore="${DLA_CORE:-0}" --allowGPUFallback); fi']
    build = ['"$TRTEXEC"', f"--onnx={meta['onnx']}", f"--saveEngine={engine}", *flags, *shapes,
             "--timingCacheFile=timing.cache", '${ACCEL[@]+"${ACCEL[@]}"}']
    prof = ['"$TRTEXEC"', f"--loadEngine={engine}", *run_shape, "--dumpProfile", "--separateProfileRun",
            "--exportTimes=times.json", "--exportProfile=layer_profile.json", '${ACCEL[@]+"${ACCEL[@]}"}']
    lines += ["", " \\\n    ".join(build) + " | tee build.log", "",
              "# per-layer times (layer_profile.json) and per-inference times (times.json)",
              " \\\n    ".join(prof) + " | tee profile.log", "",
              f'echo "engine: $(pwd)/{engine}; evaluate it: python3 run_engine.py --data /path/to/images"']
    return "\n".join(lines) + "\n"


def _readme(meta: dict, target: BundleTarget) -> str:
    p, engine = meta["precision"], meta["engine"]
    c, h, w = meta["input_size"]
    what = {"fp32": "plain FP32 ONNX, built in FP32 (TF32 off)", "fp16": "plain FP32 ONNX, built with FP16 kernels",
            "int8": "explicit-quantization QDQ ONNX (signed INT8, zero points 0, per-channel weights, per-tensor "
                    "activations), built with --int8 --fp16 (layers without Q/DQ may run in FP16)"}.get(
        p, "explicit-quantization QDQ ONNX with some layers left in float (edgekit mixed precision), built with "
           "--int8 --fp16")
    ref = ("`reference.json` holds the source model's top-1 for the images edgekit checked: evaluate on the same "
           "folder to get the agreement column." if meta["reference"] else
           "No reference predictions were saved (the data was not an image folder): agreement shows '-'.")
    return f"""# TensorRT bundle: {meta['arch']} ({p})

Written by edgekit for {'profile `' + target.profile + '`' if target.profile else 'no profile'};
the ONNX passed the rules of TensorRT {target.rules.version}'s parser (opset {target.rules.min_opset}-{target.rules.max_opset},
supported operators, explicit-quantization Q/DQ rules{', static shapes' if target.static else ''}).

| file | what |
|---|---|
| model.onnx | {what} |
| build_engine.sh | `trtexec` build to `{engine}` with a timing cache, then a per-layer profile |
| run_engine.py | scores the engine on an image folder: top-1, agreement, latency p50/p90, throughput |
| bundle.json | input name and size, normalisation, classes, batch range, precision |
| model.onnx.card.json | the edgekit model card |

Input `{meta['input_name']}`: {c}x{h}x{w}, batch {meta['batch']['min']}-{meta['batch']['max']}
{'(static)' if target.static else '(dynamic batch: min/opt/max shapes in build_engine.sh)'}; RGB scaled to [0, 1], then
normalised with mean {meta['mean']} and std {meta['std']}{f", after resizing the shorter side to {meta['resize']} and a center crop" if meta['resize'] else ''}.

## On the device

```bash
./build_engine.sh{' # or ./build_engine.sh --dla to build for a DLA core (GPU fallback)' if target.dla and p != 'fp32' else ''}
python3 run_engine.py --data /path/to/images   # ImageFolder layout: <class>/<image>, or test/<class>/<image>
```

The engine is specific to this device and its TensorRT version: build it here, not on another machine.
`trtexec` is looked up on PATH, then at /usr/src/tensorrt/bin/trtexec (JetPack); set `TRTEXEC` to override.
`run_engine.py` needs numpy, Pillow, the `tensorrt` Python module (JetPack) and PyTorch with CUDA (device
buffers and CUDA-event timing); `--backend onnxruntime` runs model.onnx on the CPU instead, to check the data path.
{ref}

Per-layer times land in `layer_profile.json`, per-inference times in `times.json`, the build log in `build.log`.
"""
