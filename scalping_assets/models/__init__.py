"""Models (plain Python, no Dagster): one model-family interface (`family`) and the families by kind
(`families`: torch sequence nets, XGBoost), the stacked ensemble, the training loop, metrics and
MLflow tracking. Nothing is imported here: the serving image reads `tracking` and `family` without
torch or XGBoost."""
