"""Every shell example in README.md and docs/ runs against a real daemon, so none can go stale.

The convention (also in docs/development.md, "Examples in the documentation"):

* A fenced block tagged ``console`` holds commands as a user types them: each line
  starting with ``$ `` is a command (a line ending in ``\\`` continues on the next),
  and the lines after it, up to the next ``$ `` line, are its expected output.
* A fenced block tagged ``sh`` (or ``bash``, ``shell``) is a script: every line is run,
  nothing is compared.
* Expected output is checked loosely: each non-blank expected line must match some
  output line, in order; ``...`` matches anything and a run of spaces matches any run
  of white space. Output lines the document leaves out are allowed.
* A command must exit 0, unless the next command of the block is ``echo $?``: then the
  status it prints is the expected output of that ``echo``.
* A shell block that cannot run in a test (needs root or systemd, installs into /etc,
  ``make run`` itself, minutes of benchmarking) carries ``<!-- not-run: REASON -->`` on
  the line before its fence (a blank line between is allowed). The reason is required.
* Any other fenced block must name its language (``yaml``, ``json``, ``text``, ...): an
  untagged fence fails the test, and so does a ``text`` block with ``$ `` lines, so no
  command can hide from this test.

How the commands run: one daemon (``overread serve --config /etc/overread/overread.yaml``)
for the whole module, with everything it needs under a temporary root. Before each
block runs, these are replaced in its commands and expected output, and only these:

=====================  ================================================
in the documentation   in the test
=====================  ================================================
``127.0.0.1:2575``      ``127.0.0.1:<free MLLP port>``
``127.0.0.1:8080``      ``127.0.0.1:<free HTTP port>``
``/etc/overread``       ``<root>/etc/overread`` (the test's config file)
``/var/lib/overread``   ``<root>/var/lib/overread`` (the daemon's state)
``/srv/backup``         ``<root>/srv/backup``
=====================  ================================================

Blocks run in bash, one bash per block (variables carry from one command to the
next within a block), in ``<root>/work``: ``samples``, ``examples``, ``mappings``
and ``policies`` there point at the repository's, and ``var`` is the daemon's state
directory, as after ``make run`` in a checkout. ``overread`` on PATH runs this
checkout's code (a shim running ``python -m listener`` with this interpreter and the
checkout on PYTHONPATH, so a virtualenv's ``overread`` installed from another
checkout cannot stand in for it), and ``TOKEN`` holds the bearer token of the
configured HTTP client ``docs-example``. Standard error is shown with standard output. The daemon's only
destination, ``ris``, points at a port where nothing listens (a RIS that is down),
so routing messages stay pending. The store starts empty: a block may rely on what
the blocks before it sent (README.md sends the first sample).

Blocks run in file order (README.md, then docs/*.md, then samples/**/README.md)
and each block is one test, named by its file and line.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.integration.conftest import REPO, RunningDaemon, free_port

SHELL_TAGS = ("console", "sh", "bash", "shell")
NOT_RUN = re.compile(r"^<!--\s*not-run:\s*(\S.*?)\s*-->\s*$")
FENCE = re.compile(r"^(\s*)(```+|~~~+)\s*([^\s`]*)")
TOKEN = "docs-example-token-0123456789abcdef"
#: Seconds one block may take (the whole module stays well under a minute).
BLOCK_TIMEOUT = 60


def documents() -> list[Path]:
    """The documentation whose examples are run, in the order they run."""
    return [REPO / "README.md", *sorted((REPO / "docs").glob("*.md")), *sorted((REPO / "samples").rglob("README.md"))]


@dataclass(frozen=True)
class Block:
    """One fenced code block."""

    path: Path
    line: int  # 1-based line of the opening fence
    tag: str
    text: str
    not_run: str | None  # the marker's reason

    @property
    def name(self) -> str:
        return f"{self.path.relative_to(REPO)}:{self.line}"

    @property
    def shell(self) -> bool:
        return self.tag in SHELL_TAGS


def blocks_of(path: Path) -> list[Block]:
    """The fenced blocks of a Markdown file, with the not-run marker before each, if any."""
    lines = path.read_text("utf-8").splitlines()
    out: list[Block] = []
    i = 0
    while i < len(lines):
        match = FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        indent, fence, tag = match.groups()
        start = i
        body: list[str] = []
        i += 1
        while i < len(lines) and not lines[i].strip().startswith(fence):
            body.append(lines[i][len(indent) :] if lines[i].startswith(indent) else lines[i].lstrip())
            i += 1
        i += 1
        before = start - 1
        while before >= 0 and not lines[before].strip():
            before -= 1
        marker = NOT_RUN.match(lines[before].strip()) if before >= 0 else None
        out.append(Block(path, start + 1, tag.lower(), "\n".join(body), marker.group(1) if marker else None))
    return out


def all_blocks() -> list[Block]:
    return [block for path in documents() for block in blocks_of(path)]


@dataclass
class Command:
    text: str
    expected: list[str]


def commands_of(block: Block) -> list[Command]:
    """The commands of a block (with their expected output for ``console``)."""
    commands: list[Command] = []
    lines = block.text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if block.tag == "console":
            if not line.startswith("$ "):
                if commands:
                    commands[-1].expected.append(line)
                elif line.strip():
                    raise AssertionError(f"{block.name}: output before the first '$ ' command: {line!r}")
                i += 1
                continue
            text = line[2:]
        else:
            if not line.strip() or line.lstrip().startswith("#"):
                i += 1
                continue
            text = line
        while text.rstrip().endswith("\\") and i + 1 < len(lines):
            i += 1
            text = text.rstrip()[:-1] + " " + lines[i].strip()
        commands.append(Command(text.strip(), []))
        i += 1
    return commands


def _expected_pattern(line: str) -> re.Pattern[str]:
    parts = [r"\s+" if part.isspace() else re.escape(part) for part in re.split(r"(\s+)", line.strip())]
    return re.compile("".join(parts).replace(re.escape("..."), ".*"))


def check_output(command: Command, output: str) -> str | None:
    """None when every expected line matches an output line, in order; else what is missing."""
    actual = output.splitlines()
    at = 0
    for want in (line for line in command.expected if line.strip()):
        pattern = _expected_pattern(want)
        while at < len(actual) and not pattern.search(actual[at]):
            at += 1
        if at == len(actual):
            return f"expected a line like {want.strip()!r}"
        at += 1
    return None


@dataclass
class Site:
    """Where the examples run: the temporary root, the daemon, and the substitutions."""

    root: Path
    work: Path
    daemon: RunningDaemon
    env: dict[str, str]

    def substitute(self, text: str) -> str:
        for doc, real in (
            ("127.0.0.1:2575", f"127.0.0.1:{self.daemon.port}"),
            ("127.0.0.1:8080", f"127.0.0.1:{self.http_port}"),
            ("/etc/overread", str(self.root / "etc" / "overread")),
            ("/var/lib/overread", str(self.root / "var" / "lib" / "overread")),
            ("/srv/backup", str(self.root / "srv" / "backup")),
        ):
            text = text.replace(doc, real)
        return text

    http_port: int = 0


_STATUS = "@@docs-command-status"


def run_block(block: Block, site: Site) -> None:
    """Run a block's commands in one bash; check each exit status and expected output."""
    commands = commands_of(block)
    assert commands, f"{block.name}: a shell block with no command"
    script = ["__s=0"]
    for n, command in enumerate(commands):
        # The markers keep $? as the command before left it, so `echo $?` shows that command's status.
        script.append(f"echo '{_STATUS} begin {n}'; (exit $__s)")
        script.append(site.substitute(command.text))
        script.append(f"__s=$?; printf '\\n{_STATUS} end {n} %d\\n' $__s")
    result = subprocess.run(
        ["bash", "-c", "\n".join(script) + "\n"],
        cwd=site.work,
        env=site.env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=BLOCK_TIMEOUT,
    )
    output = result.stdout or ""
    for n, command in enumerate(commands):
        begin, end = f"{_STATUS} begin {n}\n", re.compile(rf"^{_STATUS} end {n} (\d+)$", re.M)
        assert begin in output, f"{block.name}: `{command.text}` never ran; output: {output[-2000:]}"
        part = output[output.index(begin) + len(begin) :]
        found = end.search(part)
        assert found, f"{block.name}: `{command.text}` did not finish; output: {output[-2000:]}"
        shown, status = part[: found.start()], int(found.group(1))
        status_checked = n + 1 < len(commands) and commands[n + 1].text == "echo $?"
        assert status == 0 or status_checked, (
            f"{block.name}: `{command.text}` exited {status} (show `$ echo $?` after it if that is expected)\n"
            f"output:\n{shown[-3000:]}"
        )
        expected = Command(command.text, [site.substitute(line) for line in command.expected])
        problem = check_output(expected, shown)
        assert problem is None, f"{block.name}: `{command.text}`: {problem}\noutput:\n{shown[-3000:]}"


