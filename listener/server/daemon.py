"""Daemon wiring: config, store, MLLP endpoint, signals, lifecycle.

Layer: reactor code (the only place that starts and stops the reactor).

Lifecycle:

* start: load the pipeline (a bad config stops start-up with its file:line),
  open the store in the state directory, listen on the MLLP endpoint, then
  tell systemd ``READY=1`` and start the watchdog pings.
* SIGTERM/SIGINT: our handler stops the reactor (once: a further signal does
  nothing, and none can kill the process once it is exiting); our "before shutdown" trigger
  stops listening, stops taking new frames, waits for every message being
  stored to get its answer, then closes the store (which commits whatever is
  queued) on a thread. Exit status 0.
* SIGHUP: build a new Pipeline from the config files and swap it in whole; a
  bad file keeps the old one and logs ``config_invalid`` with its file:line.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import gc
import os
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import Any

from twisted.internet import threads
from twisted.internet.defer import Deferred, DeferredList, inlineCallbacks, succeed
from twisted.internet.endpoints import serverFromString
from twisted.internet.error import ReactorNotRunning
from twisted.internet.interfaces import IListeningPort
from twisted.internet.task import LoopingCall
from twisted.logger import globalLogBeginner

from listener.assemble import build_pipeline
from listener.config import Config, usable_cpus
from listener.console.whatif import remove_stale_files
from listener.errors import ConfigError, StoreError, database_error_code, database_error_type
from listener.hl7v2.segments import read_header
from listener.intake import Recording
from listener.logs import get_logger, load_or_create_hash_key, twisted_observer
from listener.outcome_data import HistoryContext
from listener.pipeline import Pipeline
from listener.server.journal import QUARANTINE_AFTER, Interrupted, Journal
from listener.server.live_rates import LiveRates
from listener.server.metrics import Metrics
from listener.server.mllp import Intake, MllpFactory
from listener.server.priors import PriorLookup
from listener.server.runner import PipelineRunner, ProcessRunner
from listener.server.systemd import notify_ready, notify_reloading, notify_stopping, start_watchdog
from listener.statelock import lock_state_dir
from listener.store import Store, open_store, store_description
from listener.store.sqlite import SQLiteStore

__all__ = ["Daemon", "serve"]

#: Seconds a thread may hold the interpreter lock while another waits (CPython's default is 0.005).
SWITCH_INTERVAL = 0.001

EXIT_OK = 0
EXIT_FAILED = 1


def _log() -> Any:
    # Looked up at use time: structlog assembles a bound logger from the
    # configuration current at bind time, and cli configures logging later.
    return get_logger("listener.server.daemon")


#: How often raw bodies past their retention are purged, in seconds.
_PURGE_INTERVAL = 3600.0


def tls_options(config: Config) -> Any:
    """Our certificate and key, and client CAs (mutual TLS), as CertificateOptions.

    Reads the files now: called at start-up and on every SIGHUP, so a renewed
    certificate is picked up by a reload.

    Raises:
        ConfigError: a TLS file is not configured, missing or unreadable (naming it).
    """
    from cryptography import x509
    from twisted.internet.ssl import Certificate, CertificateOptions, PrivateCertificate, trustRootFromCertificates

    files = {
        "tls_certificate": config.tls_certificate,
        "tls_private_key": config.tls_private_key,
        "tls_client_ca": config.tls_client_ca,
    }
    for key, file in files.items():
        if file is None:
            raise ConfigError(f"an ssl: endpoint needs {key}", path=config.source)
    current = ""
    try:
        current = str(config.tls_certificate)
        cert_pem = config.tls_certificate.read_bytes()  # type: ignore[union-attr]
        current = str(config.tls_private_key)
        key_pem = config.tls_private_key.read_bytes()  # type: ignore[union-attr]
        ours = PrivateCertificate.loadPEM(cert_pem + b"\n" + key_pem)  # type: ignore[no-untyped-call]
        current = str(config.tls_client_ca)
        ca_pem = config.tls_client_ca.read_bytes()  # type: ignore[union-attr]
        cas = [
            Certificate(c.to_pyopenssl() if hasattr(c, "to_pyopenssl") else _to_openssl(c))  # type: ignore[no-untyped-call]
            for c in x509.load_pem_x509_certificates(ca_pem)
        ]
        options = CertificateOptions(
            privateKey=ours.privateKey.original,
            certificate=ours.original,
            trustRoot=trustRootFromCertificates(cas),  # type: ignore[no-untyped-call]
        )
        options.getContext()  # a key that does not match the certificate fails here, not on a handshake
    except Exception as exc:  # noqa: BLE001 - any TLS loading failure is a config error
        raise ConfigError(f"TLS files cannot be loaded ({type(exc).__name__})", path=current or config.source) from None
    return options


class ReloadableTls:
    """An old-style TLS context factory whose certificate can be swapped (SIGHUP).

    Twisted's TLS wrapper asks ``getContext()`` once per new connection, so
    after :meth:`swap` new connections get the new certificate and CAs while
    open ones keep theirs.
    """

    def __init__(self, options: Any) -> None:
        self.options = options

    def swap(self, options: Any) -> None:
        self.options = options

    def getContext(self) -> Any:  # noqa: N802 - Twisted API
        return self.options.getContext()


def tls_endpoint(reactor: Any, config: Config, endpoint: str | None = None, context: Any = None) -> Any:
    """An SSL4ServerEndpoint for ``ssl:PORT[:interface=..][:backlog=..]`` with mutual TLS.

    Twisted's ``ssl:`` endpoint string cannot require client certificates, so
    we build the endpoint ourselves: our certificate and key, and a trust root
    made of the configured client CAs (a client certificate is required).
    ``context``: a :class:`ReloadableTls` to use (else one is made from the files).

    Raises:
        ConfigError: a TLS file is missing or unreadable, or the string is malformed.
    """
    from twisted.internet.endpoints import SSL4ServerEndpoint

    parts = (endpoint or config.mllp_endpoint).split(":")[1:]
    options: dict[str, str] = {}
    positional: list[str] = []
    for part in parts:
        name, eq, value = part.partition("=")
        if eq:
            options[name] = value
        else:
            positional.append(part)
    port_text = options.pop("port", positional[0] if positional else "")
    if not port_text.isdigit() or set(options) - {"interface", "backlog"}:
        raise ConfigError("ssl: endpoint must be ssl:PORT[:interface=ADDR][:backlog=N]", path=config.source)
    if context is None:
        context = ReloadableTls(tls_options(config))
    return SSL4ServerEndpoint(  # type: ignore[no-untyped-call]
        reactor,
        int(port_text),
        context,
        backlog=int(options.get("backlog", "50")),
        interface=options.get("interface", ""),
    )


def _to_openssl(cert: Any) -> Any:
    from OpenSSL import crypto

    return crypto.X509.from_cryptography(cert)


def _check_endpoints(config: Config, reactor: Any) -> None:
    """Refuse a malformed plain endpoint string before anything starts (ssl: ones are checked with their files).

    Raises:
        ConfigError: naming the endpoint and the form it should take.
    """
    for what, text in (("mllp", config.mllp_endpoint), ("http", config.http_endpoint)):
        if text.lower() in ("", "off") or text.startswith("ssl:"):
            continue
        try:
            serverFromString(reactor, text)  # type: ignore[no-untyped-call]  # builds, does not listen
        except (ValueError, KeyError, TypeError) as exc:
            raise ConfigError(
                f"{what} endpoint {text!r} is not a server endpoint ({exc}); "
                f"write it as tcp:PORT:interface=ADDRESS, e.g. tcp:2575:interface=127.0.0.1",
                path=config.source,
            ) from None


class Daemon:
    """The running listener: one store, one pipeline, one MLLP port."""

    def __init__(self, config: Config, reactor: Any, reload_config: Callable[[], Config] | None = None) -> None:
        self.config = config
        self.reactor = reactor
        #: Re-reads the config file (with the command line's overrides) on SIGHUP; None: keep ``config``.
        self.reload_config = reload_config
        self.exit_code = EXIT_OK
        self._reloading = False
        self._reload_again = False
        self.port: Any = None
        self.watchdog: LoopingCall | None = None
        self.purger: LoopingCall | None = None
        #: The purge running on a thread, if any (shutdown lets it finish before closing the store).
        self.purging: Deferred[None] | None = None
        pipeline = build_pipeline(config)
        _check_endpoints(config, reactor)
        _log().info("config_loaded", path=config.source, policy_version=pipeline.version)
        # One daemon per state directory, held until the process ends (listener/statelock.py).
        self.state_lock = lock_state_dir(config.state_dir)
        # What-if files a killed daemon left behind (docs/console.md, "Policy and what-if").
        stale = remove_stale_files(config.state_dir)
        if stale:
            _log().info("console_whatif_stale_removed", count=stale)
        self.store: Store = open_store(config)
        _log().info("store_opened", path=str(config.state_dir), store=store_description(config))
        for step in self.store.migrations_run:  # an older schema, upgraded on open
            _log().info("store_migrated", version=step.version, reason=step.label)
        hash_key = load_or_create_hash_key(config.state_dir)
        self.metrics = Metrics(self.store, destinations=lambda: [w.name for w in getattr(self, "outbound", ())])
        from listener.server.outbound import instance_id

        #: This process's id among the daemons sharing the store: the holder of the outbox rows it leases.
        self.instance = instance_id()
        _log().info("instance_started", instance=self.instance)
        _release_previous_run(config.state_dir, self.store, self.instance)
        self.outbound = _outbound_workers(config, reactor, self.store, self._lease_terms())
        # Receipt journal and worker threads (docs/hardening.md): what a crash
        # interrupted is counted now, before any new message can arrive.
        self.journal = Journal(config.state_dir / "journal")
        self.interrupted = self.journal.recover()
        # Each decoded report's prior studies, read on its worker thread; a failure is logged on the reactor.
        priors = PriorLookup(
            self.store,
            failed=lambda error_type: reactor.callFromThread(
                _log().warning, "prior_lookup_failed", error_type=error_type
            ),
        )
        # How a checked message is recorded, by the daemon's threads and its worker processes alike.
        recording = Recording(hash_key, tuple(w.settings for w in self.outbound))
        self.runner: PipelineRunner
        if config.workers > 1:
            # Worker processes: every core used (docs/hardening.md, "Worker processes").
            self.runner = ProcessRunner(
                reactor,
                config=config,
                workers=config.workers,
                budget=config.pipeline_budget,
                grace=max(1.0, config.pipeline_budget / 2),
                journal=self.journal,
                prior_lookup=priors.lookup,
                # Each process reads its own priors from a SQLite store's file (listener/server/procworker.py).
                store_file=self.store.path if isinstance(self.store, SQLiteStore) else None,
                on_event=_worker_event,
                inline=config.workers_inline,
                recording=recording,
                cpus=usable_cpus() if config.worker_affinity else (),
            )
        else:
            self.runner = PipelineRunner(
                reactor,
                workers=config.pipeline_workers,
                budget=config.pipeline_budget,
                grace=max(1.0, config.pipeline_budget / 2),
            )
        # Live discrepancy figures for routing, refreshed off the reactor (listener/server/live_rates.py).
        self.live_rates: LiveRates | None = None
        if config.outcomes_refresh_seconds > 0:
            self.live_rates = LiveRates(
                self.store,
                reactor,
                context=self._history_context,
                window_days=config.outcomes_window_days,
                refresh_seconds=config.outcomes_refresh_seconds,
                metrics=self.metrics,
            )
        self.intake = Intake(
            pipeline,
            self.store,
            hash_key=recording.hash_key,
            call_from_thread=reactor.callFromThread,
            keep_raw=recording.keep_raw,
            metrics=self.metrics,
            destinations=recording.destinations,
            on_outbox=self.wake_outbound,
            runner=self.runner,
            journal=self.journal,
            priors_for=priors,
            live_figures=self.live_rates.figures if self.live_rates is not None else lambda: None,
        )
        self.prober: LoopingCall | None = None
        self.http = _http_parts(config, reactor, self.store, self.intake, hash_key, self.metrics, lambda: self.config)
        self.http_port: Any = None
        # Set once the HTTP endpoint's listen failure is logged: the MLLP chain it fails is not to blame.
        self.http_listen_failed = False
        # One swappable TLS context for both ssl: endpoints (fails start-up early on bad TLS files).
        self.tls: ReloadableTls | None = ReloadableTls(tls_options(config)) if _uses_tls(config) else None
        self.factory = MllpFactory(
            self.intake,
            max_frame_size=config.max_frame_size,
            idle_timeout=config.idle_timeout,
            max_connections=config.max_connections,
            max_connections_per_peer=config.max_connections_per_peer,
            allowed_subjects=config.tls_allowed_subjects,
        )

    def recover_interrupted(self) -> Deferred[Any]:
        """Quarantine the messages that crashed the daemon too often; log the others.

        Runs before listening: a quarantined message is stored before its
        sender can resend it, so the resend gets the stored AE at once.
        """
        stores = []
        for entry in self.interrupted:
            if entry.crashes < QUARANTINE_AFTER:
                _log().warning("message_interrupted", count=entry.crashes, transport=entry.transport)
                continue
            stores.append(self._quarantine(entry))
        self.interrupted = []
        return DeferredList(stores, consumeErrors=True)

    def _quarantine(self, entry: Interrupted) -> Deferred[Any]:
        log = _log().bind(peer="journal")
        if entry.transport == "http" and self.http is not None:
            d = self.http[0].quarantine(entry.raw, entry.meta, entry.crashes, log)
        else:
            header = read_header(entry.raw)
            if header is None:
                self.journal.end(entry.key)
                return succeed(None)
            d = self.intake.quarantine(entry.raw, header, entry.crashes, log)

        def stored(result: Any) -> Any:
            self.journal.end(entry.key)
            return result

        done: Deferred[Any] = d.addCallback(stored)
        return done

    def _history_context(self) -> HistoryContext:
        """What grading the stored pairs needs (for the live figures): the running pipeline, the
        grading rules (read now: a reload applies to the next refresh) and the FHIR clients."""
        from listener.history_cli import history_context
        from listener.server.http import clients_from_config

        clients = {c.fhir.name: c.fhir for c in clients_from_config(self.config.http_clients).values()}
        return history_context(self.config, self.intake.pipeline, clients)

    def probe_store(self) -> Deferred[None]:
        """A periodic real write: health reports a full disk even when no message arrives."""

        def failed(failure: Any) -> None:
            exc = failure.value
            # The class and the database's code, never its text, which can quote a row's values
            # (docs/monitoring.md, "Logs").
            _log().error(
                "store_probe_failed",
                error_type=database_error_type(exc),
                error_code=database_error_code(exc),
                reason="write_probe_refused",
            )

        return threads.deferToThread(self.store.probe, datetime.now(UTC)).addErrback(failed)

    def start(self) -> Deferred[None]:
        """Recover, listen, then notify systemd. Fires when listening (or stops the reactor on failure).

        With worker processes, listening waits (at most START_TIMEOUT) until each has built its
        pipeline, so the first messages never wait for a process's start-up (docs/hardening.md,
        "Worker processes").
        """
        d0 = self.recover_interrupted()
        runner = self.runner
        if isinstance(runner, ProcessRunner):
            d0.addCallback(lambda _: threads.deferToThread(runner.wait_started))
        return d0.addCallback(lambda _: self._start())

    def _start(self) -> Deferred[None]:
        if self.config.tls:
            endpoint = tls_endpoint(self.reactor, self.config, context=self.tls)
        else:
            endpoint = serverFromString(self.reactor, self.config.mllp_endpoint)  # type: ignore[no-untyped-call]
        d: Deferred[IListeningPort] = endpoint.listen(self.factory)
        if self.http is not None:
            d.addCallback(self._listen_http)

        def listening(port: Any) -> None:
            self.port = port
            address = port.getHost()
            _log().info(
                "listening",
                endpoint=self.config.mllp_endpoint,
                status=f"{getattr(address, 'host', '')}:{getattr(address, 'port', '')}",
            )
            notify_ready(f"listening on {self.config.mllp_endpoint}")
            self.watchdog = start_watchdog(self.reactor)
            if self.watchdog is not None:
                _log().info("watchdog_started", interval_s=self.watchdog.interval)
            for worker in self.outbound:
                worker.start()
            self.prober = LoopingCall(self.probe_store)
            self.prober.clock = self.reactor
            self.prober.start(self.config.health_probe_interval, now=True)
            if self.live_rates is not None:
                self.live_rates.start()
            if self.config.raw_retention_days > 0:
                self.purger = LoopingCall(self._purge_raw)
                self.purger.clock = self.reactor
                self.purger.start(_PURGE_INTERVAL, now=True)
            # Start-up objects live forever: keep them out of the GC's generations.
            gc.freeze()

        def failed(failure: Any) -> None:
            if not self.http_listen_failed:
                _log_listen_failed(self.config.mllp_endpoint, failure)
            self.exit_code = EXIT_FAILED
            self.reactor.stop()

        return d.addCallbacks(listening, failed)

    def _lease_terms(self) -> LeaseTerms:
        """The lease holder, duration and takeover counter every outbound worker of this daemon uses."""
        takeovers = self.metrics.lease_takeovers
        return LeaseTerms(
            self.instance,
            self.config.outbox_lease_seconds,
            lambda destination: takeovers.labels(destination).inc(),
        )

    def wake_outbound(self) -> None:
        """Outbox rows were committed: let every destination's worker look now."""
        for worker in self.outbound:
            worker.wake()

    def _listen_http(self, mllp_port: Any) -> Deferred[Any]:
        """Listen on the HTTP endpoint too; fires with the MLLP port (fails if HTTP cannot listen)."""
        endpoint_text = self.config.http_endpoint
        if endpoint_text.startswith("ssl:"):
            endpoint = tls_endpoint(self.reactor, self.config, endpoint_text, context=self.tls)
        else:
            endpoint = serverFromString(self.reactor, endpoint_text)  # type: ignore[no-untyped-call]

        def listening(port: Any) -> Any:
            self.http_port = port
            address = port.getHost()
            _log().info(
                "listening",
                endpoint=endpoint_text,
                status=f"{getattr(address, 'host', '')}:{getattr(address, 'port', '')}",
            )
            return mllp_port

        def failed(failure: Any) -> Any:
            # Close the MLLP port: the daemon stops; the failure names the HTTP endpoint.
            _log_listen_failed(endpoint_text, failure)
            self.http_listen_failed = True
            self.port = mllp_port
            return failure

        d: Deferred[Any] = endpoint.listen(self.http[2])
        return d.addCallbacks(listening, failed)

    def _purge_raw(self) -> Deferred[None]:
        cutoff = datetime.now(UTC) - timedelta(days=self.config.raw_retention_days)

        def done(count: int) -> None:
            _log().info("raw_bodies_purged", count=count)

        def failed(failure: Any) -> None:
            _log().error(
                "store_unavailable", reason="purge_raw", error_type=failure.type.__name__ if failure.type else ""
            )

        self.purging = threads.deferToThread(self.store.purge_raw, cutoff).addCallbacks(done, failed)
        return self.purging

    def request_stop(self) -> None:
        """SIGTERM/SIGINT (on the reactor thread): stop the reactor, whose shutdown runs :meth:`stop`.

        A signal that finds the shutdown under way already (a second SIGTERM, or a start-up that
        failed) changes nothing and logs nothing.
        """
        with contextlib.suppress(ReactorNotRunning):
            self.reactor.stop()

    def request_reload(self) -> None:
        """SIGHUP (on the reactor thread): reload now, or once more after the reload running now.

        A burst of SIGHUPs costs at most two loads, and the last one reads
        the files as they are after the last signal.
        """
        _log().info("signal_received", signal="SIGHUP")
        if self._reloading:
            self._reload_again = True
            return
        self._reloading = True

        def done(_: object) -> None:
            self._reloading = False
            if self._reload_again:
                self._reload_again = False
                self.request_reload()

        self.reload().addBoth(done)

    def reload(self) -> Deferred[None]:
        """SIGHUP: re-read the config file and everything it names; swap it all in, or keep all of the old.

        Reloaded: mappings, procedures, policies (QA, routing, sites, readers,
        terms), destinations (a changed destination's worker is replaced; its
        queued rows stay and go to the new settings), HTTP client tokens, the
        TLS certificate, key and client CAs (new connections use them) and
        ``tls_allowed_subjects``. Everything else in the config file (listen
        endpoints, state directory, store, limits, workers) needs a restart: a
        change to it is named in the ``policy_reloaded`` line (at warning
        level, ``reason=restart_required``) and the old value stays in force.

        Loading (YAML parsing, compiling, reading certificates) runs on a
        thread: it is pure, and the reactor keeps answering meanwhile. The
        swap itself happens on the reactor thread, between two messages, so a
        message sees either the old configuration or the new one, never a mix.
        """

        # systemd shows "reloading" until READY=1 comes back (with the outcome as STATUS).
        notify_reloading()

        def load() -> Reloaded:
            config = self.reload_config() if self.reload_config is not None else self.config
            return Reloaded.load(config, self.config)

        def loaded(new: Reloaded) -> None:
            self._apply(new)
            pipeline = new.pipeline
            if self.metrics is not None:
                self.metrics.config_reloads.labels("applied").inc()
            fields = {
                "policy_version": pipeline.version,
                "routing_version": pipeline.routing_version,
                "mapping_version": pipeline.mapping_version,
                "count": len(self.outbound),
                "path": new.config.source,
            }
            if new.deferred:
                # The file changed something a reload cannot apply: say what, at warning level; the old value stays.
                _log().warning(
                    "policy_reloaded",
                    reason="restart_required",
                    detail="changed but needs a restart: " + ", ".join(new.deferred),
                    **fields,
                )
            else:
                _log().info(
                    "policy_reloaded",
                    reason="applied",
                    detail="reloaded: "
                    + ", ".join(RELOADED)
                    + "; restart needed for: "
                    + ", ".join(RESTART_ONLY_NAMES),
                    **fields,
                )
            notify_ready(f"listening on {self.config.mllp_endpoint}; policies {pipeline.version} reloaded")

        def failed(failure: Any) -> None:
            exc = failure.value
            if self.metrics is not None:
                self.metrics.config_reloads.labels("refused").inc()
            if isinstance(exc, ConfigError):
                _log().error(
                    "config_invalid",
                    path=exc.path or "",
                    line=exc.line or 0,
                    detail=exc.message,
                    reason="reload_kept_old",
                )
            else:
                _log().error("config_invalid", error_type=type(exc).__name__, reason="reload_kept_old")
            notify_ready(f"listening on {self.config.mllp_endpoint}; reload refused, old policies kept")

        d = threads.deferToThread(load)
        d.addCallback(loaded)  # _apply may still refuse (a destination endpoint it cannot build)
        return d.addErrback(failed).addCallback(lambda _: None)

    def _apply(self, new: Reloaded) -> None:
        """Swap in what ``new`` loaded (reactor thread). Raises before changing anything on a bad destination."""

        old_workers = {w.name: w for w in self.outbound}
        keep: list[Any] = []
        start: list[Any] = []
        replaced: list[Any] = []
        for settings in new.destinations:
            old = old_workers.get(settings.name)
            if old is not None and old.settings == settings and settings.tls is None:
                keep.append(old)
                continue
            # May raise ConfigError: nothing swapped yet.
            worker = _outbound_worker(self.reactor, self.store, settings, self._lease_terms())
            start.append(worker)
            if old is not None:
                replaced.append((old, worker))
        gone = [w for name, w in old_workers.items() if name not in {d.name for d in new.destinations}]
        # Nothing can fail from here on.
        self.intake.swap_pipeline(new.pipeline)
        if isinstance(self.runner, ProcessRunner):
            # Worker processes build the same files before their next message, with the settings in
            # force (the running store among them: they read their priors from it).
            recording = dataclasses.replace(self.runner.recording, destinations=tuple(new.destinations))
            self.runner.configure(new.effective, recording)
        self.intake.destinations = tuple(new.destinations)
        if self.tls is not None and new.tls is not None:
            self.tls.swap(new.tls)
        self.factory.allowed_subjects = frozenset(new.config.tls_allowed_subjects)
        if self.http is not None:
            self.http[2].resource.api.access.clients = new.clients
        self.config = new.effective
        self.outbound = tuple(keep + start)
        replacing = {id(new_w): old for old, new_w in replaced}
        for old in gone:
            old.stop()
        for worker in start:
            previous = replacing.get(id(worker))
            if previous is None:
                worker.start()
            else:
                # The old worker finishes (or drops) its attempt first: never two senders for one queue.
                previous.stop().addBoth(lambda _, w=worker: w.start())

    @inlineCallbacks
    def stop(self) -> Any:
        """Stop accepting, finish in-flight messages, flush and close the store."""
        _log().info("daemon_stopping", reason="shutdown", count=len(self.intake.in_flight))
        notify_stopping()
        if self.watchdog is not None and self.watchdog.running:
            self.watchdog.stop()
        if self.purger is not None and self.purger.running:
            self.purger.stop()
        if self.prober is not None and self.prober.running:
            self.prober.stop()
        if self.purging is not None and not self.purging.called:
            yield self.purging
        if self.live_rates is not None:
            self.live_rates.stop()
        if self.http is not None and self.http[2].resource.api.whatif is not None:
            # The console's what-if child dies with the daemon (docs/console.md, "Policy and what-if").
            self.http[2].resource.api.whatif.stop()
        if self.port is not None:
            yield self.port.stopListening()
        if self.http_port is not None:
            yield self.http_port.stopListening()
        self.intake.closing = True
        # Messages on a worker now finish unchecked at once instead of using their whole budget.
        self.runner.hurry()
        yield self.intake.drain()
        if self.http is not None:
            self.http[0].closing = True
            yield self.http[0].drain()
        # After the intakes: no new rows; each worker finishes (or drops) its attempt.
        yield DeferredList([worker.stop() for worker in self.outbound], consumeErrors=True)
        # A worker thread still inside a slow rule is a daemon thread: not waited for.
        self.runner.stop()
        if isinstance(self.runner, ProcessRunner):
            # Every worker process ends and is reaped: none outlives the daemon
            # (docs/hardening.md, "Worker processes"; bounded by CLOSE_TIMEOUT).
            yield threads.deferToThread(self.runner.join)
        try:
            yield threads.deferToThread(self.store.close)
        except StoreError:
            self.exit_code = EXIT_FAILED
        _log().info("store_closed")
        _log().info("daemon_stopped", status=self.exit_code)


