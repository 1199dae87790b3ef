"""The real daemon on a loopback port: ACKs, storage, duplicates, hostile input, order."""

from __future__ import annotations

import subprocess
import sys
import uuid
from datetime import UTC
from pathlib import Path

import hl7
import hl7.client

from listener.cli import split_file
from listener.hl7v2.ack import ack_code_for, should_send_accept_ack
from listener.hl7v2.segments import read_header
from tests.conformance.test_corpus_hl7 import EXPECTED
from tests.integration.conftest import (
    REPO,
    MllpConnection,
    RunningDaemon,
    message_ids,
    msa,
    new_messages,
    with_control_id,
)


def tag() -> str:
    """A suffix for a test's control IDs on the shared daemon: what it sends is no other test's (not a duplicate)."""
    return uuid.uuid4().hex[:6].upper()


def test_radiology_oru_gets_aa_and_is_listed(shared_daemon: RunningDaemon, oru: bytes) -> None:
    """A radiology ORU from the corpus is answered AA and shows up in `overread messages`."""
    daemon, raw = shared_daemon, with_control_id(oru, f"LISTED-{tag()}")
    before = message_ids(daemon)
    conn = MllpConnection(daemon.address)
    code, control = msa(conn.request(raw))
    conn.close()
    assert code == "AA"
    assert control == read_header(raw).control_id  # type: ignore[union-attr]
    listed = new_messages(daemon, before)
    assert [(m["message_id"], m["state"], m["ack_code"]) for m in listed] == [(control, "processed", "AA")]
    assert listed[0]["sender"] == {"application": "SOMERIS", "facility": "ABCHOSP"}


def test_duplicate_gets_the_same_ack_and_is_stored_once(shared_daemon: RunningDaemon, oru: bytes) -> None:
    """Re-sending the same MSH-3/4/10 returns the byte-identical stored ACK; one row only."""
    daemon, control_id = shared_daemon, f"DUP-{tag()}"
    oru = with_control_id(oru, control_id)
    before = message_ids(daemon)
    first = MllpConnection(daemon.address)
    ack1 = first.request(oru)
    first.close()
    second = MllpConnection(daemon.address)
    ack2 = second.request(oru)
    ack3 = second.request(oru)
    second.close()
    assert ack1 == ack2 == ack3
    assert [m["message_id"] for m in new_messages(daemon, before)] == [control_id]
    events = [line["event"] for line in daemon.log_lines() if line.get("control_id") == control_id]
    assert events.count("message_processed") == 1 and events.count("message_duplicate") == 2


def test_several_frames_in_one_write_are_answered_in_order(shared_daemon: RunningDaemon, oru: bytes) -> None:
    """Ten frames in one TCP write get ten ACKs whose MSA-2 follow the sending order."""
    daemon, suffix = shared_daemon, tag()
    ids = [f"ORDER{i:03d}-{suffix}" for i in range(10)]
    conn = MllpConnection(daemon.address)
    conn.send_raw(b"".join(b"\x0b" + with_control_id(oru, cid) + b"\x1c\r" for cid in ids))
    answers = [msa(conn.receive()) for _ in ids]
    conn.close()
    assert answers == [("AA", cid) for cid in ids]


def _expected_answer(raw: bytes, expected: str) -> str | None:
    outcome = (
        "AA"
        if expected.startswith("accepted") or expected.startswith("ignored")
        else ("AR" if expected in ("200", "201", "202", "203") else "AE")
    )
    header = read_header(raw)
    code = ack_code_for(header, outcome)
    return code if should_send_accept_ack(header, code) else None


