"""export / verify / time every (backend, precision): the Python API behind the CLI."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ._io import check_out_dir, staged_dir
from .backends import DEFAULT_PRECISIONS, QAT_ONLY, Artifact, ExportContext, get_backend
from .bench import TimingConfig, time_runners
from .env import environment, usable_cores
from .errors import EdgekitError, runtime_reason
from .inputs import check_classes, parse_backends, parse_precisions, parse_threads
from .progress import progress_bar
from .report import Row, render_markdown, write_results
from .verify import Tolerance, Verification, predict, verify

__all__ = ["Prepared", "prepare", "export", "benchmark", "BenchmarkResult", "DEFAULT_BACKENDS"]

log = logging.getLogger(__name__)
DEFAULT_BACKENDS = ("torch", "onnxruntime", "openvino")


@dataclass
class Prepared:
    """A loaded model, its card and the real images it will be checked on."""

    module: Any
    card: Any
    data_name: str
    eval_split: Any
    calibration: Any | None
    ref_logits: np.ndarray | None = None
    labels: np.ndarray | None = None

    def reference(self) -> tuple[np.ndarray, np.ndarray]:
        """The source model's logits on the evaluation images (computed once)."""
        if self.ref_logits is None:
            from .backends.torch import TorchRunner
            import torch
            runner = TorchRunner(self.module, precision="fp32", threads=torch.get_num_threads())
            self.ref_logits, self.labels = predict(runner, self.eval_split, self.card)
        return self.ref_logits, self.labels


def prepare(model: str | Path, *, data: str | Path | None, arch: str | None = None,
            num_classes: int | None = None, trust_pickle: bool = False,
            limit: int | None = 1000, calibration_images: int = 300, seed: int = 0) -> Prepared:
    """Load the model and the dataset, check they fit each other, pick the image subsets."""
    from .data import load_dataset
    from .models import load_model

    loaded = load_model(model, arch=arch, num_classes=num_classes, trust_pickle=trust_pickle)
    card = loaded.card
    if data is None:
        return Prepared(loaded.module, card, "", None, None)
    ds = load_dataset(data, input_size=tuple(card.input_size), resize=card.resize)
    check_classes(card.num_classes, ds.classes, str(data))
    if not card.class_names:
        card = card.with_(class_names=list(ds.classes))
    eval_split = ds.evaluation(limit, seed=seed)
    calib = ds.calibration(calibration_images, seed=seed)
    return Prepared(loaded.module, card, str(data), eval_split, calib)


@dataclass
class _Entry:
    backend: str
    precision: str
    status: str = "ok"
    #: what the table calls the row's backend when it differs from the runtime (a variant file)
    label: str = ""
    reason: str = ""
    artifact: Artifact | None = None
    verification: Verification | None = None
    runners: dict[int, Any] = field(default_factory=dict)
    executed: str = ""
    #: why the runtime cannot run here, for a backend that still writes its artifact (TensorRT)
    offline: str = ""
    #: that artifact's check on a stand-in runtime
    standin: Verification | None = None


def _plan(backends: Sequence[str], precisions: Sequence[str], module=None, profile=None) -> list[_Entry]:
    """One entry per (backend, precision) for `module`. A fake-quant model (from edgekit quantize)
    exports only at its own precision; w4a8/mixed exist only for such models. With a `profile`,
    its own runtimes offer only the precisions the device runs (no INT8 on a Maxwell)."""
    from .quant import spec_of
    spec = spec_of(module) if module is not None else None
    quant_label = spec.label if spec else None
    entries = []
    for b in backends:
        backend = get_backend(b)
        for p in precisions:
            e = _Entry(b, p)
            why = backend.unavailable()
            if why and not backend.offline_export:
                e.status, e.reason = "unavailable", why
            elif quant_label and p != quant_label:
                e.status, e.reason = "unsupported", (f"the model is an edgekit {quant_label} quantized checkpoint; "
                                                     f"it exports as {quant_label} only")
            elif not quant_label and p in QAT_ONLY:
                e.status, e.reason = "unsupported", (f"{p} needs a quantization-aware checkpoint: run edgekit "
                                                     f"quantize{' --bits 4' if p == 'w4a8' else ' --max-drop X'} "
                                                     "and benchmark its model.pt")
            elif (unsup := backend.unsupported(p, module if quant_label else None)):
                e.status, e.reason = "unsupported", unsup
            elif profile is not None and b in profile.runtimes and p not in profile.precisions:
                e.status, e.reason = "unsupported", (f"{profile.name} runs {', '.join(profile.precisions)} "
                                                     f"only ({profile.unit().description or profile.unit().name})")
            elif why:
                e.offline = why
            entries.append(e)
    return entries


