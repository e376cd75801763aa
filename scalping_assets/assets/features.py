"""Feature and dataset assets: thin wiring around `scalping_assets.features`."""

from datetime import UTC, date, datetime

import dagster as dg
import numpy as np
import pandas as pd
from pydantic import Field, ValidationError

from scalping_assets.assets.config import SpecConfig, spec_config
from scalping_assets.assets.display import iso, rounded, table
from scalping_assets.assets.ticks import partition_day_symbol, ticks
from scalping_assets.features import registry
from scalping_assets.features.daily import day_features, warmup_rows
from scalping_assets.features.dataset import DATASET_SYMBOLS, SPLITS, Dataset, DatasetMeta, DatasetSpec, resolve_epochs
from scalping_assets.features.labels import CLASSES
from scalping_assets.features.plots import correlation_heatmap_png, mutual_information, mutual_information_png
from scalping_assets.features.sharded import ShardedDataset
from scalping_assets.features.shards import DaySource, stage_rows
from scalping_assets.partitions import DATASETS, TICK_PARTITIONS
from scalping_assets.plotting import markdown_image
from scalping_assets.records import DatasetRecord
from scalping_assets.resources import FolderResource, FrameStoreResource, TickStoreResource


def _days_around(start_offset: int, end_offset: int) -> dg.MultiPartitionMapping:
    return dg.MultiPartitionMapping(
        {
            "date": dg.DimensionPartitionMapping(
                "date", dg.TimeWindowPartitionMapping(start_offset=start_offset, end_offset=end_offset)
            ),
            "symbol": dg.DimensionPartitionMapping("symbol", dg.IdentityPartitionMapping()),
        }
    )


def _balance_table(balance: dict[str, dict[str, float]]) -> dg.TableMetadataValue:
    return dg.MetadataValue.table(
        records=[
            dg.TableRecord({"split": split, **{c: round(shares[c], 4) for c in CLASSES}}) for split, shares in balance.items()
        ],
        schema=dg.TableSchema(columns=[dg.TableColumn("split", "string"), *(dg.TableColumn(c, "float") for c in CLASSES)]),
    )


def _markdown_table(frame: pd.DataFrame) -> str:
    header = "| | " + " | ".join(frame.columns) + " |\n|---|" + "---|" * len(frame.columns) + "\n"
    return header + "\n".join(f"| {name} | " + " | ".join(f"{v:g}" for v in row) + " |" for name, row in frame.iterrows())


FEATURE_TABLE = dg.MetadataValue.table(
    records=[
        dg.TableRecord({"feature": f.name, "family": f.family, "formula": f.formula, "lookback": f.lookback, "unit": f.unit})
        for f in registry.FEATURES
    ],
    schema=dg.TableSchema(
        columns=[
            dg.TableColumn("feature", "string"),
            dg.TableColumn("family", "string"),
            dg.TableColumn("formula", "string"),
            dg.TableColumn("lookback", "int"),
            dg.TableColumn("unit", "string"),
        ]
    ),
)


@dg.asset(
    partitions_def=TICK_PARTITIONS,
    deps=[dg.AssetDep(ticks, partition_mapping=_days_around(-1, 0))],
    group_name="features",
    kinds={"parquet"},
    description="Causal features of one (day, symbol), warmed up on the previous day's last ticks.",
)
def features(
    context: dg.AssetExecutionContext, tick_store: TickStoreResource, feature_store: FrameStoreResource
) -> dg.MaterializeResult:
    day, symbol = partition_day_symbol(context)
    frame, warmup = day_features(tick_store.store(), symbol, day)
    path = feature_store.store().write_day(symbol, day, frame)
    undefined = int(warmup_rows(frame).sum())
    context.log.info(
        f"{symbol} {day}: {len(frame)} rows, {warmup} warm-up ticks from the day before, {undefined} rows in warm-up"
    )
    values = frame.drop(columns="epoch")
    summary = values.describe().T[["mean", "std", "min", "max"]].round(6)
    return dg.MaterializeResult(
        metadata={
            "rows": dg.MetadataValue.int(len(frame)),
            "warmup_ticks_from_previous_day": dg.MetadataValue.int(warmup),
            "rows_in_warmup": dg.MetadataValue.int(undefined),
            "path": dg.MetadataValue.path(str(path)),
            "features": FEATURE_TABLE,
            "summary": dg.MetadataValue.md(_markdown_table(summary)),
        }
    )


class _DatasetOptions(SpecConfig):
    symbols: list[str] = Field(default_factory=lambda: list(DATASET_SYMBOLS), min_length=1)
    start: str = Field(default="", description="first day (YYYY-MM-DD); empty: the first stored day after the first one")
    end: str = Field(default="", description="last day, inclusive; empty: the last day stored for every symbol")
    walk_forward_folds: int = Field(
        default=0, ge=0, description="expanding-window walk-forward folds stored beside the dataset (0: none)"
    )


