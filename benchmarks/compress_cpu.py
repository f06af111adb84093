"""Issue 7's latency headline on this host's CPU: do the committed speed-ups depend on the CPU?

benchmarks/compress.py timed its INT8 files on the CPU it ran on (compress.md names it); those
files are not committed (benchmarks/work/ is not kept) and rebuilding them takes hours of
training. At batch 1 an INT8 file's latency depends on its graph (layers, shapes, quantizers),
not on its weights' values, so this script rebuilds the headline's graphs without training:

- ResNet-56, ResNet-32 and ResNet-20 from the shared weights;
- the compressed model: ResNet-20 without layer1.0, the architecture of compress_x86-kd20-drop2
  (265,050 float params, 35.8M MACs; both checked below);
- ResNet-20 without layer1.0 and one second-stage block: the 2-block model the budget rolled
  back (246,490 params, 31.1M MACs). Which second-stage block that run removed is not recorded;
  its two identity-shortcut blocks have the same shapes, so the graph is the same.

Each is quantized by edgekit's INT8 PTQ for ONNX Runtime and OpenVINO: the same fake-quant grid,
exporter and runtime files as the compress run's QAT, which changes values, not the graph. The
files are timed with compress.py's headline protocol (`headline()`: interleaved passes, rounds,
speed-ups as the median of each round's own ratio) and set beside the committed compress.json.
Top-1 is that of PTQ on shared weights (a sanity check that the files work), not the
compress run's accuracy, which is not re-measured here.

    python benchmarks/compress_cpu.py [--rounds 5] [--iters 300]

Writes benchmarks/results/compress_cpu.{json,md}; artifacts under benchmarks/work/compress_cpu/.
"""

from __future__ import annotations

import argparse
import json
import statistics

from _common import CIFAR, RESULTS, WORK, require_shared, weights
from compress import RUNTIMES, headline

import edgekit
from edgekit._io import atomic_write_json, atomic_write_text
from edgekit.bench import TimingConfig
from edgekit.env import environment
from edgekit.models.loading import drop_blocks_in, save_model
from edgekit.models.stats import count_params
from edgekit.stages import quantize

OUT = WORK / "compress_cpu"
R56 = "ResNet-56 INT8"
#: name -> (depth, removed blocks, float params the committed row's model had, the committed row)
MODELS = {
    R56: (56, [], 853_018, "ResNet-56 INT8"),
    "ResNet-32 INT8": (32, [], 464_154, "ResNet-32 INT8 (11 epochs)"),
    "ResNet-20 INT8": (20, [], 269_722, "ResNet-20 INT8 (11 epochs)"),
    "compressed: ResNet-20, 1 block removed": (
        20, ["layer1.0"], 265_050, "compressed (x86, distilled into ResNet-20, 1 block removed; 2 missed the budget)"),
    "ResNet-20, 2 blocks removed (rolled back)": (
        20, ["layer1.0", "layer2.1"], 246_490, "ResNet-20 distilled, 2 blocks removed (rolled back)"),
}
SMALL = ("ResNet-32 INT8", "ResNet-20 INT8")


def build(name: str, depth: int, removed: list[str], params: int):
    """The float checkpoint and the INT8 PTQ folder (model_int8.onnx, model_int8_openvino.xml)."""
    folder = OUT / name.split(":")[0].replace(" ", "_").replace(",", "").replace("(", "").replace(")", "")
    ckpt = folder / "float.pt"
    if not ckpt.exists():
        m = edgekit.load_model(weights(depth), arch=f"cifar_resnet{depth}")
        module = drop_blocks_in(m.module, removed)
        if count_params(module) != params:  # the committed row's architecture, or stop
            raise SystemExit(f"{name}: {count_params(module):,} params, the committed model had {params:,}")
        folder.mkdir(parents=True, exist_ok=True)
        save_model(module, m.card, ckpt)
    q = folder / "int8"
    if not (q / "quantize.json").exists():
        quantize(ckpt, data=CIFAR, out=q, mode="ptq", bits=8, limit=500, backends=RUNTIMES, threads=(1,),
                 timing=TimingConfig(warmup=2, iters=10, passes=1, throughput_iters=1))
    return ckpt, q


def committed() -> tuple[dict, dict]:
    data = json.loads((RESULTS / "compress.json").read_text())
    return {(r["model"], r["backend"]): r for r in data["rows"]}, data["environment"]


