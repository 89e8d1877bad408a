"""The predictor stage."""
