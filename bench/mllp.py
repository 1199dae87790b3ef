"""MLLP throughput and ACK latency: the daemon (durable store) vs a bare python-hl7 server.

Run by hand: ``.venv/bin/python bench/mllp.py [--messages N] [--rounds R] [--workers auto,0]
[--store DSN --instances 1,2]``.

A: ``overread serve`` (SQLite WAL, synchronous=FULL, group commit, JSON logs
to /dev/null). B: a bare python-hl7 asyncio MLLP server that parses every
message with ``hl7.parse`` and answers ``create_ack()``, storing nothing. Both
run as subprocesses on loopback; this process drives the same load against
each, alternating A B A B, for three shapes: 1 connection window 1, 8
connections window 1, 8 connections window 16. Each message has a unique
MSH-10 (the daemon would answer duplicates from the store). Prints msgs/s and
ACK latency p50/p99 per run, then the medians and the A/B ratio.

``--workers auto,0`` runs one daemon per value of the ``workers`` setting
(docs/configuration.md), named A (the first), A0 (``workers: 0``) and so on,
all in the same alternation (A A0 B A A0 B ...), so a busy neighbour weighs on
each alike. At the end it prints each process's peak RSS (VmHWM) and its RSS
now: the daemon and each of its worker processes.

``--store DSN`` puts every daemon on a PostgreSQL server (DSN: a server the bench may create
schemas on, such as ``$OVERREAD_TEST_PG_DSN`` of ``.ci/postgres.sh start``): each daemon group
gets a fresh schema, dropped at the end. ``--instances 1,2`` runs, in the same alternation, one
group per value: that many daemons, each on its own port, the connections of a run dealt over
their ports in turn as a TCP load balancer would (docs/deployment.md). With ``--store`` a group's
daemons share one schema (active-active); without it each has a SQLite store of its own (two
daemons cannot share one: the state directory's lock), which bounds what several daemons on one
host could do with nothing shared (docs/benchmarks.md, "Two more designs on real texts"). A is
the first group, Ax2 two instances and so on (with ``--workers auto,1``: A, Ax2, A1, A1x2). RSS
is printed for every daemon of a group.

``--logs DIR`` keeps each daemon's JSON log in ``DIR/NAME.log`` (default: discarded). A server
that closes a connection mid-run stops the bench with the server's name, the connection and its
counts; the daemon's ``connection_closed`` line for that peer says who closed it and why
(docs/operations.md, "A connection closed").
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import zlib
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import IO

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from listener.hl7v2.mllp import MllpFramer, frame  # noqa: E402

CORPUS_FILE = REPO / "tests" / "data" / "hl7" / "scout" / "oru_v27_prelim_xr_chest.hl7"
SHAPES = ((1, 1), (8, 1), (8, 16))

BARE_SERVER = r"""
import asyncio, sys
import hl7
from hl7.mllp import start_hl7_server

async def handle(reader, writer):
    try:
        while not writer.is_closing():
            message = await reader.readmessage()
            writer.writemessage(message.create_ack())
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()

async def main(port):
    async with await start_hl7_server(handle, "127.0.0.1", port, limit=1 << 22) as server:
        await server.serve_forever()

asyncio.run(main(int(sys.argv[1])))
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def daemon_command(port: int, state_dir: Path, extra: list[str]) -> list[str]:
    """``overread serve`` on loopback ``port`` (SQLite store in ``state_dir``, JSON logs, no HTTP)."""
    return [
        sys.executable,
        "-m",
        "listener",
        "serve",
        "--log-format",
        "json",
        "--mllp",
        f"tcp:{port}:interface=127.0.0.1",
        "--http",
        "off",
        "--state-dir",
        str(state_dir),
        *extra,
    ]


def child_pids(pid: int) -> list[int]:
    """The child processes of ``pid`` (a daemon's worker processes)."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
    return found


def status_mib(pid: int, *names: str) -> tuple[float, ...] | None:
    """Fields ``names`` of ``/proc/PID/status`` (VmRSS, VmHWM, RssAnon...) in MiB; None when ``pid`` is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    return tuple(int(fields.get(name, "0 kB").split()[0]) / 1024 for name in names)


def rss_report(pid: int) -> str:
    """Peak and current RSS (MiB) of ``pid`` and of its children (the worker processes)."""

    def one(p: int) -> str:
        sizes = status_mib(p, "VmHWM", "VmRSS")
        if sizes is None:
            return f"{p}: gone"
        peak, now = sizes
        return f"{p}: peak {peak:.0f} MiB, now {now:.0f} MiB"

    return "; ".join([one(pid) + " (daemon)"] + [one(c) + " (worker)" for c in child_pids(pid)])


