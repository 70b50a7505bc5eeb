-- The auth app keeps users and permissions in their own database, next to the runs database
-- (POSTGRES_DB) that the postgres image creates; both belong to the same role.
CREATE DATABASE mlflow_auth OWNER mlflow;
