#!/usr/bin/env python3
"""Check and time an edgekit TensorRT bundle on the device (e.g. a Jetson); edgekit need not be installed.

Usage, in the bundle folder after ./build_engine.sh:
    python3 run_engine.py --data DIR [--backend tensorrt|onnxruntime] [--engine FILE] [--limit 1000]
        [--seed 0] [--warmup 10] [--iters 100] [--threads 1] [--json OUT.json] [--bundle DIR]

DIR is an ImageFolder tree (DIR/<class>/<image>, or DIR/test|val|validation/<class>/...). Images are
preprocessed exactly as edgekit did, so top-1 and agreement with the source model's predictions
(reference.json) are comparable to `edgekit benchmark`, whose table this prints. `--backend onnxruntime`
runs the bundle's ONNX on the CPU: a stand-in that checks data handling anywhere, not TensorRT speed.
Exit code 0 ok, 1 agreement below bundle.json's min_agreement, 2 error. Only the standard library,
numpy and Pillow load up front; tensorrt + torch (CUDA buffers, events) or onnxruntime load on use.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

# torchvision's IMG_EXTENSIONS and eval-folder order, so the image list matches edgekit's.
IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
EVAL_DIRS = ("test", "val", "validation")
HEADERS = ("backend", "precision", "status", "size MB", "top-1 %", "agreement %",
           "p50 ms", "p90 ms", "img/s", "threads", "executed / notes")


class BundleError(Exception):
    """A problem the user can fix; main() prints it as one `error: ...` line and exits with 2."""


def load_bundle(bundle_dir: Path) -> dict:
    """Read bundle.json; fail early on a foreign or incomplete file rather than mid-run."""
    path = Path(bundle_dir) / "bundle.json"
    try:
        bundle = json.loads(path.read_text())
    except FileNotFoundError:
        raise BundleError(f"no bundle.json in {bundle_dir}: pass the bundle folder with --bundle") from None
    except ValueError as e:
        raise BundleError(f"{path} is not valid JSON: {e}") from None
    if not str(bundle.get("format", "")).startswith("edgekit-tensorrt-bundle/"):
        raise BundleError(f"{path} is not an edgekit TensorRT bundle (format {bundle.get('format')!r})")
    missing = [k for k in ("precision", "onnx", "engine", "input_size", "mean", "std", "class_names")
               if k not in bundle]
    if missing:
        raise BundleError(f"{path} lacks {', '.join(missing)}")
    return bundle


def list_images(data: Path, class_names: list) -> tuple:
    """(eval folder, paths, labels) with torchvision ImageFolder's rules, so labels match training."""
    root = Path(os.path.abspath(os.path.expanduser(str(data))))
    if not root.is_dir():
        raise BundleError(f"dataset folder not found: {root}")
    folder = next((root / d for d in EVAL_DIRS if (root / d).is_dir()), root)
    classes = sorted(e.name for e in os.scandir(folder) if e.is_dir())
    if not classes:
        raise BundleError(f"no class folders in {folder}: expected {folder}/<class>/<image>")
    if classes != list(class_names):
        only_data = sorted(set(classes) - set(class_names))
        only_bundle = sorted(set(class_names) - set(classes))
        why = (f"only in the folder: {', '.join(only_data) or '-'}; only in bundle.json: "
               f"{', '.join(only_bundle) or '-'}") if only_data or only_bundle else "same names, different order"
        raise BundleError(f"class folders of {folder} differ from bundle.json's class_names ({why})")
    paths, labels = [], []
    for label, name in enumerate(classes):
        found = [os.path.join(d, f) for d, _, files in sorted(os.walk(folder / name, followlinks=True))
                 for f in sorted(files) if f.lower().endswith(IMG_EXTENSIONS)]
        if not found:
            raise BundleError(f"no images in {folder / name} (expected files ending in {', '.join(IMG_EXTENSIONS)})")
        paths += found
        labels += [label] * len(found)
    return folder, paths, labels