def _write_config(root: Path, mllp: int, http: int) -> Path:
    etc = root / "etc" / "overread"
    etc.mkdir(parents=True)
    ris_down = free_port()  # nothing listens there: the RIS is down
    (etc / "destinations.yaml").write_text(
        "version: 1\ndestinations:\n  ris:\n"
        f"    endpoint: tcp:host=127.0.0.1:port={ris_down}\n"
        "    retry: {max_attempts: 10, backoff_base_seconds: 5, backoff_max_seconds: 600, ack_timeout_seconds: 5}\n",
        "utf-8",
    )
    config = etc / "overread.yaml"
    config.write_text(
        "# written by tests/integration/test_docs_commands.py\n"
        "state_dir: ../../var/lib/overread\n"
        f"mllp: tcp:{mllp}:interface=127.0.0.1\n"
        f"http: tcp:{http}:interface=127.0.0.1\n"
        "destinations: destinations.yaml\n"
        "http_clients:\n"
        "  docs-example:\n"
        f"    token_sha256: {hashlib.sha256(TOKEN.encode()).hexdigest()}\n"
        "    allow: [submit, read, operator, score]\n",
        "utf-8",
    )
    return config


@pytest.fixture(name="site", scope="module")
def fixture_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    root = tmp_path_factory.mktemp("docs")
    mllp, http = free_port(), free_port()
    config = _write_config(root, mllp, http)
    state = root / "var" / "lib" / "overread"
    (root / "srv" / "backup").mkdir(parents=True)
    work = root / "work"
    work.mkdir()
    for name in ("samples", "examples", "mappings", "policies"):
        (work / name).symlink_to(REPO / name)
    (work / "var").symlink_to(state)
    shims = root / "bin"
    shims.mkdir()
    shim = shims / "overread"
    shim.write_text(
        f'#!/bin/sh\nPYTHONPATH="{REPO}${{PYTHONPATH:+:$PYTHONPATH}}" exec "{sys.executable}" -m listener "$@"\n'
    )
    shim.chmod(0o755)
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "LISTEN_FDS", "VIRTUAL_ENV", "NO_COLOR")
    }
    env.update(
        PATH=f"{shims}{os.pathsep}{env.get('PATH', '/usr/bin:/bin')}", TOKEN=TOKEN, NO_COLOR="1", LC_ALL="C.UTF-8"
    )
    logs = root / "logs"
    logs.mkdir()
    daemon = RunningDaemon(
        state, logs, port=mllp, extra=("--config", str(config), "--http", f"tcp:{http}:interface=127.0.0.1")
    )
    daemon.start()
    site = Site(root, work, daemon, env, http_port=http)
    try:
        yield site
    finally:
        if daemon.proc is not None and daemon.proc.poll() is None:
            assert daemon.stop() == 0, daemon.stderr()[-2000:]
        assert not [line for line in daemon.log_lines() if line.get("event") == "exception_unhandled"]


