#!/usr/bin/env python3
"""umap-learn's fit time on the shapes of benches/umap.rs: 1000 x 256 points (10 Gaussian
blobs), to 2 and 8 dimensions, and transform of 200 new points. Median of 5 runs after a
warm-up fit (numba compiles on the first call). `pip install umap-learn` (outside the repo)."""
import time, numpy as np, umap

rng = np.random.default_rng(1)
centres = rng.normal(size=(10, 256)) * 3.0
x = (centres[np.arange(1000) % 10] + rng.normal(size=(1000, 256))).astype(np.float32)
new = (centres[np.arange(200) % 10] + rng.normal(size=(200, 256))).astype(np.float32)
umap.UMAP(random_state=0).fit(x[:100])  # JIT warm-up
for d in (2, 8):
    fits, transforms = [], []
    for _ in range(5):
        t = time.perf_counter(); m = umap.UMAP(n_components=d, random_state=0).fit(x); fits.append(time.perf_counter() - t)
        t = time.perf_counter(); m.transform(new); transforms.append(time.perf_counter() - t)
    print(f"umap-learn {umap.__version__} fit_1000x256 dim={d}: {np.median(fits):.3f} s; transform_200: {np.median(transforms):.3f} s")