def preprocess(path, input_size, resize, mean, std) -> np.ndarray:
    """One image as CHW float32, pixel-identical to edgekit's torchvision pipeline on PIL images."""
    c, h, w = input_size
    try:
        with Image.open(path) as im:
            img = im.convert("L" if c == 1 else "RGB")
        if resize is not None:
            iw, ih = img.size  # torchvision: shorter side -> resize, longer side truncated by int()
            size = (resize, int(resize * ih / iw)) if iw <= ih else (int(resize * iw / ih), resize)
            if size != img.size:
                img = img.resize(size, Image.BILINEAR)
            top, left = int(round((size[1] - h) / 2.0)), int(round((size[0] - w) / 2.0))
            img = img.crop((left, top, left + w, top + h))
        elif img.size != (w, h):
            img = img.resize((w, h), Image.BILINEAR)
        arr = np.asarray(img, dtype=np.float32)
    except Exception as e:  # PIL raises OSError, ValueError, SyntaxError, DecompressionBombError...
        raise BundleError(f"unreadable image {path}: {' '.join(str(e).split()) or type(e).__name__}") from None
    arr = arr[None] if c == 1 else arr.transpose(2, 0, 1)
    m = np.asarray(mean, dtype=np.float32).reshape(-1, 1, 1)
    s = np.asarray(std, dtype=np.float32).reshape(-1, 1, 1)
    return np.ascontiguousarray((arr / np.float32(255.0) - m) / s, dtype=np.float32)


class TrtRunner:
    """A TensorRT engine on torch CUDA buffers, preallocated for its max batch and timed by CUDA events.

    TensorRT >= 8.5 has the named-tensor API (execute_async_v3), JetPack 4.6's 8.2 only bindings
    (execute_async_v2); both drive the same buffers, so results and timings compare across JetPacks.
    """

    name = "tensorrt"

    def __init__(self, engine_path: Path):
        try:
            import tensorrt as trt
            import torch  # CUDA buffers, streams and events: no pycuda/cuda-python needed
        except ImportError as e:
            raise BundleError(f"{e.name or e} not installed: the tensorrt backend needs JetPack's tensorrt "
                              "(python3-libnvinfer) and NVIDIA's torch wheel; or use --backend onnxruntime") from None
        if not torch.cuda.is_available():
            raise BundleError("torch sees no CUDA GPU: install a CUDA-enabled PyTorch for this JetPack")
        if not Path(engine_path).is_file():
            raise BundleError(f"engine not found: {engine_path}: run ./build_engine.sh first")
        self.path, self.torch, self.version = Path(engine_path), torch, trt.__version__
        self.device = torch.cuda.get_device_name(0)
        e = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(Path(engine_path).read_bytes())
        if e is None:
            raise BundleError(f"could not load {engine_path}: an engine only runs on the TensorRT version "
                              "and GPU that built it; run ./build_engine.sh on this device")
        self.engine, self.context, self.v3 = e, e.create_execution_context(), hasattr(e, "num_io_tensors")
        if self.v3:
            io = [e.get_tensor_name(i) for i in range(e.num_io_tensors)]
            is_in = lambda n: e.get_tensor_mode(n) == trt.TensorIOMode.INPUT  # noqa: E731
            shape_of, dtype_of = e.get_tensor_shape, e.get_tensor_dtype
        else:
            io, is_in = list(range(e.num_bindings)), e.binding_is_input
            shape_of, dtype_of = e.get_binding_shape, e.get_binding_dtype
        ins, outs = [t for t in io if is_in(t)], [t for t in io if not is_in(t)]
        if len(ins) != 1 or len(outs) != 1:
            raise BundleError(f"expected an engine with 1 input and 1 output, found {len(ins)} and {len(outs)}")
        self.inp, self.out = ins[0], outs[0]  # a classifier: bundle.json's names are not needed
        in_shape, out_shape = tuple(shape_of(self.inp)), tuple(shape_of(self.out))
        self.dynamic, self.in_chw = in_shape[0] == -1, in_shape[1:]
        if self.dynamic:
            prof = e.get_tensor_profile_shape(self.inp, 0) if self.v3 else e.get_profile_shape(0, self.inp)
            self.min_batch, self.max_batch = prof[0][0], prof[2][0]
        else:
            self.min_batch = self.max_batch = in_shape[0]
        dtypes = {trt.float32: torch.float32, trt.float16: torch.float16}  # fp16 I/O is converted on copy
        if dtype_of(self.inp) not in dtypes or dtype_of(self.out) not in dtypes:
            raise BundleError("engine I/O must be float32 or float16: rebuild it with ./build_engine.sh")
        idt, odt = dtypes[dtype_of(self.inp)], dtypes[dtype_of(self.out)]
        self.d_in = torch.empty((self.max_batch,) + self.in_chw, dtype=idt, device="cuda")
        self.d_out = torch.empty((self.max_batch,) + out_shape[1:], dtype=odt, device="cuda")
        self.h_in = torch.empty(self.d_in.shape, dtype=idt, pin_memory=True)  # pinned: truly async copies
        self.h_out = torch.empty(self.d_out.shape, dtype=odt, pin_memory=True)
        if self.v3:
            self.context.set_tensor_address(self.inp, self.d_in.data_ptr())
            self.context.set_tensor_address(self.out, self.d_out.data_ptr())
        else:
            self.bindings = [0, 0]
            self.bindings[self.inp], self.bindings[self.out] = self.d_in.data_ptr(), self.d_out.data_ptr()
        self.stream, self.last_ms = torch.cuda.Stream(), None
        self.events = [torch.cuda.Event(enable_timing=True) for _ in range(4)]
        torch.cuda.synchronize()

    def run(self, x: np.ndarray) -> np.ndarray:
        """NCHW float32 in, float32 logits out; a batch below the engine's minimum runs padded."""
        torch, n, ev, s = self.torch, x.shape[0], self.events, self.stream
        if n > self.max_batch:
            raise BundleError(f"batch {n} exceeds the engine's max batch {self.max_batch}")
        shape = (max(n, self.min_batch),) + self.in_chw
        self.h_in[:n].copy_(torch.from_numpy(x))
        with torch.cuda.stream(s):
            ev[0].record(s)
            self.d_in[:n].copy_(self.h_in[:n], non_blocking=True)
            ev[1].record(s)
            if self.v3:
                ok = (not self.dynamic or self.context.set_input_shape(self.inp, shape)) and \
                    self.context.execute_async_v3(s.cuda_stream)
            else:
                ok = (not self.dynamic or self.context.set_binding_shape(self.inp, shape)) and \
                    self.context.execute_async_v2(self.bindings, s.cuda_stream)
            ev[2].record(s)
            self.h_out[:n].copy_(self.d_out[:n], non_blocking=True)
            ev[3].record(s)
        s.synchronize()
        if not ok:
            raise BundleError(f"TensorRT could not run a batch of {n} (see its messages above)")
        self.last_ms = tuple(ev[i].elapsed_time(ev[i + 1]) for i in range(3))  # h2d, compute, d2h
        return self.h_out[:n].numpy().astype(np.float32)  # a copy: the buffer is reused


