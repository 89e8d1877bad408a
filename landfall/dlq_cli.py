"""``landfall dlq ...``: list, show and redrive the messages on the dead-letter topic.

The work is in :mod:`landfall.dlq`; this module only reads options and prints.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Annotated, Any

import typer

from landfall.cli_common import ConfigOption, fail, publishing_settings
from landfall.errors import LandfallError

if TYPE_CHECKING:
    from landfall.config import Settings
    from landfall.dlq import DeadLetterMessage, Redriven

app = typer.Typer(
    help="The dead-letter topic: list its messages, show one decoded, redrive them after a fix.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)

log = logging.getLogger(__name__)

JsonOption = Annotated[bool, typer.Option("--json", help="one JSON document, for scripts")]
# A reason in the table is one line; `show` prints it whole.
_REASON_WIDTH = 100


def _one_line(text: str, width: int) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def _print_json(document: Any) -> None:
    typer.echo(json.dumps(document, indent=2, sort_keys=True, default=str))


@app.command("list")
def list_(
    reason_contains: Annotated[
        str | None, typer.Option(help="only messages whose reason contains this (any case)")
    ] = None,
    as_json: JsonOption = False,
    config: ConfigOption = None,
) -> None:
    """Every message on the dead-letter topic, then counts by reason and by source topic."""
    from landfall.dlq import read_dead_letters, summarize

    try:
        settings = publishing_settings(config, "dlq list")
        letters = [
            letter
            for letter in read_dead_letters(settings)
            if _selected(letter.reason, reason_contains)
        ]
    except LandfallError as exc:
        fail(exc)
    topic = settings.kafka.topics.dead_letter.name
    counts = summarize(letters)
    if as_json:
        _print_json({"topic": topic, "messages": [m.summary() for m in letters], **counts})
        return
    if not letters:
        typer.echo(f"no dead letters on {topic}")
        return
    typer.echo(f"{'REF':<10} {'TIME':<25} {'SERVICE':<11} {'SOURCE':<34} {'BYTES':>8}  REASON")
    for letter in letters:
        row = letter.summary()
        cut = "*" if row["original_bytes"] is not None else ""
        typer.echo(
            f"{row['ref']:<10} {row['time'] or '-':<25} {row['service']:<11} "
            f"{row['source'] or '-':<34} {str(row['bytes']) + cut:>8}  "
            f"{_one_line(row['reason'], _REASON_WIDTH)}"
        )
    if any(letter.original_bytes is not None for letter in letters):
        typer.echo("* value cut to fit the dead-letter topic: cannot be redriven")
    typer.echo(f"\n{counts['total']} dead letter(s) on {topic}")
    typer.echo("by source topic:")
    for name, count in counts["by_source_topic"].items():
        typer.echo(f"  {count:>6}  {name}")
    typer.echo("by reason:")
    for reason, count in counts["by_reason"].items():
        typer.echo(f"  {count:>6}  {_one_line(reason, _REASON_WIDTH)}")


def _selected(reason: str, contains: str | None) -> bool:
    return contains is None or contains.casefold() in reason.casefold()


@app.command()
def show(
    ref: Annotated[str, typer.Argument(help="the message's partition@offset on the topic")],
    as_json: JsonOption = False,
    config: ConfigOption = None,
) -> None:
    """One dead letter: its headers, and its value decoded where possible (secrets masked)."""
    from landfall.dlq import decode_preview, header_preview, read_one, redrive_refusal

    try:
        settings = publishing_settings(config, "dlq show")
        letter = read_one(settings, ref)
        value = decode_preview(settings, letter)
    except LandfallError as exc:
        fail(exc)
    headers = [[key, header_preview(raw)] for key, raw in letter.headers]
    refusal = redrive_refusal(letter)
    document = {
        **letter.summary(),
        "topic": letter.topic,
        "key": header_preview(letter.key) if letter.key is not None else None,
        "headers": headers,
        "value": value,
        "redrivable": refusal is None,
        "not_redrivable_because": refusal,
    }
    if as_json:
        _print_json(document)
        return
    typer.echo(f"{letter.topic} {letter.ref}  ({document['time'] or 'no timestamp'})")
    typer.echo(f"service: {document['service']}")
    typer.echo(f"source:  {document['source'] or '-'}")
    typer.echo(f"reason:  {document['reason']}")
    typer.echo(f"key:     {document['key'] if document['key'] is not None else '-'}")
    typer.echo("headers:")
    for key, shown in headers:
        typer.echo(f"  {key}: {shown}")
    size = f"{value['bytes']} bytes"
    if value.get("original_bytes") is not None:
        size += f" (cut from {value['original_bytes']})"
    if "event" in value:
        typer.echo(f"value:   {value['event_type']} event, {size}")
        typer.echo(json.dumps(value["event"], indent=2, sort_keys=True, default=str))
    else:
        typer.echo(f"value:   {size}, not an event: {value.get('decode_error', 'empty')}")
        more = " (first part)" if value.get("preview_truncated") else ""
        if "text" in value:
            typer.echo(f"as text{more}:\n{value['text']}")
        elif value.get("hex"):
            typer.echo(f"as hex{more}:\n{value['hex']}")
    typer.echo(
        "redrive: possible (landfall dlq redrive " + letter.ref + ")"
        if refusal is None
        else f"redrive: refused, {refusal}"
    )


@app.command()
def redrive(
    refs: Annotated[
        list[str] | None, typer.Argument(help="partition@offset of each message to redrive")
    ] = None,
    reason_contains: Annotated[
        str | None, typer.Option(help="every message whose reason contains this (any case)")
    ] = None,
    all_: Annotated[bool, typer.Option("--all", help="every message on the topic")] = False,
    dry_run: Annotated[bool, typer.Option(help="say what would be redriven, do nothing")] = False,
    as_json: JsonOption = False,
    config: ConfigOption = None,
) -> None:
    """Re-produce dead letters to their source topic after a fix, recording the redrive.

    Each goes with its original key, bytes and headers to the partition it came from,
    plus landfall.redrive.ref and landfall.redrive.at; the dead letter stays where it
    is. A message whose value was cut is refused. Exit 2 if any is refused.
    """
    from landfall.dlq import redrive as produce_again

    chosen = sum((bool(refs), reason_contains is not None, all_))
    try:
        if chosen != 1:
            raise LandfallError(
                "say which messages to redrive: REF... (partition@offset), "
                "--reason-contains TEXT or --all (one of them)"
            )
        settings = publishing_settings(config, "dlq redrive")
        letters = _letters_to_redrive(settings, refs, reason_contains)
        results = produce_again(settings, letters, dry_run=dry_run)
    except LandfallError as exc:
        fail(exc)
    _say_redriven(results, dry_run=dry_run, as_json=as_json, matched=bool(letters))
    if any(r.refused is not None for r in results):
        raise typer.Exit(code=2)


def _letters_to_redrive(
    settings: Settings, refs: list[str] | None, reason_contains: str | None
) -> list[DeadLetterMessage]:
    """The letters named one by one, or all those whose reason matches (all if no text)."""
    from landfall.dlq import read_dead_letters, read_one, redrive_refusal

    if not refs:
        return [
            letter
            for letter in read_dead_letters(settings)
            if _selected(letter.reason, reason_contains)
        ]
    letters = [read_one(settings, ref) for ref in dict.fromkeys(refs)]
    # Named one by one: a message that cannot go stops them all, before any goes.
    refused = [(m.ref, redrive_refusal(m)) for m in letters if redrive_refusal(m)]
    if refused:
        raise LandfallError(
            "nothing redriven: "
            + "; ".join(f"{ref} cannot be redriven: {why}" for ref, why in refused)
        )
    return letters


def _say_redriven(results: list[Redriven], *, dry_run: bool, as_json: bool, matched: bool) -> None:
    """What was (or would be) redriven and what was refused, as lines or JSON."""
    done = [r for r in results if r.redriven_to is not None]
    refused_ = [r for r in results if r.refused is not None]
    verb = "would redrive" if dry_run else "redrove"
    for result in done:
        log.info("%s dead letter %s to %s", verb, result.ref, result.redriven_to)
    if as_json:
        _print_json(
            {
                "dry_run": dry_run,
                "redriven": [{"ref": r.ref, "source": r.source, "to": r.redriven_to} for r in done],
                "refused": [
                    {"ref": r.ref, "source": r.source, "reason": r.refused} for r in refused_
                ],
            }
        )
    else:
        for result in results:
            if result.redriven_to is not None:
                typer.echo(f"{verb} {result.ref} (from {result.source}) -> {result.redriven_to}")
            else:
                typer.echo(f"refused {result.ref} (from {result.source}): {result.refused}")
        typer.echo(
            f"summary: {verb} {len(done)}, refused {len(refused_)}"
            + ("" if matched else " (no dead letter matched)")
        )
