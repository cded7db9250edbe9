#!/usr/bin/env python3
"""Side-by-side throughput: attrex vs ONNX Runtime and PyTorch on the same shapes and threads.

    pip install torch onnx onnxscript onnxruntime   # outside the repo (torch is several GB)
    python benches/side_by_side.py [--batch 8] [--threads 2] [--upto 5] [--runs 7] [--rounds 3]
                                   [--precision fp32|int8] [--bin PATH | --attrex IMG_PER_S]

Random weights: timing does not depend on their values. The network is ResNet-50 v1 (stride on
the first 1x1, as the Keras weights attrex uses), with all five pooled taps as outputs, truncated
after block --upto. attrex is timed by `cargo run --release --example throughput` when that
example exists, or by a prebuilt `throughput` binary given with --bin PATH (same arguments), or
by a figure measured elsewhere given with --attrex IMG_PER_S; --precision int8 passes
`--precision int8` to it. Besides ONNX Runtime fp32 there is an int8 anchor: the exported model
quantized by ONNX Runtime's quantize_static (QOperator, i.e. QLinearConv; per-channel s8 weights,
u8 activations, calibrated on a few random batches).
Prints img/s for each engine and the ratios to attrex (with --precision int8 also the line
attrex/onnxruntime-int8=). ONNX Runtime fp32, ONNX Runtime int8 and attrex alternate --rounds
times (medians reported, each round on stderr); PyTorch runs once.
"""
import argparse, os, re, subprocess, sys, tempfile, time
import numpy as np

ap = argparse.ArgumentParser()
ap.add_argument("--batch", type=int, default=8)
ap.add_argument("--threads", type=int, default=2)
ap.add_argument("--upto", type=int, default=5)
ap.add_argument("--runs", type=int, default=7)
ap.add_argument("--attrex", type=float, help="attrex img/s measured elsewhere (skip running it)")
ap.add_argument("--bin", help="prebuilt attrex `throughput` example binary to run instead of cargo run")
ap.add_argument("--precision", choices=("fp32", "int8"), default="fp32",
                help="attrex precision (int8 passes --precision int8 to the throughput example)")
ap.add_argument("--calib-batches", type=int, default=4,
                help="random batches fed to ONNX Runtime's int8 calibration")
ap.add_argument("--rounds", type=int, default=3,
                help="ONNX Runtime and attrex alternate this many times; medians are reported "
                     "(the shared machines drift by several percent within minutes)")
a = ap.parse_args()
os.environ["OMP_NUM_THREADS"] = str(a.threads)

import torch
torch.set_num_threads(a.threads)


sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from resnet50_torch import R50  # noqa: E402


def bench(fn, runs):
    fn(); fn()  # warm-up
    times = []
    for _ in range(runs):
        t = time.perf_counter(); fn(); times.append(time.perf_counter() - t)
    return a.batch / float(np.median(times))


m = R50(a.upto).eval()
x = torch.randn(a.batch, 3, 224, 224)
results = {}
with torch.inference_mode():
    results["pytorch " + torch.__version__] = bench(lambda: m(x), a.runs)

def attrex_img_per_s():
    if a.attrex is not None:
        return a.attrex
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    args = ["--batch", str(a.batch), "--threads", str(a.threads), "--upto", str(a.upto), "--runs", str(a.runs)]
    if a.precision == "int8":
        args += ["--precision", "int8"]
    cmd = ([os.path.abspath(a.bin)] if a.bin else
           ["cargo", "run", "--release", "-q", "--example", "throughput", "--"]) + args
    out = subprocess.run(cmd, cwd=root, capture_output=True, text=True)
    m_ = re.search(r"img_per_s=([0-9.]+)\s*$", out.stdout)
    if out.returncode != 0 or not m_:
        sys.exit(f"attrex throughput example failed ({' '.join(cmd)}):\n{out.stdout}\n{out.stderr}")
    return float(m_.group(1))