def test_hostile_corpus_files_get_their_documented_answer(daemon: RunningDaemon, corpus: Path, oru: bytes) -> None:
    """Every non-radiology/hostile corpus file gets the answer its decode result implies
    (AE for content errors, AR for unsupported types, none for MSH-15 NE), and a fresh
    connection is still served AA after each one."""
    n = 0
    # Fuzz files share MSH-10: duplicates. An accepted key's resend gets the stored answer; a
    # rejected one's resend is processed again (docs/operations.md, "Reprocessing"), so it is
    # answered for its own bytes: identically only when the bytes are the same.
    first_answer: dict[tuple[str, str, str], tuple[bytes, bytes]] = {}
    for name, results in sorted(EXPECTED.items()):
        path = corpus / "hl7" / name
        messages = split_file(path, path.read_bytes())
        assert len(messages) == len(results), name
        conn = MllpConnection(daemon.address, timeout=3)
        for msg, expected in zip(messages, results, strict=True):
            raw = msg.raw.replace(b"\x1c", b"")
            want = _expected_answer(raw, expected)
            conn.send(raw)
            if want is None:
                continue
            ack = conn.receive()
            header = read_header(raw)
            key = (header.sending_application, header.sending_facility, header.control_id) if header else None
            if key in first_answer:
                first_raw, first_ack = first_answer[key]
                if msa(first_ack)[0] in ("AA", "CA") or first_raw == raw:
                    assert ack == first_ack, f"{msg.source}: duplicate not re-answered identically"
                    continue
            if key is not None:
                first_answer[key] = (raw, ack)
            code, _ = msa(ack)
            assert code == want, f"{msg.source}: got {code}, expected {want}"
        conn.close()
        n += 1
        check = MllpConnection(daemon.address)
        assert msa(check.request(with_control_id(oru, f"AFTER{n}")))[0] == "AA", name
        check.close()
    states = {m["message_id"]: m["state"] for m in daemon.messages()}
    assert sum(1 for s in states.values() if s == "processed") >= n


def test_python_hl7_client_gets_aa(shared_daemon: RunningDaemon, corpus: Path) -> None:
    """python-hl7's MLLPClient, a peer we did not write, gets AA for radiology ORUs."""
    daemon, suffix = shared_daemon, tag()
    files = sorted((corpus / "hl7" / "scout").glob("oru_v2*_*.hl7"))[:5]
    with hl7.client.MLLPClient(*daemon.address) as client:
        for i, path in enumerate(files):
            text = with_control_id(path.read_bytes(), f"PYHL7{i}-{suffix}").decode("latin-1")
            reply = client.send_message(text)
            ack = hl7.parse(reply.decode("latin-1"))
            assert str(ack.segment("MSA")[1]) == "AA", path.name


def test_send_cli_prints_ack_and_exit_status(
    shared_daemon: RunningDaemon, corpus: Path, oru: bytes, tmp_path: Path
) -> None:
    """`overread send` prints each ACK, exits 0 for AA and 1 when a NACK came back."""
    daemon, suffix = shared_daemon, tag()
    good, again = tmp_path / "good.hl7", tmp_path / "again.hl7"
    good.write_bytes(with_control_id(oru, f"SENDCLI1-{suffix}"))  # oru: scout/oru_v27_prelim_xr_chest.hl7
    again.write_bytes(with_control_id(oru, f"SENDCLI2-{suffix}"))
    bad = corpus / "hl7" / "scout" / "junk_not_hl7_idx_msg.hl7"
    target = f"127.0.0.1:{daemon.port}"
    ok = subprocess.run(
        [sys.executable, "-m", "listener", "send", "--to", target, str(good)], capture_output=True, cwd=REPO, timeout=60
    )
    assert ok.returncode == 0, ok.stderr
    assert b"MSA|AA|" in ok.stdout
    nack = subprocess.run(
        [sys.executable, "-m", "listener", "send", "--to", target, str(again), str(bad)],
        capture_output=True,
        cwd=REPO,
        timeout=60,
    )
    assert nack.returncode == 1
    assert b"MSA|AE|" in nack.stdout


def test_sigterm_exits_zero_after_flushing(tmp_path: Path, oru: bytes) -> None:
    """SIGTERM stops the daemon with status 0 and everything ACKed is stored."""
    (tmp_path / "logs").mkdir()
    daemon = RunningDaemon(tmp_path / "state", tmp_path / "logs")
    daemon.start()
    conn = MllpConnection(daemon.address)
    for i in range(20):
        conn.send(with_control_id(oru, f"TERM{i}"))
    acked = [msa(conn.receive())[1] for _ in range(20)]
    assert daemon.stop() == 0
    conn.close()
    assert sorted(m["message_id"] for m in daemon.messages()) == sorted(acked)
    events = [line["event"] for line in daemon.log_lines()]
    assert "daemon_stopped" in events


def _with_ack_modes(raw: bytes, accept: str, application: str) -> bytes:
    segments = raw.split(b"\r")
    fields = segments[0].split(b"|")
    fields += [b""] * (16 - len(fields))
    fields[14], fields[15] = accept.encode(), application.encode()
    segments[0] = b"|".join(fields)
    return b"\r".join(segments)


