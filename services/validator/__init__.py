"""The validator stage."""