# The labels, target, window and split are DatasetSpec's own fields, constraints included; the days
# are resolved against what is stored when the asset runs.
class DatasetConfig(spec_config(DatasetSpec, "DatasetFields", exclude={"symbols", "start", "end"}, base=_DatasetOptions)):
    def dataset_spec(self, stored: list[list[date]]) -> DatasetSpec:
        common = sorted(set.intersection(*(set(days) for days in stored))) if stored else []
        if not (self.start and self.end) and not common:
            raise dg.Failure(f"no day is stored for every one of {self.symbols}: materialize ticks and features first")
        # Without a start, the first common day only warms the features up.
        try:
            start = date.fromisoformat(self.start) if self.start else common[min(1, len(common) - 1)]
            end = date.fromisoformat(self.end) if self.end else common[-1]
        except ValueError as exc:
            raise dg.Failure(f"start and end must be YYYY-MM-DD days ({exc})") from exc
        fields = self.model_dump(exclude={"start", "end", "walk_forward_folds"})
        try:
            return DatasetSpec.model_validate(fields | {"start": start, "end": end})
        except ValidationError as exc:
            raise dg.Failure(f"dataset config: {exc}") from exc


def _folds_table(folds: list[DatasetMeta]) -> dg.TableMetadataValue:
    records = [
        dg.TableRecord(
            {
                "fold": k,
                **{split: fold.rows[split] for split in SPLITS},
                "test_from": _utc(fold.boundaries[1]),
                "test_until": _utc(fold.until) if fold.until else "end",
            }
        )
        for k, fold in enumerate(folds, start=1)
    ]
    columns = [dg.TableColumn("fold", "int"), *(dg.TableColumn(s, "int") for s in SPLITS)]
    return dg.MetadataValue.table(
        records=records, schema=dg.TableSchema(columns=[*columns, dg.TableColumn("test_from"), dg.TableColumn("test_until")])
    )


