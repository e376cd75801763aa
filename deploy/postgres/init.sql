-- The databases of the deployment, created once by the PostgreSQL container on an empty data volume
-- (docker-entrypoint-initdb.d), owned by POSTGRES_USER; on another server: psql -f deploy/postgres/init.sql
CREATE DATABASE dagster;      -- Dagster's runs, events, schedules and sensor cursors (DAGSTER_PG_URL)
CREATE DATABASE mlflow;       -- MLflow's runs and model registry (MLFLOW_BACKEND_STORE_URI)
CREATE DATABASE mlflow_auth;  -- MLflow's users and permissions (MLFLOW_AUTH_DATABASE_URI)
CREATE DATABASE paper;        -- the paper trader's journal (SCALPING_PAPER_DB)
