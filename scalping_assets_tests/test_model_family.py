"""A model family from outside the package, registered in this file alone, goes the whole way: trained
and logged, backtested, through the gate, exported with parity, served from its bundle."""

from datetime import date

import numpy as np
import pytest
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from skl2onnx import to_onnx
from sklearn.linear_model import LogisticRegression

from scalping_assets.backtest.engine import ExecutionConfig
from scalping_assets.backtest.promotion import GateCandidate, GateCriteria, promote
from scalping_assets.backtest.report import backtest_predictions
from scalping_assets.backtest.runs import candidate_runs, load_predictions, log_backtest
from scalping_assets.backtest.trials import count_trials
from scalping_assets.features.dataset import Dataset, DatasetSpec, SequenceWindows, build_dataset
from scalping_assets.features.labels import PROBABILITY_COLUMNS
from scalping_assets.market.simulator import simulator
from scalping_assets.models.calibration import window_symbols
from scalping_assets.models.config import MODEL_KINDS, TrainConfig, profile_config
from scalping_assets.models.families import family, register_family
from scalping_assets.models.family import ModelFamily, OnEpoch, TrainedModel, last_rows
from scalping_assets.models.pipeline import prediction_frame, train_candidate
from scalping_assets.models.tracking import CHAMPION, Tracker
from serving.bundle import OnnxPredictor
from serving.export import FP32_TOLERANCE, export_version, predict_windows

SYMBOL = "SIG_AR1"
KIND = "last-row-logit"


class LogitParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    c: float = Field(default=1.0, gt=0, description="inverse strength of the L2 penalty")
    max_iter: int = Field(default=300, ge=1)


class LastRowLogit(ModelFamily[LogisticRegression]):
    """Multinomial logistic regression on each window's last row: the smallest family there is."""

    kind = KIND
    flavor = "sklearn"
    input = "features"
    params = LogitParams

    def fit(self, dataset: Dataset, config: TrainConfig, on_epoch: OnEpoch | None = None) -> TrainedModel:
        params = self.params_of(config)
        x, y = dataset.xy("train")
        model = LogisticRegression(C=params.c, max_iter=params.max_iter).fit(x, y)
        return TrainedModel(family=self, config=config, model=model)

    def predict(self, model: LogisticRegression, windows: SequenceWindows) -> np.ndarray:
        return model.predict_proba(last_rows(windows))

    def to_onnx(self, model: LogisticRegression, n_features: int, window: int) -> bytes:
        example = np.zeros((1, n_features), np.float32)
        return to_onnx(model, example, options={id(model): {"zipmap": False}}, target_opset=17).SerializeToString()


FAMILY = register_family(LastRowLogit())
# Every gate criterion wide open: what is under test is that the family gets through, not its edge.
ANYTHING = GateCriteria(
    min_win_rate=0, min_sharpe=-1e9, max_drawdown_pct=1e9, min_deflated_sharpe=0, max_p_value=1.01, min_trades=1
)


def test_the_registry_knows_the_family_and_configs_check_kind_and_the_family_s_own_parameters():
    assert family(KIND) is FAMILY
    assert KIND not in MODEL_KINDS  # the built-ins alone get Dagster assets
    assert register_family(FAMILY) is FAMILY  # registering again is harmless ...
    with pytest.raises(ValueError, match="already registered"):
        register_family(LastRowLogit())  # ... another family under a taken kind is not
    with pytest.raises(ValidationError, match=rf"kind\n.*unknown model kind 'lightgbm'; registered kinds: .*xgboost, {KIND}"):
        TrainConfig(kind="lightgbm")
    assert TrainConfig(kind=KIND).params == {"c": 1.0, "max_iter": 300}
    with pytest.raises(ValidationError, match=r"params\.c"):
        TrainConfig(kind=KIND, params={"c": 0})
    with pytest.raises(ValidationError, match=r"params\.c"):
        TrainConfig(kind="xgboost", params={"c": 1.0})  # XGBoost has no parameters of its own