def _quant_label(prep: "Prepared") -> str | None:
    from .quant import spec_of
    spec = spec_of(prep.module)
    return spec.label if spec else None


def _reference(prep: Prepared) -> dict | None:
    """The source model's top-1 per evaluation image, keyed by its path inside the evaluation
    folder, for artifacts scored away from here (a TensorRT bundle on the device)."""
    import os

    from .data.imagefolder import find_splits

    paths = prep.eval_split.paths if prep.eval_split is not None else None
    if not paths:
        return None
    try:
        eval_dir = find_splits(prep.data_name)[1]
    except EdgekitError:
        return None
    keys = [Path(os.path.relpath(p, eval_dir)).as_posix() for p in paths]
    if any(k.startswith("../") for k in keys):
        return None
    preds = prep.reference()[0].argmax(1)
    return {"source": f"{prep.card.arch or 'source model'} (torch), top-1", "dataset": prep.eval_split.name,
            "predictions": dict(zip(keys, (int(c) for c in preds)))}


def _export_entries(prep: Prepared, entries: list[_Entry], out_dir: Path, advance, profile=None) -> None:
    offline = any(get_backend(e.backend).offline_export for e in entries if e.status == "ok")
    ctx = ExportContext(prep.module, prep.card, out_dir, calibration=prep.calibration, profile=profile,
                        reference=_reference(prep) if offline else None)
    try:
        for e in entries:
            if e.status != "ok":
                continue
            advance(0, f"export {e.backend} {e.precision}")
            try:
                e.artifact = get_backend(e.backend).export(ctx, e.precision)
            except EdgekitError as err:
                e.status, e.reason = "export failed", str(err)
            advance(1)
    finally:
        ctx.cleanup()


def _verify_entries(prep: Prepared, entries: list[_Entry], threads: list[int],
                    tol: Tolerance, advance) -> None:
    ref, labels = prep.reference()
    for e in entries:
        if e.status != "ok":
            continue
        advance(0, f"verify {e.backend} {e.precision}")
        backend = get_backend(e.backend)
        if e.offline:
            _verify_offline(prep, e, backend, max(threads), tol)
            advance(1)
            continue
        try:
            for t in threads:
                e.runners[t] = backend.load(e.artifact, threads=t)
            runner = e.runners[max(threads)]
            e.executed = runner.executed
            logits, _ = predict(runner, prep.eval_split, prep.card)
            # a fake-quant source is compared with its own simulation, not with a float model
            key = "quantized" if _quant_label(prep) else e.precision
            e.verification = verify(logits, ref, labels, key, tol)
        except Exception as err:  # noqa: BLE001 - an artifact that cannot run has failed its check
            e.runners.clear()
            e.status, e.reason = "verification failed", f"could not run: {runtime_reason(err)}"
            advance(1)
            continue
        if not e.verification.passed:
            e.status, e.reason = "verification failed", e.verification.reason
        advance(1)


