"""Tests for the per-destination settings loader (``listener.destinations``).

The shipped example must load; every mistake must be refused with the file and
the line of the offending key.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from listener.destinations import (
    CARRIERS,
    DestinationSettings,
    MessageSettings,
    RetrySettings,
    load_destinations,
    parse_destinations,
)
from listener.errors import ConfigError

EXAMPLE = Path(__file__).resolve().parents[2] / "mappings" / "destinations.yaml"


def parse(text: str, base_dir: Path | None = None) -> tuple[DestinationSettings, ...]:
    """Parse dedented YAML text named ``dest.yaml``."""
    return parse_destinations(textwrap.dedent(text), "dest.yaml", base_dir=base_dir)


def refused(text: str, base_dir: Path | None = None) -> ConfigError:
    """The ConfigError that parsing ``text`` raises."""
    with pytest.raises(ConfigError) as info:
        parse(text, base_dir)
    return info.value


def test_shipped_example_loads_with_documented_defaults() -> None:
    """mappings/destinations.yaml loads: one ORM^O01 2.5.1 destination with every carrier."""
    (ris,) = load_destinations(EXAMPLE)
    assert ris.name == "ris"
    assert ris.endpoint == "tcp:host=127.0.0.1:port=6661"
    assert ris.tls is None and ris.enabled
    assert ris.message.message_type == "ORM^O01"
    assert ris.message.version == "2.5.1"
    assert (ris.message.sending_application, ris.message.sending_facility) == ("OVERREAD", "READCO")
    assert (ris.message.receiving_application, ris.message.receiving_facility) == ("RIS", "HOSP")
    assert ris.message.carriers == frozenset(CARRIERS)
    assert ris.message.send_release and not ris.message.child_order
    assert ris.retry == RetrySettings(10, 5.0, 600.0, 30.0, "dead_letter")


def test_minimal_destination_gets_defaults() -> None:
    """Only an endpoint: default message and retry settings."""
    (dest,) = parse(
        """
        destinations:
          ris:
            endpoint: tcp:ris.example:6661
        """
    )
    assert dest.message == MessageSettings()
    assert dest.retry == RetrySettings()


def test_v231_defaults_to_every_carrier_but_orc25() -> None:
    """2.3.1 has no ORC-25, so its default carriers leave it out."""
    (dest,) = parse(
        """
        destinations:
          old:
            endpoint: tcp:host=old.example:port=5000
            message: {version: "2.3.1", send_release: false, child_order: true}
        """
    )
    assert dest.message.carriers == frozenset({"zrt", "obx", "nte"})
    assert dest.message.send_release is False
    assert dest.message.child_order is True


def test_every_setting_is_read() -> None:
    """A destination that sets everything gets exactly that."""
    (dest,) = parse(
        """
        version: 1
        destinations:
          engine-2:
            endpoint: tcp:host=engine.example:port=2575
            enabled: false
            message:
              type: OMI^O23
              version: "2.5.1"
              sending_application: OVR
              sending_facility: READ
              receiving_application: PACS
              receiving_facility: SITE
              processing_id: T
              charset: latin-1
              carriers: [zrt, obx]
              send_release: false
              child_order: true
            retry:
              max_attempts: 3
              backoff_base_seconds: 1.5
              backoff_max_seconds: 60
              ack_timeout_seconds: 10
              on_reject: retry
        """
    )
    assert dest.enabled is False
    assert dest.message == MessageSettings(
        "OMI^O23", "2.5.1", "OVR", "READ", "PACS", "SITE", "T", "latin-1", frozenset({"zrt", "obx"}), False, True
    )
    assert dest.retry == RetrySettings(3, 1.5, 60.0, 10.0, "retry")


def test_destinations_keep_file_order() -> None:
    """Several destinations come back in the order of the file."""
    dests = parse(
        """
        destinations:
          b: {endpoint: "tcp:host=b:port=1"}
          a: {endpoint: "tcp:host=a:port=2"}
        """
    )
    assert [d.name for d in dests] == ["b", "a"]


def test_tls_paths_resolve_against_the_file_and_must_exist(tmp_path: Path) -> None:
    """Relative TLS paths are read from the YAML file's folder; a missing one is refused at its line."""
    (tmp_path / "client.pem").write_text("cert")
    (tmp_path / "client.key").write_text("key")
    config = tmp_path / "destinations.yaml"
    config.write_text(
        textwrap.dedent(
            """\
            destinations:
              ris:
                endpoint: ssl:host=ris.example:port=6662
                tls:
                  certificate: client.pem
                  private_key: client.key
            """
        )
    )
    (dest,) = load_destinations(config)
    assert dest.tls is not None
    assert dest.tls.certificate == str(tmp_path / "client.pem")
    assert dest.tls.ca == ""
    config.write_text(config.read_text() + "      ca: missing-ca.pem\n")
    with pytest.raises(ConfigError) as info:
        load_destinations(config)
    assert (info.value.path, info.value.line) == (str(config), 7)
    assert "'ca' file not found" in str(info.value)


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        ("destinations:\n  ris:\n    endpoint: tcp:host=a:port=1\n    retries: 3\n", 4, "unknown key 'retries'"),
        (
            "destinations:\n  ris:\n    endpoint: tcp:host=a:port=1\n    message:\n      typ: ORM^O01\n",
            5,
            "unknown key 'typ'",
        ),
        (
            "destinations:\n  ris:\n    endpoint: tcp:host=a:port=1\n    retry:\n      max_attempt: 3\n",
            5,
            "unknown key 'max_attempt'",
        ),
        ("destinations:\n  ris:\n    endpoint: http://ris.example\n", 3, "Twisted client endpoint"),
        ("destinations:\n  ris:\n    endpoint: tcp:host=ris.example:port=99999\n", 3, "port from 1 to 65535"),
        ("destinations:\n  ris:\n    endpoint: tcp:host=ris.example\n", 3, "port from 1 to 65535"),
        ("destinations:\n  ris:\n    endpoint: tcp:host=a:port=1:timeout=5\n", 3, "host and a port only"),
        ("destinations:\n  ris:\n    endpoint: tcp:a:1:2\n", 3, "host and a port only"),
        ("destinations:\n  ris:\n    enabled: true\n", 2, "missing required key 'endpoint'"),
        (
            "destinations:\n  ris:\n    endpoint: tcp:a:1\n    message:\n      type: ORU^R01\n",
            5,
            "'type' must be one of",
        ),
        (
            "destinations:\n  ris:\n    endpoint: tcp:a:1\n    message:\n      version: 2.4\n",
            5,
            "'version' must be one of",
        ),
        (
            "destinations:\n  ris:\n    endpoint: tcp:a:1\n    message:\n      version: '2.3.1'\n      type: OMI^O23\n",
            6,
            "OMI^O23 needs version 2.5.1",
        ),
        (
            "destinations:\n  ris:\n    endpoint: tcp:a:1\n    message:\n      version: '2.3.1'\n      carriers:\n        - zrt\n        - orc25\n",
            8,
            "ORC-25 does not exist in 2.3.1",
        ),
        (
            "destinations:\n  ris:\n    endpoint: tcp:a:1\n    message:\n      carriers: [zrt, pid]\n",
            5,
            "unknown carrier 'pid'",
        ),
        (
            "destinations:\n  ris:\n    endpoint: tcp:a:1\n    message:\n      carriers: [nte]\n",
            5,
            "must include orc25, zrt or obx",
        ),
        (
            "destinations:\n  ris:\n    endpoint: tcp:a:1\n    message:\n      sending_application: 'A|B'\n",
            5,
            "without HL7 delimiters",
        ),
        (
            "destinations:\n  ris:\n    endpoint: tcp:a:1\n    message:\n      sending_application: ''\n",
            5,
            "must not be empty",
        ),
        (
            "destinations:\n  ris:\n    endpoint: tcp:a:1\n    message:\n      charset: ebcdic\n",
            5,
            "'charset' must be one of",
        ),
        (
            "destinations:\n  ris:\n    endpoint: tcp:a:1\n    message:\n      send_release: no-thanks\n",
            5,
            "true or false",
        ),
        ("destinations:\n  ris:\n    endpoint: tcp:a:1\n    retry:\n      max_attempts: 0\n", 5, "at least 1"),
        ("destinations:\n  ris:\n    endpoint: tcp:a:1\n    retry:\n      max_attempts: 2.5\n", 5, "whole number"),
        (
            "destinations:\n  ris:\n    endpoint: tcp:a:1\n    retry:\n      backoff_base_seconds: 60\n      backoff_max_seconds: 5\n",
            6,
            "at least 'backoff_base_seconds'",
        ),
        (
            "destinations:\n  ris:\n    endpoint: tcp:a:1\n    retry:\n      on_reject: ignore\n",
            5,
            "'on_reject' must be one of",
        ),
        (
            "destinations:\n  ris:\n    endpoint: tcp:a:1\n    tls:\n      certificate: x.pem\n",
            5,
            "missing required key 'private_key'",
        ),
        ("destinations:\n  Bad Name:\n    endpoint: tcp:a:1\n", 2, "destination name"),
        ("destinations:\n  ris: tcp:a:1\n", 2, "must be a mapping"),
        ("destinations: {}\n", 1, "at least one destination"),
        ("version: 2\ndestinations:\n  ris: {endpoint: 'tcp:a:1'}\n", 1, "'version' must be 1"),
        ("destination:\n  ris: {endpoint: 'tcp:a:1'}\n", 1, "unknown key 'destination'"),
    ],
)
def test_mistakes_are_refused_with_file_and_line(text: str, line: int, words: str) -> None:
    """Unknown keys, bad values and impossible combinations name dest.yaml and the line."""
    error = refused(text)
    assert error.path == "dest.yaml"
    assert error.line == line
    assert words in str(error)


def test_tls_needs_a_tls_endpoint(tmp_path: Path) -> None:
    """A client certificate on a plain tcp: endpoint is a mistake, not silently ignored."""
    (tmp_path / "c.pem").write_text("c")
    (tmp_path / "k.pem").write_text("k")
    error = refused(
        "destinations:\n  ris:\n    endpoint: tcp:a:1\n    tls:\n      certificate: c.pem\n      private_key: k.pem\n",
        tmp_path,
    )
    assert error.line == 4
    assert "needs an ssl: or tls: endpoint" in str(error)


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    """A missing destinations file is a ConfigError naming it."""
    with pytest.raises(ConfigError) as info:
        load_destinations(tmp_path / "nope.yaml")
    assert info.value.path == str(tmp_path / "nope.yaml")
