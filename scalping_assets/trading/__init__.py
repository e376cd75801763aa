"""Trading on the live stream: the backtest's engine driven tick by tick, brokers that fill its
orders (on paper, or as contracts on a Deriv virtual account), and the journal that survives restarts.
No Dagster import here: the `paper_parity` asset lives in `assets/`."""