def _verify_offline(prep: Prepared, e: _Entry, backend, threads: int, tol: Tolerance) -> None:
    """An artifact whose runtime is not here: check its file on the stand-in; the row stays
    "unavailable" (never ok) unless that check fails, which is a real failure of the file."""
    ref, labels = prep.reference()
    where = e.artifact.notes.get("bundle", e.artifact.path)
    try:
        runner = backend.standin(e.artifact, threads=threads)
        logits, _ = predict(runner, prep.eval_split, prep.card)
    except Exception as err:  # noqa: BLE001
        e.status, e.reason = "verification failed", f"written to {where}, but its ONNX does not run on the stand-in: {type(err).__name__}: {str(err).splitlines()[0][:200] if str(err) else ''}"
        return
    key = "quantized" if _quant_label(prep) else e.precision
    v = e.standin = verify(logits, ref, labels, key, tol)
    if not v.passed:
        e.status, e.reason = "verification failed", f"written to {where}, but on {runner.backend} (stand-in): {v.reason}"
        return
    e.status = "unavailable"
    e.reason = (f"{e.offline}; bundle written to {where} ({e.artifact.notes.get('tensorrt_rules', 'rules ok')}); "
                f"its ONNX on {runner.backend} (stand-in): top-1 {v.top1:.2f}%, agreement {v.agreement:.2%}")


def oversubscribed(threads: int | None) -> str | None:
    """The note a timing row gets when it asked for more threads than this host has cores: such
    a figure measures the scheduler as much as the model (e.g. a Pi 5 profile's 4 threads timed
    on a 2-core machine), so the report says it is only indicative."""
    cores = usable_cores()
    if threads and threads > cores:
        return f"{threads} threads on {cores} core(s) here: oversubscribed, latency only indicative"
    return None


def _rows(entries: list[_Entry], threads: list[int], timings: dict) -> list[Row]:
    rows = []
    for e in entries:
        v = e.verification
        details = {"reason": e.reason, "executed": e.executed,
                   "artifact": str(e.artifact.path) if e.artifact else None,
                   "top5": v.top5 if v else None, "max_abs_diff": v.max_abs_diff if v else None,
                   "images": v.n if v else None, **(e.artifact.notes if e.artifact else {}),
                   **({"standin": e.standin.to_dict()} if e.standin else {})}
        for t in threads if e.runners else [None]:
            tm = timings.get((id(e), t))
            over = oversubscribed(t) if tm else None
            extra = {"oversubscribed": over, "executed": "; ".join(filter(None, (e.executed, over)))} if over else {}
            rows.append(Row(
                backend=e.label or e.backend, precision=e.precision, status=e.status,
                size_mb=round(e.artifact.size_mb, 3) if e.artifact else None,
                top1=round(v.top1, 2) if v else None,
                agreement=round(v.agreement, 4) if v else None,
                latency_ms_p50=round(tm.latency_ms_p50, 4) if tm else None,
                latency_ms_p90=round(tm.latency_ms_p90, 4) if tm else None,
                throughput_ips=round(tm.throughput_ips, 1) if tm else None,
                threads=t, details={**details, **extra, **({"timing": tm.to_dict()} if tm else {})}))
    return rows


@dataclass
class BenchmarkResult:
    rows: list[Row]
    environment: dict
    out: Path | None

    def markdown(self, title: str = "edgekit benchmark") -> str:
        return render_markdown(self.rows, title=title)


def _moved(entries: list[_Entry], stage: Path, out: Path) -> None:
    for e in entries:
        if e.artifact:
            e.artifact = e.artifact.moved(stage, out)


def benchmark(model: str | Path, *, data: str | Path, out: str | Path, arch: str | None = None,
              num_classes: int | None = None, trust_pickle: bool = False,
              backends: Sequence[str] | str = DEFAULT_BACKENDS,
              precisions: Sequence[str] | str | None = None, threads: Sequence[int] | str | int = (1,),
              limit: int | None = 1000, calibration_images: int = 300, seed: int = 0,
              timing: TimingConfig | None = None, tolerance: Tolerance | None = None,
              progress: bool = True, title: str = "edgekit benchmark", profile: str | None = None) -> BenchmarkResult:
    """Export `model` to every backend x precision, verify each on real images, time it.

    Every artifact is written under `out` with its model card, and `out` receives
    results.json (one object per row, keys = ROW_KEYS), results.md, results.csv,
    details.json and environment.json. A row is "ok" only if its artifact exported, ran
    and agreed with the source model within `tolerance`. With `profile`, every row also gets
    the latency the profile's latency model predicts (labelled "predicted").
    """
    backends = parse_backends(backends)
    threads = parse_threads(threads)
    out = check_out_dir(Path(out))
    if profile is not None:
        from .profiles import get_profile
        profile = get_profile(profile)  # a bad name fails before any work
    prep = prepare(model, data=data, arch=arch, num_classes=num_classes, trust_pickle=trust_pickle,
                   limit=limit, calibration_images=calibration_images, seed=seed)
    label = _quant_label(prep)
    precisions = parse_precisions(precisions or ((label,) if label else DEFAULT_PRECISIONS))
    entries = _plan(backends, precisions, prep.module, profile)
    return run_entries(prep, entries, out, threads=threads, timing=timing, tolerance=tolerance,
                       progress=progress, title=title, env_extra={"model": str(model), "data": str(data)},
                       seed=seed, profile=profile)


