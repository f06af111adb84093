"""`edgekit compress`: the end-to-end run for a hardware profile.

This first version runs post-training INT8 for the profile's runtimes, exports, verifies and
benchmarks every artifact, and writes report.md. Training stages (prune, distill, QAT) join
as pipeline stages later.
"""

from __future__ import annotations

from pathlib import Path

from ._io import atomic_write_text
from .benchmark import BenchmarkResult, benchmark
from .profiles import get_profile
from .report import render_markdown

__all__ = ["compress", "PROFILE_DEFAULT"]

#: `limit` value meaning "the profile's eval_images" (None means every held-out image).
PROFILE_DEFAULT = -1


def compress(model: str | Path, *, profile: str, data: str | Path, out: str | Path,
             arch: str | None = None, num_classes: int | None = None,
             trust_pickle: bool = False, limit: int | None = PROFILE_DEFAULT, seed: int = 0,
             progress: bool = True) -> BenchmarkResult:
    """Quantize, export, verify and benchmark `model` for `profile`; write `out`/report.md."""
    prof = get_profile(profile)
    precisions = list(dict.fromkeys(["fp32", *prof.precisions]))
    result = benchmark(model, data=data, out=out, arch=arch, num_classes=num_classes,
                       trust_pickle=trust_pickle, backends=["torch", *prof.runtimes],
                       precisions=precisions, threads=prof.threads,
                       limit=prof.eval_images if limit == PROFILE_DEFAULT else limit,
                       calibration_images=prof.calibration_images, seed=seed, progress=progress,
                       title=f"edgekit compress: {prof.name}", profile=prof)
    rows = [r for r in result.rows if r.status != "unsupported"]
    ok = [r for r in rows if r.status == "ok" and r.latency_ms_p50 is not None]
    best = min(ok, key=lambda r: r.latency_ms_p50) if ok else None
    env = result.environment
    lines = [f"# edgekit compress report: {Path(str(model)).name} for profile `{prof.name}`", "",
             f"Profile: {prof.description}", "",
             "Every artifact below was run through its own runtime on "
             f"{env['eval_images']} held-out images of `{env['data']}` and compared with the "
             "source torch model (agreement = share of images with the same top-1 class). Latency "
             "columns p50/p90 are measured on this machine; \"predicted ms\" is the latency model's "
             f"prediction for {prof.name} ({prof.unit().kind}, {prof.runtimes[0]}), efficiency factors "
             f"{prof.efficiency_source}: a prediction, not a measurement.", "",
             render_markdown(rows), ""]
    if best:
        src = next((r for r in ok if r.backend == "torch"), None)
        speed = f", {src.latency_ms_p50 / best.latency_ms_p50:.1f}x faster than torch eager" if src else ""
        lines += [f"**Fastest verified artifact:** {best.backend} {best.precision}: "
                  f"{best.latency_ms_p50:.3f} ms p50 at batch 1, {best.threads} thread(s){speed}, "
                  f"top-1 {best.top1:.2f}% ({best.details.get('artifact')}).", ""]
    failed = [r for r in rows if r.status not in ("ok", "unsupported")]
    if failed:
        lines += ["**Failed or unavailable:**", ""] + [
            f"- {r.backend} {r.precision}: {r.status}: {r.details.get('reason', '')}" for r in failed] + [""]
    lines += ["## How to run the artifacts", "",
              "- ONNX Runtime: `onnxruntime.InferenceSession(path).run(None, {'input': x})`",
              "- OpenVINO: `openvino.Core().compile_model(path, 'CPU')(x)`",
              "- Preprocessing (from the model card beside each file, `<file>.card.json`): "
              f"input {env['input_size']} (C,H,W), RGB scaled to [0,1], then "
              f"(x - {env['mean']}) / {env['std']}.", "",
              "## Environment", "", "```", _env_text(env), "```", ""]
    atomic_write_text(Path(out) / "report.md", "\n".join(lines))
    return result


def _env_text(env: dict) -> str:
    v = env["versions"]
    return "\n".join([f"date {env['date']}", f"cpu {env['cpu']['model']} isa {' '.join(env['cpu']['isa'])}",
                      "versions " + " ".join(f"{k}={val}" for k, val in v.items() if val),
                      f"threads {env['threads']}", f"timing {env['timing']}"])