def _log_listen_failed(endpoint: str, failure: Any) -> None:
    """``daemon_stopping`` for an endpoint that cannot listen: the system's reason and what to do.

    A port in use (another daemon, ``make run`` in a second checkout) or a privileged port names
    the options that choose other endpoints (docs/configuration.md, "Endpoints").
    """
    error = getattr(failure.value, "socketError", None) or failure.value
    reason = getattr(error, "strerror", None) or str(error) or (failure.type.__name__ if failure.type else "")
    if getattr(error, "errno", None) in (errno.EADDRINUSE, errno.EACCES):
        reason += (
            f": {endpoint} is taken or not allowed; stop what listens there, or choose other endpoints"
            " (overread serve --mllp/--http, make run ARGS=...; docs/configuration.md, Endpoints)"
        )
    _log().error(
        "daemon_stopping",
        reason="listen_failed",
        endpoint=endpoint,
        error_type=failure.type.__name__ if failure.type else "",
        detail=reason,
    )


def _worker_event(event: str, **fields: Any) -> None:
    """A worker process died or could not start (listener/server/runner.py): logged on the reactor."""
    _log().error(event, **fields)


def _http_parts(
    config: Config,
    reactor: Any,
    store: Store,
    intake: Intake,
    hash_key: bytes,
    metrics: Metrics,
    config_now: Callable[[], Config],
) -> Any:
    """(HttpIntake, the store's ReportReader, Site) for the HTTP endpoint, or None when it is off.

    ``config_now``: the daemon's configuration as it is now (after reloads), which the console's
    what-if jobs run ``overread simulate`` with (docs/console.md, "Policy and what-if").
    """
    if not config.http_endpoint or config.http_endpoint == "off":
        return None
    from listener.console.whatif import WhatIfJobs, simulate_command
    from listener.fhir.models import prime_models
    from listener.history import outcome_rules_file
    from listener.server.http import build_site, clients_from_config
    from listener.server.http_intake import HttpIntake

    # Build the FHIR validators now, not on the first request (STU3 only when a client sends it).
    stu3 = any(c.fhir_version == "STU3" for c in config.http_clients)
    prime_models(("R4", "R5", "STU3") if stu3 else ("R4", "R5"))
    http_intake = HttpIntake(
        lambda: intake.pipeline,
        store,
        hash_key=hash_key,
        call_from_thread=reactor.callFromThread,
        run_in_thread=threads.deferToThread,
        metrics=metrics,
        destinations=lambda: intake.destinations,
        on_outbox=intake.on_outbox,
        runner=intake.runner,
        journal=intake.journal,
        priors_for=intake.priors_for,
        live_figures=intake.live_figures,
    )
    queries = store.reports
    site = build_site(
        intake=http_intake,
        store=store,
        queries=queries,
        clients=clients_from_config(config.http_clients),
        metrics=metrics,
        reactor=reactor,
        max_body_size=config.http_max_body_size,
        idle_timeout=config.idle_timeout,
        max_connections=config.http_max_connections,
        max_connections_per_peer=config.http_max_connections_per_peer,
        outcome_rules_file=outcome_rules_file(config),
        whatif=WhatIfJobs(lambda: simulate_command(config_now()), config.state_dir),
    )
    return (http_intake, queries, site)


