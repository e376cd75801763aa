"""Watching the served model against what happened: the prediction log consolidated per day
(`predlog`), live performance beside the backtest (`live`), feature and prediction drift against the
training span (`drift`). No Dagster here: the assets in `scalping_assets.assets` call these."""
