"""The featurizer stage."""