def listening_inodes(port: int) -> set[str]:
    """The inodes of the sockets listening on 127.0.0.1:``port`` (Linux: /proc/net/tcp)."""
    local = {f"0100007F:{port:04X}", f"7F000001:{port:04X}"}  # the kernel's byte order, either way
    found: set[str] = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if len(fields) > 9 and fields[1] in local and fields[3] == "0A":  # 0A: LISTEN
            found.add(fields[9])
    return found


def listens(pid: int, port: int) -> bool:
    """True when process ``pid`` holds a socket listening on 127.0.0.1:``port``."""
    inodes = listening_inodes(port)
    if not inodes:
        return False
    for fd in Path(f"/proc/{pid}/fd").glob("*"):
        try:
            link = os.readlink(fd)
        except OSError:
            continue
        if link.startswith("socket:[") and link[8:-1] in inodes:
            return True
    return False


def wait_port(port: int, proc: subprocess.Popen[bytes]) -> None:
    """Wait until ``proc`` itself listens on ``port``.

    A connection that succeeds proves nothing: ``free_port`` hands out a port from the kernel's
    ephemeral range that another process (another bench's daemon) may listen on first; our daemon
    then exits (``daemon_stopping``, ``reason=listen_failed``), and the bench would drive the other
    process, whose close stops the run ("connection closed during the run").
    """
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}")
        if listens(proc.pid, port):
            return
        time.sleep(0.05)
    taken = " (another process listens there)" if listening_inodes(port) else ""
    raise SystemExit(f"server did not listen on port {port}{taken}")


def with_control_id(raw: bytes, control_id: str, vary_text: bool = False) -> bytes:
    """``raw`` with MSH-10 = ``control_id``; with ``vary_text`` also a unique report text.

    The text layer remembers its last results per text, so the same text
    sent again is cheaper than a real feed's new texts: ``vary_text``
    appends a sentence holding the control id to the last OBX-5. Like a real
    feed, it also gives each message its own accession (OBR-3, ORC-3) and one
    of 1,000 patients (PID-3's first identifier): with one accession and one
    patient throughout, every prior look-up would read the whole run's rows
    of that patient and accession, a cost no real feed has.
    """
    segments = raw.split(b"\r")
    fields = segments[0].split(b"|")
    fields[9] = control_id.encode()
    segments[0] = b"|".join(fields)
    if vary_text:
        last = max(i for i, seg in enumerate(segments) if seg.startswith(b"OBX|"))
        obx = segments[last].split(b"|")
        obx[5] += f" Dictation reference {control_id}.".encode()
        segments[last] = b"|".join(obx)
        accession = f"B{zlib.crc32(control_id.encode()):010d}".encode()
        patient = f"BENCH{zlib.crc32(control_id.encode()) % 1000:04d}".encode()
        for i, seg in enumerate(segments):
            parts = seg.split(b"|")
            if parts[0] in (b"OBR", b"ORC") and len(parts) > 3:
                parts[3] = accession
            elif parts[0] == b"PID" and len(parts) > 3:
                first, sep, rest = parts[3].partition(b"~")
                parts[3] = patient + first[first.find(b"^") :] + sep + rest if b"^" in first else patient
            segments[i] = b"|".join(parts)
    return b"\r".join(segments)


#: HL7 v2's escapes for the default delimiters, the escape character first.
_HL7_ESCAPES = (("\\", "\\E\\"), ("|", "\\F\\"), ("^", "\\S\\"), ("&", "\\T\\"), ("~", "\\R\\"))