def quantize_int8(path, d):
    """ONNX Runtime static int8 (QOperator: QLinearConv etc.), or None if quantization fails."""
    try:
        from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType,
                                              quantize_static)
    except ImportError as e:
        print(f"onnxruntime.quantization unavailable ({e}); skipping the int8 anchor", file=sys.stderr)
        return None

    class Calib(CalibrationDataReader):
        # Random-normal inputs with a fixed seed: the weights are random too, so real images
        # would be no more representative; the ranges only need to be plausible for timing.
        def __init__(s):
            g = np.random.default_rng(0)
            s.it = iter([{"x": g.standard_normal((a.batch, 3, 224, 224), dtype=np.float32)}
                         for _ in range(a.calib_batches)])

        def get_next(s):
            return next(s.it, None)

    src = path
    try:  # shape inference + graph optimization first, as ONNX Runtime recommends; optional
        from onnxruntime.quantization.shape_inference import quant_pre_process
        pre = os.path.join(d, "r50.pre.onnx")
        quant_pre_process(path, pre)
        src = pre
    except Exception as e:
        print(f"quant_pre_process failed ({e}); quantizing the raw export", file=sys.stderr)
    out = os.path.join(d, "r50.int8.onnx")
    try:
        quantize_static(src, out, Calib(), quant_format=QuantFormat.QOperator, per_channel=True,
                        weight_type=QuantType.QInt8, activation_type=QuantType.QUInt8)
    except Exception as e:
        print(f"quantize_static failed ({e}); skipping the int8 anchor", file=sys.stderr)
        return None
    try:
        import onnx
        ops = [n.op_type for n in onnx.load(out).graph.node]
        print(f"int8 model: {ops.count('QLinearConv')} QLinearConv of {len(ops)} nodes "
              f"({ops.count('Conv')} Conv left fp32)", file=sys.stderr)
    except ImportError:
        pass
    return out


ort_runs, int8_runs, attrex_runs = [], [], []
try:
    import onnxruntime as ort
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "r50.onnx")
        torch.onnx.export(m, (x,), path, input_names=["x"], dynamo=False, opset_version=17)
        int8_path = quantize_int8(path, d)
        so = ort.SessionOptions(); so.intra_op_num_threads = a.threads; so.inter_op_num_threads = 1
        sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
        sess8 = ort.InferenceSession(int8_path, so, providers=["CPUExecutionProvider"]) if int8_path else None
        xn = x.numpy()
        for r in range(max(1, a.rounds)):
            ort_runs.append(bench(lambda: sess.run(None, {"x": xn}), a.runs))
            if sess8 is not None:
                int8_runs.append(bench(lambda: sess8.run(None, {"x": xn}), a.runs))
            attrex_runs.append(attrex_img_per_s())
            line = f"round {r + 1}: onnxruntime {ort_runs[-1]:.2f}  "
            if int8_runs:
                line += f"onnxruntime-int8 {int8_runs[-1]:.2f}  "
            line += f"attrex {attrex_runs[-1]:.2f}  ratio {attrex_runs[-1] / ort_runs[-1]:.2f}"
            if int8_runs:
                line += f"  ratio-int8 {attrex_runs[-1] / int8_runs[-1]:.2f}"
            print(line, file=sys.stderr)
        results["onnxruntime " + ort.__version__] = float(np.median(ort_runs))
        if int8_runs:
            results["onnxruntime-int8 " + ort.__version__] = float(np.median(int8_runs))
except ImportError as e:
    print(f"onnxruntime not installed ({e}); skipping it", file=sys.stderr)

results["attrex"] = float(np.median(attrex_runs)) if attrex_runs else attrex_img_per_s()

print(f"batch={a.batch} threads={a.threads} upto=block{a.upto} attrex_precision={a.precision}")
for k, v in results.items():
    print(f"{k:28s} img_per_s={v:7.2f}  attrex/this={results['attrex'] / v:5.2f}")
int8_key = next((k for k in results if k.startswith("onnxruntime-int8 ")), None)
if a.precision == "int8" and int8_key:
    print(f"attrex/onnxruntime-int8={results['attrex'] / results[int8_key]:.2f}")
