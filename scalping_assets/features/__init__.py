"""Causal features, labels and datasets (plain Python, no Dagster): one code path for training,
backtest and serving. `registry` documents every column; `batch` computes a whole series,
`stream.FeatureState` one tick at a time with the same results."""
