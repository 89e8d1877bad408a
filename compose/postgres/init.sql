-- One server, two databases: the MLflow registry's and landfall's results.
CREATE DATABASE mlflow;
CREATE DATABASE landfall;
