"""Training throughput per model family, torch inference per window, and the demo zoo's wall time.

    python benchmarks/bench_training.py [--repeats 3] [--windows 6000] [--zoo-repeats 3]

The data is the demo's dataset (SIG_AR1, R_100, CRASH1000; two days after a warm-up day). Every
figure is the median of its repeats, on the CPU threads torch picks by default.
- Training: windows per second of one training epoch over `--windows` windows (sequence models, the
  training pass alone), rows per second of a complete fit (XGBoost, and the baseline measured in the
  same run: scikit-learn's logistic regression on the same flat rows).
- Inference: microseconds per window for one window at a time and in batches of 256.
- Zoo: wall time of fitting the demo profile's four families and the stacked ensemble (no MLflow).
"""

import argparse
import statistics
import time
import warnings
from datetime import date

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression

from scalping_assets.features.dataset import DATASET_SYMBOLS, Dataset, DatasetSpec, build_dataset
from scalping_assets.market.simulator import simulator
from scalping_assets.models.config import MODEL_KINDS, profile_config
from scalping_assets.models.ensemble import fit_stack
from scalping_assets.models.families import family
from scalping_assets.models.pipeline import fit
from scalping_assets.models.torch_family import TorchFamily
from scalping_assets.models.train import train_torch
from scalping_assets.models.trees import train_xgboost

# The baseline runs a fixed 300 iterations: what it costs, converged or not.
warnings.filterwarnings("ignore", category=ConvergenceWarning)
SPEC = DatasetSpec(symbols=DATASET_SYMBOLS, start=date(2026, 1, 2), end=date(2026, 1, 3))
# The torch families by kind: their training epochs and their nets are timed on their own.
TORCH = {f.kind: f for f in map(family, MODEL_KINDS) if isinstance(f, TorchFamily)}


def demo_dataset() -> Dataset:
    ticks = {s: simulator(s, 42).days(date(2026, 1, 1), SPEC.end) for s in SPEC.symbols}
    return build_dataset(SPEC, ticks)


def median_of(fn, repeats: int) -> float:
    return statistics.median(fn() for _ in range(repeats))


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def training_table(dataset: Dataset, repeats: int, windows: int) -> None:
    x, y = dataset.xy("train")
    x, y = x[:windows], y[:windows]
    baseline = len(y) / median_of(lambda: timed(lambda: LogisticRegression(max_iter=300).fit(x, y)), repeats)
    print(f"\nTraining throughput, median of {repeats} runs, {windows:,} samples")
    print(f"{'model':<12} {'profile':<8} {'what is counted':<34} {'samples/s':>11} {'vs logistic reg.':>17}")
    print(f"{'logistic reg.':<12} {'-':<8} {'rows of a complete fit (baseline)':<34} {baseline:>11,.0f} {1.0:>16.2f}x")
    train_windows, val_windows = dataset.windows("train"), dataset.windows("validation")
    x_val, y_val = dataset.xy("validation")
    x_val, y_val = x_val[:2000], y_val[:2000]
    for profile in ("demo", "full"):
        for kind in MODEL_KINDS:
            if kind in TORCH:
                config = profile_config(profile, kind, epochs=1, max_train_windows=windows, max_eval_windows=500)
                build = TORCH[kind].build
                rate = median_of(
                    lambda c=config, b=build: train_torch(c, b, train_windows, val_windows).history[0].samples_per_second,
                    repeats,
                )
                what = "windows of one training epoch"
            else:
                config = profile_config(profile, kind)
                names = dataset.feature_names
                rate = len(y) / median_of(
                    lambda c=config, n=names: timed(lambda: train_xgboost(c, x, y, x_val, y_val, n)), repeats
                )
                what = "rows of a complete fit"
            print(f"{kind:<12} {profile:<8} {what:<34} {rate:>11,.0f} {rate / baseline:>16.2f}x")


@torch.no_grad()
def inference_table(dataset: Dataset, repeats: int) -> None:
    windows = dataset.windows("test")
    one, _ = windows[np.arange(1)]
    batch, _ = windows[np.arange(256)]
    one, batch = torch.from_numpy(one), torch.from_numpy(batch)
    shape = f"{SPEC.sequence_length} ticks x {len(dataset.feature_names)} features"
    print(f"\nTorch inference per window ({shape}), median of {repeats} runs")
    print(f"{'model':<12} {'profile':<8} {'batch 1 µs':>11} {'batch 256 µs/window':>20} {'batching gain':>14}")
    for profile in ("demo", "full"):
        for kind, torch_family in TORCH.items():
            net = torch_family.build(profile_config(profile, kind), len(dataset.feature_names)).eval()
            net(batch)  # warm-up

            def per_window(x, loops, net=net):
                return timed(lambda: [net(x) for _ in range(loops)]) / (loops * len(x)) * 1e6

            single = median_of(lambda: per_window(one, 200), repeats)
            batched = median_of(lambda: per_window(batch, 5), repeats)
            print(f"{kind:<12} {profile:<8} {single:>11,.0f} {batched:>20,.1f} {single / batched:>13.1f}x")


def zoo_table(dataset: Dataset, repeats: int) -> None:
    per_model: dict[str, list[float]] = {kind: [] for kind in (*MODEL_KINDS, "ensemble")}
    configs = [profile_config("demo", kind) for kind in MODEL_KINDS]
    for _ in range(repeats):
        for config in configs:
            per_model[config.kind].append(timed(lambda c=config: fit(dataset, c)))
        per_model["ensemble"].append(timed(lambda: fit_stack(dataset, configs, folds=2)))
    print(f"\nDemo profile zoo on the demo dataset ({dataset.meta.rows['train']:,} training rows), median of {repeats} runs")
    print(f"{'model':<12} {'fit s':>8}")
    for kind, seconds in per_model.items():
        print(f"{kind:<12} {statistics.median(seconds):>8.1f}")
    totals = [sum(values[i] for values in per_model.values()) for i in range(repeats)]
    print(f"{'whole zoo':<12} {statistics.median(totals):>8.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--windows", type=int, default=6000, help="training samples per throughput run")
    parser.add_argument("--zoo-repeats", type=int, default=2, help="the zoo takes minutes per run")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, device cpu")
    started = time.perf_counter()
    dataset = demo_dataset()
    print(f"demo dataset: rows {dataset.meta.rows} built in {time.perf_counter() - started:.1f} s")
    training_table(dataset, args.repeats, args.windows)
    inference_table(dataset, args.repeats)
    zoo_table(dataset, args.zoo_repeats)


if __name__ == "__main__":
    main()