#: The file in the state directory naming the instance id of the daemon that last ran on it.
INSTANCE_FILE = "instance"


def _release_previous_run(state_dir: Path, store: Store, instance: str) -> None:
    """Release the outbox leases of the previous daemon on this state directory, then name ``instance``.

    That daemon is dead: we hold the state directory's lock, which it held
    until it exited (kill -9 included). So the rows it had claimed can go out
    now, instead of after their leases expire (docs/outbound.md, "Leases").
    Another daemon on the same store has a state directory of its own, so its
    leases are never touched. A failure is logged; the leases then expire.
    """
    path = state_dir / INSTANCE_FILE
    try:
        previous = path.read_text("utf-8").strip()
    except OSError:
        previous = ""
    if previous and previous != instance:
        try:
            count = store.outbox_release(previous)
        except StoreError as exc:
            _log().error("store_unavailable", reason="outbox_release", error_type=type(exc).__name__)
        else:
            if count:
                _log().info("outbox_leases_released", count=count, reason="previous_run", previous_instance=previous)
    part = path.with_name(INSTANCE_FILE + ".part")
    try:
        fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(instance + "\n")
        os.replace(part, path)
    except OSError as exc:
        _log().error("store_unavailable", reason="instance_file", error_type=type(exc).__name__)


@dataclass(frozen=True)
class LeaseTerms:
    """How this daemon's outbound workers lease outbox rows (docs/outbound.md, "Leases").

    Attributes:
        holder: the daemon's instance id.
        seconds: ``outbox.lease_seconds`` as the daemon started.
        on_takeover: counts a row taken over from an expired lease, by destination.
    """

    holder: str
    seconds: float
    on_takeover: Callable[[str], None]


