"""YAML loading that remembers line numbers, so every config error names file:line.

The one module that reads YAML files (:func:`load_yaml`, :func:`read_yaml_file`,
:func:`read_yaml_dir`); the loaders of ``config.py`` (daemon config),
``hl7v2/mapping.py`` (mappings) and ``assemble.py`` (QA policy, vocabularies,
routing policy) call them and hand the parsed documents to the pure builders.

Usage::

    doc = load_yaml(path)                 # a YamlMap (dict) with line numbers
    section = doc.get_map("fields")       # typed access, ConfigError on mismatch
    doc.reject_unknown({"fields", "version"})
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from listener.errors import ConfigError


class YamlMap(dict[str, Any]):
    """A YAML mapping that knows its file and the line of each key."""

    path: str = ""
    line: int | None = None
    key_lines: dict[str, int]

    def line_of(self, key: str) -> int | None:
        """1-based line of ``key``, or of the mapping itself when the key is absent."""
        return self.key_lines.get(key, self.line)

    def error(self, key: str | None, message: str) -> ConfigError:
        """Build a ConfigError located at ``key`` (or at the mapping)."""
        line = self.line_of(key) if key is not None else self.line
        return ConfigError(message, path=self.path, line=line)

    def reject_unknown(self, allowed: set[str] | frozenset[str], where: str = "") -> None:
        """Refuse keys outside ``allowed``: a typo must not be silently ignored."""
        for key in self:
            if key not in allowed:
                prefix = f"{where}: " if where else ""
                raise self.error(key, f"{prefix}unknown key {key!r} (expected one of: {', '.join(sorted(allowed))})")

    def get_map(self, key: str, *, required: bool = False) -> YamlMap:
        """Return the mapping under ``key`` (empty when absent and not required)."""
        value = self.get(key)
        if value is None:
            if required:
                raise self.error(None, f"missing required key {key!r}")
            empty = YamlMap()
            empty.path, empty.line, empty.key_lines = self.path, self.line_of(key), {}
            return empty
        if not isinstance(value, YamlMap):
            raise self.error(key, f"{key!r} must be a mapping")
        return value

    def get_list(self, key: str, *, required: bool = False) -> YamlList:
        """Return the list under ``key``; a single scalar is taken as a one-item list."""
        value = self.get(key)
        if value is None:
            if required:
                raise self.error(None, f"missing required key {key!r}")
            value = YamlList()
        elif not isinstance(value, list):
            if isinstance(value, dict):
                raise self.error(key, f"{key!r} must be a list")
            value = YamlList([value])
        if not isinstance(value, YamlList):
            value = YamlList(value)
        value.path, value.line = self.path, self.line_of(key)
        return value

    def get_str(self, key: str, default: str | None = None) -> str:
        """Return a string value (numbers are accepted and converted)."""
        value = self.get(key, default)
        if value is None:
            raise self.error(None, f"missing required key {key!r}")
        if isinstance(value, (dict, list, bool)):
            raise self.error(key, f"{key!r} must be a string")
        return str(value)

    def get_number(self, key: str, default: float | None = None, *, minimum: float | None = None) -> float:
        """Return a number, optionally bounded below."""
        value = self.get(key, default)
        if value is None:
            raise self.error(None, f"missing required key {key!r}")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.error(key, f"{key!r} must be a number")
        if minimum is not None and value < minimum:
            raise self.error(key, f"{key!r} must be at least {minimum:g}")
        return float(value)

    def get_bool(self, key: str, default: bool | None = None) -> bool:
        """Return a boolean (YAML true/false only)."""
        value = self.get(key, default)
        if not isinstance(value, bool):
            raise self.error(key, f"{key!r} must be true or false")
        return value

    def get_choice(self, key: str, choices: tuple[str, ...], default: str | None = None) -> str:
        """Return a string that must be one of ``choices``."""
        value = self.get_str(key, default)
        if value not in choices:
            raise self.error(key, f"{key!r} must be one of: {', '.join(choices)}")
        return value


class YamlList(list[Any]):
    """A YAML sequence that knows its file and line."""

    path: str = ""
    line: int | None = None
    item_lines: list[int | None]

    def line_of(self, index: int) -> int | None:
        lines = getattr(self, "item_lines", [])
        return lines[index] if index < len(lines) and lines[index] is not None else self.line

    def error(self, index: int | None, message: str) -> ConfigError:
        line = self.line_of(index) if index is not None else self.line
        return ConfigError(message, path=self.path, line=line)

    def strings(self) -> tuple[str, ...]:
        """Every item as a string; a nested mapping or list is an error."""
        out = []
        for i, item in enumerate(self):
            if isinstance(item, (dict, list, bool)) or item is None:
                raise self.error(i, "list items must be strings")
            out.append(str(item))
        return tuple(out)


#: libyaml's parser and composer when PyYAML was built with it: a tenth of the pure-Python ones' CPU
#: at every start and reload (docs/development.md, "Start-up cost"). Its nodes carry the same line
#: marks, so every error still names file:line. (Typed as SafeLoader, whose constructor it shares.)
if TYPE_CHECKING:
    _BASE_LOADER = yaml.SafeLoader
else:
    _BASE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _LineLoader(_BASE_LOADER):
    """A safe loader building YamlMap/YamlList with line numbers; duplicate keys refused."""

    source_path = ""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> YamlMap:  # type: ignore[override]
        result = YamlMap()
        result.path = self.source_path
        result.line = node.start_mark.line + 1
        result.key_lines = {}
        self.flatten_mapping(node)
        for key_node, value_node in node.value:
            key = self.construct_object(key_node, deep=True)
            if not isinstance(key, (str, int, float)) or isinstance(key, bool):
                raise ConfigError(
                    "mapping keys must be strings", path=self.source_path, line=key_node.start_mark.line + 1
                )
            key = str(key)
            if key in result:
                raise ConfigError(f"duplicate key {key!r}", path=self.source_path, line=key_node.start_mark.line + 1)
            result[key] = self.construct_object(value_node, deep=True)
            result.key_lines[key] = key_node.start_mark.line + 1
        return result

    def construct_yaml_seq_lines(self, node: yaml.SequenceNode) -> YamlList:
        result = YamlList(self.construct_object(child, deep=True) for child in node.value)
        result.path = self.source_path
        result.line = node.start_mark.line + 1
        result.item_lines = [child.start_mark.line + 1 for child in node.value]
        return result


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _LineLoader.construct_mapping)
_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _LineLoader.construct_yaml_seq_lines)


def parse_yaml(text: str, path: str) -> YamlMap:
    """Parse YAML text whose top level must be a non-empty mapping; errors name ``path:line``.

    Raises:
        ConfigError: invalid YAML, an empty document, or a top level that is not a mapping.
    """
    loader = _LineLoader(text)
    loader.source_path = path
    try:
        doc = loader.get_single_data()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        column = mark.column + 1 if mark is not None else None
        raise ConfigError(f"invalid YAML: {exc.problem or exc.context}", path=path, line=line, column=column) from None
    except yaml.YAMLError:
        raise ConfigError("invalid YAML", path=path) from None
    finally:
        loader.dispose()
    # Every file we read configures something: an empty one (blank, comments
    # only, or ``{}``) is a truncated or emptied file, and taking it for "all
    # defaults" would shrink the configuration without a word.
    if doc is None or (isinstance(doc, YamlMap) and not doc):
        raise ConfigError("the file is empty: it holds no settings", path=path, line=1)
    if not isinstance(doc, YamlMap):
        raise ConfigError("the top level must be a mapping", path=path, line=1)
    return doc


#: Nesting a pasted document may have (the routing policy needs 5: rules, a rule, when, a condition, a list).
UNTRUSTED_MAX_DEPTH = 20


def parse_untrusted_yaml(text: str, path: str, *, max_bytes: int) -> YamlMap:
    """Parse YAML a user pasted (the console's what-if, docs/console.md) as :func:`parse_yaml` does,
    after refusing what could make the parse or the loader's walk blow up.

    Refused, naming the line: more than ``max_bytes`` bytes of UTF-8; anchors and
    aliases (``&a`` / ``*a``: a few lines of nested aliases expand to billions of
    items for any code that walks the document, "billion laughs"); nesting deeper than
    :data:`UNTRUSTED_MAX_DEPTH` (PyYAML composes recursively). The first pass reads only
    the parser's events, never building the document. Error messages hold the
    file name, line, column and what was wrong, never the document's text.

    Raises:
        ConfigError: any of those, or whatever :func:`parse_yaml` refuses.
    """
    size = len(text.encode("utf-8", "replace"))
    if size > max_bytes:
        raise ConfigError(f"{size:,} bytes is more than the {max_bytes:,} accepted", path=path)
    depth = 0
    try:
        for event in yaml.parse(text, Loader=yaml.SafeLoader):
            line = event.start_mark.line + 1 if event.start_mark is not None else None
            if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
                raise ConfigError("anchors and aliases (&name, *name) are not accepted here", path=path, line=line)
            if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
                depth += 1
                if depth > UNTRUSTED_MAX_DEPTH:
                    raise ConfigError(f"nested deeper than {UNTRUSTED_MAX_DEPTH} levels", path=path, line=line)
            elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
                depth -= 1
    except yaml.YAMLError:
        pass  # parse_yaml reports the syntax error with its line and column
    return parse_yaml(text, path)


def load_yaml(path: str | Path) -> YamlMap:
    """Read and parse a YAML file; an unreadable file is a ConfigError."""
    name = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError("file not found", path=name) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read file ({type(exc).__name__})", path=name) from None
    return parse_yaml(text, name)


@dataclass(frozen=True, slots=True)
class YamlFile:
    """One YAML file as read: its path, its bytes (for version hashes) and its parsed document."""

    path: Path
    raw: bytes
    doc: YamlMap


def read_yaml_file(path: str | Path) -> YamlFile:
    """Read and parse a YAML file, keeping its bytes; an unreadable file is a ConfigError."""
    name = str(path)
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        raise ConfigError("file not found", path=name) from None
    except OSError as exc:
        raise ConfigError(f"cannot read file ({type(exc).__name__})", path=name) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"cannot read file ({type(exc).__name__})", path=name) from None
    return YamlFile(Path(path), raw, parse_yaml(text, name))


def read_yaml_dir(directory: str | Path) -> tuple[YamlFile, ...]:
    """Every ``*.yaml`` file of ``directory`` (not below it), in name order.

    Raises:
        ConfigError: the directory is missing, or a file is unreadable or invalid.
    """
    folder = Path(directory)
    if not folder.is_dir():
        raise ConfigError("directory not found", path=str(folder))
    return tuple(read_yaml_file(path) for path in sorted(folder.glob("*.yaml")))
