"""Where settings come from: one YAML file and ``LANDFALL_*`` environment variables.

Both are pydantic-settings sources; the environment wins over the file, the file over
the defaults. Every ``LANDFALL_*`` variable must name a setting (or be one landfall
reads elsewhere, :data:`OTHER_VARIABLES`): a misspelt one is an error naming it, never
a setting silently left at its default. Values are taken as given: ``0123`` stays the
string a password field needs, ``{dataset}/in`` the template a path field needs; only
a whole section or list given in one variable is read as JSON. An empty value means
"unset" (None), e.g. ``LANDFALL_TELEMETRY__TRACE_DIR=`` turns off the file's trace_dir.
"""

from __future__ import annotations

import difflib
import json
import types
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Annotated, Any, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError
from pydantic_settings import BaseSettings, EnvSettingsSource, YamlConfigSettingsSource

# What EnvSettingsSource itself applies to os.environ (env_parse_none_str included).
from pydantic_settings.sources.utils import parse_env_vars

from landfall.errors import ConfigError

ENV_PREFIX = "LANDFALL_"
NESTED_DELIMITER = "__"

# LANDFALL_* variables that are not settings: landfall (or its test suite) reads them
# itself. Anything else under the prefix must name a setting.
OTHER_VARIABLES = frozenset(
    {
        "LANDFALL_CONFIG",  # the settings file itself (load_settings, the CLI)
        "LANDFALL_LOG_LEVEL",  # landfall/cli.py, passed on by landfall/stack.py
        "LANDFALL_LOG_FORMAT",  # text or json log lines
        "LANDFALL_KAFKA_LIBS",  # landfall/broker.py: Apache Kafka's jars
        "LANDFALL_S3A_JARS",  # landfall/object_store.py: Spark's s3a connector
        "LANDFALL_JAEGER_BIN",  # landfall/jaeger.py: Jaeger's all-in-one binary
        "LANDFALL_JAEGER_UI",  # landfall/jaeger.py: Jaeger's UI assets
        "LANDFALL_JAEGER_SCREENSHOT",  # tests/e2e/test_jaeger.py
        "LANDFALL_CHAOS_TRIALS",  # tests/e2e/test_chaos.py
        "LANDFALL_FUZZ_MESSAGES",  # tests/e2e/test_hostile_input.py
        "LANDFALL_FUZZ_SEED",  # tests/e2e/test_hostile_input.py
    }
)
# The test suite's own knobs (LANDFALL_TEST_S3_ENDPOINT, LANDFALL_TEST_HDFS ...).
OTHER_PREFIXES = ("LANDFALL_TEST_",)

SettingsPath = tuple[str, ...]


def is_other_variable(name: str) -> bool:
    """Whether ``name`` is a LANDFALL_ variable landfall reads outside its settings."""
    return name in OTHER_VARIABLES or name.startswith(OTHER_PREFIXES)


class YamlFileSource(YamlConfigSettingsSource):
    """The settings file (None: no file, all defaults), its problems as ConfigErrors."""

    def __init__(self, settings_cls: type[BaseSettings], path: Path | None) -> None:
        if path is not None and not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        super().__init__(settings_cls, yaml_file=path)

    def _read_file(self, file_path: Any) -> dict[str, Any]:
        try:
            loaded = super()._read_file(file_path)
            self.lines = _key_lines(Path(file_path).read_text())
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {file_path} is not valid YAML: {exc}") from exc
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {file_path} must hold a mapping at the top level")
        return loaded

    def line_of(self, loc: tuple[int | str, ...]) -> int | None:
        """The file's line of the deepest key on ``loc`` it holds (None: not in the file)."""
        lines = getattr(self, "lines", {})
        for end in range(len(loc), 0, -1):
            if loc[:end] in lines:
                return lines[loc[:end]]
        return None


