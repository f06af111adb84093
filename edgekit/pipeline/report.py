"""The compress report: report.json (everything), report.md (for people), pareto.png; and compare."""

from __future__ import annotations

import json
from pathlib import Path

from .._io import atomic_write_json, atomic_write_text, read_json
from ..errors import InputError

__all__ = ["write_report", "render_report", "compare_runs", "best_artifact", "pareto_front"]


def _ok(rows: list[dict]) -> list[dict]:
    return [r for r in rows if r["status"] == "ok" and r.get("latency_ms_p50") is not None]


def pareto_front(points: list[dict]) -> list[dict]:
    """Rows no other row beats on both latency (lower) and top-1 (higher), fastest first."""
    front, best = [], -1.0
    for r in sorted(points, key=lambda r: (r["latency_ms_p50"], -r["top1"])):
        if r["top1"] > best:
            front.append(r)
            best = r["top1"]
    return front


def best_artifact(report: dict) -> tuple[dict | None, str]:
    """The fastest deployed artifact within the budget (torch eager excluded: it is not a deployment)
    and which model it is: "compressed model", else (none of those within budget, or every stage
    rolled back) "input model"."""
    for name in ("deploy", "baseline"):
        rows = [r for r in _ok(report[name]) if r["backend"] != "torch" and r["details"].get("within_budget")]
        if rows:
            which = "compressed model" if name == "deploy" and report.get("changed", True) else "input model"
            return min(rows, key=lambda r: r["latency_ms_p50"]), which
    return None, ""


def _fmt(v, d=2):
    return "-" if v is None else (f"{v:.{d}f}" if isinstance(v, float) else str(v))


def _rows_table(rows: list[dict]) -> list[str]:
    pred = next((r["details"].get("predicted_profile") for r in rows if r["details"].get("predicted_profile")), None)
    head = ["runtime", "precision", "status", "size MB", "top-1 % (deployed)", "drop", "within budget", "p50 ms",
            "p90 ms"] + ([f"predicted ms ({pred})"] if pred else []) + ["img/s", "threads", "notes"]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        d = r["details"]
        cells = [r["backend"], r["precision"], r["status"], _fmt(r["size_mb"]), _fmt(r["top1"]), _fmt(d.get("drop")),
                 {True: "yes", False: "no"}.get(d.get("within_budget"), "-"), _fmt(r["latency_ms_p50"], 3),
                 _fmt(r["latency_ms_p90"], 3)] + ([_fmt(d.get("predicted_ms"), 3)] if pred else []) + [
                 _fmt(r["throughput_ips"], 0), _fmt(r["threads"]), (d.get("reason") or d.get("executed") or "")]
        out.append("| " + " | ".join(str(c).replace("|", "/") for c in cells) + " |")
    return out


def stage_status(s: dict) -> str:
    """A stage row's status, with why when it was skipped."""
    return f"{s['status']} ({s['note']})" if s.get("note") else s["status"]


def _scored_on(s: dict) -> str:
    return f" ({s['scored_on']}; torch {s['top1_torch']:.2f})" if s.get("scored_on") else ""


def _measured(s: dict) -> str:
    return f"{s['measured_ms']:.3f} ({s['measured_on']})" if s.get("measured_ms") is not None else "-"


def _predicted(s: dict) -> str:  # runs saved before stages carried latency show "-"
    return f"{s['predicted_ms']:.3f} ({s['predicted_precision']})" if s.get("predicted_ms") is not None else "-"


def _settings(s: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in s.items() if k != "stage" and v is not None)