def _utc(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _day_range(first: date, last: date) -> list[date]:
    return [date.fromordinal(o) for o in range(first.toordinal(), last.toordinal() + 1)]


@dg.asset(
    partitions_def=DATASETS,
    # Every stored day may feed a dataset; which ones is the config's choice.
    deps=[dg.AssetDep(a, partition_mapping=dg.AllPartitionMapping()) for a in (features, ticks)],
    group_name="features",
    kinds={"parquet"},
    io_manager_key="records",
    description="Temporal 70/15/15 dataset with purge and embargo; GARCH, regime scale and normaliser fitted on train only.",
)
def training_dataset(
    context: dg.AssetExecutionContext,
    config: DatasetConfig,
    tick_store: TickStoreResource,
    feature_store: FrameStoreResource,
    dataset_store: FolderResource,
) -> dg.MaterializeResult:
    name = context.partition_key
    store, fstore = tick_store.store(), feature_store.store()
    spec = config.dataset_spec([store.days(symbol) for symbol in config.symbols])
    days = _day_range(spec.start, spec.end)
    missing = {s: [str(d) for d in fstore.missing(s, days)] for s in spec.symbols}
    missing = {s: d for s, d in missing.items() if d}
    if missing:
        raise dg.Failure(f"features are not materialized for {missing}: materialize `features` for those partitions first")
    # Assembled day by day into shards (the day before the range warms up features, labels and the
    # GARCH filter): months of ticks fit in the memory of one day.
    folder = dataset_store.folder(name)
    with stage_rows(spec, DaySource(store, fstore), folder) as staged:
        meta = staged.dataset(folder)
        context.log.info(f"dataset {name}: rows {meta.rows}, dropped {meta.dropped}, fingerprint {meta.fingerprint}")
        folds = staged.walk_forward(folder, config.walk_forward_folds)
    for k, fold in enumerate(folds, start=1):
        context.log.info(f"walk-forward fold {k}/{len(folds)}: rows {fold.rows}, test from epoch {fold.boundaries[1]}")
    dataset = ShardedDataset.load(folder)
    # Every label-horizon-th training row of each symbol (rows whose labels do not overlap): the
    # mutual information read those rows of the whole span before; the correlations read them too.
    x_train, y_train, groups = dataset.sample("train", spec.target_lookahead)
    mi = mutual_information(x_train, y_train, groups, dataset.feature_names, stride=1)
    heatmap = correlation_heatmap_png(x_train, groups, dataset.feature_names, f"feature correlation, training span ({name})")
    chart = mutual_information_png(mi, f"mutual information with the {spec.target} label, training span")
    record = DatasetRecord(
        name=name,
        path=str(folder),
        fingerprint=meta.fingerprint,
        symbols=spec.symbols,
        start=spec.start,
        end=spec.end,
        rows=meta.rows,
        dropped=meta.dropped,
    )
    return dg.MaterializeResult(
        value=record,
        metadata={
            "path": dg.MetadataValue.path(str(folder)),
            "symbols": dg.MetadataValue.text(", ".join(spec.symbols)),
            "range": dg.MetadataValue.text(f"{spec.start} .. {spec.end}"),
            "rows": table([{"split": split, "rows": int(n)} for split, n in meta.rows.items()]),
            "training_rows": dg.MetadataValue.int(int(meta.rows["train"])),
            "test_rows": dg.MetadataValue.int(int(meta.rows["test"])),
            "dropped": table([{"why": why, "rows": int(n)} for why, n in meta.dropped.items()]),
            "boundaries": table([{"validation_from": iso(meta.boundaries[0]), "test_from": iso(meta.boundaries[1])}]),
            "class_balance": _balance_table(meta.class_balance),
            "features": FEATURE_TABLE,
            "garch": table(
                [{"symbol": s, **{k: rounded(v, 6) for k, v in f.garch.model_dump().items()}} for s, f in meta.fitted.items()]
            ),
            "fingerprint": dg.MetadataValue.text(meta.fingerprint),
            "walk_forward_folds": _folds_table(folds),
            "correlation_heatmap": dg.MetadataValue.md(markdown_image(heatmap, "correlation")),
            "mutual_information": dg.MetadataValue.md(markdown_image(chart, "mutual information")),
        },
    )


@dg.asset_check(asset=features, partitions_def=TICK_PARTITIONS, blocking=True, description="No NaN or inf after the warm-up")
def features_defined_after_warmup(
    context: dg.AssetCheckExecutionContext, tick_store: TickStoreResource, feature_store: FrameStoreResource
) -> dg.AssetCheckResult:
    day, symbol = partition_day_symbol(context)
    frame = feature_store.store().read_day(symbol, day)
    values = frame.drop(columns="epoch").to_numpy()
    infinite = int(np.isinf(values).sum())
    undefined = np.flatnonzero(warmup_rows(frame))
    had_previous = tick_store.store().path(symbol, date.fromordinal(day.toordinal() - 1)).exists()
    allowed = 0 if had_previous else registry.WARMUP_TICKS
    late = undefined[undefined >= allowed]
    return dg.AssetCheckResult(
        passed=infinite == 0 and late.size == 0,
        metadata={"inf_values": infinite, "rows_in_warmup": int(undefined.size), "undefined_after_warmup": int(late.size)},
        description=None if late.size == 0 else f"first undefined row after the warm-up: {int(late[0])}",
    )


@dg.asset_check(
    asset=training_dataset, partitions_def=DATASETS, blocking=True, description="Every feature value finite, every label resolved"
)
def dataset_finite(training_dataset: DatasetRecord) -> dg.AssetCheckResult:
    dataset = Dataset.load(training_dataset.path)
    values = dataset.frame[dataset.feature_names].to_numpy()
    bad = int((~np.isfinite(values)).sum())
    unresolved = int((dataset.frame[["direction", "barrier"]] < 0).to_numpy().sum())
    return dg.AssetCheckResult(
        passed=bad == 0 and unresolved == 0, metadata={"non_finite_values": bad, "unresolved_labels": unresolved}
    )


@dg.asset_check(
    asset=training_dataset,
    partitions_def=DATASETS,
    blocking=True,
    description="Splits disjoint in time; no label window crosses a boundary",
)
def dataset_splits_disjoint(training_dataset: DatasetRecord) -> dg.AssetCheckResult:
    dataset = Dataset.load(training_dataset.path)
    frame, (b1, b2) = dataset.frame, dataset.meta.boundaries
    resolve = pd.Series(resolve_epochs(frame), index=frame.index)
    span_end = {"train": b1, "validation": b2}
    crossing = {s: int((resolve[frame["split"] == s] >= end).sum()) for s, end in span_end.items()}
    outside = {
        "train": int((frame.loc[frame["split"] == "train", "epoch"] >= b1).sum()),
        "validation": int(
            (
                (frame.loc[frame["split"] == "validation", "epoch"] < b1)
                | (frame.loc[frame["split"] == "validation", "epoch"] >= b2)
            ).sum()
        ),
        "test": int((frame.loc[frame["split"] == "test", "epoch"] < b2).sum()),
    }
    shared = int(frame.duplicated(subset=["symbol", "epoch"]).sum())
    passed = not any(crossing.values()) and not any(outside.values()) and shared == 0
    return dg.AssetCheckResult(
        passed=passed, metadata={"labels_crossing_boundary": crossing, "rows_outside_span": outside, "rows_in_two_splits": shared}
    )


@dg.asset_check(
    asset=training_dataset,
    partitions_def=DATASETS,
    blocking=False,
    description="Class balance per split (warns below 1 % for a class)",
)
def dataset_class_balance(training_dataset: DatasetRecord) -> dg.AssetCheckResult:
    balance = Dataset.load(training_dataset.path).meta.class_balance
    rare = {split: [c for c, share in shares.items() if share < 0.01] for split, shares in balance.items()}
    rare = {split: classes for split, classes in rare.items() if classes}
    return dg.AssetCheckResult(
        passed=not rare,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={split: dg.MetadataValue.json(balance[split]) for split in SPLITS},
        description=f"classes under 1 %: {rare}" if rare else "every class has at least 1 % of each split",
    )
