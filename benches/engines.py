#!/usr/bin/env python3
"""The engines side by side: `examples/throughput` with Burn's engine and with the native engine
for each instruction set this CPU has (and the int8 engines: `avx2-int8`, and `avx512-int8`
with AVX512-VNNI), interleaved for --rounds rounds (the shared machines drift by several
percent within minutes), then each engine's median img/s and the medians of the per-round
ratios.

    cargo build --release --example throughput
    python benches/engines.py [--rounds 5] [--runs 5] [--batch 8] [--threads 2] [--upto 5]

Random weights (timing does not depend on their values). Each round runs every engine once, in
the same order, and is printed with the load average before it, so that a disturbed round can
be told apart.
"""
import argparse, os, re, statistics, subprocess, sys

ap = argparse.ArgumentParser()
ap.add_argument("--rounds", type=int, default=5)
ap.add_argument("--runs", type=int, default=5)
ap.add_argument("--batch", type=int, default=8)
ap.add_argument("--threads", type=int, default=2)
ap.add_argument("--upto", type=int, default=5)
ap.add_argument("--bin", default="target/release/examples/throughput")
a = ap.parse_args()

flags = open("/proc/cpuinfo").read().split()
engines = ["burn"]
if "avx512f" in flags:
    engines.append("avx512")
if "avx2" in flags and "fma" in flags:
    engines += ["avx2", "avx2-int8"]
if "avx512f" in flags and "avx512_vnni" in flags:
    engines.append("avx512-int8")


def run(engine):
    cmd = [a.bin, "--random-weights", "--runs", str(a.runs), "--batch", str(a.batch),
           "--threads", str(a.threads), "--upto", str(a.upto)]
    if engine.endswith("-int8"):
        cmd += ["--engine", engine.removesuffix("-int8"), "--precision", "int8"]
    else:
        cmd += ["--engine", engine]
    env = dict(os.environ)
    env.pop("ATTREX_ENGINE", None)
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
    return float(re.search(r"img_per_s=([\d.]+)", out).group(1))


results = {e: [] for e in engines}
for r in range(a.rounds):
    load = open("/proc/loadavg").read().split()[0]
    for e in engines:
        results[e].append(run(e))
    print(f"round {r + 1} (load {load}): "
          + " ".join(f"{e}={results[e][-1]:.2f}" for e in engines), file=sys.stderr)

for e in engines:
    print(f"{e} median_img_per_s={statistics.median(results[e]):.2f}")


def ratio(x, y):
    per_round = [p / q for p, q in zip(results[x], results[y])]
    print(f"{x} / {y} = {statistics.median(per_round):.2f} "
          f"(rounds {min(per_round):.2f}-{max(per_round):.2f})")


for e in engines[1:]:
    ratio(e, "burn")
if "avx512" in engines and "avx2" in engines:
    ratio("avx2", "avx512")
if "avx2-int8" in engines:
    ratio("avx2-int8", "avx2")
if "avx512-int8" in engines:
    ratio("avx512-int8", "avx512")
    ratio("avx2-int8", "avx512-int8")
