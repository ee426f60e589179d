#!/usr/bin/env python3
"""The float reference of the accuracy suite: scikit-learn's MLP (two hidden layers of 4 x features, ReLU, Adam,
500 iterations) on features standardized with the train split's statistics, seeds 0-2, every data set of data/ and
data/generated/. Regression targets are standardized for training too (scores are R^2 on the original targets).
Writes data/generated/float_reference.csv (name,task,seed0,seed1,seed2,mean), which Scripts/accuracy_seeds.fsx reads.
    python3 Scripts/float_reference.py            # Debian: apt-get install python3-sklearn
"""
import glob
import os
import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.neural_network import MLPClassifier, MLPRegressor
from sklearn.preprocessing import StandardScaler

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data")


def read(path):
    data = np.loadtxt(path, delimiter=",", skiprows=1, ndmin=2)
    return data[:, :-1], data[:, -1]


def is_classes(y):
    return bool(np.all(y == np.round(y))) and len(np.unique(y)) <= 20


def score(train, test, seed):
    (x_train, y_train), (x_test, y_test) = read(train), read(test)
    scaler = StandardScaler().fit(x_train)
    x_train, x_test = scaler.transform(x_train), scaler.transform(x_test)
    hidden = (4 * x_train.shape[1], 4 * x_train.shape[1])
    if is_classes(y_train):
        model = MLPClassifier(hidden_layer_sizes=hidden, max_iter=500, random_state=seed).fit(x_train, y_train)
        return "classification", model.score(x_test, y_test)
    mean, std = y_train.mean(), y_train.std()
    model = MLPRegressor(hidden_layer_sizes=hidden, max_iter=500, random_state=seed).fit(x_train, (y_train - mean) / std)
    predicted = model.predict(x_test) * std + mean
    return "regression", 1.0 - ((y_test - predicted) ** 2).sum() / ((y_test - y_test.mean()) ** 2).sum()


def main():
    warnings.simplefilter("ignore", ConvergenceWarning)
    rows = []
    for train in sorted(glob.glob(os.path.join(ROOT, "*_train.csv")) + glob.glob(os.path.join(ROOT, "generated", "*_train.csv"))):
        name = os.path.basename(train)[: -len("_train.csv")]
        test = train.replace("_train.csv", "_test.csv")
        results = [score(train, test, seed) for seed in range(3)]
        scores = [s for _, s in results]
        rows.append(f"{name},{results[0][0]}," + ",".join(f"{s:.4f}" for s in scores) + f",{np.mean(scores):.4f}")
        print(rows[-1], flush=True)
    with open(os.path.join(ROOT, "generated", "float_reference.csv"), "w") as f:
        f.write("name,task,seed0,seed1,seed2,mean\n" + "\n".join(rows) + "\n")


if __name__ == "__main__":
    main()
