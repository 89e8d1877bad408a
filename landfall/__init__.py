"""landfall: event-driven batch prediction — four services exchanging events over Kafka."""

__version__ = "0.1.0"