def render_report(report: dict) -> str:
    b = report["baseline_model"]
    md = [f"# edgekit compress: `{Path(report['input']).name}` for `{report['profile']}`", "",
          f"Profile: {report['profile_description']}. Accuracy budget: at most {report['max_drop']} top-1 points "
          f"below the input model ({b['top1']:.2f}% on the held-out images), measured on the deployed artifacts.", ""]
    if report.get("stand_in"):
        md += [f"The profile's runtime ({', '.join(report['runtimes'])}) is not available on this machine: its "
               f"files are written and checked where they can be, and {report['stand_in']} runs the same graphs "
               "here as a stand-in. Latency on the device is the \"predicted\" column; the measured columns are "
               "this machine's.", ""]
    best, which = best_artifact(report)
    base_rows = {(r["backend"], r["precision"]): r for r in _ok(report["baseline"] or report["deploy"])}
    if best:
        ref = [r for r in base_rows.values() if r["backend"] == best["backend"]]
        ref_best = min(ref, key=lambda r: r["latency_ms_p50"]) if ref else None
        speed = ""
        if ref_best and which == "compressed model":
            ratio = ref_best["latency_ms_p50"] / best["latency_ms_p50"]
            # a compressed model can be slower (a pruned + INT8 model against the input's own INT8)
            pace = f"{ratio:.2f}x faster than" if ratio >= 1 else f"{1 / ratio:.2f}x slower than"
            speed = (f"; {pace} the input model's fastest {best['backend']} artifact ({ref_best['precision']}, "
                     f"{ref_best['latency_ms_p50']:.3f} ms, {ref_best['top1']:.2f}%)")
        md += [f"**Result:** {best['backend']} {best['precision']} ({which}): "
               f"{best['top1']:.2f}% top-1 (drop {best['details']['drop']:.2f}), {best['latency_ms_p50']:.3f} ms p50 at "
               f"batch 1, {best['threads']} thread(s){speed}. File: `{best['details'].get('artifact')}`.", ""]
        if which == "input model":
            md += [f"**No compression stage was kept within the budget of {report['max_drop']} points**; the best "
                   "artifacts that meet it are the input model's own.", ""]
    elif report.get("timed", True):
        md += [f"**No deployed artifact meets the budget of {report['max_drop']} points.** See the tables below.", ""]
    md += ["## Stages", "", "| # | stage | settings | attempt | status | top-1 % | drop | MACs | params | "
           f"size MB | measured ms | predicted ms ({report['profile']}) | minutes |", "|" + "---|" * 13,
           f"| 0 | input | {b.get('arch') or ''} | - | - | {b['top1']:.2f} | 0.00 | {_fmt(b['macs'] and b['macs'] / 1e6, 1)}M | "
           f"{b['params']:,} | {b['size_mb']:.3f} | - | {_predicted(b)} | - |"]
    for s in report["stages"]:
        md.append(f"| {s['index'] + 1} | {s['stage']} | {_settings(s['settings'])} | {s['attempt']} | {stage_status(s)} | "
                  f"{s['top1']:.2f}{_scored_on(s)} | {s['drop']:.2f} | {_fmt(s['macs'] and s['macs'] / 1e6, 1)}M | {s['params']:,} | "
                  f"{s['size_mb']:.3f} | {_measured(s)} | {_predicted(s)} | {s['seconds'] / 60:.1f} |")
    if not report["stages"]:
        md.append("| - | (no model stage in the recipe) |" + " |" * 11)
    md += ["", "Stage accuracy, on the held-out images, is what the budget is checked on: the torch model's for "
           "float stages, the deployed file's for a quantize stage (on the runtime in brackets; the fake-quant "
           "torch model can differ on low-margin images). \"Over budget\" stages were retried with a gentler "
           "setting, \"rolled back\" ones dropped; \"unreachable\": the stage's target cannot be met by its "
           "input model (the note says why), so the run went on without it. \"measured ms\": what the stage "
           "timed itself here, batch 1 "
           "(prune: its model as deployed on the profile's first runtime; quantize: its deployed file); "
           "\"predicted ms\": the profile's latency model at the precision in brackets (a quantize stage: its "
           "input's graph in INT8). The final model is measured on every runtime below.", "",
           "## Deployed: the final model", ""] + _rows_table(report["deploy"])
    if report["baseline"]:
        md += ["", "## Baseline: the input model through the same runtimes", ""] + _rows_table(report["baseline"])
    md += ["", "\"predicted ms\" is the profile's latency model (efficiency factors "
           f"{report['efficiency_source']}), not a measurement; p50/p90 are measured here.", "",
           "![accuracy vs latency](pareto.png)", "",
           "## How to run the artifacts", "",
           "- ONNX Runtime: `onnxruntime.InferenceSession(path).run(None, {'input': x})`",
           "- OpenVINO: `openvino.Core().compile_model(path, 'CPU')(x)`",
           "- TensorRT: copy `deploy/model_tensorrt_<precision>/` to the device, run `./build_engine.sh`, then "
           "`python3 run_engine.py --data DIR` (its README.md has the details).",
           "- Preprocessing: the model card beside each file (`<file>.card.json`): input size, mean, std, resize.",
           "- Check any artifact again: `edgekit eval ARTIFACT --data DIR`.", "",
           "## Recipe", "", "```json", json.dumps(report["recipe"], indent=1), "```", ""]
    env = report.get("environment")
    if env:
        v = env["versions"]
        md += ["## Environment", "", "```", f"date {env['date']}", f"cpu {env['cpu']['model']} ({' '.join(env['cpu']['isa'])})",
               "versions " + " ".join(f"{k}={val}" for k, val in v.items() if val), "```", ""]
    return "\n".join(md)


