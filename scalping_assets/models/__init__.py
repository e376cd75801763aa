"""Models (plain Python, no Dagster): torch sequence models, XGBoost, the stacked ensemble, the
training loop, metrics and MLflow tracking."""
