"""The reporter stage."""