def _label_points(ax, points: list[tuple[float, float, str]], fontsize: int = 7) -> None:
    """Label each point beside it, trying a few positions so that labels do not cover each other
    or other points (several runtimes often land at nearly the same place)."""
    fig = ax.figure
    fig.canvas.draw()  # final limits and layout, so data -> pixel positions hold
    px = fontsize * fig.dpi / 72  # label height in pixels; width ~ 0.6 of it per character
    boxes = [(x - 6, y - 6, x + 6, y + 6) for x, y in (ax.transData.transform((a, b)) for a, b, _ in points)]
    legend = [tuple(ax.get_legend().get_window_extent().extents)] if ax.get_legend() else []
    anchors = list(boxes)
    boxes += legend
    for (a, b, text), (x0, y0, x1, y1) in sorted(zip(points, anchors), key=lambda p: p[0][0]):
        x, y, w, h = (x0 + x1) / 2, (y0 + y1) / 2, 0.6 * px * len(text), px
        spots = [(6, 3), (6, -h - 3), (6, h + 3), (-w - 6, 3), (-w - 6, -h - 3), (6, -2 * h - 3), (6, 2 * h + 3)]

        def free(dx, dy):
            bx = (x + dx, y + dy, x + dx + w, y + dy + h)
            inside = ax.bbox.x0 <= bx[0] and bx[2] <= ax.bbox.x1 and ax.bbox.y0 <= bx[1] and bx[3] <= ax.bbox.y1
            return inside and not any(bx[0] < c[2] and c[0] < bx[2] and bx[1] < c[3] and c[1] < bx[3] for c in boxes)

        dx, dy = next((s for s in spots if free(*s)), spots[0])
        boxes.append((x + dx, y + dy, x + dx + w, y + dy + h))
        ax.annotate(text, (a, b), xytext=(dx * 72 / fig.dpi, dy * 72 / fig.dpi), textcoords="offset points",
                    fontsize=fontsize, va="bottom")