def with_report_text(raw: bytes, text: str, procedure: tuple[str, str, str] = ("", "", "")) -> bytes:
    """``raw`` (the corpus ORU) carrying ``text`` as its report: one OBX per line, 75 characters wide.

    The ORU's own report OBX segments are replaced (the first one is the model of each new one);
    with a CPT code in ``procedure`` (code, its text, modality) OBR-4 and OBR-44 name it (coding
    system C4) and OBR-24 the modality, so the procedure checks see the exam the report describes. Characters
    outside ASCII become ``?`` (the bare server reads ASCII).
    """
    segments = raw.split(b"\r")
    first = next(i for i, seg in enumerate(segments) if seg.startswith(b"OBX|"))
    model = segments[first].split(b"|")
    lines: list[str] = []
    for line in text.splitlines():
        lines += textwrap.wrap(line, 75) or [""]
    obx = []
    for n, line in enumerate(lines, start=1):
        for plain, escaped in _HL7_ESCAPES:
            line = line.replace(plain, escaped)
        fields = list(model)
        fields[1], fields[5] = str(n).encode(), line.encode("ascii", "replace")
        obx.append(b"|".join(fields))
    before = segments[:first]
    after = [seg for seg in segments[first:] if not seg.startswith(b"OBX|")]
    code, name, modality = procedure
    if code:
        for i, seg in enumerate(before):
            if seg.startswith(b"OBR|"):
                fields = seg.split(b"|")
                fields += [b""] * (25 - len(fields))
                named = f"{code}^{name}^C4".encode("ascii", "replace")
                fields[4] = named
                if len(fields) > 44:  # OBR-44, read first when present (mappings/default.yaml)
                    fields[44] = named
                fields[24] = modality.encode("ascii", "replace")
                before[i] = b"|".join(fields)
    return b"\r".join(before + obx + after)


def corpus_bodies(raw: bytes) -> list[bytes]:
    """``raw`` with each report of ../shared/corpus (Indiana chest radiographs, MTSamples radiology).

    Texts written by others, which the QA rules were not tuned on (docs/benchmarks.md,
    "Real report texts"); the corpus is not in the repository, so without it the bench stops here.
    """
    from tests.qa.evaluate import CORPUS, load_docs

    if not (CORPUS / "reports").is_dir():
        raise SystemExit(
            f"--corpus-texts: {CORPUS / 'reports'} is missing (the shared corpus sits beside the repository)"
        )
    return [
        with_report_text(raw, doc.text, (doc.procedure_code, doc.procedure_text, doc.modality)) for doc in load_docs()
    ]


class ConnectionClosed(Exception):
    """The server closed a connection before every answer came back (the message says which)."""


class Refused(Exception):
    """An answer other than AA where every message had to be accepted (the message says which)."""


