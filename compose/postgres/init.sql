-- One server, two databases: landfall's results (POSTGRES_DB, made by the image itself)
-- and the MLflow registry's, made here. Creating POSTGRES_DB again would abort the
-- initialisation, and every service waiting on PostgreSQL with it.
CREATE DATABASE mlflow;
