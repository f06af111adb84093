"""The `edgekit` command: a thin typer layer over the Python API. Errors -> one line, exit 2."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from .errors import EdgekitError, InputError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Compress, export, verify and benchmark PyTorch vision models for edge devices.")
profiles_app = typer.Typer(no_args_is_help=True, help="Hardware profiles.")
app.add_typer(profiles_app, name="profiles")
# Logs and pipes get a wide table instead of rich's 80-column default.
out_console = Console(width=None if sys.stdout.isatty() else 180)

# Shared options, declared once.
ARCH = typer.Option(None, "--arch", help="Architecture for a weights-only file, e.g. cifar_resnet20, "
                    "cifar_mobilenet_v2:width=0.5, timm/mobilenetv3_small_100 or resnet18:input_size=64 "
                    "(see `edgekit models`).")
NUM_CLASSES = typer.Option(None, "--num-classes", help="Output classes (default: from the weights).")
TRUST = typer.Option(False, "--trust-pickle", help="Allow loading a fully pickled model "
                     "(can execute code: only for files you trust).")
DATA = typer.Option(..., "--data", help="ImageFolder directory (class per sub-folder, optional "
                    "train/ + test/|val/), or 'digits' (scikit-learn's bundled digits).")
LIMIT = typer.Option(1000, "--limit", help="Evaluation images (seeded subset; 0 = all).")
SEED = typer.Option(0, "--seed", help="Seed for the image subsets.")
RESUME = typer.Option(False, "--resume", help="Continue an interrupted run in --out from its last checkpoint.")
MODEL = typer.Argument(..., help="Model file (.pt/.pth/.th state_dict or checkpoint, .safetensors, "
                       ".pt2, TorchScript) or a zoo name for a randomly initialised model.")


def _limit(n: int, flag: str = "--limit") -> Optional[int]:
    """An image count where 0 means all; a negative one is a typo, not 'all'."""
    if n < 0:
        raise InputError(f"{flag} must be 0 (all images) or a positive number of images, got {n}")
    return n or None


@app.callback()
def _root(debug: bool = typer.Option(False, "--debug", help="Show tracebacks.")) -> None:
    if debug:
        os.environ["EDGEKIT_DEBUG"] = "1"


@app.command("models")
def models_cmd(pattern: str = typer.Argument("*", help="Wildcard filter, e.g. 'cifar_*'.")) -> None:
    """List the model zoo (architectures usable with --arch or as a model name)."""
    from .models import describe, list_models

    for name in list_models(pattern):
        out_console.print(f"{name:32s} {describe(name)}", highlight=False, markup=False)


@app.command("export")
def export_cmd(model: str = MODEL, data: str = DATA,
               out: Path = typer.Option(..., "--out", help="Output directory."),
               arch: Optional[str] = ARCH, num_classes: Optional[int] = NUM_CLASSES,
               backends: str = typer.Option("onnxruntime,openvino", "--backends"),
               precisions: str = typer.Option("", "--precisions", help="fp32,fp16,int8 (default: fp32, or a quantized checkpoint's own precision)"),
               limit: int = LIMIT, calib: int = typer.Option(300, "--calib", help="Calibration images for INT8."),
               profile: Optional[str] = typer.Option(None, "--profile", help="Device the files are for (e.g. jetson-orin-nano): TensorRT bundles follow its TensorRT version and shapes."),
               seed: int = SEED, trust_pickle: bool = TRUST) -> None:
    """Export to each backend and precision, verifying every artifact on real images.
    `--backends tensorrt` writes a bundle per precision to build and run on the device."""
    from .benchmark import export
    from .report import render_rich

    rows = export(model, out=out, data=data, arch=arch, num_classes=num_classes,
                  trust_pickle=trust_pickle, backends=backends, precisions=precisions or None,
                  limit=_limit(limit), calibration_images=calib, seed=seed, profile=profile)
    out_console.print(render_rich(rows, title=f"edgekit export -> {out}"))
    _exit_on_failure(rows)


@app.command("check-tensorrt")
def check_tensorrt_cmd(onnx_file: Path = typer.Argument(..., help="ONNX file to check."),
                       profile: Optional[str] = typer.Option(None, "--profile", help="Device profile: its TensorRT version and shape needs (e.g. jetson-nano)."),
                       version: Optional[str] = typer.Option(None, "--tensorrt", help="TensorRT version to check against (default: the profile's, else the newest known)."),
                       static: Optional[bool] = typer.Option(None, "--static/--dynamic", help="Require static input shapes (default: the profile's).")) -> None:
    """Check an ONNX file against a TensorRT version's parser rules (opset, operators, Q/DQ, shapes).
    Exit 0 when it passes, 1 with one line per violation (node, rule) when it does not."""
    from .errors import InputError
    from .tensorrt import check_onnx, rules_for

    if not onnx_file.is_file():
        raise InputError(f"ONNX file not found: {onnx_file}")
    static_default = False
    if profile:
        from .profiles import get_profile
        prof = get_profile(profile)
        version = version or prof.runtime_versions.get("tensorrt")
        static_default = prof.static_shapes
    rules = rules_for(version)
    try:
        found = check_onnx(onnx_file, rules.version, static_shapes=static_default if static is None else static)
    except Exception as e:  # noqa: BLE001 - protobuf's decode errors are not user-facing
        raise InputError(f"{onnx_file} is not a readable ONNX model ({type(e).__name__}): re-export it") from None
    for v in found:
        out_console.print(str(v), highlight=False, markup=False)
    verdict = "fails" if found else "passes"
    out_console.print(f"{onnx_file} {verdict} TensorRT {rules.version} rules ({len(found)} violation(s))",
                      highlight=False, markup=False)
    if found:
        raise typer.Exit(1)


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
                  precisions: str = typer.Option("", "--precisions", help="fp32,fp16,int8,w4a8,mixed (default: fp32,fp16,int8, or a quantized checkpoint's own precision)"),
                  threads: str = typer.Option("1", "--threads", help="e.g. 1 or 1,2"),
                  limit: int = LIMIT, calib: int = typer.Option(300, "--calib"), seed: int = SEED,
                  iters: int = typer.Option(100, "--iters", help="Timed batch-1 calls per row."),
                  warmup: int = typer.Option(10, "--warmup"),
                  profile: Optional[str] = typer.Option(None, "--profile", help="Add the latency this profile's model predicts (e.g. jetson, rpi, host)."),
                  trust_pickle: bool = TRUST) -> None:
    """Export, verify and time every backend x precision; write results.json/.md/.csv."""
    from .bench import TimingConfig
    from .benchmark import benchmark
    from .report import render_rich

    res = benchmark(model, data=data, out=out, arch=arch, num_classes=num_classes,
                    trust_pickle=trust_pickle, backends=backends, precisions=precisions or None,
                    threads=threads, limit=_limit(limit), calibration_images=calib, seed=seed,
                    timing=TimingConfig(warmup=warmup, iters=iters), profile=profile)
    out_console.print(render_rich(res.rows, title=f"edgekit benchmark ({res.environment['eval_images']} images)"))
    out_console.print(f"results: {out / 'results.json'}", highlight=False)


@app.command("compress")
def compress_cmd(model: str = MODEL, data: str = DATA,
                 profile: str = typer.Option(..., "--profile", help="Profile name, alias or YAML path."),
                 out: Path = typer.Option(..., "--out", help="Run directory."),
                 recipe: Optional[Path] = typer.Option(None, "--recipe", help="Recipe YAML (default: the profile's)."),
                 max_drop: Optional[float] = typer.Option(None, "--max-drop", help="Accuracy budget: top-1 points the deployed model may lose (default: recipe's, else profile's)."),
                 student: Optional[str] = typer.Option(None, "--student", help="Distil into this zoo model (adds a distill stage if the recipe has none)."),
                 arch: Optional[str] = ARCH, num_classes: Optional[int] = NUM_CLASSES,
                 limit: int = typer.Option(-1, "--limit", help="Evaluation images (-1: the profile's default, 0: all)."),
                 resume: bool = RESUME, seed: int = SEED, trust_pickle: bool = TRUST) -> None:
    """The whole pipeline for a hardware profile: recipe stages, export, verify, benchmark, report."""
    from .compress import compress
    from .report import render_rich

    res = compress(model, profile=profile, data=data, out=out, recipe=recipe, max_drop=max_drop, student=student,
                   arch=arch, num_classes=num_classes, trust_pickle=trust_pickle,
                   limit=limit if limit < 0 else _limit(limit), resume=resume, seed=seed)
    _print_compress(res, f"edgekit compress ({profile})")


def _print_compress(res, title: str) -> None:
    from .pipeline.report import best_artifact, stage_status
    from .report import render_rich

    for s in res.report["stages"]:
        out_console.print(f"stage {s['index'] + 1} {s['stage']} (attempt {s['attempt']}): {stage_status(s)}, top-1 "
                          f"{s['top1']:.2f}% (drop {s['drop']:.2f})", highlight=False)
    rows = [r for r in res.rows if r.status != "unsupported"]
    out_console.print(render_rich(rows, title=title))
    best, which = best_artifact(res.report)
    if best:
        out_console.print(f"best within budget: {best['backend']} {best['precision']} "
                          f"({which}), top-1 {best['top1']:.2f}%, "
                          f"{best['latency_ms_p50']:.3f} ms", highlight=False)
    else:
        out_console.print(f"no deployed artifact meets the budget of {res.report['max_drop']} points", highlight=False)
    out_console.print(f"report: {res.out / 'report.md'}", highlight=False)


@app.command("report")
def report_cmd(run: Path = typer.Argument(..., help="A compress run directory.")) -> None:
    """Re-render report.md and pareto.png of a compress run from its report.json."""
    from .pipeline.report import _read, write_report

    rep = _read(run)
    write_report(run, rep)
    out_console.print(f"report: {run / 'report.md'}", highlight=False)


@app.command("compare")
def compare_cmd(a: Path = typer.Argument(..., help="First compress run."),
                b: Path = typer.Argument(..., help="Second compress run.")) -> None:
    """Two compress runs side by side (Markdown)."""
    from .pipeline.report import compare_runs

    print(compare_runs(a, b))


def _train_config(epochs, batch_size, optimizer, lr, weight_decay, warmup, label_smoothing,
                  grad_clip, no_augment, train_limit, eval_limit, seed, precision="fp32"):
    from pydantic import ValidationError

    from .errors import InputError
    from .train import TrainConfig

    try:
        return TrainConfig(epochs=epochs, batch_size=batch_size, optimizer=optimizer, lr=lr,
                           weight_decay=weight_decay, warmup_epochs=warmup,
                           label_smoothing=label_smoothing, grad_clip=grad_clip,
                           augment=not no_augment, train_limit=_limit(train_limit, "--train-limit"),
                           eval_limit=_limit(eval_limit, "--eval-limit"), seed=seed, precision=precision)
    except ValidationError as e:
        err = e.errors()[0]
        raise InputError(f"--{str(err['loc'][0]).replace('_', '-')}: {err['msg']}") from None


# Training options, shared by finetune and distill.
EPOCHS = typer.Option(5, "--epochs", help="Training epochs.")
BATCH = typer.Option(128, "--batch-size", help="Per-process batch size.")
OPTIM = typer.Option("sgd", "--optimizer", help="sgd (momentum 0.9, nesterov) or adamw.")
LR = typer.Option(0.05, "--lr", help="Peak learning rate (cosine schedule).")
WD = typer.Option(5e-4, "--weight-decay")
WARMUP = typer.Option(0.0, "--warmup-epochs", help="Linear warm-up before the cosine decay.")
SMOOTH = typer.Option(0.0, "--label-smoothing")
CLIP = typer.Option(None, "--grad-clip", help="Clip the global gradient norm to this value.")
NOAUG = typer.Option(False, "--no-augment", help="Disable crop/flip augmentation.")
TLIMIT = typer.Option(0, "--train-limit", help="Train on a seeded subset of N images (0 = all).")
ELIMIT = typer.Option(0, "--eval-limit", help="Evaluate each epoch on N held-out images (0 = all).")
PRECISION = typer.Option("fp32", "--precision", help="fp32, or bf16: forward passes in bfloat16 autocast "
                         "(weights, gradients and losses stay fp32). Faster on AMX CPUs and Ampere+ GPUs: a "
                         "training epoch 1.6-1.8x as fast for CIFAR ResNets on an AMX Xeon, 1.07x for "
                         "MobileNetV2; can be slower on CPUs without native bf16.")


def _print_training(res, what: str) -> None:
    last = res.history[-1] if res.history else {}
    start = f"{res.initial_top1:.2f}% -> " if res.initial_top1 is not None else ""
    out_console.print(f"{what}: held-out top-1 {start}{last.get('eval_top1', float('nan')):.2f}% "
                      f"(best {res.best_top1:.2f}%) after {len(res.history)} epochs", highlight=False)
    for k, v in res.extra.items():
        out_console.print(f"  {k}: {v}", highlight=False)
    out_console.print(f"best checkpoint: {res.best_path}  (use it with edgekit export/benchmark)",
                      highlight=False)


@app.command("finetune")
def finetune_cmd(model: str = MODEL, data: str = DATA,
                 out: Path = typer.Option(..., "--out", help="Run directory."),
                 arch: Optional[str] = ARCH, num_classes: Optional[int] = NUM_CLASSES,
                 epochs: int = EPOCHS, batch_size: int = BATCH, optimizer: str = OPTIM,
                 lr: float = typer.Option(0.01, "--lr", help="Peak learning rate (cosine schedule)."),
                 weight_decay: float = WD, warmup_epochs: float = WARMUP,
                 label_smoothing: float = SMOOTH, grad_clip: Optional[float] = CLIP,
                 no_augment: bool = NOAUG, train_limit: int = TLIMIT, eval_limit: int = ELIMIT,
                 seed: int = SEED, precision: str = PRECISION, resume: bool = RESUME, trust_pickle: bool = TRUST) -> None:
    """Fine-tune a model on a dataset (works under torchrun for multi-process DDP)."""
    from .stages import finetune

    cfg = _train_config(epochs, batch_size, optimizer, lr, weight_decay, warmup_epochs,
                        label_smoothing, grad_clip, no_augment, train_limit, eval_limit, seed, precision)
    res = finetune(model, data=data, out=out, arch=arch, num_classes=num_classes,
                   trust_pickle=trust_pickle, config=cfg, resume=resume)
    if _is_main():
        _print_training(res, "finetune")


@app.command("distill")
def distill_cmd(teacher: str = typer.Option(..., "--teacher", help="Teacher model file."),
                student: str = typer.Option(..., "--student", help="Zoo name, e.g. cifar_mobilenet_v2:width=0.5."),
                student_weights: Optional[Path] = typer.Option(None, "--student-weights", help="Start the student from these weights (a checkpoint of that same student) instead of a fresh init."),
                data: str = DATA, out: Path = typer.Option(..., "--out", help="Run directory."),
                teacher_arch: Optional[str] = typer.Option(None, "--teacher-arch", help="Architecture of a weights-only teacher."),
                temperature: float = typer.Option(4.0, "--temperature", "-T", help="Softening temperature."),
                loss: str = typer.Option("kd", "--loss", help="kd (Hinton) or dkd (decoupled KD, Zhao et al. 2022: "
                                         "CE + alpha TCKD + beta NCKD; passes on more of a confident teacher's "
                                         "non-target knowledge)."),
                alpha: Optional[float] = typer.Option(None, "--alpha", help="kd: weight of the KD loss, 1 - alpha on the "
                                                      "labels (default 0.9); dkd: weight of TCKD (default 1.0)."),
                beta: float = typer.Option(8.0, "--beta", help="dkd: weight of NCKD (the paper uses 2 to 8; 2 for a "
                                           "CIFAR ResNet-56 teacher)."),
                kd_warmup: float = typer.Option(0.0, "--kd-warmup", help="dkd: epochs over which the KD terms ramp up "
                                                "from 0 (the paper: a twelfth of the run)."),
                teacher_bf16: bool = typer.Option(False, "--teacher-bf16", help="Run the teacher in bfloat16 autocast "
                                                  "(for CPUs with native bf16, AVX512-BF16 or AMX, and recent GPUs: "
                                                  "1.7x for a ResNet-56 here; slower elsewhere)."),
                feature: Optional[str] = typer.Option(None, "--feature", help="Feature distillation: 'auto' or STUDENT_MODULE:TEACHER_MODULE."),
                feature_weight: float = typer.Option(1.0, "--feature-weight"),
                epochs: int = EPOCHS, batch_size: int = BATCH, optimizer: str = OPTIM, lr: float = LR,
                weight_decay: float = WD, warmup_epochs: float = WARMUP,
                label_smoothing: float = SMOOTH, grad_clip: Optional[float] = CLIP,
                no_augment: bool = NOAUG, train_limit: int = TLIMIT, eval_limit: int = ELIMIT,
                seed: int = SEED, precision: str = PRECISION, resume: bool = RESUME, trust_pickle: bool = TRUST) -> None:
    """Distil a teacher into a small student from the zoo (Hinton KD or decoupled KD, optional feature KD)."""
    from .stages import distill

    cfg = _train_config(epochs, batch_size, optimizer, lr, weight_decay, warmup_epochs,
                        label_smoothing, grad_clip, no_augment, train_limit, eval_limit, seed, precision)
    res = distill(teacher, student=student, data=data, out=out, teacher_arch=teacher_arch,
                  trust_pickle=trust_pickle, temperature=temperature, alpha=alpha, loss=loss, beta=beta,
                  kd_warmup_epochs=kd_warmup, teacher_bf16=teacher_bf16, feature=feature,
                  feature_weight=feature_weight, config=cfg, student_weights=student_weights, resume=resume)
    if _is_main():
        _print_training(res, f"distill {student}")


@app.command("quantize")
def quantize_cmd(model: str = MODEL, data: str = DATA,
                 out: Path = typer.Option(..., "--out", help="Run directory."),
                 mode: str = typer.Option("qat", "--mode", help="ptq (calibration only) or qat."),
                 bits: int = typer.Option(8, "--bits", help="8 (INT8) or 4 (W4A8: 4-bit weights, 8-bit activations)."),
                 max_drop: Optional[float] = typer.Option(None, "--max-drop", help="Mixed precision: keep the most sensitive layers at higher precision until the PTQ top-1 drop is within X points."),
                 keep_float: str = typer.Option("", "--keep-float", help="Comma-separated layers to leave in float."),
                 all_low: bool = typer.Option(False, "--no-first-last-8bit", help="W4A8: quantize the first and last layers to 4 bit too."),
                 kd: bool = typer.Option(False, "--kd", help="QAT: distil from the float model (KD loss, --alpha/-T)."),
                 temperature: float = typer.Option(4.0, "--temperature", "-T", help="KD temperature (with --kd)."),
                 alpha: float = typer.Option(0.5, "--alpha", help="Weight of the KD loss with --kd."),
                 profile: Optional[str] = typer.Option(None, "--profile", help="Take runtimes and threads from a hardware profile."),
                 backends: str = typer.Option("torch,onnxruntime,openvino,tensorrt", "--backends"),
                 activations: str = typer.Option("auto", "--activations", help="signed (TensorRT's INT8), unsigned "
                                                 "(ReLU outputs on the UINT8 grid ONNX Runtime and OpenVINO run; "
                                                 "no TensorRT file) or auto: signed when tensorrt is a backend."),
                 residual: str = typer.Option("auto", "--residual", help="rounded (ONNX Runtime, TensorRT: a conv output "
                                              "entering a residual add is quantized), fused (OpenVINO: it is not, as "
                                              "OpenVINO's CPU plugin executes it) or auto: fused when openvino is the first runtime."),
                 threads: str = typer.Option("1", "--threads", help="e.g. 1 or 1,2"),
                 calib: int = typer.Option(512, "--calib", help="Calibration images."),
                 limit: int = LIMIT,
                 epochs: int = typer.Option(1, "--epochs", help="QAT epochs."), batch_size: int = BATCH,
                 optimizer: str = OPTIM,
                 lr: float = typer.Option(0.001, "--lr", help="Peak QAT learning rate (cosine schedule; BN is folded, keep it small)."),
                 weight_decay: float = typer.Option(0.0, "--weight-decay"), warmup_epochs: float = WARMUP,
                 label_smoothing: float = SMOOTH,
                 grad_clip: Optional[float] = typer.Option(1.0, "--grad-clip", help="Clip the gradient norm (BN-free "
                                                           "QAT of deep nets diverges without it)."),
                 no_augment: bool = NOAUG, train_limit: int = TLIMIT, eval_limit: int = ELIMIT,
                 arch: Optional[str] = ARCH, num_classes: Optional[int] = NUM_CLASSES,
                 seed: int = SEED, resume: bool = RESUME, trust_pickle: bool = TRUST) -> None:
    """Quantize (PTQ or QAT; INT8, W4A8 or mixed), export to each runtime and verify every artifact."""
    from .inputs import parse_list
    from .report import render_rich
    from .stages import quantize

    cfg = _train_config(epochs, batch_size, optimizer, lr, weight_decay, warmup_epochs,
                        label_smoothing, grad_clip, no_augment, train_limit, eval_limit, seed)
    res = quantize(model, data=data, out=out, mode=mode, bits=bits, arch=arch, num_classes=num_classes,
                   trust_pickle=trust_pickle, config=cfg, kd=kd, temperature=temperature, alpha=alpha,
                   keep_float=parse_list(keep_float), first_last_8bit=not all_low, max_drop=max_drop,
                   calibration_images=calib, limit=_limit(limit), backends=backends, threads=threads,
                   profile=profile, resume=resume, seed=seed, activations=activations, residual=residual)
    if not _is_main():
        return
    steps = f"float {res.fp32_top1:.2f}% -> PTQ {res.ptq_top1:.2f}%"
    if mode == "qat":
        steps += f" -> QAT {res.final_top1:.2f}%"
    out_console.print(f"{res.label} on {res.eval_images} held-out images (fake-quant torch): {steps}", highlight=False)
    rows = [r for r in res.rows if r.status != "unsupported"]
    out_console.print(render_rich(rows, title=f"edgekit quantize -> {out}"))
    out_console.print(f"quantized checkpoint: {res.model_path}; report: {out / 'report.md'}", highlight=False)
    _exit_on_failure(rows)


@app.command("prune")
def prune_cmd(model: str = MODEL, data: str = DATA,
              out: Path = typer.Option(..., "--out", help="Run directory."),
              ratio: Optional[float] = typer.Option(None, "--ratio", help="Fraction of prunable channels to remove."),
              target_macs: Optional[float] = typer.Option(None, "--target-macs", help="Keep this fraction of the MACs, e.g. 0.5."),
              target_latency_ms: Optional[float] = typer.Option(None, "--target-latency-ms", help="Prune until batch-1 latency is at most this: measured here (no profile, or --profile host), predicted by the latency model for another --profile."),
              sparsity: Optional[float] = typer.Option(None, "--sparsity", help="Unstructured: zero this fraction of weights (measured: no speed-up on these runtimes)."),
              drop_blocks: Optional[int] = typer.Option(None, "--drop-blocks", help="Remove this many residual blocks (those whose removal changes the outputs least), alone or before a channel goal."),
              importance: str = typer.Option("l2", "--importance", help="l1, l2, bn (BN scale) or taylor."),
              per_layer: bool = typer.Option(False, "--per-layer", help="Same ratio in every layer instead of one global ranking."),
              measure_here: bool = typer.Option(False, "--measure-here", help="Meet --target-latency-ms (and price --latency-aware blocks) by timing candidates here on the profile's first runtime even for a --profile that is not this host (run on the device itself, or this machine standing in for it)."),
              latency_aware: bool = typer.Option(False, "--latency-aware", help="Choose layer widths from per-layer latencies measured on the first runtime here (NetAdapt-style table), not the magnitude ranking; with --drop-blocks, remove the blocks that add least divergence per ms they save (timed here, or predicted for a --profile that is not this host)."),
              latency_precision: Optional[str] = typer.Option(None, "--latency-precision", help="fp32 or int8: the deployed precision, which the --latency-aware table, a --target-latency-ms measured here and the report's extra INT8 rows use (default: the profile's preferred precision, else fp32)."),
              channel_multiple: Optional[int] = typer.Option(None, "--channel-multiple", help="Kept channels are multiples of this (default: the profile's, else 8)."),
              keep: str = typer.Option("", "--keep", help="Comma-separated layers never pruned."),
              steps: int = typer.Option(1, "--steps", help="Iterative pruning: prune a step, recover, repeat."),
              no_recover: bool = typer.Option(False, "--no-recover", help="Skip recovery training."),
              kd: bool = typer.Option(False, "--kd", help="Recover by distilling from the unpruned model."),
              temperature: float = typer.Option(4.0, "--temperature", "-T", help="KD temperature (with --kd)."),
              alpha: float = typer.Option(0.9, "--alpha", help="Weight of the KD loss against the label loss (with --kd)."),
              compare_rounding: bool = typer.Option(False, "--compare-rounding", help="Also time the same target without channel rounding."),
              profile: Optional[str] = typer.Option(None, "--profile", help="Runtimes, threads and channel multiple from a hardware profile."),
              backends: str = typer.Option("", "--backends", help="Runtimes to time on (default: the profile's, else onnxruntime)."),
              threads: str = typer.Option("", "--threads", help="e.g. 1 or 1,2 (default: the profile's, else 1)."),
              limit: int = LIMIT,
              epochs: int = typer.Option(1, "--epochs", help="Recovery epochs per step."), batch_size: int = BATCH,
              optimizer: str = OPTIM, lr: float = typer.Option(0.01, "--lr", help="Peak recovery learning rate."),
              weight_decay: float = WD, warmup_epochs: float = WARMUP, label_smoothing: float = SMOOTH,
              grad_clip: Optional[float] = CLIP, no_augment: bool = NOAUG, train_limit: int = TLIMIT,
              eval_limit: int = ELIMIT, arch: Optional[str] = ARCH, num_classes: Optional[int] = NUM_CLASSES,
              seed: int = SEED, precision: str = PRECISION, resume: bool = RESUME, trust_pickle: bool = TRUST) -> None:
    """Prune channels or whole blocks for measured speed (or weights for sparsity), recover, and time the result."""
    from .inputs import parse_list
    from .stages import prune

    cfg = _train_config(epochs, batch_size, optimizer, lr, weight_decay, warmup_epochs,
                        label_smoothing, grad_clip, no_augment, train_limit, eval_limit, seed, precision)
    res = prune(model, data=data, out=out, ratio=ratio, target_macs=target_macs,
                target_latency_ms=target_latency_ms, sparsity=sparsity, drop_blocks=drop_blocks, importance=importance,
                global_pruning=not per_layer, latency_aware=latency_aware,
                latency_precision=latency_precision, channel_multiple=channel_multiple, keep=parse_list(keep),
                steps=steps, config=cfg, recover=not no_recover, kd=kd, temperature=temperature, alpha=alpha,
                profile=profile, backends=backends or None, threads=threads or None,
                compare_rounding=compare_rounding, limit=_limit(limit), arch=arch, num_classes=num_classes,
                trust_pickle=trust_pickle, resume=resume, seed=seed, measure_here=measure_here)
    if _is_main():
        out_console.print((out / "report.md").read_text(), highlight=False)
        out_console.print(f"pruned checkpoint: {res.model_path} (use it with edgekit export/quantize/benchmark)",
                          highlight=False)


def _is_main() -> bool:
    return os.environ.get("RANK", "0") == "0"


@app.command("demo")
def demo_cmd(out: Path = typer.Option(Path("runs/demo"), "--out", help="Run directory."),
             epochs: int = typer.Option(6, "--epochs", help="Teacher training epochs."),
             arch: str = typer.Option("cifar_resnet20", "--arch", help="Teacher architecture."),
             stage_epochs: int = typer.Option(2, "--stage-epochs", help="Recovery epochs of the prune stage.")) -> None:
    """Train a small model on scikit-learn's bundled digits, then compress it for x86 (no files needed)."""
    from .demo import demo
    from .report import render_rich

    res = demo(out, arch=arch, epochs=epochs, stage_epochs=stage_epochs)
    _print_compress(res, "edgekit demo: digits, profile x86")