def _outbound_workers(config: Config, reactor: Any, store: Store, lease: LeaseTerms) -> tuple[Any, ...]:
    """One OutboundWorker per enabled destination of ``config.destinations_file`` (ConfigError if invalid)."""
    if config.destinations_file is None:
        return ()
    from listener.destinations import load_destinations

    return tuple(
        _outbound_worker(reactor, store, settings, lease)
        for settings in load_destinations(config.destinations_file)
        if settings.enabled
    )


def _outbound_worker(reactor: Any, store: Any, settings: Any, lease: LeaseTerms) -> Any:
    """An OutboundWorker (not started) for one enabled destination."""
    from listener.server.outbound import OutboundWorker, client_endpoint

    endpoint = client_endpoint(reactor, settings)
    if settings.fhir is not None:  # a FHIR server: the same worker, POSTing Bundles
        from listener.server.fhir_push import fhir_connector

        connect = fhir_connector(reactor, settings, endpoint)
    else:
        connect = endpoint.connect
    return OutboundWorker(
        settings,
        store,
        reactor=reactor,
        connect=connect,
        run_in_thread=threads.deferToThread,
        holder=lease.holder,
        lease_seconds=lease.seconds,
        on_takeover=lambda: lease.on_takeover(settings.name),
    )


#: Config settings a SIGHUP applies (besides the files they name).
RELOADED = ("mappings", "procedures", "policies", "destinations", "http_clients", "tls files", "tls_allowed_subjects")
#: Config fields a SIGHUP does not apply: a change is named in policy_reloaded (warning) and waits for a restart.
RESTART_ONLY = {
    "mllp_endpoint": "mllp",
    "http_endpoint": "http",
    "state_dir": "state_dir",
    "synchronous": "synchronous",
    "max_frame_size": "max_frame_size",
    "idle_timeout": "idle_timeout",
    "max_connections": "max_connections",
    "max_connections_per_peer": "max_connections_per_peer",
    "http_max_body_size": "http_max_body_size",
    "http_max_connections": "http_max_connections",
    "http_max_connections_per_peer": "http_max_connections_per_peer",
    "pipeline_workers": "pipeline_workers",
    "workers": "workers",
    "pipeline_budget": "pipeline_budget",
    "health_probe_interval": "health_probe_interval",
    "raw_retention_days": "raw_retention_days",
    "outcomes_refresh_seconds": "outcomes",
    "outcomes_window_days": "outcomes",
    "outbox_lease_seconds": "outbox",
    # The daemon keeps the store it opened, and its worker processes read their priors from the
    # store the config they are given names (listener/server/procworker.py): both keep the running one.
    "store_url": "store",
    "store_password_file": "store",
}
RESTART_ONLY_NAMES = (
    "listen endpoints (mllp, http)",
    "state_dir",
    "synchronous",
    "connection limits and timeouts",
    "http_max_body_size",
    "pipeline_workers",
    "workers",
    "pipeline_budget",
    "health_probe_interval",
    "raw_retention_days",
    "outcomes (live figures' refresh and window)",
    "outbox (lease_seconds)",
    "store (store, store_password_file)",
    "turning TLS on or off",
)


