-- Runs once, when the postgres volume is first created (docker-entrypoint-initdb.d).
-- POSTGRES_DB already created `mlflow` (runs, registered models, aliases); the service's
-- prediction log and the drift reports get a database of their own, and so do the Optuna
-- studies of `tune` (a stack created before `tune` existed: `docker compose exec postgres
-- createdb -U mlops optuna`).
CREATE DATABASE predictions;
CREATE DATABASE optuna;
