#!/usr/bin/env python3
"""Generates the accuracy suite's synthetic data sets into data/generated/ (NAME_train.csv, NAME_test.csv).

Fixed seeds: running it again writes the same files. Needs scikit-learn (Debian: python3-sklearn); the files are
committed, so nothing else needs it. Format as data/: header f0..f{d-1},target; classes 0..C-1; a 75/25 split,
stratified for classes.
    python3 Scripts/make_datasets.py
"""
import os

import numpy as np
from sklearn import datasets
from sklearn.model_selection import train_test_split

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data", "generated")


def sphere(rng):
    # Binary: inside or outside the sphere of median radius in 10 dimensions (a smooth non-linear boundary).
    x = rng.normal(size=(2000, 10))
    r = np.linalg.norm(x, axis=1)
    return x, (r < np.median(r)).astype(int)


def quantiles(rng):
    return datasets.make_gaussian_quantiles(n_samples=1500, n_features=6, n_classes=3, random_state=rng.integers(1 << 30))


def classification20(rng):
    return datasets.make_classification(n_samples=2000, n_features=20, n_informative=8, n_redundant=4, n_classes=4,
                                        n_clusters_per_class=2, random_state=rng.integers(1 << 30))


def wide120(rng):
    return datasets.make_classification(n_samples=800, n_features=120, n_informative=15, n_redundant=10, n_classes=2,
                                        random_state=rng.integers(1 << 30))


def blobs12(rng):
    return datasets.make_blobs(n_samples=1500, n_features=8, centers=12, cluster_std=2.0,
                               random_state=rng.integers(1 << 30))


def imbalanced(rng):
    return datasets.make_classification(n_samples=3000, n_features=12, n_informative=6, n_classes=2,
                                        weights=[0.92, 0.08], flip_y=0.01, random_state=rng.integers(1 << 30))


def heavy_tailed(rng):
    # Log-normal, Student-t and widely differently scaled columns (1e-3 to 1e4).
    x, y = datasets.make_classification(n_samples=1500, n_features=10, n_informative=6, n_classes=3,
                                        random_state=rng.integers(1 << 30))
    x[:, 0] = np.exp(1.5 * x[:, 0])
    x[:, 1] = x[:, 1] * 1e4
    x[:, 2] = x[:, 2] * 1e-3
    x[:, 3] = x[:, 3] + rng.standard_t(df=1.5, size=len(x))
    x[:, 4] = np.sinh(2.0 * x[:, 4]) * 100.0
    return x, y


def sparse_constant(rng):
    # 30 sparse count columns (about 5 % non-zero), 5 constant columns, 5 dense ones; a logistic label.
    n = 1200
    sparse = rng.poisson(3.0, size=(n, 30)) * (rng.random((n, 30)) < 0.05)
    constant = np.tile(rng.normal(size=5) * 10.0, (n, 1))
    dense = rng.normal(size=(n, 5))
    w = rng.normal(size=30)
    logit = sparse @ w + dense[:, 0] - dense[:, 1] + rng.logistic(size=n) * 0.5
    return np.hstack([sparse, constant, dense]), (logit > np.median(logit)).astype(int)


def xor(rng):
    a, b = rng.normal(size=600), rng.normal(size=600)
    x = np.column_stack([a + 0.2 * rng.normal(size=600), b + 0.2 * rng.normal(size=600)])
    return x, (a * b > 0).astype(int)


def spirals(rng):
    n = 300
    xs, ys = [], []
    for c in range(3):
        t = np.linspace(0.3, 3.0, n) + rng.normal(scale=0.12, size=n)
        angle = t * 2.2 + c * 2.0 * np.pi / 3.0
        xs.append(np.column_stack([t * np.cos(angle), t * np.sin(angle)]))
        ys.append(np.full(n, c))
    return np.vstack(xs), np.concatenate(ys)


def tiny(rng):
    return datasets.make_classification(n_samples=150, n_features=4, n_informative=3, n_redundant=1, n_classes=3,
                                        n_clusters_per_class=1, random_state=rng.integers(1 << 30))


def friedman1(rng):
    return datasets.make_friedman1(n_samples=1000, n_features=10, noise=1.0, random_state=rng.integers(1 << 30))


def linear5000(rng):
    return datasets.make_regression(n_samples=5000, n_features=30, n_informative=12, noise=10.0,
                                    random_state=rng.integers(1 << 30))


def waves(rng):
    # A smooth non-linear target on differently scaled inputs.
    x = rng.uniform(-1, 1, size=(800, 4)) * np.array([1.0, 10.0, 0.1, 100.0])
    y = np.sin(3 * x[:, 0]) + (x[:, 1] / 10.0) ** 2 + np.tanh(20 * x[:, 2]) + 0.1 * rng.normal(size=800)
    return x, y


CLASSIFICATION = [sphere, quantiles, classification20, wide120, blobs12, imbalanced, heavy_tailed, sparse_constant,
                  xor, spirals, tiny]
REGRESSION = [friedman1, linear5000, waves]


def write(path, x, y, classes):
    with open(path, "w") as f:
        f.write(",".join([f"f{j}" for j in range(x.shape[1])] + ["target"]) + "\n")
        for row, target in zip(x, y):
            cells = [f"{float(v):.7g}" for v in row] + [str(int(target)) if classes else f"{float(target):.7g}"]
            f.write(",".join(cells) + "\n")


def main():
    os.makedirs(OUT, exist_ok=True)
    for index, make in enumerate(CLASSIFICATION + REGRESSION):
        classes = make in CLASSIFICATION
        rng = np.random.default_rng(1000 + index)
        x, y = make(rng)
        x_train, x_test, y_train, y_test = train_test_split(
            x, y, test_size=0.25, random_state=index, stratify=y if classes else None)
        name = make.__name__
        write(os.path.join(OUT, f"{name}_train.csv"), x_train, y_train, classes)
        write(os.path.join(OUT, f"{name}_test.csv"), x_test, y_test, classes)
        print(f"{name}: {len(x_train)} + {len(x_test)} rows, {x.shape[1]} features"
              + (f", {len(np.unique(y))} classes" if classes else ", regression"))


if __name__ == "__main__":
    main()