class OrtRunner:
    """The bundle's ONNX on ONNX Runtime's CPU provider: checks data handling without a GPU."""

    name = "onnxruntime (stand-in)"

    def __init__(self, onnx_path: Path, output_name: str, threads: int, max_batch: int):
        try:
            import onnxruntime as ort
        except ImportError:
            raise BundleError("onnxruntime not installed: pip install onnxruntime, or use --backend tensorrt") from None
        if not Path(onnx_path).is_file():
            raise BundleError(f"ONNX model not found: {onnx_path}")
        so = ort.SessionOptions()
        so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
        self.sess = ort.InferenceSession(str(onnx_path), so, providers=["CPUExecutionProvider"])
        self.path, self.version = Path(onnx_path), ort.__version__
        self.device = platform.processor() or platform.machine()
        inp, outs = self.sess.get_inputs()[0], [o.name for o in self.sess.get_outputs()]
        self.inp, self.out = inp.name, output_name if output_name in outs else outs[0]
        static = isinstance(inp.shape[0], int) and inp.shape[0] > 0  # else the bundle's batch range applies
        self.max_batch, self.last_ms = inp.shape[0] if static else max_batch, None

    def run(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.sess.run([self.out], {self.inp: x})[0], dtype=np.float32)


def evaluate(runner, paths, labels, keys, reference: dict, prep: tuple, batch: int) -> dict:
    """Top-1 vs labels and agreement with the reference, over the reference's images only.

    Decodes batch by batch so --limit 0 on a 50,000-image folder never holds more than a batch.
    """
    preds, sample = [], None
    for start in range(0, len(paths), batch):
        x = np.stack([preprocess(p, *prep) for p in paths[start:start + batch]])
        sample = x[:1].copy() if sample is None else sample
        preds += runner.run(x).reshape(len(x), -1).argmax(1).tolist()
    pairs = [(p, reference[k]) for p, k in zip(preds, keys) if k in reference]
    return {"preds": preds, "sample": sample, "correct": sum(p == y for p, y in zip(preds, labels)),
            "matched": len(pairs), "agreement": sum(p == r for p, r in pairs) / len(pairs) if pairs else None}


