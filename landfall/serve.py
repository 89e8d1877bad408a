"""Running one stage service in this process: build it, run its loop, stop cleanly."""

from __future__ import annotations

import importlib
import logging

from landfall.config import Settings
from landfall.errors import ConfigError
from landfall.kafka_clients import kafka_connection_config
from landfall.redact import install_redaction, register_settings
from landfall.runner import Runner, Service
from landfall.schema_registry import check_registered
from landfall.shutdown import exit_without_stage, stop_on_signals
from landfall.stage import StageContext, StageService
from landfall.telemetry import init_telemetry
from landfall.topics import TopicSpec, ensure_topics, wait_for_broker

__all__ = ["API", "SERVICE_NAMES", "build_service", "ensure_all_topics", "serve"]

log = logging.getLogger(__name__)

# Service name -> the class holding its stage, for the services on the shared runner.
_SERVICES = {
    "validator": "services.validator.service:ValidatorService",
    "featurizer": "services.featurizer.service:FeaturizerService",
    "predictor": "services.predictor.service:PredictorService",
}
# The reporter is a faust-streaming app (services/reporter/app.py), not on the runner.
REPORTER = "reporter"
# Every service, in pipeline order.
SERVICE_NAMES = (*_SERVICES, REPORTER)
# The job API: not a stage, but served the same way (``landfall serve api``).
API = "api"


def build_service(name: str, context: StageContext) -> Service:
    """Instantiate the named stage service of the shared runner on a context."""
    try:
        module_name, class_name = _SERVICES[name].split(":")
    except KeyError:
        raise ConfigError(f"unknown service {name!r}; choose from {', '.join(_SERVICES)}") from None
    service: Service = getattr(importlib.import_module(module_name), class_name)(context)
    return service


def ensure_all_topics(settings: Settings) -> list[str]:
    """Create whichever configured topics are missing; return the ones created."""
    assert settings.kafka.bootstrap
    specs = [
        TopicSpec(name=t.name, partitions=t.partitions, retention_ms=t.retention_ms)
        for t in settings.kafka.topics.all()
    ]
    return ensure_topics(
        settings.kafka.bootstrap,
        specs,
        admin_config=kafka_connection_config(settings),
        manage=settings.kafka.manage_topics,
    )


def serve(name: str, settings: Settings) -> None:
    """Run one service until SIGTERM or SIGINT (landfall/shutdown.py says what stops how)."""
    if name not in SERVICE_NAMES and name != API:
        choices = ", ".join([*SERVICE_NAMES, API])
        raise ConfigError(f"unknown service {name!r}; choose from {choices}")
    if not settings.kafka.bootstrap:
        raise ConfigError("serve needs a broker: set kafka.bootstrap or LANDFALL_KAFKA_BOOTSTRAP")
    # A service's logs, tracebacks, spans and events mask the secrets of these settings
    # (load_settings registered them already; settings made otherwise are added here).
    register_settings(settings)
    install_redaction()
    # Metrics first: a service waiting for its broker can be seen waiting. The API has
    # no batches to count; its requests show in its own access log.
    init_telemetry(settings, name, metrics=name != API)
    # A service may start before its broker does (compose, Kubernetes): wait a while.
    wait_for_broker(
        settings.kafka.bootstrap, timeout=60, admin_config=kafka_connection_config(settings)
    )
    ensure_all_topics(settings)
    # A deploy registers the event schemas; a service (the API publishes too) that would
    # publish with an unregistered one stops here, saying what to run, not at its first
    # event. A registry not answering yet is waited for, as the broker is.
    check_registered(settings, wait_s=60)
    if name == API:
        from landfall.api import serve_api

        serve_api(settings)
        return
    if name == REPORTER:
        from services.reporter.app import ReporterApp

        log.info("reporter ready (faust)")
        # Stops as the runner's services do (landfall/shutdown.py), by its own signal handling.
        ReporterApp(settings).run()
        return
    context = StageContext(settings, name)
    context.remove_abandoned_outputs()
    service = build_service(name, context)
    # Start Spark before the first event so the first batch does not pay for it; then
    # what the service checks before its first event (the predictor: its models).
    _ = context.spark
    if isinstance(service, StageService):
        service.start()
    runner = Runner(service, settings, producer_name=context.producer)
    stop_on_signals(runner, name, settings.runner.shutdown_grace_s)
    log.info("%s ready", name)
    try:
        runner.run()
    finally:
        runner.close()
        log.info("%s stopped", name)
    if runner.stage_still_running:
        exit_without_stage(name)