def run_entries(prep: Prepared, entries: list[_Entry], out: Path, *, threads: list[int],
                timing: TimingConfig | None = None, tolerance: Tolerance | None = None,
                progress: bool = True, title: str = "edgekit benchmark", env_extra: dict | None = None,
                seed: int = 0, extra: Sequence[tuple[_Entry, Any]] = (), profile: str | None = None) -> BenchmarkResult:
    """Export, verify and time planned entries into `out` (staged, then renamed). `extra` adds
    (entry, exporter) pairs whose artifact comes from `exporter(stage_dir)` instead of a backend."""
    timing = timing or TimingConfig()
    prof = None
    if profile:
        from .profiles import get_profile
        prof = get_profile(profile)  # a bad profile fails before any work
    entries = list(entries) + [e for e, _ in extra]
    live = [e for e in entries if e.status == "ok"]
    with staged_dir(out) as stage, progress_bar(3 * len(live) + 1, "benchmark", enabled=progress) as adv:
        adv(0, "reference (torch source model)")
        prep.reference()
        adv(1)
        extra_ids = {id(x) for x, _ in extra}
        _export_entries(prep, [e for e in entries if id(e) not in extra_ids], stage, adv, profile=prof)
        for e, exporter in extra:
            if e.status != "ok":
                continue
            try:
                e.artifact = exporter(stage)
            except EdgekitError as err:
                e.status, e.reason = "export failed", str(err)
            adv(1)
        _verify_entries(prep, entries, threads, tolerance or Tolerance(), adv)
        timed = [(e, t) for e in entries for t in sorted(e.runners)]
        sample = next(prep.eval_split.batches(timing.throughput_batch, mean=prep.card.mean,
                                              std=prep.card.std))[0].numpy()
        adv(0, "timing (interleaved passes)")
        results = time_runners([e.runners[t] for e, t in timed], sample, timing)
        adv(len(live))
        timings = {(id(e), t): tm for (e, t), tm in zip(timed, results)}
        _moved(entries, stage, out)
        rows = _rows(entries, threads, timings)
        if prof is not None:
            add_predictions(rows, prep, prof, stage / ".predict")
        env = environment(
            **(env_extra or {}), arch=prep.card.arch, eval_images=len(prep.eval_split),
            input_size=list(prep.card.input_size), mean=list(prep.card.mean), std=list(prep.card.std),
            calibration_images=len(prep.calibration) if prep.calibration else 0, seed=seed,
            timing=timing.__dict__, threads=threads,
            openvino_default_precision=_ov_default([e.backend for e in entries]))
        write_results(stage, rows, env, title=title, footer=_footer(env))
    return BenchmarkResult(rows, env, out)


