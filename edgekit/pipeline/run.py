"""Run a recipe: model stages in order under one accuracy budget, then deploy; resumable.

Each model stage is one of the stage functions (finetune, prune, distill, quantize) run into its
own folder `stages/NN_name[_tryK]/`; its record is appended to `pipeline.json` only when it is
complete, so `resume=True` skips finished stages and continues an interrupted training stage
from its last checkpoint. A stage whose model loses more than the budget (top-1 points against
the input model, held-out split) is retried with a gentler setting, else rolled back. The
deploy step then exports, verifies and times the final model and the input model (the baseline)
on the profile's runtimes, with the profile's predicted latency beside the measured one.
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._io import atomic_write_json, check_out_dir, read_json
from ..errors import InputError
from ..stages.prune import SameWidths, TargetAlreadyMet, TargetUnreachable
from .recipe import MODEL_STAGES, Recipe, default_recipe, load_recipe

__all__ = ["compress", "CompressResult", "STATE_FILE", "PROFILE_DEFAULT"]

log = logging.getLogger(__name__)
STATE_FILE = "pipeline.json"
#: `limit` value meaning "the profile's eval_images" (None means every held-out image)
PROFILE_DEFAULT = -1


@dataclass
class _Source:
    """The model a stage starts from (the input may need --arch; stage outputs carry cards)."""

    path: str
    arch: str | None = None
    trust_pickle: bool = False


@dataclass
class CompressResult:
    out: Path
    report: dict

    @property
    def rows(self):
        from ..report import Row
        return [Row(**{k: v for k, v in r.items() if k != "details"}, details=r.get("details", {}))
                for r in self.report["deploy"]]


def _gentler(spec) -> list:
    """The settings to try, first the recipe's, then gentler ones (a budget miss retries them)."""
    out = [spec]
    if spec.stage == "prune":  # keep more MACs, allow more latency, remove fewer blocks
        t, ms, d = spec.target_macs, spec.target_latency_ms, spec.drop_blocks
        for _ in range(2):
            t = None if t is None else round((t + 1) / 2, 4)
            ms = None if ms is None else round(ms * 1.25, 4)
            d = None if d is None else (d // 2 or None)
            if t is None and ms is None and d is None:
                break
            out.append(spec.model_copy(update={"target_macs": t, "target_latency_ms": ms, "drop_blocks": d}))
    elif spec.stage == "quantize":
        if spec.bits == 4:
            out.append(spec.model_copy(update={"bits": 8}))
        elif spec.mode == "ptq":
            out.append(spec.model_copy(update={"mode": "qat"}))
        elif not spec.kd:
            out.append(spec.model_copy(update={"kd": True}))
    return out


def _below_floor(attempt, unreachable, floor_ms: float) -> bool:
    """`attempt` differs from the `unreachable` one only by a latency target still under its floor."""
    same = attempt.model_dump(exclude={"target_latency_ms"}) == unreachable.model_dump(exclude={"target_latency_ms"})
    return same and attempt.target_latency_ms is not None and attempt.target_latency_ms < floor_ms


def _config(recipe: Recipe, epochs: int, lr: float, **kw):
    from ..train import TrainConfig
    t = recipe.train
    return TrainConfig(epochs=epochs, lr=lr, batch_size=t.batch_size, train_limit=t.train_limit, hflip=t.hflip,
                       seed=t.seed, **{"precision": t.precision, **kw})


def _run_stage(spec, src: _Source, folder: Path, ctx: dict) -> Path:
    """One model stage into `folder`; returns the path of its output model."""
    from ..bench import TimingConfig
    from ..stages import distill, finetune, prune, quantize
    from ..stages.quantize import QAT_GRAD_CLIP, residual_form, unsigned_activations

    recipe, data, progress = ctx["recipe"], ctx["data"], ctx["progress"]
    light = TimingConfig(warmup=2, iters=10, passes=2, throughput_iters=1)
    if spec.stage == "finetune":
        res = finetune(src.path, data=data, out=folder, arch=src.arch, trust_pickle=src.trust_pickle,
                       config=_config(recipe, spec.epochs, spec.lr), resume=True, progress=progress)
        return res.last_path
    if spec.stage == "prune":
        prune(src.path, data=data, out=folder, target_macs=spec.target_macs, drop_blocks=spec.drop_blocks,
              target_latency_ms=spec.target_latency_ms, measure_here=spec.measure_here, importance=spec.importance,
              latency_aware=spec.latency_aware,
              config=_config(recipe, max(spec.recovery_epochs, 1), spec.lr), recover=spec.recovery_epochs > 0,
              kd=spec.kd, profile=ctx["profile"], limit=ctx["limit"], arch=src.arch, trust_pickle=src.trust_pickle,
              resume=True, progress=progress, seed=recipe.train.seed, timing=light,
              # the stage row needs the pruned model's latency as deployed; the final model is timed
              # on every runtime and precision by the deploy step
              backends=ctx["profile"].runtimes[:1], latency_precisions=(), skip_if_same_as=ctx.get("same_as"))
        return folder / "model.pt"
    if spec.stage == "distill":
        res = distill(src.path, student=ctx["student"] or spec.student, data=data, out=folder,
                      teacher_arch=src.arch, trust_pickle=src.trust_pickle, temperature=spec.temperature,
                      alpha=spec.alpha, loss=spec.loss, beta=spec.beta, kd_warmup_epochs=spec.kd_warmup,
                      teacher_bf16=spec.teacher_bf16, config=_config(recipe, spec.epochs, spec.lr, warmup_epochs=min(1.0, spec.epochs / 5)),
                      student_weights=spec.student_weights, resume=True, progress=progress)
        return res.last_path
    res = quantize(src.path, data=data, out=folder, mode=spec.mode, bits=spec.bits, arch=src.arch,
                   trust_pickle=src.trust_pickle, config=_config(recipe, spec.epochs, spec.lr, weight_decay=0.0,
                                                                       grad_clip=QAT_GRAD_CLIP, precision="fp32"),
                   kd=spec.kd, calibration_images=ctx["profile"].calibration_images, limit=ctx["limit"],
                   # the budget is checked on the deployed runtime's file (_deployed_score), not the
                   # fake-quant torch model: integer rounding in the runtime flips low-margin images
                   backends=ctx["profile"].runtimes[:1], threads=ctx["profile"].threads[:1], timing=light, resume=True,
                   progress=progress, seed=recipe.train.seed, tensorrt_rules_row=False,
                   # the grid follows every runtime of the profile, not only the one scored here
                   activations=("unsigned" if unsigned_activations(spec.activations, ctx["profile"].runtimes)
                                else "signed"),
                   residual=residual_form(spec.residual, ctx["profile"].runtimes))
    return res.model_path


def _record(folder: Path, name: str) -> dict:
    path = folder / name
    return read_json(path, "a stage record") if path.is_file() else {}


def _quantize_row(folder: Path, prof) -> dict | None:
    """A quantize stage's verified row for the profile's first runtime (its quantize.json)."""
    return next((r for r in _record(folder, "quantize.json").get("rows", []) if r["backend"] == prof.runtimes[0]),
                None)


def _deployed_score(stage: str, folder: Path, prof) -> dict:
    """A quantize stage's top-1 through the profile's first runtime (for a runtime that is not
    here, its file on the stand-in); {} for float stages, whose torch accuracy is what the
    runtimes give back (verified at >= 99% agreement)."""
    r = _quantize_row(folder, prof) if stage == "quantize" else None
    if r is None:
        return {}
    if r["status"] in ("ok", "verification failed") and r.get("top1") is not None:
        # a file that ran but disagrees with the fake-quant model still has a measured accuracy;
        # the deploy table shows it as failed, so it is never the artifact picked
        failed = f", verification failed: {r['details'].get('reason')}" if r["status"] != "ok" else ""
        return {"top1": r["top1"], "scored_on": f"{r['backend']} {r['precision']} file{failed}"}
    standin = (r.get("details") or {}).get("standin")
    if standin and standin.get("top1") is not None:  # ran on the stand-in, whether or not it agreed
        failed = "" if standin.get("passed") else f", verification failed: {standin.get('reason')}"
        return {"top1": round(standin["top1"], 2),
                "scored_on": f"{r['backend']} {r['precision']} file, on the stand-in{failed}"}
    return {}


def _stage_latency(stage: str, folder: Path, path: Path, src: "_Source | None", prof) -> dict:
    """A stage's latency: what the stage measured itself on the profile's first runtime here
    (prune: its model in the deployed precision; quantize: its deployed file), and the profile's
    latency model at the precision the stage's model deploys in (a quantize stage: its input's
    graph, in INT8)."""
    from ..latency import predict_model

    out: dict[str, Any] = {}
    r = None
    if stage == "quantize":
        r = _quantize_row(folder, prof)
        r = r if r and r["status"] == "ok" and r.get("latency_ms_p50") else None
    elif stage == "prune":
        deployed = "int8" if prof.preferred_precision == "int8" else "fp32"  # what prune deploys in
        rows = [r for r in _record(folder, "prune.json").get("latency", []) if r["variant"] == "pruned"]
        r = next((r for r in rows if r["precision"] == deployed), rows[0] if rows else None)
    if r:
        out["measured_ms"] = r["latency_ms_p50"]
        out["measured_on"] = f"{r['backend']} {r['precision']}, {r['threads']} thread(s), this host"
    precision = prof.preferred_precision
    if stage == "quantize" and "int8" in prof.precisions:
        path, precision = Path(src.path), "int8"
    # by content: profiles are rebuilt per run, and a freed one's id() can come back as another's
    key = (str(path), Path(path).stat().st_mtime_ns, prof.model_dump_json(), precision)
    if key not in _PREDICTED:  # a quantize stage's input was predicted as the stage before's output
        try:
            # the graph as deployed (the exporter the latency model was calibrated on: BN unfused)
            _PREDICTED[key] = round(predict_model(path, prof, precision=precision).latency_ms, 3)
        except Exception:  # noqa: BLE001 - an informative column; the deploy step measures what is shipped
            _PREDICTED[key] = None
    out["predicted_ms"] = _PREDICTED[key]
    out["predicted_precision"] = precision
    return out


_PREDICTED: dict[tuple, float | None] = {}


def _unchanged(src_info: dict, base: dict, index: int, stage: str, folder: Path) -> dict:
    """A stage row for an attempt that produced no model: the stage's input, as it goes on."""
    keep = {k: v for k, v in src_info.items() if k not in ("attempt", "settings", "status", "note", "seconds")}
    return {**keep, "index": index, "stage": stage, "dir": str(folder), "drop": round(base["top1"] - src_info["top1"], 2)}


def _describe(path: Path, eval_split) -> dict:
    """Top-1 (torch; fake-quant for quantized checkpoints), MACs, params and file size of a model."""
    from ..models import load_model
    from ..models.stats import count_macs, count_params
    from ..train.engine import evaluate_top1

    loaded = load_model(path)
    m = loaded.module.eval()
    info = {"model": str(path), "top1": round(evaluate_top1(m, eval_split, loaded.card)[0], 2),
            "params": count_params(m), "size_mb": round(Path(path).stat().st_size / 1e6, 3),
            "arch": loaded.card.arch_spec, "quantization": loaded.card.notes.get("quantization")}
    try:
        info["macs"] = count_macs(m, loaded.card.input_size)
    except Exception:  # noqa: BLE001 - MACs are informative; a model the counter cannot trace still runs
        info["macs"] = None
    return info


def _load_state(out: Path, key: dict, resume: bool) -> dict:
    import json

    path = out / STATE_FILE
    if not path.exists():
        return {**key, "stages": [], "status": "running"}
    if not resume:
        raise InputError(f"{out} already holds a compress run ({STATE_FILE}): pass --resume to continue it, "
                         "or another --out")
    state = read_json(path, "the run's state")
    saved = dict(state)
    try:  # a run saved before a setting was added: read with today's defaults, same recipe
        saved["recipe"] = Recipe.model_validate(state.get("recipe")).model_dump()
    except Exception:  # noqa: BLE001 - not a valid recipe any more: reported as different below
        pass
    for k in ("input", "recipe", "profile", "max_drop"):
        if saved.get(k) != key[k]:
            raise InputError(f"cannot resume {out}: it was started with a different {k} "
                             f"({state.get(k)!r}); use another --out for a new run")
    return state


def compress(model: str | Path, *, profile: str, data: str | Path, out: str | Path,
             recipe: str | Path | Recipe | None = None, max_drop: float | None = None, student: str | None = None,
             arch: str | None = None, num_classes: int | None = None, trust_pickle: bool = False,
             limit: int | None = PROFILE_DEFAULT, resume: bool = False, seed: int = 0,
             timing=None, progress: bool = True) -> CompressResult:
    """Run `recipe` (default: the profile's) on `model` for `profile`; write `out`/report.{md,json},
    pareto.png, the stage folders, deploy/ (final artifacts) and baseline/ (the input model's)."""
    from ..benchmark import prepare
    from ..profiles import get_profile
    from .report import write_report

    prof = get_profile(profile)
    rec = recipe if isinstance(recipe, Recipe) else (load_recipe(recipe) if recipe else default_recipe(prof))
    if student:
        if not any(s.stage == "distill" for s in rec.stages):
            first = next((i for i, s in enumerate(rec.stages) if s.stage == "quantize" or s.stage not in MODEL_STAGES),
                         len(rec.stages))
            stages = list(rec.stages)
            stages.insert(first, {"stage": "distill", "student": student})
            rec = Recipe.model_validate({**rec.model_dump(), "stages": [
                s if isinstance(s, dict) else s.model_dump() for s in stages]})
    budget = max_drop if max_drop is not None else (rec.max_drop if rec.max_drop is not None
                                                    else prof.budgets.accuracy_drop)
    if budget < 0:
        raise InputError("--max-drop must be >= 0 (top-1 points)")
    out = check_out_dir(Path(out))
    limit = prof.eval_images if limit == PROFILE_DEFAULT else limit
    # Loads the model and the data and checks they fit, before any stage runs.
    prep = prepare(model, data=data, arch=arch, num_classes=num_classes, trust_pickle=trust_pickle, limit=limit,
                   calibration_images=1, seed=seed)
    key = {"input": str(model), "recipe": rec.model_dump(), "profile": prof.name, "max_drop": budget,
           "student": student}
    state = _load_state(out, key, resume)
    if state["status"] == "done" and (out / "report.json").is_file():  # a finished run: nothing to redo
        report = read_json(out / "report.json", "the run's report")
        write_report(out, report)
        return CompressResult(out, report)
    out.mkdir(parents=True, exist_ok=True)

    def save():
        atomic_write_json(out / STATE_FILE, state)

    eval_split = prep.eval_split
    from ..models import save_model
    base_path = out / "stages" / "00_input" / "model.pt"
    if not base_path.exists():
        save_model(prep.module, prep.card, base_path)
    base = state.get("baseline_model") or _describe(base_path, eval_split)
    if "predicted_ms" not in base:  # new, or a run saved before stages carried their latency
        base.update(_stage_latency("input", out, base_path, None, prof))
    state["baseline_model"] = base
    save()
    ctx = {"recipe": rec, "data": data, "progress": progress, "profile": prof, "limit": limit, "student": student}
    src = _Source(str(base_path))
    src_info = base  # what an unreachable stage row shows: its input, unchanged
    done = {(r["index"], r["attempt"]): r for r in state["stages"]}
    model_stages = [(i, s) for i, s in enumerate(rec.stages) if s.stage in MODEL_STAGES]
    for n, (i, spec) in enumerate(model_stages, 1):
        accepted, prev, floor = None, None, None
        for k, attempt in enumerate(_gentler(spec), 1):
            r = done.get((i, k))
            if r is None:
                folder = out / "stages" / (f"{i + 1:02d}_{spec.stage}" + (f"_try{k}" if k > 1 else ""))
                if floor and _below_floor(attempt, floor[0], floor[1]):
                    # only the latency target is gentler, and still under what the same input
                    # measured with the most pruning: not worth another export and timing
                    r = {**_unchanged(src_info, base, i, spec.stage, folder), "attempt": k,
                         "settings": attempt.model_dump(), "status": "unreachable", "seconds": 0.0,
                         "note": f"--target-latency-ms {attempt.target_latency_ms} is not reachable either: attempt "
                                 f"{floor[2]} measured {floor[1]:.3f} ms with the most pruning"}
                    state["stages"].append(r)
                    save()
                    continue
                log.info("stage %d/%d: %s (attempt %d)", n, len(model_stages), spec.stage, k)
                t0 = time.time()
                try:
                    path = _run_stage(attempt, src, folder, {**ctx, "same_as": prev and prev["model"]})
                except (SameWidths, TargetAlreadyMet) as e:
                    # a gentler target rounded onto the same widths (the same model again), or a
                    # gentler latency target the input model already meets: nothing new to try
                    if isinstance(e, TargetAlreadyMet) and k == 1:
                        raise
                    shutil.rmtree(folder, ignore_errors=True)
                    note = (f"same widths as attempt {prev['attempt']}" if isinstance(e, SameWidths)
                            else f"nothing to try: {e}")
                    # (prev is None when every earlier attempt was unreachable: show the input)
                    r = {**(prev or _unchanged(src_info, base, i, spec.stage, folder)), "attempt": k,
                         "settings": attempt.model_dump(), "status": "skipped", "note": note,
                         "seconds": round(time.time() - t0, 1)}
                    state["stages"].append(r)
                    save()
                    continue
                except TargetUnreachable as e:
                    # this model cannot get there (e.g. per-layer overhead): say so and try the
                    # gentler targets; if none is reachable the run goes on without the stage
                    shutil.rmtree(folder, ignore_errors=True)
                    r = {**_unchanged(src_info, base, i, spec.stage, folder), "attempt": k,
                         "settings": attempt.model_dump(), "status": "unreachable", "note": str(e),
                         "seconds": round(time.time() - t0, 1)}
                    state["stages"].append(r)
                    save()
                    if e.floor_ms is not None:
                        floor = (attempt, e.floor_ms, k)
                    continue
                info = {**_describe(path, eval_split), **_stage_latency(spec.stage, folder, path, src, prof)}
                info["top1_torch"] = info["top1"]
                info.update(_deployed_score(spec.stage, folder, prof))
                drop = round(base["top1"] - info["top1"], 2)
                r = {"index": i, "attempt": k, "stage": spec.stage, "settings": attempt.model_dump(),
                     "dir": str(folder), **info, "drop": drop, "seconds": round(time.time() - t0, 1),
                     "status": "ok" if drop <= budget else "over budget"}
                state["stages"].append(r)
                save()
            elif "predicted_ms" not in r:  # resumed from a run saved before stages carried latency
                r.update(_stage_latency(spec.stage, Path(r["dir"]), Path(r["model"]), src, prof))
                save()
            if r["status"] == "ok":
                accepted = r
                break
            if r["status"] not in ("skipped", "unreachable"):
                prev = r
        if accepted is None:
            for r in state["stages"]:
                if r["index"] == i and r["status"] == "over budget":
                    r["status"] = "rolled back"
            save()
        else:
            src = _Source(accepted["model"])
            src_info = accepted
    state["final_model"] = src.path
    report = _deploy(state, rec, prof, base_path, Path(src.path), data, out, limit, seed, progress, budget, timing)
    state["status"] = "done"
    save()
    write_report(out, report)
    return CompressResult(out, report)


def _deploy(state: dict, rec: Recipe, prof, base_path: Path, final: Path, data, out: Path, limit, seed: int,
            progress: bool, budget: float, timing=None) -> dict[str, Any]:
    """Export, verify and (for a benchmark stage) time the final and the input model; pick the best."""
    from ..bench import TimingConfig
    from ..benchmark import benchmark, export

    from ..backends import get_backend

    backends = ["torch", *prof.runtimes]
    # A device whose runtime is not here (TensorRT on a Jetson): its files are still written, and
    # ONNX Runtime measures the same graphs here as a labelled stand-in, next to the prediction.
    stand_in = None
    if all(get_backend(b).unavailable() for b in prof.runtimes) and not get_backend("onnxruntime").unavailable():
        stand_in = "onnxruntime"
        backends.append(stand_in)
    precisions = list(dict.fromkeys(["fp32", *[p for p in prof.precisions if p in ("fp16", "int8")]]))
    timing = timing or TimingConfig(warmup=10, iters=100, passes=5, throughput_batch=prof.throughput_batch)
    runs = {"deploy": final} if final == base_path else {"deploy": final, "baseline": base_path}
    results = {}
    for name, path in runs.items():
        quantized = state["baseline_model"]["quantization"] if name == "baseline" else None
        if name == "deploy" and final != base_path:
            quantized = next((r["quantization"] for r in state["stages"] if r["model"] == str(final)), None)
        prec = None if quantized else precisions
        if rec.timed:
            res = benchmark(path, data=data, out=out / name, backends=backends, precisions=prec, threads=prof.threads,
                            limit=limit, calibration_images=prof.calibration_images, seed=seed, timing=timing,
                            progress=progress, title=f"edgekit compress ({name}): {prof.name}", profile=prof)
            rows = res.rows
        else:
            rows = export(path, out=out / name, data=data, backends=backends, precisions=prec, limit=limit,
                          calibration_images=prof.calibration_images, seed=seed, progress=progress, profile=prof)
        results[name] = [dict(r.to_dict(), details=r.details) for r in rows]
    base_top1 = state["baseline_model"]["top1"]
    for name, rows in results.items():
        for r in rows:
            if r["status"] == "ok" and r["top1"] is not None:
                r["details"]["drop"] = round(base_top1 - r["top1"], 2)
                r["details"]["within_budget"] = r["details"]["drop"] <= budget
    return {"input": state["input"], "profile": prof.name, "profile_description": prof.description,
            "efficiency_source": prof.efficiency_source, "recipe": state["recipe"], "max_drop": budget,
            "baseline_model": state["baseline_model"], "stages": state["stages"], "final_model": str(final),
            "deploy": results["deploy"], "baseline": results.get("baseline", []), "timed": rec.timed,
            "changed": final != base_path, "stand_in": stand_in, "runtimes": prof.runtimes}
