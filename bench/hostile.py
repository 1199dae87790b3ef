"""A well-behaved sender and /healthz while another connection floods 1 MB run-on reports.

Run by hand: ``.venv/bin/python bench/hostile.py [--seconds 30] [--size-kb 1024] [--budget 2] [--shape adversarial]``,
or with a FHIR flood: ``bench/hostile.py --fhir-shape same_result --fhir-n 60000``.

Starts ``overread serve`` (default config, a temporary state directory, logs to
/dev/null) and runs three things at once for ``--seconds``:

* flood: one connection sends reports of ``--size-kb`` KB of one of
  ``bench/text_scaling.py``'s text shapes (``--shape``; default ``adversarial``,
  the issue-9 repro: ``no pneumothorax left right`` repeated, no sentence
  break; ``natural`` and ``items`` are long reports of ordinary sentences and
  of numbered items at many sites), 3/4 in the findings and 1/4 in the
  impression, with a new MSH-10 each, pipelined (up to 4 outstanding), and
  counts the ACKs;
* good: another connection sends the normal chest X-ray sample, one message
  every 50 ms, and records each ACK's latency;
* health: GET /healthz every 100 ms, recording the latency.

With ``--fhir-shape SHAPE --fhir-n N`` the flood is FHIR instead: one HTTP
keep-alive connection POSTs ``bench/fhir_scaling.py``'s Bundle of that shape
and size to ``/fhir`` (a new ``Bundle.identifier`` each, so none is a
duplicate), one after another, and a well-behaved FHIR client POSTs the chest
X-ray DiagnosticReport sample every 50 ms (a new accession each) beside the
MLLP sender.

Prints p50/p99/max of the good senders' answers and of /healthz, and the flood's
answered count. The issue's target: both p99 under 100 ms.
"""

from __future__ import annotations

import argparse
import http.client
import json
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.fhir_scaling import SHAPES as FHIR_SHAPES  # noqa: E402
from bench.fhir_scaling import body as fhir_body  # noqa: E402
from bench.text_scaling import SHAPES  # noqa: E402
from bench.text_scaling import message as text_message  # noqa: E402
from listener.hl7v2.mllp import MllpFramer, frame  # noqa: E402

SAMPLE = (
    (REPO / "samples" / "hl7" / "xr-chest-2v-normal.hl7").read_bytes().replace(b"\r\n", b"\r").replace(b"\n", b"\r")
)


FHIR_SAMPLE = (REPO / "samples" / "fhir" / "xr-chest-2v-normal.json").read_bytes()


def fhir_bundle(shape: str, n: int) -> bytes:
    """``bench/fhir_scaling.py``'s Bundle with an identifier the flood renumbers per POST."""
    doc = json.loads(fhir_body(shape, n))
    doc["identifier"] = {"system": "urn:example:flood", "value": "FLOOD-0000000"}
    return json.dumps(doc).encode()


def with_id(raw: bytes, control_id: str) -> bytes:
    segments = raw.split(b"\r")
    fields = segments[0].split(b"|")
    fields[9] = control_id.encode()
    segments[0] = b"|".join(fields)
    return b"\r".join(segments)