RUNNABLE = [b for b in all_blocks() if b.shell and b.not_run is None]


@pytest.mark.skipif(
    shutil.which("bash") is None or shutil.which("curl") is None, reason="the examples need bash and curl"
)
@pytest.mark.parametrize("block", RUNNABLE, ids=[b.name for b in RUNNABLE])
def test_example_runs(block: Block, site: Site) -> None:
    """The block's commands exit as shown and print what the document says they print."""
    run_block(block, site)


def test_every_shell_block_runs_or_says_why(capsys: pytest.CaptureFixture[str]) -> None:
    """No shell block is silently skipped, and no command hides in an untagged block."""
    blocks = all_blocks()
    problems = [f"{b.name}: untagged fence (name the language, e.g. ```yaml or ```text)" for b in blocks if not b.tag]
    problems += [
        f"{b.name}: a ```{b.tag} block with '$ ' commands (tag it console)"
        for b in blocks
        if not b.shell and b.tag and any(line.startswith("$ ") for line in b.text.splitlines())
    ]
    problems += [f"{b.name}: not-run marker on a ```{b.tag} block" for b in blocks if b.not_run and not b.shell]
    assert not problems, "\n".join(problems)
    shell = [b for b in blocks if b.shell]
    skipped = [b for b in shell if b.not_run]
    assert len(shell) - len(skipped) == len(RUNNABLE) > 0
    with capsys.disabled():
        sys.stdout.write(
            f"\ndocs examples: {len(shell)} shell blocks, {len(RUNNABLE)} run, {len(skipped)} not run "
            f"({'; '.join(sorted({b.not_run or '' for b in skipped}))})\n"
        )


def test_expected_output_is_matched_loosely() -> None:
    """The matcher itself: in order, '...' as a wildcard, any white space."""
    command = Command("x", ["backup written to ...", "", "  messages: ..., outbox rows: ..."])
    assert check_output(command, "backup written to /tmp/b\n  source: x\n  messages:  3, outbox rows: 7\n") is None
    assert check_output(command, "  messages: 3, outbox rows: 7\nbackup written to /tmp/b\n") is not None