def _uses_tls(config: Config) -> bool:
    return config.tls or config.http_endpoint.startswith("ssl:")


@dataclass(frozen=True)
class Reloaded:
    """Everything a SIGHUP loaded, before the swap (built on a thread).

    ``effective``: the new config with every restart-only field kept at its
    running value; ``deferred``: the names of those that changed in the file.
    """

    config: Config
    effective: Config
    pipeline: Pipeline
    destinations: tuple[Any, ...]
    clients: dict[str, Any]
    tls: Any
    deferred: tuple[str, ...]

    @classmethod
    def load(cls, config: Config, running: Config) -> Reloaded:
        """Load and check every file ``config`` names (ConfigError on the first problem)."""
        from listener.server.http import clients_from_config

        pipeline = build_pipeline(config)
        destinations: tuple[Any, ...] = ()
        if config.destinations_file is not None:
            from listener.destinations import load_destinations

            destinations = tuple(d for d in load_destinations(config.destinations_file) if d.enabled)
        tls = tls_options(config) if _uses_tls(running) and _uses_tls(config) else None
        deferred = list(
            dict.fromkeys(
                name for field, name in RESTART_ONLY.items() if getattr(config, field) != getattr(running, field)
            )
        )
        if _uses_tls(config) != _uses_tls(running) and "mllp" not in deferred:
            deferred.append("tls")
        effective = dataclasses.replace(config, **{field: getattr(running, field) for field in RESTART_ONLY})
        return cls(
            config, effective, pipeline, destinations, clients_from_config(config.http_clients), tls, tuple(deferred)
        )