@profiles_app.command("list")
def profiles_list() -> None:
    """List the hardware profiles (shipped, and `host`) with their aliases."""
    from rich.table import Table

    from .profiles import get_profile, list_profiles

    t = Table(title="edgekit profiles")
    for col in ("name", "aliases", "runs on", "runtimes", "precisions", "description"):
        t.add_column(col)
    for name in list_profiles():
        p = get_profile(name)
        u = p.unit()
        t.add_row(name, ", ".join(p.aliases), f"{u.kind} ({u.units} units)", ", ".join(p.runtimes),
                  ", ".join(p.precisions), p.description)
    out_console.print(t)


@profiles_app.command("show")
def profiles_show(name: str = typer.Argument(..., help="Profile name, alias, 'host' or a YAML path.")) -> None:
    """Print a profile's validated fields (YAML)."""
    import yaml

    from .profiles import get_profile

    print(yaml.safe_dump(get_profile(name).model_dump(), sort_keys=False), end="")


@profiles_app.command("calibrate")
def profiles_calibrate(out: Optional[Path] = typer.Option(None, "--out", help="Calibration file (default: $EDGEKIT_HOST_PROFILE or ~/.cache/edgekit/host.yaml)."),
                       runtimes: str = typer.Option("onnxruntime,openvino", "--runtimes"),
                       precisions: str = typer.Option("fp32,int8", "--precisions"),
                       threads: int = typer.Option(1, "--threads"),
                       iters: int = typer.Option(40, "--iters", help="Timed calls per model and runtime."),
                       rounds: int = typer.Option(2, "--rounds", min=1, help="Time everything this many times and keep each model's fastest round (a busy neighbour slows a round, never speeds it up).")) -> None:
    """Fit the `host` profile's efficiency factors from micro-benchmarks and reference models timed here."""
    from .inputs import parse_backends, parse_list
    from .latency.calibrate import calibrate

    rts = [r for r in parse_backends(runtimes) if r in ("onnxruntime", "openvino")]
    if not rts:
        from .errors import InputError
        raise InputError("calibrate measures onnxruntime and/or openvino on this host: pass --runtimes onnxruntime,openvino")
    bad = [p for p in parse_list(precisions) if p not in ("fp32", "int8")]
    if bad:
        from .errors import InputError
        raise InputError(f"calibrate measures fp32 and int8, not {', '.join(bad)}")
    rec = calibrate(out, runtimes=rts, precisions=parse_list(precisions), threads=threads, iters=iters, rounds=rounds,
                    progress=lambda name: out_console.print(f"measuring {name}", highlight=False))
    errs = [abs(f["predicted_ms"] / f["measured_ms"] - 1) for f in rec["fit"]]
    out_console.print(f"fitted {len(rec['efficiency']) - 1} runtime/precision factor sets on {len(rec['models'])} "
                      f"models; fit error median {100 * sorted(errs)[len(errs) // 2]:.0f}%; memory bandwidth "
                      f"{rec['bandwidth_gbs']} GB/s; written to {out or _cal_path()}", highlight=False)


