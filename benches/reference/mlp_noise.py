"""Is an MLP's gap to ridge regression the label distribution's, or any small MLP's?

    pip install -r benches/reference/requirements.txt
    python3 benches/reference/mlp_noise.py RUN_FOLDER [RUN_FOLDER ...]

On the rows of each ldl run (its `splits.json`, as `tabular_baselines.py` reads them), for
every value axis: ridge regression (alpha picked on the validation rows) and
scikit-learn's `MLPRegressor` (one hidden layer of 32, squared error, Adam at 0.003, no
label distribution anywhere) trained on the standardised features as they are and on
ten noisy copies of them (Gaussian noise of std 0.3 and 0.5 per standardised feature,
what `data.feature_noise` adds). Prints the test MAE of each, and the means over the runs.
"""

import sys
import warnings
from pathlib import Path

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import Ridge
from sklearn.neural_network import MLPRegressor

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tabular_baselines import standardised_rows  # noqa: E402

NOISE = (0.0, 0.3, 0.5)
COPIES = 10


def mae(a, b):
    return float(np.mean(np.abs(a - b)))


def scores(x, y, seed):
    ridge_alpha = min(
        (mae(Ridge(alpha=a).fit(x["train"], y["train"]).predict(x["validation"]),
             y["validation"]), a)
        for a in 10.0 ** np.arange(-3, 4.5, 0.5))[1]
    out = {"ridge": mae(Ridge(alpha=ridge_alpha).fit(x["train"], y["train"])
                        .predict(x["test"]), y["test"])}
    rng = np.random.default_rng(seed)
    for noise in NOISE:
        copies = COPIES if noise > 0 else 1
        xs = np.concatenate([x["train"] + noise * rng.standard_normal(x["train"].shape)
                             for _ in range(copies)])
        ys = np.tile(y["train"], copies)
        mlp = MLPRegressor(hidden_layer_sizes=(32,), alpha=1e-4, learning_rate_init=0.003,
                           max_iter=2000, random_state=seed).fit(xs, ys)
        out[f"MLP, noise {noise}"] = mae(mlp.predict(x["test"]), y["test"])
    return out


def main(runs):
    warnings.filterwarnings("ignore", category=ConvergenceWarning)
    totals = {}
    for seed, run in enumerate(runs, start=1):
        config, x, parts = standardised_rows(Path(run))
        for axis, label in config["data"]["labels"].items():
            if "value" not in label:
                continue
            y = {k: np.array([float(r[label["value"]]) for r in v]) for k, v in parts.items()}
            result = scores(x, y, seed)
            print(f"{run} {axis}: " + " | ".join(f"{k} {v:.3f}" for k, v in result.items()))
            for k, v in result.items():
                totals.setdefault(axis, {}).setdefault(k, []).append(v)
    for axis, by_method in totals.items():
        print(f"mean over {len(runs)} runs, {axis}: "
              + " | ".join(f"{k} {np.mean(v):.3f}" for k, v in by_method.items()))


if __name__ == "__main__":
    main(sys.argv[1:])
