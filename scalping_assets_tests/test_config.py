"""Configs mirror the domain specs (constraints included), and a run with a bad one is refused before
any of its steps starts, naming the asset and the field."""

import dagster as dg
import pytest

from scalping_assets.assets.backtest import BacktestConfig, GateConfig
from scalping_assets.assets.features import DatasetConfig
from scalping_assets.backtest.engine import ExecutionConfig
from scalping_assets.backtest.promotion import GateCriteria
from scalping_assets.definitions import defs
from scalping_assets.features.dataset import DatasetSpec


def job_named(name: str) -> dg.JobDefinition:
    return defs.resolve_job_def(name)


def _schema_fields(config: type[dg.Config]) -> set[str]:
    return set(config.to_config_schema().as_field().config_type.fields)


def test_configs_carry_the_specs_fields_defaults_and_constraints():
    assert set(GateCriteria.model_fields) == _schema_fields(GateConfig)
    assert set(ExecutionConfig.model_fields) <= _schema_fields(BacktestConfig)
    assert {"labels", "split", "target", "sequence_length"} <= _schema_fields(DatasetConfig)
    assert GateConfig().to_spec() == GateCriteria()
    dataset = DatasetConfig()
    assert dataset.labels.horizon == DatasetSpec.model_fields["labels"].default.horizon
    for bad, field in [
        (lambda: GateConfig(max_p_value=0), "max_p_value"),
        (lambda: BacktestConfig(stop_loss=0), "stop_loss"),
        (lambda: DatasetConfig(labels={"barriers": {"max_hold_ticks": 0}}), "labels.barriers.max_hold_ticks"),
        (lambda: DatasetConfig(split={"train": 0.5}), "split"),  # the spec's own rule: fractions sum to 1
    ]:
        with pytest.raises(Exception, match=field.split(".")[-1]):
            bad()


def test_the_backtests_timeout_defaults_to_the_datasets_label_horizon():
    assert BacktestConfig().execution(target_lookahead=25).max_hold_ticks == 25
    assert BacktestConfig(max_hold_ticks=4).execution(target_lookahead=25).max_hold_ticks == 4


@pytest.mark.parametrize(
    "job, ops, named",
    [
        ("dataset_job", {"training_dataset": {"labels": {"horizon": 0}}}, "config of training_dataset refused: labels.horizon"),
        ("dataset_job", {"training_dataset": {"split": {"train": 0.9}}}, "config of training_dataset refused: split"),
        ("evaluation_job", {"backtest_report": {"take_profit": -1.0}}, "config of backtest_report refused: take_profit"),
        # the gate is the run's second step: refused before the backtests spend minutes
        ("evaluation_job", {"champion": {"max_p_value": 0.0}}, "config of champion refused: max_p_value"),
    ],
)
def test_a_run_with_a_bad_config_is_refused_before_any_step(tmp_path, monkeypatch, job, ops, named):
    monkeypatch.setenv("SCALPING_DATA_DIR", str(tmp_path / "data"))
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        instance.add_dynamic_partitions("dataset", ["bad"])
        result = dg.execute_job(
            dg.build_reconstructable_job(__name__, "job_named", reconstructable_args=(job,)),
            instance=instance,
            run_config={"ops": {op: {"config": config} for op, config in ops.items()}},
            tags={"dagster/partition": "bad"},
            raise_on_error=False,
        )
        assert not result.success
        events = instance.all_logs(result.run_id)
        assert not [e for e in events if e.dagster_event and e.dagster_event.event_type_value == "STEP_START"]
        failure = next(e for e in events if e.dagster_event and e.dagster_event.event_type_value == "PIPELINE_FAILURE")
        assert named in str(failure.dagster_event.event_specific_data.error)
    assert not (tmp_path / "data").exists(), "nothing was read or written"