def _plot(report: dict, path: Path) -> bool:
    import matplotlib
    import matplotlib.ticker
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = [(name, r) for name in ("baseline", "deploy") for r in _ok(report[name])]
    if not pts:
        return False
    fig, ax = plt.subplots(figsize=(8, 5.5), dpi=120)
    markers = {"torch": "s", "onnxruntime": "o", "openvino": "^", "tensorrt": "D"}
    colors = {"baseline": "#7f7f7f", "deploy": "#d62728"}
    for name, r in pts:
        rt = r["backend"].split(" ")[0]
        ax.scatter(r["latency_ms_p50"], r["top1"], marker=markers.get(rt, "o"), s=60, color=colors[name],
                   edgecolor="black", linewidth=0.5, zorder=3)
    front = pareto_front([r for _, r in pts])
    ax.step([r["latency_ms_p50"] for r in front], [r["top1"] for r in front], where="post", color="black",
            linewidth=1, linestyle="--", zorder=2, label="Pareto frontier")
    floor = report["baseline_model"]["top1"] - report["max_drop"]
    ax.axhline(floor, color="#1f77b4", linewidth=0.8, linestyle=":", label=f"budget floor ({floor:.2f}%)")
    for name, label in (("deploy", "compressed model"), ("baseline", "input model")):
        ax.scatter([], [], color=colors[name], label=label)
    for rt in dict.fromkeys(r["backend"].split(" ")[0] for _, r in pts):  # marker shape = runtime
        ax.scatter([], [], marker=markers.get(rt, "o"), color="white", edgecolor="black", linewidth=0.8, label=rt)
    ax.set_xscale("log")
    plain = matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}")
    ax.xaxis.set_major_formatter(plain)
    ax.xaxis.set_minor_formatter(plain)
    ax.tick_params(axis="x", which="minor", labelsize=7)
    ax.set_xlabel(f"measured latency, batch 1, p50 (ms, log scale; {pts[0][1]['threads']} thread(s))")
    ax.set_ylabel("top-1 % on held-out images (deployed)")
    ax.set_title(f"{Path(report['input']).name} for {report['profile']}: accuracy vs latency")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    _label_points(ax, [(r["latency_ms_p50"], r["top1"], f"{r['backend']} {r['precision']}") for _, r in pts])
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(path)
    return True


def write_report(out: Path, report: dict) -> None:
    from ..env import environment

    report.setdefault("environment", environment())
    out = Path(out)
    report["pareto_png"] = _plot(report, out / "pareto.png")
    atomic_write_json(out / "report.json", report)
    atomic_write_text(out / "report.md", render_report(report))


def _read(run: Path) -> dict:
    path = Path(run) / "report.json"
    if not path.is_file():
        raise InputError(f"no report.json in {run}: is it an `edgekit compress` run folder (finished)?")
    return read_json(path, "the run's report")


def compare_runs(a: Path, b: Path) -> str:
    """Two runs side by side: their stages, best artifacts and deployed rows."""
    ra, rb = _read(a), _read(b)
    md = [f"# edgekit compare: `{a}` vs `{b}`", "", "| | " + str(a) + " | " + str(b) + " |", "|---|---|---|"]

    def line(label, fn):
        md.append(f"| {label} | {fn(ra)} | {fn(rb)} |")

    line("input", lambda r: Path(r["input"]).name)
    line("profile", lambda r: r["profile"])
    line("stages", lambda r: ", ".join(f"{s['stage']} ({s['status']})" for s in r["stages"]) or "-")
    line("input top-1 %", lambda r: f"{r['baseline_model']['top1']:.2f}")
    line("budget (points)", lambda r: r["max_drop"])
    for key, label in (("top1", "best: top-1 %"), ("latency_ms_p50", "best: p50 ms"), ("size_mb", "best: size MB")):
        line(label, lambda r, key=key: _fmt((best_artifact(r)[0] or {}).get(key), 3))
    line("best: artifact", lambda r: (lambda x: f"{x[0]['backend']} {x[0]['precision']} ({x[1]})" if x[0] else "-")(
        best_artifact(r)))
    md += ["", f"## {a}", ""] + _rows_table(ra["deploy"]) + ["", f"## {b}", ""] + _rows_table(rb["deploy"]) + [""]
    return "\n".join(md)
