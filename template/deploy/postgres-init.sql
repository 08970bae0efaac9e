-- Runs once, when the postgres volume is first created (docker-entrypoint-initdb.d).
-- POSTGRES_DB already created `mlflow` (runs, registered models, aliases); the service's
-- prediction log and the drift reports get a database of their own.
CREATE DATABASE predictions;