def test_enhanced_mode_accept_acks(shared_daemon: RunningDaemon, oru: bytes) -> None:
    """MSH-15 AL gets CA; MSH-15 NE gets no answer but is stored, and the next frame on the
    same connection is still answered in order."""
    daemon, t = shared_daemon, tag()
    before = message_ids(daemon)
    conn = MllpConnection(daemon.address)
    assert msa(conn.request(_with_ack_modes(with_control_id(oru, f"ENH1-{t}"), "AL", "NE"))) == ("CA", f"ENH1-{t}")
    conn.send(_with_ack_modes(with_control_id(oru, f"ENH2-{t}"), "NE", "NE"))
    assert msa(conn.request(with_control_id(oru, f"ENH3-{t}"))) == ("AA", f"ENH3-{t}")
    conn.close()
    stored = {m["message_id"]: m["ack_code"] for m in new_messages(daemon, before)}
    assert stored == {f"ENH1-{t}": "CA", f"ENH2-{t}": "CA", f"ENH3-{t}": "AA"}


def test_back_to_back_copies_are_processed_once(shared_daemon: RunningDaemon, oru: bytes) -> None:
    """Copies of one message sent back to back (two in one write on one connection, and one
    on each of three other connections at the same moment) are processed and stored once:
    every copy gets the first copy's byte-identical stored ACK, in order on its connection."""
    daemon, t = shared_daemon, tag()
    twin1, twin2 = f"TWIN1-{t}", f"TWIN2-{t}"
    copies = with_control_id(oru, twin1)
    other = with_control_id(oru, twin2)
    before = message_ids(daemon)
    main = MllpConnection(daemon.address)
    others = [MllpConnection(daemon.address) for _ in range(3)]
    main.send_raw(b"".join(b"\x0b" + payload + b"\x1c\r" for payload in (copies, copies, other)))
    for conn in others:
        conn.send(copies)
    answers = [main.receive() for _ in range(3)]
    more = [conn.receive() for conn in others]
    for conn in (main, *others):
        conn.close()
    assert [msa(a) for a in answers] == [("AA", twin1), ("AA", twin1), ("AA", twin2)]
    assert answers[0] == answers[1] and all(a == answers[0] for a in more)
    listed = [m["message_id"] for m in new_messages(daemon, before)]
    assert sorted(listed) == [twin1, twin2]
    lines = [line for line in daemon.log_lines() if line.get("control_id") == twin1]
    assert [line["event"] for line in lines].count("message_processed") == 1
    duplicates = [line["reason"] for line in lines if line["event"] == "message_duplicate"]
    # "store_race" would mean a copy went through the pipeline and reached the save.
    assert len(duplicates) == 4 and set(duplicates) <= {"in_flight", "stored"}


def test_message_types_are_configured_per_feed(tmp_path: Path, oru: bytes) -> None:
    """A feed whose mapping lists ADT^A08 under `messages.ignore` gets AA (stored `ignored`);
    the same ADT^A08 from a sender on the default feed gets AR with ERR 200; a feed that
    accepts only ORU^R01 refuses the wrong event (ORU^R02) with ERR 201."""
    import shutil

    mappings = tmp_path / "mappings"
    shutil.copytree(REPO / "mappings", mappings)
    (mappings / "feeds" / "adtsender.yaml").write_text(
        'match:\n  sending_application: ["ADTSENDER"]\nmessages:\n  accept: ["ORU^R01"]\n  ignore: ["ADT^A08"]\n'
    )
    config = tmp_path / "overread.yaml"
    config.write_text(f"mappings: {mappings}\npolicies: {REPO / 'policies'}\n")
    (tmp_path / "logs").mkdir()
    daemon = RunningDaemon(tmp_path / "state", tmp_path / "logs", extra=("--config", str(config)))
    daemon.start()

    def variant(app: str, message_type: str, control_id: str) -> bytes:
        fields = with_control_id(oru, control_id).split(b"\r", 1)
        msh = fields[0].split(b"|")
        msh[2], msh[8] = app.encode(), message_type.encode()
        return b"|".join(msh) + b"\r" + fields[1]

    try:
        conn = MllpConnection(daemon.address)
        ignored = conn.request(variant("ADTSENDER", "ADT^A08", "T1"))
        rejected = conn.request(variant("OTHERRIS", "ADT^A08", "T2"))
        wrong_event = conn.request(variant("ADTSENDER", "ORU^R02", "T3"))
        conn.close()
        assert msa(ignored) == ("AA", "T1") and b"\rERR" not in ignored
        assert msa(rejected) == ("AR", "T2") and b"|200^" in rejected and b"MSH^1^9" in rejected
        assert msa(wrong_event) == ("AR", "T3") and b"|201^" in wrong_event
        stored = {m["message_id"]: (m["state"], m["feed"]) for m in daemon.messages()}
        assert stored["T1"] == ("ignored", "adtsender")
        assert stored["T2"][0] == stored["T3"][0] == "rejected"
        logged = {
            line["control_id"]: line["state"] for line in daemon.log_lines() if line["event"] == "message_processed"
        }
        assert (logged["T1"], logged["T2"], logged["T3"]) == ("ignored", "rejected", "rejected")
    finally:
        assert daemon.stop() == 0