def serve(config: Config, reload_config: Callable[[], Config] | None = None) -> int:
    """Run the daemon until SIGTERM/SIGINT; return the exit status.

    Raises:
        ConfigError: the config or a mapping/policy file is invalid.
        StoreError: the store cannot be opened.
    """
    from twisted.internet import reactor as _reactor

    reactor: Any = _reactor

    # The pipeline runs on worker threads (listener/server/runner.py); a long
    # report's thread would otherwise keep the interpreter lock for 5 ms at a
    # time while the network thread waits to write an answer (docs/hardening.md).
    sys.setswitchinterval(float(os.environ.get("OVERREAD_SWITCH_INTERVAL", SWITCH_INTERVAL)))
    globalLogBeginner.beginLoggingTo([twisted_observer()], redirectStandardIO=False, discardBuffer=True)
    daemon = Daemon(config, reactor, reload_config)
    # workers: the worker processes the pipeline runs on (0: threads; docs/configuration.md, "workers").
    _log().info(
        "daemon_started",
        endpoint=config.mllp_endpoint,
        path=str(config.state_dir),
        workers=config.workers if config.workers > 1 else 0,
    )

    def on_hup(_signum: int, _frame: FrameType | None) -> None:
        # A signal handler runs between two bytecodes of the main thread, which
        # may be inside the log writer holding its lock: log nothing here, only
        # hand the work to the reactor (callFromThread is signal-safe).
        reactor.callFromThread(daemon.request_reload)

    def on_stop(_signum: int, _frame: FrameType | None) -> None:
        # The same: the reactor thread stops the reactor (once, however many signals come).
        reactor.callFromThread(daemon.request_stop)

    signal.signal(signal.SIGHUP, on_hup)
    for stop_signal in (signal.SIGTERM, signal.SIGINT):
        signal.signal(stop_signal, on_stop)
    reactor.addSystemEventTrigger("before", "shutdown", daemon.stop)
    reactor.callWhenRunning(daemon.start)
    # Our handlers, not Twisted's: its own would stop the reactor again at each further signal
    # and log ReactorNotRunning as critical (the daemon starts no child through the reactor, so
    # it needs none of Twisted's SIGCHLD handling either).
    reactor.run(installSignalHandlers=False)
    # Shutdown is over (store closed, daemon_stopped logged). A further SIGTERM or SIGINT has
    # nothing left to stop: ignored, it cannot kill the exiting process with the default action,
    # which the interpreter puts back as it exits, so the exit status stays the daemon's own
    # (docs/operations.md, "Signals, restarts and the state directory lock").
    for stop_signal in (signal.SIGTERM, signal.SIGINT):
        signal.signal(stop_signal, signal.SIG_IGN)
    return daemon.exit_code