def _key_lines(text: str) -> dict[tuple[int | str, ...], int]:
    """Each key's (and list item's) path in a YAML document -> its 1-based line."""
    found: dict[tuple[int | str, ...], int] = {}

    def walk(node: yaml.Node, path: tuple[int | str, ...]) -> None:
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                inner = (*path, str(key.value))
                found[inner] = key.start_mark.line + 1
                walk(value, inner)
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                found[(*path, index)] = item.start_mark.line + 1
                walk(item, (*path, index))

    root = yaml.compose(text, Loader=yaml.SafeLoader)
    if root is not None:
        walk(root, ())
    return found


class EnvironmentSource(EnvSettingsSource):
    """``LANDFALL_*`` variables of ``environ``, each checked to name a setting.

    Two spellings: ``LANDFALL_<A>__<B>__<C>`` for any nested key (pydantic-settings'
    nested delimiter), and the shorter ``LANDFALL_<SECTION>_<KEY>`` for a key of a
    top-level section (``LANDFALL_KAFKA_BOOTSTRAP``, ``LANDFALL_RESULTS_DB_URL``), which
    is rewritten to the first before pydantic-settings reads it. ``origins`` records
    which variable set which settings path, for error messages.
    """

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]) -> None:
        self._environ = environ
        self.origins: dict[SettingsPath, str] = {}
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        nested: dict[str, str] = {}
        for name, value in sorted(self._environ.items()):
            if not name.startswith(ENV_PREFIX) or is_other_variable(name):
                continue
            path = settings_path(self.settings_cls, name)
            _check_json_value(self.settings_cls, name, path, value)
            if path in self.origins:  # both spellings, or two cases of one name
                raise ConfigError(
                    f"{self.origins[path]} and {name} both set {'.'.join(path)}: set it once"
                )
            self.origins[path] = name
            nested[ENV_PREFIX.lower() + NESTED_DELIMITER.join(path)] = value
        return parse_env_vars(nested, False, False, self.env_parse_none_str)

    def variables_for(self, loc: tuple[int | str, ...]) -> list[str]:
        """The variables that set the value at ``loc`` (a validation error's location).

        A variable that sets ``loc`` or a section holding it comes first; failing that,
        the variables that set keys below it (an error about a whole section).
        """
        path = tuple(str(part) for part in loc)
        above = [name for where, name in self.origins.items() if path[: len(where)] == where]
        if above:
            return above
        return [name for where, name in self.origins.items() if where[: len(path)] == path]


def settings_path(model: type[BaseModel], name: str) -> SettingsPath:
    """The settings path ``name`` (a LANDFALL_ variable) sets, or a ConfigError naming it."""
    key = name[len(ENV_PREFIX) :].lower()
    if NESTED_DELIMITER in key:
        path: SettingsPath | None = tuple(key.split(NESTED_DELIMITER))
    else:
        path = _section_key(model, key)
    if path is not None and all(path) and _annotation_at(model, path) is not _NOWHERE:
        return path
    candidates = _known_names(model) | _nearby_names(model, path or ())
    hint = difflib.get_close_matches(name, sorted(candidates), n=1, cutoff=0.75)
    suggestion = f" (did you mean {hint[0]}?)" if hint else ""
    raise ConfigError(
        f"unknown environment variable {name}: it names no setting{suggestion}. Settings "
        f"are {ENV_PREFIX}<SECTION>_<KEY> or {ENV_PREFIX}<A>__<B>__<C> for the key a.b.c"
    )


def _section_key(model: type[BaseModel], key: str) -> SettingsPath | None:
    # ``results_db_url``: the longest top-level field the key starts with is the section,
    # so results_db.url, not a section "results" (no such thing).
    if key in model.model_fields:
        return (key,)
    sections = [f for f in model.model_fields if key.startswith(f + "_") and len(key) > len(f) + 1]
    if not sections:
        return None
    section = max(sections, key=len)
    return (section, key[len(section) + 1 :])


