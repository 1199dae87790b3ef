"""Operating the daemon as an interface analyst does, against a real daemon and a test RIS
(docs/operations.md: finding one message, reprocessing, resending and unsticking, audit).

One daemon runs the whole story, the way the day-one deployment of a new feed goes:
a message is rejected, the mapping is fixed and reloaded, the resend is accepted; the analyst
finds it by accession, patient and control id, reads it with ``show`` and over HTTP, matches a
log line with ``hash``, reprocesses it, resends a routing message the RIS lost, unsticks a
destination in backoff with ``kick``, and reads the audit log.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import run_cli
from tests.integration.conftest import (
    REPO,
    MllpConnection,
    RunningDaemon,
    analyst_and_sender,
    free_port,
    msa,
    post_report,
    start_configured,
)
from tests.integration.ris import TestRis, write_destinations

SAMPLE = REPO / "samples" / "hl7" / "xr-chest-pneumothorax-no-communication.hl7"


def newris_message(control_id: str, accession: str, patient: str) -> bytes:
    """The sample as a new feed sends it: MSH-3 NEWRIS, the accession only in OBR-20 (placer field 2)."""
    segments = SAMPLE.read_bytes().split(b"\r")
    for n, segment in enumerate(segments):
        fields = segment.split(b"|")
        if segment.startswith(b"MSH|"):
            fields[2] = b"NEWRIS"
            fields[9] = control_id.encode()
        elif segment.startswith(b"PID|"):
            fields[3] = f"{patient}^^^LEMC^MR".encode()
        elif segment.startswith(b"ORC|"):
            fields[3] = b""
        elif segment.startswith(b"OBR|"):
            fields[3] = b""
            fields[18] = b""
            while len(fields) <= 20:
                fields.append(b"")
            fields[20] = accession.encode()
        segments[n] = b"|".join(fields)
    return b"\r".join(segments)


def overread(
    daemon: RunningDaemon, *args: str, config: Path | None = None, check: bool = True, process: bool = False
) -> subprocess.CompletedProcess[str]:
    """Run ``overread ARGS`` on the daemon's store, as an operator would: through ``listener.cli.main``
    in this process (:func:`run_cli`, the same code without a second of start-up), or with ``process``
    as a real ``python -m listener`` subprocess, for an exit status the shell sees."""
    where = ["--config", str(config)] if config is not None else []
    argv = [*args, "--state-dir", str(daemon.state_dir), *where]
    if process:
        result = subprocess.run(
            [sys.executable, "-m", "listener", *argv], capture_output=True, text=True, cwd=REPO, timeout=120
        )
    else:
        result = run_cli(*argv)
    if check:
        assert result.returncode == 0, (
            f"overread {' '.join(args)}: {result.returncode}\n{result.stdout}\n{result.stderr}"
        )
    return result


def json_lines(text: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


#: Bearer tokens of the test's HTTP clients: an analyst (allowed `operator`) and a sender (default permissions).
ANALYST = "analyst-token"
SENDER = "sender-token"


def get_json(daemon: RunningDaemon, path: str, token: str = ANALYST) -> tuple[int, object]:
    assert daemon.http_port is not None
    conn = http.client.HTTPConnection("127.0.0.1", daemon.http_port, timeout=30)
    try:
        conn.request("GET", path, headers={"Authorization": f"Bearer {token}"})
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


def wait_until(condition: object, timeout: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return
        time.sleep(0.1)
    raise AssertionError(f"{what}: not met within {timeout:.0f} s")


@pytest.fixture(name="setup")
def fixture_setup(tmp_path: Path) -> Iterator[tuple[RunningDaemon, TestRis, Path]]:
    """A daemon with its own copy of the mappings and one destination, the test RIS (slow backoff)."""
    ris = TestRis(free_port())
    ris.start()
    shutil.copytree(REPO / "mappings", tmp_path / "mappings")
    write_destinations(tmp_path / "destinations.yaml", ris)
    daemon, config = start_configured(
        tmp_path,
        "mappings: mappings\ndestinations: destinations.yaml\n" + analyst_and_sender(ANALYST, SENDER, "read, operator"),
    )
    try:
        yield daemon, ris, config
    finally:
        ris.stop()
        if daemon.proc is not None and daemon.proc.poll() is None:
            assert daemon.stop() == 0
        assert not [line for line in daemon.log_lines() if line.get("event") == "event_unlisted"]


def test_a_new_feed_from_rejection_to_routed_then_found_reprocessed_resent_kicked_audited(
    setup: tuple[RunningDaemon, TestRis, Path],
) -> None:
    daemon, ris, config = setup
    conn = MllpConnection(daemon.address)
    first = newris_message("NEW-1", "ACC-NEW-1", "ZZNEW001")

    # 1. The new feed's message has no accession where the default mapping looks: rejected (101).
    code, _ = msa(conn.request(first))
    assert code in ("AE", "CE")
    rejected = json_lines(overread(daemon, "messages", "--state", "rejected").stdout)
    assert [(m["message_id"], m["error_code"]) for m in rejected] == [("NEW-1", "101")]

    # 2. The analyst adds the feed's mapping and reloads; the sender resends the same message.
    (config.parent / "mappings" / "feeds" / "newris.yaml").write_text(
        'match:\n  sending_application: [NEWRIS]\nfields:\n  accession: ["OBR-20.1"]\n', encoding="utf-8"
    )
    reloads = sum(1 for line in daemon.log_lines() if line.get("event") == "policy_reloaded")
    assert daemon.proc is not None
    daemon.proc.send_signal(signal.SIGHUP)
    wait_until(
        lambda: sum(1 for line in daemon.log_lines() if line.get("event") == "policy_reloaded") > reloads, what="reload"
    )
    code, _ = msa(conn.request(first))
    assert code in ("AA", "CA")
    processed = [
        line
        for line in daemon.log_lines()
        if line.get("event") == "message_processed" and line.get("control_id") == "NEW-1"
    ]
    assert processed[-1]["processing"] == 2 and processed[-1]["reason"] == "resend_after_rejection"
    # An accepted message's resend gets the stored answer, unprocessed.
    code, _ = msa(conn.request(first))
    assert code in ("AA", "CA")
    assert [line.get("reason") for line in daemon.log_lines() if line.get("event") == "message_duplicate"][
        -1
    ] == "stored"

    # 3. Found by accession, by patient (with and without the authority) and by control id.
    by_accession = json_lines(overread(daemon, "messages", "--accession", "ACC-NEW-1").stdout)
    assert [(m["message_id"], m["state"], m["processing"]) for m in by_accession] == [("NEW-1", "processed", 2)]
    pk = by_accession[0]["message_pk"]
    assert [m["message_pk"] for m in json_lines(overread(daemon, "messages", "--patient-id", "ZZNEW001").stdout)] == [
        pk
    ]
    assert json_lines(overread(daemon, "messages", "--patient-id", "ZZNEW001", "--authority", "LEMC").stdout)
    assert not json_lines(overread(daemon, "messages", "--patient-id", "ZZNEW001", "--authority", "OTHER").stdout)
    assert [m["message_pk"] for m in json_lines(overread(daemon, "messages", "--message-id", "NEW-1").stdout)] == [pk]

    # 4. The routing message reaches the RIS; show tells the whole story.
    ris.wait_for(lambda: len(ris.received) >= 1)
    wait_until(
        lambda: (
            json.loads(overread(daemon, "show", "NEW-1", "--format", "json").stdout)["outbox"][0]["state"]
            == "delivered"
        ),
        what="delivered",
    )
    shown = json.loads(overread(daemon, "show", "NEW-1", "--format", "json").stdout)
    assert shown["processing"] == 2 and shown["state"] == "processed"
    assert "MSH|" in shown["raw"] and "MSA|" in shown["ack"]
    assert [p["state"] for p in shown["processings"]] == ["rejected"]
    assert shown["processings"][0]["error_code"] == "101" and shown["processings"][0]["superseded_by"] == "resend"
    (report,) = shown["reports"]
    assert report["accession"] == "ACC-NEW-1" and report["report"]["patient"]["id"] == "ZZNEW001"
    assert report["route"]["explanation"] and report["findings"]
    assert [e["event"] for e in shown["outbox"][0]["events"]] == ["delivered"]
    text = overread(daemon, "show", str(pk)).stdout
    for part in (
        "== our answer ==",
        "== raw body",
        "accession ACC-NEW-1",
        "why:",
        "evidence",
        "== routing messages (1) ==",
        "delivered",
        "processing 1 at",
        "replaced",
    ):
        assert part in text, part
    assert "ZZNEW001" not in overread(daemon, "show", str(pk), "--no-raw").stdout

    # 5. A log line's accession_h is found with `overread hash`.
    hashed = overread(daemon, "hash", "ACC-NEW-1").stdout.split("\t")[1].strip()
    assert processed[-1]["accession_h"] == hashed

    # 6. The same queries over HTTP.
    status, listing = get_json(daemon, "/api/messages?accession=ACC-NEW-1")
    assert status == 200 and [m["message_pk"] for m in listing] == [pk]  # type: ignore[union-attr,index]
    status, detail = get_json(daemon, f"/api/messages/{pk}")
    assert status == 200 and detail["processings"][0]["state"] == "rejected"  # type: ignore[index]
    assert get_json(daemon, "/api/messages/999999")[0] == 404
    assert get_json(daemon, "/api/messages?bogus=1")[0] == 400
    assert get_json(daemon, "/api/messages?limit=%C2%B2")[0] == 400
    assert get_json(daemon, "/api/messages?since=99999999999d")[0] == 400
    # A sender's token (default permissions: submit, read) does not open the message browser.
    assert get_json(daemon, "/api/messages?accession=ACC-NEW-1", token=SENDER)[0] == 403

    # 7. Reprocess: a dry run writes nothing; a real run keeps processing 2, queues nothing when
    #    the decision is unchanged, and --resend-routes queues a routing message with a new MSH-10.
    # Without --config the shipped mappings apply (no NEWRIS feed): it would be rejected again.
    bare = json_lines(overread(daemon, "reprocess", "NEW-1", "--dry-run", "--format", "json").stdout)
    assert bare[0]["after"]["state"] == "rejected" and bare[0]["changed"]
    dry = overread(daemon, "reprocess", "--state", "processed", "--dry-run", config=config).stdout
    assert "would reprocess 1 message" in dry
    assert json.loads(overread(daemon, "show", "NEW-1", "--format", "json").stdout)["processing"] == 2
    again = json_lines(overread(daemon, "reprocess", "NEW-1", "--format", "json", config=config).stdout)
    assert again[0]["processing"] == 3 and again[0]["queued"] == 0 and not again[0]["changed"]
    resent = json_lines(
        overread(daemon, "reprocess", "NEW-1", "--resend-routes", "--format", "json", config=config).stdout
    )
    assert resent[0]["processing"] == 4 and resent[0]["queued"] == 1
    ris.wait_for(lambda: len(ris.received) >= 2)
    assert ris.received[1][0] != ris.received[0][0]  # a new decision, a new MSH-10

    # 8. Resend: the RIS lost the latest routing message; the same bytes and MSH-10 go again.
    #    The older one is refused (a newer decision was delivered since), unless forced.
    rows = json_lines(overread(daemon, "outbox", "list", "--format", "json").stdout)
    wait_until(
        lambda: all(
            r["state"] == "delivered" for r in json_lines(overread(daemon, "outbox", "list", "--format", "json").stdout)
        ),
        what="both delivered",
    )
    older = rows[0]["id"]
    refused = overread(daemon, "outbox", "resend", str(older), check=False, process=True)
    assert refused.returncode == 1 and "later decision" in refused.stderr
    overread(daemon, "outbox", "resend", "--accession", "ACC-NEW-1")
    ris.wait_for(lambda: len(ris.received) >= 3)
    assert ris.received[2] == ris.received[1]

    # 9. Kick: the RIS is down, the worker backs off for minutes; list says why; once the RIS is
    #    back, a kick delivers at the next poll.
    ris.stop()
    code, _ = msa(conn.request(newris_message("NEW-2", "ACC-NEW-2", "ZZNEW002")))
    assert code in ("AA", "CA")
    wait_until(lambda: "cannot connect" in overread(daemon, "outbox", "list").stdout, what="connection error shown")
    listed = json_lines(overread(daemon, "outbox", "list", "--format", "json", "--state", "pending").stdout)
    assert listed and listed[0]["connect_error"]
    ris.start()
    time.sleep(3)
    assert len(ris.received) == 3  # still in backoff
    assert "kicked destination ris" in overread(daemon, "outbox", "kick", "ris").stdout
    ris.wait_for(lambda: len(ris.received) >= 4, timeout=20)
    assert any(line.get("event") == "outbox_kicked" for line in daemon.log_lines())
    conn.close()

    # 10. Every action is audited, with who did it and how many rows.
    audit = json_lines(overread(daemon, "audit", "--format", "json").stdout)
    assert [a["action"] for a in audit] == ["reprocess", "reprocess", "outbox resend", "outbox resend", "outbox kick"]
    assert all(a["actor"] and a["via"] == "cli" for a in audit)
    assert [a["rows"] for a in audit] == [1, 1, 0, 1, 1]
    status, over_http = get_json(daemon, "/api/audit?action=outbox+kick")
    assert status == 200 and len(over_http) == 1  # type: ignore[arg-type]


def test_a_refused_fhir_body_is_accepted_on_resend_after_the_client_is_reconfigured(tmp_path: Path) -> None:
    """A FHIR body refused for a vendor field is stored rejected; after the client is allowed extra
    fields (SIGHUP), the same body is processed again and replaces the refusal (processing 2)."""
    token = "operate-token"
    digest = hashlib.sha256(token.encode()).hexdigest()
    config = tmp_path / "overread.yaml"

    def write(extra: bool) -> None:
        config.write_text(
            "http_clients:\n"
            f"  vendor: {{token_sha256: {digest}, accept_extra_fields: {'true' if extra else 'false'}}}\n",
            encoding="utf-8",
        )

    write(False)
    body = json.loads((REPO / "samples" / "fhir" / "xr-chest-2v-normal.json").read_text())
    body["vendorScore"] = 7  # not a FHIR element
    data = json.dumps(body).encode()
    logs = tmp_path / "logs"
    logs.mkdir()
    daemon = RunningDaemon(tmp_path / "state", logs, extra=("--config", str(config)))
    daemon.start()
    try:

        def post() -> int:
            return post_report(daemon, data, token)[0]

        refused = post()
        assert 400 <= refused < 500
        assert post() == refused  # the same refusal while nothing changed
        (stored,) = json_lines(overread(daemon, "messages").stdout)
        assert stored["state"] == "rejected"
        write(True)
        reloads = sum(1 for line in daemon.log_lines() if line.get("event") == "policy_reloaded")
        assert daemon.proc is not None
        daemon.proc.send_signal(signal.SIGHUP)
        wait_until(
            lambda: sum(1 for line in daemon.log_lines() if line.get("event") == "policy_reloaded") > reloads,
            what="reload",
        )
        assert post() == 201
        (after,) = json_lines(overread(daemon, "messages").stdout)
        assert (
            after["message_pk"] == stored["message_pk"] and after["state"] == "processed" and after["processing"] == 2
        )
        assert post() == 201  # accepted now: the stored answer
        shown = json.loads(overread(daemon, "show", str(after["message_pk"]), "--format", "json").stdout)
        assert [p["state"] for p in shown["processings"]] == ["rejected"]
    finally:
        if daemon.proc is not None and daemon.proc.poll() is None:
            assert daemon.stop() == 0


def _with_msh(raw: bytes, control_id: bytes, charset: bytes) -> bytes:
    """``raw`` with MSH-10 ``control_id`` (bytes as sent) and MSH-18 ``charset`` ("" leaves it out)."""
    segments = raw.split(b"\r")
    fields = segments[0].split(b"|")
    fields[9] = control_id
    if charset:
        fields += [b""] * (18 - len(fields))
        fields[17] = charset
    segments[0] = b"|".join(fields)
    return b"\r".join(segments)


def test_non_ascii_control_ids_are_found_and_shown_as_sent(tmp_path: Path) -> None:
    """A control id outside ASCII is stored as its bytes read as latin-1 (the duplicate key stays
    byte-exact), so ``é`` in a UTF-8 message was shown as ``Ã©`` and found by nothing typed as it
    reads. ``overread show``, ``messages --control-id``, ``/api/messages`` and the console's search
    now take the text as typed and show the text as the sender wrote it, in a UTF-8 message (no
    MSH-18) and in a latin-1 one (MSH-18 8859/1); a resend is still answered from the store
    (docs/operations.md, "Finding one message")."""
    from urllib.parse import quote

    from tests.integration.test_console import Browser, _client
    from tests.integration.test_history import _get

    analyst = "analyst-ctlid-token-1"
    daemon, config = start_configured(tmp_path, "http_clients:\n" + _client("analyst", analyst, "console, operator"))
    try:
        utf8 = _with_msh(SAMPLE.read_bytes(), "é-ü-1".encode(), b"")
        latin = _with_msh(SAMPLE.read_bytes(), "é".encode("latin-1"), b"8859/1")
        conn = MllpConnection(daemon.address)
        try:
            acks = [conn.request(raw) for raw in (utf8, latin)]
            assert [msa(ack)[0] for ack in acks] == ["CA", "CA"]
            assert b"MSA|CA|" + "é-ü-1".encode() in acks[0] and b"MSA|CA|\xe9" in acks[1]
            # Duplicates: the stored answers, byte for byte, and nothing stored again.
            assert [conn.request(raw) for raw in (utf8, latin)] == acks
        finally:
            conn.close()
        listed = overread(daemon, "messages", "--format", "json").stdout.splitlines()
        assert sorted(json.loads(line)["message_id"] for line in listed) == ["é", "é-ü-1"]
        pks = {}
        for typed in ("é-ü-1", "é"):
            found = overread(daemon, "messages", "--control-id", typed, "--format", "json").stdout.splitlines()
            assert len(found) == 1, found
            message = json.loads(found[0])
            assert message["message_id"] == typed
            pks[typed] = message["message_pk"]
            text = overread(daemon, "messages", "--control-id", typed, "--format", "text").stdout
            assert text.rstrip("\n").endswith(f"HALCYON_RIS/LEMC  {typed}")
            shown = overread(daemon, "show", typed, "--no-raw").stdout
            assert shown.startswith(f"message {pks[typed]}  control id {typed}  from HALCYON_RIS/LEMC"), shown
            detail = json.loads(overread(daemon, "show", typed, "--format", "json", "--no-raw").stdout)
            assert (detail["message_pk"], detail["message_id"]) == (pks[typed], typed)
        assert pks["é"] != pks["é-ü-1"]
        # The accession's history and a reprocess name each version's control id as sent, too.
        accession = detail["reports"][0]["accession"]
        history = json.loads(overread(daemon, "history", accession, "--format", "json").stdout)
        assert sorted(v["message_id"] for v in history["versions"]) == ["é", "é-ü-1"]
        redone = overread(daemon, "reprocess", "é", "--dry-run", "--format", "json").stdout
        assert [json.loads(line)["message_id"] for line in redone.splitlines()] == ["é"]
        assert "Ã" not in overread(daemon, "messages", "--format", "text").stdout
        assert overread(daemon, "show", "ü", check=False).returncode != 0

        for typed, pk in pks.items():
            status, api = _get(daemon, f"/api/messages?message_id={quote(typed)}", analyst)
            assert status == 200 and [(m["message_pk"], m["message_id"]) for m in api] == [(pk, typed)]
            status, one = _get(daemon, f"/api/messages/{pk}", analyst)
            assert status == 200 and one["message_id"] == typed

        browser = Browser(daemon)
        browser.sign_in(analyst)
        for typed, pk in pks.items():
            status, _, page = browser.request("GET", f"/console/messages?control_id={quote(typed)}")
            assert status == 200
            assert set(re.findall(r'href="/console/messages/(\d+)"', page)) == {str(pk)}
            assert f"<code>{typed}</code></a>" in page and "Ã" not in page
            status, _, page = browser.request("GET", f"/console/messages/{pk}")
            assert status == 200 and f"<dt>Control id</dt><dd><code>{typed}</code></dd>" in page
    finally:
        assert daemon.stop() == 0