def _cal_path():
    from .profiles import calibration_path
    return calibration_path()


@profiles_app.command("predict")
def profiles_predict(model: str = MODEL, profile: str = typer.Option(..., "--profile", help="Profile name, alias or YAML path."),
                     precision: Optional[str] = typer.Option(None, "--precision", help="Default: the profile's preferred precision."),
                     runtime: Optional[str] = typer.Option(None, "--runtime", help="Which runtime's efficiency factors (default: the profile's first)."),
                     threads: Optional[int] = typer.Option(None, "--threads"),
                     layers: int = typer.Option(10, "--layers", help="Show the N slowest layers (0: all)."),
                     as_json: bool = typer.Option(False, "--json"),
                     arch: Optional[str] = ARCH, num_classes: Optional[int] = NUM_CLASSES,
                     trust_pickle: bool = TRUST) -> None:
    """Predict batch-1 latency of a model (ONNX, model file or zoo name) on a profile, per layer."""
    from .latency import predict_model

    pred = predict_model(model, profile, arch=arch, num_classes=num_classes, trust_pickle=trust_pickle,
                         precision=precision, runtime=runtime, threads=threads)
    if as_json:
        print(json.dumps(pred.to_dict(layers=False)))
        return
    out_console.print(pred.markdown(top=layers or None), highlight=False)


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
    except _CLICK_ERRORS as e:  # usage errors: unknown option, missing --out, bad value
        if debug:
            raise
        message = _usage_message(e)
        if message:  # empty when the help was shown instead (no arguments at all)
            print(f"error: {message}", file=sys.stderr)
        sys.exit(e.exit_code)
    except _CLICK_ABORTS:
        print("interrupted", file=sys.stderr)
        sys.exit(130)


def _click_classes(name: str) -> tuple[type, ...]:
    """Click's exception class `name`, as raised here: typer >= 0.2x vendors click as typer._click,
    whose classes are not click's, so catching `click.ClickException` alone let every usage error
    through as a traceback."""
    import importlib

    found = []
    for module in ("typer._click.exceptions", "click.exceptions"):
        try:
            found.append(getattr(importlib.import_module(module), name))
        except (ImportError, AttributeError):
            continue
    return tuple(found)


_CLICK_ERRORS = _click_classes("ClickException")
_CLICK_ABORTS = _click_classes("Abort")


def _usage_message(e: Exception) -> str:
    """One line: click's message, and for a usage error the command's --help to read."""
    message = " ".join(e.format_message().split())
    ctx = getattr(e, "ctx", None)
    if message and ctx is not None:
        message = f"{message.rstrip('.')}; see '{ctx.command_path} --help'"
    return message


if __name__ == "__main__":
    main()
