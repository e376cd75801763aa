"""Thin Dagster wiring of the domain packages, one module per stage."""