class _Nowhere:
    """The annotation of a path that leads to no setting."""


_NOWHERE = _Nowhere()


def _annotation_at(model: type[BaseModel], path: SettingsPath) -> Any:
    """The type of the setting at ``path`` (any key of a dict field), or _NOWHERE."""
    annotation: Any = model
    for segment in path:
        annotation = _unwrap(annotation)
        if _is_model(annotation):
            field = annotation.model_fields.get(segment)
            if field is None:
                return _NOWHERE
            annotation = field.annotation
        elif get_origin(annotation) is dict:
            annotation = get_args(annotation)[1]
        else:
            return _NOWHERE
    return annotation


def _unwrap(annotation: Any) -> Any:
    """``X`` from ``Annotated[X, ...]`` and from ``X | None``; anything else unchanged."""
    if get_origin(annotation) is Annotated:
        return _unwrap(get_args(annotation)[0])
    if get_origin(annotation) in (Union, types.UnionType):
        members = [arg for arg in get_args(annotation) if arg is not type(None)]
        if len(members) == 1:
            return _unwrap(members[0])
    return annotation


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _check_json_value(model: type[BaseModel], name: str, path: SettingsPath, value: str) -> None:
    # A whole section, mapping or list in one variable is JSON; say so here, with the
    # variable named, rather than let a bare "{" reach a JSON parser's traceback.
    target = _unwrap(_annotation_at(model, path))
    container = get_origin(target) in (dict, list) or _is_model(target)
    if not value or not container:
        return
    try:
        json.loads(value)
    except ValueError:
        where = ".".join(path)
        raise ConfigError(
            f"{name} sets {where}, which holds several values: give it as JSON, or set "
            f"each key in a variable of its own ({name}{NESTED_DELIMITER}<KEY>)"
        ) from None


def _known_names(model: type[BaseModel]) -> set[str]:
    """Every variable name a near miss may have meant (nested keys to any depth)."""
    names = set(OTHER_VARIABLES)
    for path in _model_paths(model, ()):
        names.add(ENV_PREFIX + NESTED_DELIMITER.join(path).upper())
        if len(path) == 2:
            names.add(ENV_PREFIX + "_".join(path).upper())
    return names


def _nearby_names(model: type[BaseModel], path: SettingsPath) -> set[str]:
    """``path`` with its first wrong key replaced by each key its section has.

    What a near miss below a mapping meant (``datasets.demo.raw_pth``), which
    _known_names cannot list: the mapping's keys are the user's own.
    """
    names = set()
    for depth in range(len(path)):
        section = _unwrap(_annotation_at(model, path[:depth]))
        if _is_model(section) and path[depth] not in section.model_fields:
            for key in section.model_fields:
                fixed = (*path[:depth], key, *path[depth + 1 :])
                names.add(ENV_PREFIX + NESTED_DELIMITER.join(fixed).upper())
            break
    return names


def _model_paths(model: type[BaseModel], prefix: SettingsPath) -> Iterator[SettingsPath]:
    for field_name, field in model.model_fields.items():
        path = (*prefix, field_name)
        yield path
        inner = _unwrap(field.annotation)
        if _is_model(inner):
            yield from _model_paths(inner, path)


def validation_problems(
    exc: ValidationError, env: EnvironmentSource, file: YamlFileSource | None = None
) -> str:
    """Each problem as ``key (VARIABLE): message``, the variable named when one set it,
    else ``key: message (line N)`` when the settings file holds it."""
    problems = []
    for err in exc.errors():
        where = ".".join(str(part) for part in err["loc"])
        variables = env.variables_for(err["loc"])
        line = file.line_of(err["loc"]) if file is not None and not variables else None
        source = f" ({', '.join(variables)})" if variables else ""
        problems.append(f"{where}{source}: {err['msg']}" + (f" (line {line})" if line else ""))
    return "; ".join(problems)