async def drive_connection(
    port: int, payloads: list[bytes], window: int, latencies: list[float], require_aa: bool = False
) -> None:
    """Send ``payloads`` on one connection, ``window`` in flight, each answer's latency into ``latencies``."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    host, local_port = writer.get_extra_info("sockname")[:2]
    local = f"{host}:{local_port}"
    framer = MllpFramer()
    sent_at: list[float] = []
    sent = received = 0
    while received < len(payloads):
        while sent < len(payloads) and sent - received < window:
            sent_at.append(time.perf_counter())
            writer.write(frame(payloads[sent]))
            sent += 1
        data = await reader.read(65536)
        if not data:
            raise ConnectionClosed(
                f"connection closed during the run: peer {local} (as the server logs it), "
                f"{received} of {len(payloads)} answers received, {sent} frames sent"
            )
        for answer in framer.feed(data):
            if require_aa and b"\rMSA|AA|" not in answer:
                code = answer.partition(b"\rMSA|")[2][:2].decode("ascii", "replace") or "no MSA"
                raise Refused(f"answer {code} to message {received} of connection {local}")
            latencies.append(time.perf_counter() - sent_at[received])
            received += 1
    writer.close()
    await writer.wait_closed()


def payloads_for(
    raw: bytes, tag: str, connections: int, total: int, vary_text: bool = False, bodies: Sequence[bytes] = ()
) -> list[list[bytes]]:
    """``total // connections`` messages for each connection, each with its own MSH-10.

    Each is ``raw`` (``with_control_id``, MSH-10 ``TAG-CONNECTION-N``); with ``bodies`` (from
    ``corpus_bodies``) each is one of them instead, taken in turn from a place the tag decides.
    """
    per = total // connections
    start_at = zlib.crc32(tag.encode())

    def body(n: int) -> bytes:
        return bodies[(start_at + n) % len(bodies)] if bodies else raw

    return [
        [with_control_id(body(c * per + i), f"{tag}-{c}-{i}", vary_text) for i in range(per)]
        for c in range(connections)
    ]


async def run_load(
    port: int | Sequence[int],
    raw: bytes,
    tag: str,
    connections: int,
    window: int,
    total: int,
    vary_text: bool = False,
    bodies: Sequence[bytes] = (),
    require_aa: bool = False,
) -> tuple[float, float, float]:
    """Send ``total`` messages over ``connections``: (msgs/s, ACK p50 ms, ACK p99 ms).

    The messages are :func:`payloads_for`'s; ``require_aa``: any other answer raises :class:`Refused`.
    ``port``: one port, or several (the instances of a group): connection ``c`` goes to
    ``port[c % len(port)]``, as a load balancer deals connections out.
    """
    ports = [port] if isinstance(port, int) else list(port)
    per = total // connections
    latencies: list[float] = []
    payloads = payloads_for(raw, tag, connections, total, vary_text, bodies)
    start = time.perf_counter()
    await asyncio.gather(
        *(
            drive_connection(ports[c % len(ports)], payloads[c], window, latencies, require_aa)
            for c in range(connections)
        )
    )
    elapsed = time.perf_counter() - start
    latencies.sort()
    p50 = latencies[len(latencies) // 2] * 1000
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000
    return per * connections / elapsed, p50, p99


@contextmanager
def store_schema(server: str) -> Iterator[str]:
    """A fresh schema on the PostgreSQL ``server``, its tables made: yields the ``store:`` URL; dropped afterwards."""
    from listener.store.postgresql import PostgresStore
    from tests.postgres import as_url, fresh_schema

    with fresh_schema(server, prefix="bench") as dsn:
        # The tables, as after a first start: no daemon of the group waits on another's migration.
        PostgresStore(dsn).close()
        yield as_url(dsn)


def running_or_exit(name: str, proc: subprocess.Popen[bytes]) -> None:
    """Stop the bench when server ``name`` is no longer running."""
    if proc.poll() is not None:
        raise SystemExit(f"server {name} exited with {proc.returncode} (with --logs: its log says why)")


def log_file(logs: Path | None, name: str) -> int | IO[bytes]:
    """Where daemon ``name`` writes its JSON log: ``logs/NAME.log``, or nowhere."""
    if logs is None:
        return subprocess.DEVNULL
    logs.mkdir(parents=True, exist_ok=True)
    return (logs / f"{name}.log").open("wb")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=2000, help="messages per run (per shape and server)")
    parser.add_argument("--rounds", type=int, default=2, help="A B rounds per shape")
    parser.add_argument(
        "--workers",
        default="",
        help="comma-separated values of the workers setting, one daemon each (default: the daemon's default only)",
    )
    parser.add_argument(
        "--vary-text",
        action="store_true",
        help="a different report text in every message (defeats the text layer's per-text memory, as a real feed does)",
    )
    parser.add_argument(
        "--corpus-texts",
        action="store_true",
        help="each message carries a real report of ../shared/corpus (and its CPT code), plus --vary-text's changes",
    )
    parser.add_argument("--logs", type=Path, help="keep each daemon's JSON log in this directory (NAME.log)")
    parser.add_argument(
        "--store",
        metavar="DSN",
        help="a PostgreSQL server for the daemons' stores (a fresh schema per daemon group), e.g. $OVERREAD_TEST_PG_DSN",
    )
    parser.add_argument(
        "--instances",
        default="1",
        help="comma-separated daemon counts, one group each: with --store every daemon of a group on one"
        " schema; without it each on a SQLite store of its own (a bound: no store shared)",
    )
    args = parser.parse_args()
    raw = CORPUS_FILE.read_bytes()
    bodies = corpus_bodies(raw) if args.corpus_texts else []
    vary_text = args.vary_text or args.corpus_texts
    described = f"{CORPUS_FILE.name}, {len(raw)} bytes"
    if bodies:
        described += (
            f", carrying each of {len(bodies)} corpus reports in turn"
            f" ({sum(map(len, bodies)) // len(bodies)} bytes on average)"
        )
    print(
        f"message: {described}; {args.messages} messages per run; A=daemon, B=bare python-hl7"
        + ("; a different report text each message" if vary_text else "")
    )

    variants = [w.strip() for w in args.workers.split(",") if w.strip()] or [""]
    instances = [int(n) for n in args.instances.split(",") if n.strip()] or [1]
    if any(n < 1 for n in instances):
        parser.error("--instances: each value is at least 1")
    # One group per (workers, instances): A first, then A<workers>, A<workers>x<instances>...
    plan: list[tuple[str, str, int]] = []
    for index, workers in enumerate(variants):
        for count in instances:
            name = ("A" if index == 0 else f"A{workers}") + (f"x{count}" if count > 1 else "")
            plan.append((name, workers, count))
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as schemas:
        env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC")}
        servers: dict[str, list[tuple[int, subprocess.Popen[bytes]]]] = {}
        try:
            for name, workers, count in plan:
                settings = [f"workers: {workers}"] if workers else []
                if args.store:
                    settings.append(f"store: {schemas.enter_context(store_schema(args.store))}")
                extra: list[str] = []
                if settings:
                    config = Path(tmp) / f"{name}.yaml"
                    config.write_text("".join(f"{line}\n" for line in settings))
                    extra = ["--config", str(config)]
                servers[name] = []
                for i in range(count):
                    port = free_port()
                    servers[name].append(
                        (
                            port,
                            subprocess.Popen(
                                daemon_command(port, Path(tmp) / f"state-{name}-{i}", extra),
                                cwd=REPO,
                                env=env,
                                stdout=log_file(args.logs, name if count == 1 else f"{name}-{i}"),
                                stderr=subprocess.DEVNULL,
                            ),
                        )
                    )
                described_group = [f"workers: {workers}"] if workers else []
                if args.store:
                    described_group.append("PostgreSQL store")
                if count > 1:
                    described_group.append(
                        f"{count} instances "
                        + ("on one store" if args.store else "each on its own SQLite store (a bound: nothing shared)")
                        + ", connections dealt over them"
                    )
                if described_group:
                    print(f"{name}: daemon with " + ", ".join(described_group))
            b_port = free_port()
            servers["B"] = [
                (
                    b_port,
                    subprocess.Popen(
                        [sys.executable, "-c", BARE_SERVER, str(b_port)],
                        env=env,
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                    ),
                )
            ]
            for group in servers.values():
                for port, proc in group:
                    wait_port(port, proc)
            # Warm-up: imports, first pages of the database, the JIT-free caches (every instance).
            for name, group in servers.items():
                for i, (port, _) in enumerate(group):
                    asyncio.run(run_load(port, raw, f"warm{name}-{i}", 1, 1, 200, bodies=bodies))
            for connections, window in SHAPES:
                results: dict[str, list[tuple[float, float, float]]] = {name: [] for name in servers}
                for rnd in range(args.rounds):
                    for name, group in servers.items():
                        tag = f"{name}{connections}x{window}r{rnd}"
                        # A server that exited (a daemon that could not listen: another process
                        # took its port first) would leave its port to whoever listens there.
                        for _, proc in group:
                            running_or_exit(name, proc)
                        ports = [port for port, _ in group]
                        try:
                            res = asyncio.run(
                                run_load(ports, raw, tag, connections, window, args.messages, vary_text, bodies)
                            )
                        except ConnectionClosed as exc:
                            states = ", ".join(
                                f"port {port} "
                                + ("still running" if proc.poll() is None else f"exited with {proc.returncode}")
                                for port, proc in group
                            )
                            raise SystemExit(f"server {name} ({states}), run {tag}: {exc}") from None
                        results[name].append(res)
                        print(
                            f"  {connections} conn window {window:2d} {name} round {rnd}: "
                            f"{res[0]:7.0f} msgs/s  p50 {res[1]:6.2f} ms  p99 {res[2]:6.2f} ms",
                            flush=True,
                        )
                medians = {
                    name: [statistics.median(x) for x in zip(*runs, strict=True)] for name, runs in results.items()
                }
                b = medians["B"]
                first = medians["A"]
                for name, a in medians.items():
                    if name == "B":
                        continue
                    versus_a = f" | {a[0] / first[0]:.2f}x A" if name != "A" else ""
                    print(
                        f"{connections} conn window {window:2d}: {name} daemon {a[0]:7.0f} msgs/s (p50 {a[1]:.2f} p99 {a[2]:.2f} ms)"
                        f" | bare {b[0]:7.0f} msgs/s (p50 {b[1]:.2f} p99 {b[2]:.2f} ms) | ratio {a[0] / b[0]:.2f}x"
                        + versus_a,
                        flush=True,
                    )
            for name, group in servers.items():
                if name != "B":
                    for i, (_, proc) in enumerate(group):
                        print(f"RSS {name if len(group) == 1 else f'{name}-{i}'}: {rss_report(proc.pid)}")
        finally:
            for name, group in servers.items():
                for _, proc in group:
                    if name == "B":
                        proc.kill()
                    else:
                        proc.send_signal(signal.SIGTERM)
            for group in servers.values():
                for _, proc in group:
                    proc.wait(timeout=30)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
