"""The scorer as an MLflow model-from-code: MLflow runs this file to load it (no pickles)."""

from mlflow.models import set_model

from services.predictor.scorer import ModelScorer

set_model(ModelScorer())