def time_runner(runner, sample: np.ndarray, warmup: int, iters: int, batch: int) -> dict:
    """Batch-1 latency (host array in -> host array out) percentiles, and throughput at `batch`."""
    def clock(x, n):
        times, parts = [], []
        for _ in range(n):
            t0 = time.perf_counter()
            runner.run(x)
            times.append((time.perf_counter() - t0) * 1e3)
            parts += [runner.last_ms] if runner.last_ms else []
        return times, parts

    clock(sample, warmup)
    lat, parts = clock(sample, iters)
    xb = np.ascontiguousarray(np.repeat(sample, batch, axis=0))
    clock(xb, 2)
    out = {"iters": iters, "warmup": warmup, "throughput_batch": batch,
           "latency_ms_p50": float(np.percentile(lat, 50)), "latency_ms_p90": float(np.percentile(lat, 90)),
           "throughput_ips": batch * 1e3 / float(np.median(clock(xb, 10)[0]))}
    if parts:  # CUDA-event split of each batch-1 call (tensorrt only)
        p = np.asarray(parts)
        out.update(h2d_ms_p50=float(np.median(p[:, 0])), compute_ms_p50=float(np.median(p[:, 1])),
                   d2h_ms_p50=float(np.median(p[:, 2])), transfer_ms_p50=float(np.median(p[:, 0] + p[:, 2])))
    return out


def _fmt(v, digits=2) -> str:
    return "-" if v is None else f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def render(row: dict) -> str:
    """The row as a Markdown table, with `edgekit benchmark`'s columns and number formats."""
    agree = None if row["agreement"] is None else row["agreement"] * 100
    cells = [row["backend"], row["precision"], row["status"], _fmt(row["size_mb"]), _fmt(row["top1"]),
             _fmt(agree), _fmt(row["latency_ms_p50"], 3), _fmt(row["latency_ms_p90"], 3),
             _fmt(row["throughput_ips"], 0), _fmt(row["threads"]), row["details"].get("executed", "")]
    return "\n".join(["| " + " | ".join(HEADERS) + " |", "|" + "|".join("---" for _ in HEADERS) + "|",
                      "| " + " | ".join(str(c).replace("|", "/") for c in cells) + " |"]) + "\n"