def add_predictions(rows: list[Row], prep: Prepared, prof, work: Path) -> None:
    """details["predicted_ms"]: the profile's latency model on the source model's ONNX graph at
    each row's precision and threads (for a non-host profile, its own runtime and threads)."""
    import shutil

    from .exporters.onnx import export_onnx
    from .latency import graph_work
    from .latency import predict as predict_latency

    from .quant import is_quantized
    try:
        if is_quantized(prep.module):  # the deployed QDQ graph, not the fake-quant float ops
            from .exporters.qdq import export_qdq
            path = export_qdq(prep.module, prep.card, work / "model.onnx", target="onnxruntime", work=work)
        else:
            path = export_onnx(prep.module.eval(), prep.card, work / "model.onnx")
        layers = graph_work(path)
    except EdgekitError:
        return
    finally:
        shutil.rmtree(work, ignore_errors=True)
    host = prof.name == "host"
    for r in rows:
        runtime = r.backend if r.backend in prof.runtimes else None
        try:
            p = predict_latency(layers, prof, precision=r.precision, runtime=runtime,
                        threads=(r.threads or 1) if host else None, batch=1)
        except EdgekitError:
            continue
        r.details.update(predicted_ms=round(p.latency_ms, 4), predicted_profile=prof.name,
                         predicted_threads=p.threads, predicted_runtime=p.runtime)


def _ov_default(backends: Sequence[str]) -> str | None:
    if "openvino" not in backends:
        return None
    try:
        from .backends.openvino import default_inference_precision
        return default_inference_precision()
    except Exception:  # noqa: BLE001
        return None


def _footer(env: dict) -> str:
    t = env["timing"]
    lines = [f"Model {env['model']} ({env['arch']}), data {env['data']}: {env['eval_images']} "
             f"evaluation images, {env['calibration_images']} calibration images (seed {env['seed']}).",
             f"Latency: batch 1, {t['warmup']} warm-up calls, {t['iters']} timed calls in "
             f"{t['passes']} interleaved passes; throughput at batch {t['throughput_batch']}.",
             f"CPU: {env['cpu']['model']} ({', '.join(env['cpu']['isa'])}); "
             f"torch {env['versions']['torch']}, onnxruntime {env['versions']['onnxruntime']}, "
             f"openvino {env['versions']['openvino']}, nncf {env['versions']['nncf']}."]
    if env.get("openvino_default_precision"):
        lines.append(f"OpenVINO's default CPU inference precision here is "
                     f"{env['openvino_default_precision']}; every row but fp16 was compiled with the "
                     "f32 hint, fp16 rows with the default (see 'executed').")
    return "\n".join(lines)


def export(model: str | Path, *, out: str | Path, data: str | Path | None = None,
           arch: str | None = None, num_classes: int | None = None, trust_pickle: bool = False,
           backends: Sequence[str] | str = ("onnxruntime", "openvino"),
           precisions: Sequence[str] | str | None = None, limit: int | None = 1000,
           calibration_images: int = 300, seed: int = 0, tolerance: Tolerance | None = None,
           progress: bool = True, profile: str | None = None) -> list[Row]:
    """Export and verify (no timing). `data` is required: every artifact is checked on real
    images against the source model before it is reported, and INT8 needs calibration images.
    `profile` names the device the files are for (its TensorRT version, static shapes)."""
    backends = parse_backends(backends)
    out = check_out_dir(Path(out))
    prof = None
    if profile:
        from .profiles import get_profile
        prof = get_profile(profile)
    if data is None:
        from .errors import InputError
        raise InputError("export verifies every artifact on real images: pass --data DIR "
                         "(a folder of class folders, or 'digits')")
    prep = prepare(model, data=data, arch=arch, num_classes=num_classes, trust_pickle=trust_pickle,
                   limit=limit, calibration_images=calibration_images, seed=seed)
    label = _quant_label(prep)
    precisions = parse_precisions(precisions or ((label,) if label else ("fp32",)))
    entries = _plan(backends, precisions, prep.module, prof)
    live = [e for e in entries if e.status == "ok"]
    with staged_dir(out) as stage, progress_bar(2 * len(live) + 1, "export", enabled=progress) as adv:
        prep.reference()
        adv(1)
        _export_entries(prep, entries, stage, adv, profile=prof)
        _verify_entries(prep, entries, [1], tolerance or Tolerance(), adv)
        _moved(entries, stage, out)
        rows = _rows(entries, [1], {})
        for r in rows:
            r.threads = None
        env = environment(model=str(model), arch=prep.card.arch, data=str(data),
                          eval_images=len(prep.eval_split), seed=seed)
        write_results(stage, rows, env, title="edgekit export")
    return rows
