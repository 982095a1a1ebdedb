"""Ridge and gradient-boosting baselines on the rows of an ldl run.

    pip install -r benches/reference/requirements.txt
    python3 benches/reference/tabular_baselines.py RUN_FOLDER

Reads the run folder's `config.toml` (feature and label columns), `splits.json` (the rows
of each split) and `summary.json` (ldl's test MAE), fits each baseline on the training
rows, picks its main hyperparameter on the validation rows only (ridge: alpha; gradient
boosting: the number of trees) and prints the test MAE per axis beside ldl's. For an axis
of explicit distributions it prints instead the six LDL measures of PyLDL's SA-BFGS and
AA-kNN (k picked on validation KL) and of ldl.
"""

import csv
import json
import sys
import tomllib
from pathlib import Path

import numpy as np
from sklearn.ensemble import GradientBoostingRegressor
from sklearn.linear_model import Ridge
from sklearn.preprocessing import StandardScaler

ROOT = Path(__file__).resolve().parents[2]


def table(source):
    if source.startswith("builtin:"):
        source = ROOT / "crates/ldl-data/datasets" / (source[len("builtin:"):] + ".csv")
    with open(source, newline="") as f:
        rows = list(csv.DictReader(f))
    return rows


def measures(d, p):
    eps = np.finfo(np.float64).eps
    dc, pc = np.clip(d, eps, 1), np.clip(p, eps, 1)
    return {
        "chebyshev": np.max(np.abs(d - p), 1).mean(),
        "clark": np.sqrt((((dc - pc) ** 2) / ((dc + pc) ** 2)).sum(1)).mean(),
        "canberra": (np.abs(dc - pc) / (dc + pc)).sum(1).mean(),
        "kl_divergence": (dc * (np.log(dc) - np.log(pc))).sum(1).mean(),
        "cosine": ((d * p).sum(1) / np.linalg.norm(d, axis=1) / np.linalg.norm(p, axis=1)).mean(),
        "intersection": (1 - 0.5 * np.abs(d - p).sum(1)).mean(),
    }


def standardised_rows(run):
    """The run's config, its features standardised on the training rows, and the rows of
    each split (train, validation, test) as read from its `splits.json`."""
    config = tomllib.loads((run / "config.toml").read_text())
    splits = json.loads((run / "splits.json").read_text())
    summary = json.loads((run / "summary.json").read_text())
    features = summary["features"]
    parts = {}
    for name in ("train", "validation", "test"):
        rows = table(str(splits["files"][name]))
        parts[name] = [rows[i] for i in splits[name]]
    x = {k: np.array([[float(r[c]) for c in features] for r in v]) for k, v in parts.items()}
    scaler = StandardScaler().fit(x["train"])
    return config, {k: scaler.transform(v) for k, v in x.items()}, parts


def main(run):
    run = Path(run)
    config, x, parts = standardised_rows(run)
    summary = json.loads((run / "summary.json").read_text())
    ldl_test = {a["axis"]: a for a in summary["test"]["metrics"]["axes"]}
    for axis, label in config["data"]["labels"].items():
        if "distribution" in label:
            d = {k: np.array([[float(r[c]) for c in label["distribution"]] for r in v])
                 for k, v in parts.items()}
            distributions(axis, x, d, ldl_test[axis]["ldl"])
            continue
        y = {k: np.array([float(r[label["value"]]) for r in v]) for k, v in parts.items()}
        mae = lambda a, b: float(np.mean(np.abs(a - b)))
        ridge = min(
            (mae(Ridge(alpha=a).fit(x["train"], y["train"]).predict(x["validation"]),
                 y["validation"]), a)
            for a in 10.0 ** np.arange(-3, 4.5, 0.5))[1]
        ridge_test = mae(Ridge(alpha=ridge).fit(x["train"], y["train"]).predict(x["test"]), y["test"])
        gbm = GradientBoostingRegressor(n_estimators=1000, learning_rate=0.03, max_depth=3,
                                        subsample=0.8, random_state=0).fit(x["train"], y["train"])
        val = [mae(p, y["validation"]) for p in gbm.staged_predict(x["validation"])]
        trees = int(np.argmin(val)) + 1
        gbm_test = mae(list(gbm.staged_predict(x["test"]))[trees - 1], y["test"])
        ours = ldl_test[axis]["mae"]
        best = min(ridge_test, gbm_test)
        print(f"{axis}: ldl {ours:.3f} | ridge {ridge_test:.3f} (alpha {ridge:g}) | "
              f"GBM {gbm_test:.3f} ({trees} trees) | ldl / better {ours / best:.3f}")


def distributions(axis, x, d, ours):
    from pyldl.algorithms import AA_KNN, SA_BFGS

    np.random.seed(0)
    sa = SA_BFGS().fit(x["train"], d["train"]).predict(x["test"])
    k = min((measures(d["validation"], AA_KNN(k=k).fit(x["train"], d["train"])
                      .predict(x["validation"]))["kl_divergence"], k) for k in range(1, 31))[1]
    knn = AA_KNN(k=k).fit(x["train"], d["train"]).predict(x["test"])
    mean = np.tile(d["train"].mean(0), (len(d["test"]), 1))
    names = ["chebyshev", "clark", "canberra", "kl_divergence", "cosine", "intersection"]
    print(f"{axis} (test) | " + " | ".join(names))
    print("ldl | " + " | ".join(f"{ours[n]:.4f}" for n in names))
    for method, p in [("SA-BFGS", sa), (f"AA-kNN (k={k})", knn), ("training mean", mean)]:
        m = measures(d["test"], p)
        print(f"{method} | " + " | ".join(f"{m[n]:.4f}" for n in names))


if __name__ == "__main__":
    main(sys.argv[1])