# MLflow tries the logged model on its input example, a frame with the feature names; this family fits on plain rows.
@pytest.mark.filterwarnings("ignore:X has feature names:UserWarning")
def test_a_family_registered_outside_the_package_trains_backtests_passes_the_gate_exports_and_serves(tmp_path):
    tracker = Tracker(f"sqlite:///{tmp_path}/mlflow.db", artifact_root=str(tmp_path / "artifacts"))
    spec = DatasetSpec(symbols=[SYMBOL], start=date(2026, 1, 2), end=date(2026, 1, 2), sequence_length=50)
    ticks = simulator(SYMBOL, 7).days(date(2026, 1, 1), date(2026, 1, 2))
    dataset = build_dataset(spec, {SYMBOL: ticks})

    # Train: a run with the family's own parameters, a registered version, the model back from MLflow.
    candidate = train_candidate(dataset, profile_config("demo", KIND, params={"c": 0.5}), tracker)
    assert candidate.kind == KIND and candidate.config["params"] == {"c": 0.5, "max_iter": 300}
    run = tracker.client.get_run(candidate.run_id)
    assert run.data.params["params.c"] == "0.5" and run.data.tags["model_type"] == KIND
    assert tracker.version_tags(candidate.registered_name, candidate.version)["model_type"] == KIND
    again = FAMILY.predict(FAMILY.load(tracker, candidate.model_uri), dataset.windows("test"))
    np.testing.assert_array_equal(candidate.calibration.apply(again, SYMBOL), candidate.test_proba)  # logged: calibrated
    assert candidate.metrics["accuracy"] > candidate.edge["majority_accuracy"]  # the planted signal is linear enough

    # Backtest the logged test predictions, as `backtest_report` does.
    trials = count_trials(tracker, candidate_runs(tracker))  # as `backtest_report` counts them
    report = backtest_predictions(
        candidate.name,
        {SYMBOL: ticks},
        load_predictions(tracker, candidate.run_id),
        ExecutionConfig(),
        dataset.meta.boundaries[1],
        spec.end_epoch,
        trials.effective,
        trials.sharpes,
        draws=50,
    )
    log_backtest(tracker, candidate.run_id, report, tmp_path / "reports")
    assert report.metrics["trades"] > 0

    # Gate: the version becomes champion.
    decision = promote(
        tracker,
        candidate.registered_name,
        [GateCandidate(name=candidate.name, version=candidate.version, per_symbol={SYMBOL: report.summary()})],
        ANYTHING,
    )
    assert decision.promoted and decision.cleared[candidate.name] == [SYMBOL], decision.failures
    champion = tracker.alias_version(candidate.registered_name, CHAMPION)
    assert champion == candidate.version

    # Export the champion: the family's graph, within tolerance of the family's own predictions.
    export = export_version(tracker, candidate.registered_name, champion, dataset, tmp_path / "bundle", latency_repeats=50)
    assert export.logged and export.fp32_max_abs_diff <= FP32_TOLERANCE
    assert export.manifest.kind == KIND and [(p.name, p.input) for p in export.manifest.parts] == [(KIND, "features")]
    assert export.int8_agreement is None and export.manifest.precision == "fp32"  # not quantisable: no INT8 tried

    # Serve from the bundle: the family's calibrated test predictions, from feature windows and from raw ticks.
    predictor = OnnxPredictor(export.folder)
    assert predictor.calibration == candidate.calibration
    windows = predict_windows(predictor, dataset.windows("test"), window_symbols(dataset, "test"))
    np.testing.assert_allclose(windows, candidate.test_proba, atol=FP32_TOLERANCE)
    logged = prediction_frame(dataset, candidate.test_proba)
    epochs = ticks["epoch"].to_numpy()
    for row in np.linspace(0, len(logged) - 1, 3).astype(int):
        end = int(np.searchsorted(epochs, logged["epoch"].iloc[row])) + 1
        window = ticks.iloc[end - predictor.manifest.min_ticks : end]
        raw = predictor.features_from_ticks(SYMBOL, window["epoch"].to_numpy(), window["quote"].to_numpy())
        served = predictor.predict(raw[None], SYMBOL)[0]
        np.testing.assert_allclose(served, logged[PROBABILITY_COLUMNS].iloc[row].to_numpy(), atol=FP32_TOLERANCE)