def flood_body(control_id: str, shape: str, size_kb: int) -> bytes:
    """The sample with ``size_kb`` KB of ``shape`` text (bench/text_scaling.py) and MSH-10 ``control_id``."""
    body = text_message(shape, size_kb).replace(b"\r\n", b"\r").replace(b"\n", b"\r")
    return with_id(body, control_id)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def receive(sock: socket.socket, framer: MllpFramer, pending: list[bytes]) -> bytes:
    while not pending:
        data = sock.recv(65536)
        if not data:
            raise ConnectionError("closed")
        pending.extend(framer.feed(data))
    return pending.pop(0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--size-kb", type=int, default=1024)
    parser.add_argument("--budget", type=float, default=2.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--shape", choices=sorted(SHAPES), default="adversarial", help="the flood's text shape")
    parser.add_argument("--fhir-shape", choices=sorted(FHIR_SHAPES), help="flood FHIR Bundles of this shape instead")
    parser.add_argument("--fhir-n", type=int, default=10000, help="the FHIR shape's n")
    parser.add_argument("--log", type=Path, help="write the daemon's JSON log here (default: none)")
    parser.add_argument("--config", default="", help="more YAML lines for the daemon's config")
    args = parser.parse_args()
    fhir_flood = fhir_bundle(args.fhir_shape, args.fhir_n) if args.fhir_shape else b""

    mllp, http_port = free_port(), free_port()
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "overread.yaml"
        config.write_text(f"pipeline_budget: {args.budget}\npipeline_workers: {args.workers}\n{args.config}\n")
        cmd = [
            sys.executable,
            "-m",
            "listener",
            "serve",
            "--log-format",
            "json",
            "--config",
            str(config),
            "--mllp",
            f"tcp:{mllp}:interface=127.0.0.1",
            "--http",
            f"tcp:{http_port}:interface=127.0.0.1",
            "--state-dir",
            str(Path(tmp) / "state"),
        ]
        log = args.log.open("wb") if args.log else subprocess.DEVNULL
        proc = subprocess.Popen(cmd, stdout=log, stderr=log, cwd=REPO)
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    socket.create_connection(("127.0.0.1", mllp), timeout=0.2).close()
                    socket.create_connection(("127.0.0.1", http_port), timeout=0.2).close()
                    break
                except OSError as exc:
                    if time.monotonic() > deadline:
                        raise SystemExit("daemon did not start") from exc
                    time.sleep(0.05)
            stop = threading.Event()
            flood_done = [0]
            good: list[float] = []
            good_fhir: list[float] = []
            health: list[float] = []
            bodies = [flood_body(f"FLOOD-{i}", args.shape, args.size_kb) for i in range(4)]

            def flood() -> None:
                sock = socket.create_connection(("127.0.0.1", mllp), timeout=600)
                framer, pending = MllpFramer(), []
                sent = 0
                outstanding = 0
                try:
                    while not stop.is_set():
                        while outstanding < 4:
                            body = bodies[sent % 4].replace(b"FLOOD-", f"F{sent}-".encode(), 1)
                            sock.sendall(frame(body))
                            sent += 1
                            outstanding += 1
                        receive(sock, framer, pending)
                        outstanding -= 1
                        flood_done[0] += 1
                except OSError:
                    pass
                finally:
                    sock.close()

            def fhir_flooder() -> None:
                conn = http.client.HTTPConnection("127.0.0.1", http_port, timeout=600)
                sent = 0
                try:
                    while not stop.is_set():
                        body = fhir_flood.replace(b"FLOOD-0000000", f"FLOOD-{sent:07d}".encode(), 1)
                        conn.request("POST", "/fhir", body=body, headers={"Content-Type": "application/fhir+json"})
                        conn.getresponse().read()
                        sent += 1
                        flood_done[0] += 1
                except OSError:
                    pass
                finally:
                    conn.close()

            def good_fhir_sender() -> None:
                conn = http.client.HTTPConnection("127.0.0.1", http_port, timeout=60)
                i = 0
                while not stop.is_set():
                    body = FHIR_SAMPLE.replace(b"A2611170088", f"G{i:010d}".encode())
                    started = time.perf_counter()
                    conn.request(
                        "POST", "/fhir/DiagnosticReport", body=body, headers={"Content-Type": "application/fhir+json"}
                    )
                    answer = conn.getresponse()
                    answer.read()
                    good_fhir.append(time.perf_counter() - started)
                    if answer.status != 201:
                        print(f"good FHIR client: HTTP {answer.status}", file=sys.stderr)
                    i += 1
                    time.sleep(0.05)
                conn.close()

            def good_sender() -> None:
                sock = socket.create_connection(("127.0.0.1", mllp), timeout=60)
                framer, pending = MllpFramer(), []
                i = 0
                while not stop.is_set():
                    started = time.perf_counter()
                    sock.sendall(frame(with_id(SAMPLE, f"GOOD-{i}")))
                    receive(sock, framer, pending)
                    good.append(time.perf_counter() - started)
                    i += 1
                    time.sleep(0.05)
                sock.close()

            def prober() -> None:
                while not stop.is_set():
                    started = time.perf_counter()
                    conn = http.client.HTTPConnection("127.0.0.1", http_port, timeout=60)
                    conn.request("GET", "/healthz")
                    conn.getresponse().read()
                    conn.close()
                    health.append(time.perf_counter() - started)
                    time.sleep(0.1)

            roles = (
                (fhir_flooder, good_sender, prober, good_fhir_sender) if fhir_flood else (flood, good_sender, prober)
            )
            threads = [threading.Thread(target=t) for t in roles]
            threads[0].start()
            time.sleep(1.0)  # let the flood fill the workers first
            for t in threads[1:]:
                t.start()
            time.sleep(args.seconds)
            stop.set()
            for t in threads[1:]:
                t.join(120)
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
    rows = [("good sender ACK", good), ("/healthz", health)]
    if fhir_flood:
        rows.insert(1, ("good FHIR POST", good_fhir))
    for name, values in rows:
        ms = [v * 1000 for v in values]
        print(
            f"{name:16} n={len(ms):4}  p50 {percentile(ms, 0.5):7.1f} ms  p99 {percentile(ms, 0.99):7.1f} ms  "
            f"max {max(ms) if ms else float('nan'):7.1f} ms  mean {statistics.fmean(ms) if ms else float('nan'):6.1f}"
        )
    if fhir_flood:
        print(
            f"flood: {flood_done[0]} x {len(fhir_flood) // 1024} KB FHIR {args.fhir_shape} n={args.fhir_n} Bundles "
            f"answered in {args.seconds + 1:.0f} s (budget {args.budget} s, {args.workers} workers)"
        )
        return
    print(
        f"flood: {flood_done[0]} x {args.size_kb} KB {args.shape} reports answered in {args.seconds + 1:.0f} s "
        f"(budget {args.budget} s, {args.workers} workers)"
    )


if __name__ == "__main__":
    main()
