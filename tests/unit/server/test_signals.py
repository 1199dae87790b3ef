"""Signals in isolation: journald priorities, bounded sender labels, directory findings, config check, reload diff."""

from __future__ import annotations

import dataclasses
import io
import json
import os
from pathlib import Path

import pytest

from listener.config import load_config
from listener.logs import configure_logging, get_logger, stream_is_journal
from listener.model import Reader
from listener.pipeline import READER_UNKNOWN, SITE_UNKNOWN, directory_findings
from listener.server.metrics import OTHER_SENDER, Metrics


@pytest.mark.usefixtures("restore_logging")  # the stream it logs to is closed afterwards
def test_journal_priority_prefix_only_on_the_journal_stream(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With JOURNAL_STREAM naming stdout, lines start <3> (error), <4>, <6>; another stream gets none."""
    with open(tmp_path / "out", "w+") as out:
        st = os.fstat(out.fileno())
        monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
        assert stream_is_journal(out)
        configure_logging("json", stream=out, cache=False)
        log = get_logger("t")
        log.error("config_invalid", path="x.yaml", line=3)
        log.warning("policy_reloaded")
        log.info("listening")
        out.flush()
        out.seek(0)
        lines = out.read().splitlines()
    assert [line[:3] for line in lines] == ["<3>", "<4>", "<6>"]
    assert json.loads(lines[0][3:])["line"] == 3
    assert not stream_is_journal(io.StringIO())
    monkeypatch.setenv("JOURNAL_STREAM", "1:2")
    with open(tmp_path / "other", "w") as other:
        assert not stream_is_journal(other)


def test_sender_labels_are_bounded_with_an_other_bucket() -> None:
    """The first N senders keep their names; later ones share 'other'; odd values are cleaned and cut."""
    metrics = Metrics(sender_limit=2)
    for app in ("RIS1", "RIS2", "RIS3", "RIS4"):
        metrics.message_answered("mllp", "default", "AA", sender=(app, "LEMC"))
    metrics.message_answered("mllp", "default", "AE", sender=("RIS1", "LEMC"))
    text = metrics.render().decode()
    assert 'sender_application="RIS1"' in text and 'sender_application="RIS2"' in text
    assert "RIS3" not in text and "RIS4" not in text
    assert (
        f'overread_sender_messages_total{{code="AA",sender_application="{OTHER_SENDER}",'
        f'sender_facility="{OTHER_SENDER}",transport="mllp"}} 2.0'
    ) in text
    assert metrics.sender_labels("  x\x00y" + "z" * 100, "") == (OTHER_SENDER, OTHER_SENDER)
    assert Metrics().sender_labels("  x\x00y" + "z" * 100, "") == ("xy" + "z" * 38, "none")


def test_directory_findings_for_unknown_site_and_reader() -> None:
    """A site not in sites.yaml and a reader id not in readers.yaml give warnings; known ones and no reader do not."""
    from tests.unit.qa.factory import make_report, pipeline

    qa = pipeline().qa  # a real QaConfig: a compiled pipeline checks the argument's type
    assert qa is not None
    directory = qa.directory
    site = next(iter(directory.sites.values()))
    reader = next(iter(directory.readers))
    known = dataclasses.replace(make_report("IMPRESSION: No acute abnormality."), site=site.code, reader=Reader(reader))
    assert directory_findings(known, qa) == ()
    unknown = dataclasses.replace(
        known,
        site="NOSUCHSITE",
        sender=dataclasses.replace(known.sender, facility="NOWHERE"),
        reader=Reader("NOSUCHREADER"),
    )
    assert [f.rule for f in directory_findings(unknown, qa)] == [SITE_UNKNOWN, READER_UNKNOWN]
    assert directory_findings(unknown, qa)[0].message.startswith("site unknown: default time zone used")
    assert directory_findings(dataclasses.replace(known, reader=None), qa) == ()
    assert directory_findings(unknown, None) == ()


def test_config_check_names_each_bad_file_with_its_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """overread config check: 0 on good files, 2 with file:line for each bad one; no state directory is created."""
    import shutil

    from listener.cli import main

    root = Path(__file__).resolve().parents[3]
    shutil.copytree(root / "mappings", tmp_path / "mappings")
    shutil.copytree(root / "policies", tmp_path / "policies")
    config = tmp_path / "overread.yaml"
    config.write_text("mappings: mappings\npolicies: policies\nstate_dir: state\n")
    assert main(["config", "check", "--config", str(config)]) == 0
    assert "config ok" in capsys.readouterr().out
    (tmp_path / "dest.yaml").write_text("destinations:\n  ris:\n    endpoint: nope\n")
    config.write_text("mappings: mappings\npolicies: policies\nstate_dir: state\ndestinations: dest.yaml\n")
    with (tmp_path / "policies" / "readers.yaml").open("a") as fh:
        fh.write("version: [\n")
    assert main(["config", "check", "--config", str(config)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert any(line.startswith(f"{tmp_path / 'policies' / 'readers.yaml'}:") for line in err)
    assert any(line.startswith(f"{tmp_path / 'dest.yaml'}:3:") for line in err)
    assert not (tmp_path / "state").exists()


def test_reload_keeps_restart_only_settings_and_names_them() -> None:
    """Reloaded.load: a changed listen endpoint and limit are named and kept at the running value."""
    from listener.server.daemon import Reloaded

    running = load_config(None)
    changed = dataclasses.replace(
        running, mllp_endpoint="tcp:9999", max_frame_size=2048, idle_timeout=running.idle_timeout
    )
    new = Reloaded.load(changed, running)
    assert new.deferred == ("mllp", "max_frame_size")
    assert (
        new.effective.mllp_endpoint == running.mllp_endpoint and new.effective.max_frame_size == running.max_frame_size
    )
    assert new.pipeline.routing_version and new.pipeline.mapping_version
    assert Reloaded.load(running, running).deferred == ()
    # Another store: the daemon keeps the one it opened, and so do its worker processes, which read
    # their priors from the store of the config they are given (listener/server/procworker.py).
    moved = dataclasses.replace(running, store_url="postgresql://overread@db2/overread")
    again = Reloaded.load(moved, running)
    assert again.deferred == ("store",)
    assert again.effective.store_url == running.store_url
