"""A trained, registered and exported set of models for the serving tests."""

from dataclasses import dataclass
from datetime import date
from pathlib import Path

import pandas as pd

from scalping_assets.backtest.promotion import CHALLENGER, CHAMPION
from scalping_assets.features.dataset import Dataset, DatasetSpec, build_dataset
from scalping_assets.market.simulator import simulator
from scalping_assets.models.config import MODEL_KINDS, profile_config
from scalping_assets.models.ensemble import train_ensemble
from scalping_assets.models.pipeline import Candidate, train_candidate
from scalping_assets.models.tracking import Tracker
from serving.export import ExportReport, export_version

SYMBOL = "SIG_AR1"
FAST = {"epochs": 2, "max_train_windows": 3_000, "max_eval_windows": 1_000, "n_estimators": 60}


@dataclass
class ServedModels:
    root: Path
    tracker: Tracker
    dataset: Dataset
    ticks: pd.DataFrame
    candidates: dict[str, Candidate]  # by kind, and "ensemble"
    exports: dict[str, ExportReport]  # by kind, for the exported ones

    @property
    def name(self) -> str:
        return self.candidates["xgboost"].registered_name

    def export(self, kind: str) -> ExportReport:
        if kind not in self.exports:
            c = self.candidates[kind]
            self.exports[kind] = export_version(
                self.tracker, c.registered_name, c.version, self.dataset, self.root / "bundles" / kind
            )
        return self.exports[kind]


def train_served_models(root: Path, sequence_length: int = 50, training: dict | None = None) -> ServedModels:
    """Every family and the ensemble on one SIG_AR1 day (quick `training` overrides of the demo
    profile); xgboost exported as champion, cnn as challenger."""
    tracker = Tracker(f"sqlite:///{root}/mlflow.db", artifact_root=str(root / "artifacts"))
    spec = DatasetSpec(symbols=[SYMBOL], start=date(2026, 1, 2), end=date(2026, 1, 2), sequence_length=sequence_length)
    ticks = simulator(SYMBOL, 7).days(date(2026, 1, 1), date(2026, 1, 2))
    dataset = build_dataset(spec, {SYMBOL: ticks})
    overrides = FAST if training is None else training
    candidates = {kind: train_candidate(dataset, profile_config("demo", kind, **overrides), tracker) for kind in MODEL_KINDS}
    candidates["ensemble"] = train_ensemble(dataset, [c.model for c in candidates.values()], tracker)
    served = ServedModels(root, tracker, dataset, ticks, candidates, {})
    for kind, alias in (("xgboost", CHAMPION), ("cnn", CHALLENGER)):
        served.export(kind)
        tracker.set_alias(served.name, alias, candidates[kind].version)
    return served
