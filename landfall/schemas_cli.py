"""``landfall schemas register``: put the event schemas into the configured schema registry.

A deploy runs it before starting services (they only look their schemas up). The work
is in :mod:`landfall.schema_registry`; this module only reads options and prints.
"""

from __future__ import annotations

import json
from typing import Annotated

import typer

from landfall.cli_common import ConfigOption, cli_settings, fail
from landfall.errors import ConfigError, LandfallError

app = typer.Typer(
    help="The event schemas in the schema registry (kafka.schema_registry_url).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


@app.command()
def register(
    as_json: Annotated[
        bool, typer.Option("--json", help="one JSON object per schema, for scripts")
    ] = False,
    config: ConfigOption = None,
) -> None:
    """Register every event schema under its topic's subject (<topic>-value).

    Each is first checked against the subject's latest version; if any is incompatible,
    nothing is registered. A schema the registry already has is left as it is.
    """
    from landfall.kafka_clients import registry_connection
    from landfall.schema_registry import event_topics, register_event_schemas, registry_client

    try:
        settings = cli_settings(config)
        connection = registry_connection(settings)
        if connection is None:
            raise ConfigError(
                "no schema registry is configured (kafka.schema_registry_url): without one "
                "events travel in Avro single-object encoding and need no registration"
            )
        done = register_event_schemas(registry_client(*connection), event_topics(settings))
    except LandfallError as exc:
        fail(exc)
    for registration in done:
        if as_json:
            typer.echo(json.dumps(registration.as_dict(), sort_keys=True))
            continue
        what = "registered" if registration.registered else "already registered"
        typer.echo(
            f"{what:<18} {registration.event_type.short_name:<16} {registration.subject} "
            f"(id {registration.schema_id}, version {registration.version})"
        )
    if not as_json:
        added = sum(r.registered for r in done)
        typer.echo(f"summary: registered {added}, already registered {len(done) - added}")
