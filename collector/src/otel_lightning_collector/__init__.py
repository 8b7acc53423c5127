"""otel-lightning collector: OTLP in, RL transitions out."""

from otel_lightning_collector.server import CollectorConfig, CollectorServer
from otel_lightning_collector.version import __version__

__all__ = ["CollectorConfig", "CollectorServer", "__version__"]
