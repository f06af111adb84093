"""What a channel costs: ResNet basic-block convolutions timed alone at every width.

This is the lookup table `edgekit prune --latency-aware` measures (pruning/latency_aware.py,
`time_convs`), dumped for ResNet-56's three stages so that what the README says about it
(plateaus between multiples of the runtime's vector block, what halving stage 1 saves) comes
from a committed run. Pruning a block's inner channels changes its first convolution's outputs
and its second's inputs: a row is the two together, C -> w -> C at the stage's resolution.

Every (runtime, precision, threads) is timed interleaved over all widths; INT8 is each
runtime's own default quantization of the lone convolution (so it includes quantizing the
input, which a chained INT8 model does once per layer too).

It also records how long `allocate` takes to build the whole table for ResNet-56 on each
runtime and precision (1 thread): what `--latency-aware` adds to a prune.

Writes benchmarks/results/conv_widths.{json,md}.

    python benchmarks/conv_widths.py [--iters 300]
"""

from __future__ import annotations

import argparse
import time

from _common import RESULTS

from edgekit._io import atomic_write_json, atomic_write_text
from edgekit.env import environment
from edgekit.models import get_model
from edgekit.pruning.latency_aware import allocate, time_convs
from edgekit.pruning.structured import criterion, ignored_layers, risky_layers

#: ResNet-56 (CIFAR): residual width and resolution of each stage
STAGES = ((16, 32), (32, 16), (64, 8))
COMBOS = [(rt, p, t) for rt in ("onnxruntime", "openvino") for p in ("fp32", "int8") for t in (1, 2)]


def block_specs(c: int, hw: int, w: int) -> tuple[tuple, tuple]:
    """The two convolutions of a basic block with inner width w, as time_convs keys them."""
    return ((c, w, (3, 3), (1, 1), (1, 1), (1, 1), 1, hw, hw),
            (w, c, (3, 3), (1, 1), (1, 1), (1, 1), 1, hw, hw))


def table_build_seconds() -> list[dict]:
    """Wall time of `allocate` on ResNet-56 (8-channel steps) per runtime and precision."""
    model, card = get_model("cifar_resnet56", num_classes=10)
    size = tuple(card.input_size)
    ignored = ignored_layers(model, (), risky_layers(model, size))
    out = []
    for rt in ("onnxruntime", "openvino"):
        for prec in ("fp32", "int8"):
            t0 = time.perf_counter()
            a = allocate(model, size, 8, importance=criterion("l2"), ignored=ignored, backend=rt, precision=prec)
            out.append({"runtime": rt, "precision": prec, "seconds": round(time.perf_counter() - t0, 1),
                        "greedy_steps": len(a.steps)})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--iters", type=int, default=300, help="timed calls per convolution, over 3 interleaved passes")
    args = ap.parse_args()
    widths = {c: list(range(8, c + 1, 8)) for c, _ in STAGES}
    specs = sorted({s for c, hw in STAGES for w in widths[c] for s in block_specs(c, hw, w)})
    rows = []
    for rt, prec, threads in COMBOS:
        print(f"{rt} {prec} {threads} thread(s): {len(specs)} convolutions", flush=True)
        ms = time_convs(specs, rt, threads, precision=prec, iters=args.iters)
        for c, hw in STAGES:
            full = sum(ms[s] for s in block_specs(c, hw, c))
            for w in widths[c]:
                t = sum(ms[s] for s in block_specs(c, hw, w))
                rows.append({"runtime": rt, "precision": prec, "threads": threads, "stage_width": c, "resolution": hw,
                             "inner_width": w, "ms_p50": round(t, 4), "vs_full_width": round(t / full, 3)})
    build = table_build_seconds()
    env = environment(args=vars(args))
    atomic_write_json(RESULTS / "conv_widths.json", {"rows": rows, "table_build": build, "environment": env})
    md = ["# What a channel costs: ResNet-56 block convolutions timed alone", "",
          "Time of a basic block's two 3x3 convolutions (C -> w -> C, batch 1) at inner width w, "
          "relative to the unpruned width (1.00); absolute ms for the unpruned width in the last column. "
          "Median of the timed calls; every row's widths timed interleaved.", ""]
    for c, hw in STAGES:
        md += [f"## Stage C={c} at {hw}x{hw}", "",
               "| runtime | precision | threads | " + " | ".join(f"w={w}" for w in widths[c]) + f" | ms at w={c} |",
               "|---|---|---|" + "---|" * (len(widths[c]) + 1)]
        for rt, prec, threads in COMBOS:
            sel = [r for r in rows if (r["runtime"], r["precision"], r["threads"], r["stage_width"]) == (rt, prec, threads, c)]
            md.append(f"| {rt} | {prec} | {threads} | " + " | ".join(f"{r['vs_full_width']:.2f}" for r in sel)
                      + f" | {sel[-1]['ms_p50']:.4f} |")
        md.append("")
    md += ["## Building the whole table for ResNet-56 (`prune --latency-aware`, 1 thread)", "",
           "| runtime | precision | seconds | greedy steps |", "|---|---|---|---|"]
    md += [f"| {b['runtime']} | {b['precision']} | {b['seconds']:.1f} | {b['greedy_steps']} |" for b in build]
    md += ["", f"{args.iters} timed calls per convolution in 3 interleaved passes. CPU {env['cpu']['model']}; "
           f"onnxruntime {env['versions']['onnxruntime']}, openvino {env['versions']['openvino']}; {env['date']}.", ""]
    atomic_write_text(RESULTS / "conv_widths.md", "\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