def ratios(base: dict, row: dict, t: int) -> list[float]:
    return [a / b for a, b in zip(base[f"rounds_p50_ms_{t}t"], row[f"rounds_p50_ms_{t}t"])]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--iters", type=int, default=300)
    ap.add_argument("--passes", type=int, default=6)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--limit", type=int, default=1000, help="test images scored through each file (sanity)")
    args = ap.parse_args()
    if args.rounds < 1 or args.iters < 1:
        ap.error("--rounds and --iters must be >= 1")
    require_shared()
    RESULTS.mkdir(parents=True, exist_ok=True)
    models = {name: build(name, d, rm, p) for name, (d, rm, p, _) in MODELS.items()}
    rows = headline(models, args)
    old, old_env = committed()
    by = {(r["model"], r["backend"]): r for r in rows}
    for r in rows:
        base, then = by[(R56, r["backend"])], old.get((MODELS[r["model"]][3], r["backend"]))
        then_base = old[(R56, r["backend"])]
        for t in (1, 2):
            rs = ratios(base, r, t)
            r[f"speedup_vs_r56_{t}t"] = round(statistics.median(rs), 2)
            r[f"speedup_rounds_{t}t"] = [round(min(rs), 2), round(max(rs), 2)]
            if then is not None:
                r[f"committed_p50_ms_{t}t"] = then[f"p50_ms_{t}t"]
                r[f"committed_speedup_vs_r56_{t}t"] = round(statistics.median(ratios(then_base, then, t)), 2)
        r["committed_row"] = MODELS[r["model"]][3]
        if then is not None and then["macs"] != r["macs"]:  # not the committed row's graph: say so, stop
            raise SystemExit(f"{r['model']}: {r['macs']:,} MACs, the committed row had {then['macs']:,}")
    for r in rows:  # the "at least as fast as ResNet-20 and ResNet-32", 1 thread, this CPU
        r["as_fast_as"] = {s: r["p50_ms_1t"] <= by[(s, r["backend"])]["p50_ms_1t"] for s in SMALL if s != r["model"]}
    env = environment(args=vars(args))
    atomic_write_json(RESULTS / "compress_cpu.json", {"rows": rows, "environment": env,
                                                      "committed_cpu": old_env["cpu"]})
    md = markdown(rows, env, old_env, args)
    atomic_write_text(RESULTS / "compress_cpu.md", md)
    print(md)


def _cpu(env: dict) -> str:
    c = env["cpu"]
    return f"{c['model']} ({', '.join(c.get('isa', []))}; {c.get('affinity_cores', '?')} cores)"


def markdown(rows: list[dict], env: dict, old_env: dict, args) -> str:
    here, then = env["cpu"]["model"], old_env["cpu"]["model"]
    md = [f"# Compress headline latencies on this CPU ({here}) against the committed run's ({then})", "",
          "Same graphs as compress.md's INT8 files (rebuilt from the shared weights, INT8 PTQ: latency "
          "depends on the graph, not the weights' values); batch 1, compress.py's headline timing protocol. "
          "Speed-up: ResNet-56 INT8's p50 over the row's, the median of the rounds' own ratios "
          "(range over rounds). Top-1: PTQ of the shared weights on "
          f"{args.limit:,} test images, a check that the file works, not the compress run's accuracy.", "",
          f"| model | runtime | params | MACs | top-1 % (PTQ) | p50/p90 ms 1 thr here | p50 ms 1 thr {then} | "
          f"p50/p90 ms 2 thr here | p50 ms 2 thr {then} | speed-up 1 thr here (range) | speed-up 1 thr {then} | "
          f"speed-up 2 thr here | speed-up 2 thr {then} | as fast as (1 thr, here) |",
          "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        fast = ", ".join(f"{s.removesuffix(' INT8')}: {'yes' if ok else 'no'}" for s, ok in r["as_fast_as"].items())
        md.append(
            f"| {r['model']} | {r['backend']} | {r['params']:,} | {r['macs'] / 1e6:.1f}M | {r['top1']:.1f} | "
            f"{r['p50_ms_1t']:.3f} / {r['p90_ms_1t']:.3f} | {r.get('committed_p50_ms_1t', float('nan')):.3f} | "
            f"{r['p50_ms_2t']:.3f} / {r['p90_ms_2t']:.3f} | {r.get('committed_p50_ms_2t', float('nan')):.3f} | "
            f"{r['speedup_vs_r56_1t']:.2f}x ({r['speedup_rounds_1t'][0]:.2f}-{r['speedup_rounds_1t'][1]:.2f}) | "
            f"{r.get('committed_speedup_vs_r56_1t', float('nan')):.2f}x | {r['speedup_vs_r56_2t']:.2f}x | "
            f"{r.get('committed_speedup_vs_r56_2t', float('nan')):.2f}x | {fast} |")
    v = env["versions"]
    md += ["", f"Committed columns: benchmarks/results/compress.json (the rows named in compress_cpu.json's "
           f"`committed_row`), CPU {_cpu(old_env)}. This run: CPU {_cpu(env)}; "
           f"torch {v['torch']}, onnxruntime {v['onnxruntime']}, openvino {v['openvino']}; {args.iters} calls per row, "
           f"thread count and round, {args.passes} passes, {args.rounds} rounds; {env['date']}.", ""]
    return "\n".join(md)


if __name__ == "__main__":
    main()