def _write_json(path: Path, obj) -> None:
    """Temp file + os.replace: a reader never sees a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=str(path.parent))
    try:
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(obj, indent=2) + "\n")
        os.replace(tmp, str(path))
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _environment(runner, backend: str) -> dict:
    model = Path("/proc/device-tree/model")  # Jetsons name themselves here ("NVIDIA Jetson Orin Nano ...")
    board = model.read_text().strip("\x00\n ") if model.is_file() else ""
    return {"python": platform.python_version(), "platform": platform.platform(), "numpy": np.__version__,
            "pillow": getattr(Image, "__version__", None), "runtime": {"name": backend, "version": runner.version},
            "device": runner.device + (f" ({board})" if board else ""), "date": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def main(argv=None) -> int:
    """CLI entry: 0 ok, 1 verification failed, 2 a one-line `error: ...` the user can act on."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True, help="ImageFolder dataset (DIR/<class>/... or DIR/test/<class>/...)")
    ap.add_argument("--bundle", default=str(Path(__file__).resolve().parent), help="bundle folder (default: here)")
    ap.add_argument("--backend", choices=("tensorrt", "onnxruntime"), default="tensorrt")
    ap.add_argument("--engine", help="engine file (default: bundle.json's engine, in the bundle)")
    ap.add_argument("--limit", type=int, default=None, help="images to evaluate, a seeded subset (0: all; default: "
                    "the images edgekit checked, listed in reference.json, if any are in --data, else 1000)")
    for flag, default, what in (("--seed", 0, "seed of that subset"), ("--warmup", 10, "untimed batch-1 calls"),
                                ("--iters", 100, "timed batch-1 calls"), ("--threads", 1, "onnxruntime threads")):
        ap.add_argument(flag, type=int, default=default, help=f"{what} (default {default})")
    ap.add_argument("--json", help="also write the results to this JSON file")
    args = ap.parse_args(argv)
    try:
        return _run(args)
    except BundleError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _run(args) -> int:
    if (args.limit or 0) < 0 or args.warmup < 0 or args.iters < 1 or args.threads < 1:
        raise BundleError("--limit and --warmup must be >= 0, --iters and --threads >= 1")
    bundle_dir = Path(args.bundle)
    b = load_bundle(bundle_dir)
    folder, paths, labels = list_images(Path(args.data), b["class_names"])
    ref_path = bundle_dir / (b.get("reference") or "reference.json")
    try:  # no reference (bundle.json's is null or the file was left out): status ok, with a note
        reference = json.loads(ref_path.read_text())["predictions"] if b.get("reference") and ref_path.is_file() else {}
    except (ValueError, KeyError, TypeError) as e:
        raise BundleError(f"{ref_path} is not a reference file ({type(e).__name__}: {e})") from None
    rel = [os.path.relpath(p, str(folder)).replace(os.sep, "/") for p in paths]
    keep = [i for i, k in enumerate(rel) if k in reference] if args.limit is None else []
    limit = 1000 if args.limit is None else args.limit
    if not keep and 0 < limit < len(paths):  # the images edgekit checked, else a seeded subset
        keep = sorted(random.Random(args.seed).sample(range(len(paths)), limit))
    if keep:
        paths, labels = [paths[i] for i in keep], [labels[i] for i in keep]
    if args.backend == "tensorrt":
        runner = TrtRunner(Path(args.engine) if args.engine else bundle_dir / b["engine"])
    else:
        max_batch = int((b.get("batch") or {}).get("max", 1))
        runner = OrtRunner(bundle_dir / b["onnx"], b.get("output_name", "logits"), args.threads, max_batch)
    keys = [os.path.relpath(p, str(folder)).replace(os.sep, "/") for p in paths]
    prep = (tuple(b["input_size"]), b.get("resize"), b["mean"], b["std"])
    ev = evaluate(runner, paths, labels, keys, reference, prep, max(1, min(runner.max_batch, 32)))
    tb = max(1, min(int(b.get("throughput_batch", 1)), runner.max_batch))
    timing = time_runner(runner, ev["sample"], args.warmup, args.iters, tb)
    agreement, min_agree = ev["agreement"], float(b.get("min_agreement", 0.95))
    status = "ok" if agreement is None or agreement >= min_agree else "verification failed"
    note = (f"TensorRT {runner.version}, {runner.device}, compute p50 {timing['compute_ms_p50']:.2f} ms, "
            f"transfers p50 {timing['transfer_ms_p50']:.2f} ms" if args.backend == "tensorrt" else
            f"onnxruntime {runner.version} CPU stand-in: checks the bundle's data handling, not TensorRT speed")
    if agreement is None:
        note += "; no reference predictions for these images"
    elif status != "ok":
        note += f"; agreement below the required {min_agree * 100:.2f}%"
    row = {"backend": runner.name, "precision": b["precision"], "status": status,
           "size_mb": round(runner.path.stat().st_size / 1e6, 3), "top1": round(ev["correct"] / len(paths) * 100, 2),
           "agreement": None if agreement is None else round(agreement, 4),
           "latency_ms_p50": round(timing["latency_ms_p50"], 4), "latency_ms_p90": round(timing["latency_ms_p90"], 4),
           "throughput_ips": round(timing["throughput_ips"], 1),
           "threads": args.threads if args.backend == "onnxruntime" else None,
           "details": {"executed": note, "images": len(paths), "correct": ev["correct"], "dataset": str(folder),
                       "reference_matched": ev["matched"], "min_agreement": min_agree, "artifact": str(runner.path),
                       "seed": args.seed, "timing": timing}}
    print(f"{len(paths)} images from {folder} ({len(b['class_names'])} classes, seed {args.seed}); "
          f"reference predictions for {ev['matched']} of them")
    print(render(row), end="")
    if args.json:
        _write_json(Path(args.json), {"rows": [row], "environment": _environment(runner, args.backend)})
    return 0 if status == "ok" else 1


if __name__ == "__main__":
    sys.exit(main())