def test_python_hl7_mllp_send_gets_aa_for_every_radiology_oru(
    shared_daemon: RunningDaemon, corpus: Path, tmp_path: Path
) -> None:
    """python-hl7's `mllp_send` command (a peer we did not write) sends every accepted ORU of
    the corpus (radiology, and the lab ORUs a default feed also takes) in one connection and
    gets AA for each (CA where the message asks for enhanced mode), in order.

    On the shared daemon: no other test of the module sends a corpus message with its own
    MSH-10 (they send their own control IDs), so none of these is a duplicate."""
    daemon = shared_daemon
    framed = bytearray()
    sent: list[str] = []
    for path in sorted((corpus / "hl7").rglob("*.hl7")):
        name = str(path.relative_to(corpus / "hl7"))
        expected = EXPECTED.get(name, ["accepted:1"])
        if not all(e.startswith("accepted") for e in expected):
            continue
        for msg in split_file(path, path.read_bytes()):
            raw = msg.raw.replace(b"\x1c", b"").replace(b"\x0b", b"")
            header = read_header(raw)
            assert header is not None
            code = ack_code_for(header, "AA")  # CA when MSH-15/16 ask for enhanced mode
            if not should_send_accept_ack(header, code):
                continue  # MSH-15 NE/ER: no answer; mllp_send would wait for one
            framed += b"\x0b" + raw + b"\x1c\r"
            sent.append(f"{code} {header.control_id}")
    assert len(sent) >= 29
    batch = tmp_path / "oru.mllp"
    batch.write_bytes(bytes(framed))
    mllp_send = Path(sys.executable).parent / "mllp_send"
    result = subprocess.run(
        [str(mllp_send), "-p", str(daemon.port), "-f", str(batch), "127.0.0.1"], capture_output=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    answers = [
        segment.split("|")
        for segment in result.stdout.decode("latin-1").replace("\n", "\r").split("\r")
        if segment.startswith("MSA|")
    ]
    assert [f"{a[1]} {a[2]}" for a in answers] == sent


def test_raw_retention_purges_old_bodies_only(tmp_path: Path, oru: bytes) -> None:
    """With raw_retention_days: 7 the daemon drops raw bodies older than 7 days (at start-up,
    then hourly) and keeps everything else: the message rows, newer bodies, and new messages."""
    from datetime import datetime, timedelta

    from listener.store import SQLiteStore
    from tests.unit.store.records import record

    now = datetime.now(UTC)
    store = SQLiteStore.in_state_dir(tmp_path / "state")
    store.save(record("OLD", received=now - timedelta(days=30)))
    store.save(record("RECENT", received=now - timedelta(days=2)))
    store.close()
    config = tmp_path / "overread.yaml"
    config.write_text("raw_retention_days: 7\n")
    (tmp_path / "logs").mkdir()
    daemon = RunningDaemon(tmp_path / "state", tmp_path / "logs", extra=("--config", str(config)))
    daemon.start()
    try:
        conn = MllpConnection(daemon.address)
        assert msa(conn.request(with_control_id(oru, "NEW")))[0] == "AA"
        conn.close()
    finally:
        assert daemon.stop() == 0
    kept = {m["message_id"]: m["raw_kept"] for m in daemon.messages()}
    assert kept == {"OLD": False, "RECENT": True, "NEW": True}
    purged = [line for line in daemon.log_lines() if line["event"] == "raw_bodies_purged"]
    assert purged and purged[0]["count"] == 1


def test_ack_header_fields_from_the_real_daemon(shared_daemon: RunningDaemon, oru: bytes) -> None:
    """The daemon's ACKs swap sender and receiver, echo MSH-11/12, carry ACK^R01^ACK, a unique
    MSH-10 of their own per answer and MSA-2 = the received MSH-10; hl7apy validates them strictly."""
    from hl7apy.consts import VALIDATION_LEVEL
    from hl7apy.parser import parse_message

    daemon, t = shared_daemon, tag()
    conn = MllpConnection(daemon.address)
    acks = [conn.request(with_control_id(oru, f"HDR{i}-{t}")) for i in range(3)]
    conn.close()
    sent = oru.split(b"\r")[0].decode().split("|")
    ids = set()
    for i, ack in enumerate(acks):
        msh = ack.split(b"\r")[0].decode().split("|")
        assert (msh[2], msh[3], msh[4], msh[5]) == (sent[4], sent[5], sent[2], sent[3])
        assert (msh[8], msh[10], msh[11]) == ("ACK^R01^ACK", sent[10], sent[11])
        assert msh[9] and msh[9] != f"HDR{i}-{t}"
        ids.add(msh[9])
        assert msa(ack) == ("AA", f"HDR{i}-{t}")
        message = parse_message(ack.decode("latin-1"), validation_level=VALIDATION_LEVEL.STRICT)
        assert message.validate() is True
    assert len(ids) == 3


def test_whole_batch_in_one_frame_is_refused_clearly(shared_daemon: RunningDaemon, corpus: Path, oru: bytes) -> None:
    """A batch file (FHS/BHS ... MSH ...) sent as one frame gets AR with ERR 200 saying batches
    are not accepted, is not stored, and the same connection is served AA afterwards."""
    daemon, after = shared_daemon, f"AFTERBATCH-{tag()}"
    before = message_ids(daemon)
    conn = MllpConnection(daemon.address)
    for name in ("batch_bhs_adt_a04_v25_msh18_ascii.hl7", "file_fhs_two_batches_adt_v25.hl7"):
        raw = (corpus / "hl7" / "python-hl7" / name).read_bytes().replace(b"\r\n", b"\r").replace(b"\n", b"\r")
        ack = conn.request(raw)
        assert msa(ack) == ("AR", "")
        assert b"|200^batches (FHS/BHS) are not accepted" in ack
    assert msa(conn.request(with_control_id(oru, after))) == ("AA", after)
    conn.close()
    assert [m["message_id"] for m in new_messages(daemon, before)] == [after]


def test_enhanced_mode_er_su_and_msh16_only(shared_daemon: RunningDaemon, oru: bytes) -> None:
    """MSH-15 ER: no answer for an accepted message, CR with ERR for a rejected one; MSH-15 SU:
    CA for success, nothing for an error; MSH-16 alone also means enhanced mode (CA). Every
    ACK sent says MSH-15/16 NE, and answers keep arrival order around the silent ones."""

    def typed(raw: bytes, message_type: str) -> bytes:
        head, rest = raw.split(b"\r", 1)
        fields = head.split(b"|")
        fields[8] = message_type.encode()
        return b"|".join(fields) + b"\r" + rest

    daemon, t = shared_daemon, tag()
    before = message_ids(daemon)
    conn = MllpConnection(daemon.address)
    conn.send(_with_ack_modes(with_control_id(oru, f"ER-OK-{t}"), "ER", "NE"))
    conn.send(_with_ack_modes(typed(with_control_id(oru, f"ER-BAD-{t}"), "ADT^A08"), "ER", "NE"))
    conn.send(_with_ack_modes(with_control_id(oru, f"SU-OK-{t}"), "SU", "NE"))
    conn.send(_with_ack_modes(typed(with_control_id(oru, f"SU-BAD-{t}"), "ADT^A08"), "SU", "NE"))
    conn.send(_with_ack_modes(with_control_id(oru, f"M16-{t}"), "", "AL"))
    conn.send(with_control_id(oru, f"ORIG-{t}"))
    answers = [conn.receive() for _ in range(4)]
    conn.close()
    assert [msa(a) for a in answers] == [
        ("CR", f"ER-BAD-{t}"),
        ("CA", f"SU-OK-{t}"),
        ("CA", f"M16-{t}"),
        ("AA", f"ORIG-{t}"),
    ]
    assert b"|200^" in answers[0]
    for ack in answers[:3]:
        assert ack.split(b"\r")[0].split(b"|")[14:16] == [b"NE", b"NE"]
    stored = {str(m["message_id"]).removesuffix(f"-{t}"): m["ack_code"] for m in new_messages(daemon, before)}
    assert stored == {"ER-OK": "CA", "ER-BAD": "CR", "SU-OK": "CA", "SU-BAD": "CR", "M16": "CA", "ORIG": "AA"}
