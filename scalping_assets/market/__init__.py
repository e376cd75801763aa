"""Market data: symbol catalog, simulator, tick store (plain Python, no Dagster imports)."""
