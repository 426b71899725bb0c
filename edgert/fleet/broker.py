"""An embedded MQTT broker for one machine with no broker configured (amqtt, MQTT 3.1.1).

Fine for a device talking to itself or a bench of a few devices: amqtt is pure Python and moves on the
order of ~870 QoS 1 msg/s with paho on loopback (ANCHORS.md).  A fleet wants Mosquitto or a cluster;
see deploy/mosquitto and docs/scale.md.  Anonymous clients are allowed, so bind loopback unless the
network is trusted.
"""
from __future__ import annotations

import asyncio
import importlib
import logging
import signal
import socket
import threading
import time
from types import TracebackType
from typing import Callable

from edgert.errors import TelemetryError

_AMQTT_MISSING = "the embedded broker needs amqtt: pip install 'edgert[agent]'"


def _quiet_amqtt() -> None:
    """amqtt logs every connection at INFO and a traceback on a failed bind; edgert re-raises the
    failures that matter as TelemetryError, so keep it to errors unless the user configured it."""
    for name in ("amqtt", "transitions"):
        logger = logging.getLogger(name)
        if logger.level == logging.NOTSET:
            logger.setLevel(logging.CRITICAL if name == "amqtt" else logging.ERROR)


class EmbeddedBroker:
    """amqtt's broker on its own asyncio loop in a daemon thread.

    ``start()`` returns once the port accepts connections; ``stop()`` shuts the broker down and frees
    the port.  Also a context manager.  ``serve_forever()`` blocks until SIGINT/SIGTERM (for the CLI).
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 1883) -> None:
        # port 0: the kernel picks a free one; ``port`` and ``url`` give it once start() returned.
        self.host = host
        self.port = port
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._stop_requested = threading.Event()  # also covers a stop() before the loop made _stop
        self._ready = threading.Event()
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self, timeout_s: float = 10.0) -> EmbeddedBroker:
        if self.running:
            return self
        try:  # fail here, in the caller's thread, rather than in the broker's loop
            importlib.import_module("amqtt.broker")
        except ImportError:
            raise TelemetryError(_AMQTT_MISSING) from None
        _quiet_amqtt()
        self._ready.clear()
        self._stop_requested.clear()
        self._stop = None
        self._error = None
        self._thread = threading.Thread(target=self._run, name=f"edgert-broker-{self.port}", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout_s):
            self.stop()
            raise TelemetryError(f"embedded broker on {self.host}:{self.port} did not start within {timeout_s:g} s")
        if self._error is not None:
            self._thread.join(timeout_s)
            self._thread = None
            raise TelemetryError(f"embedded broker cannot listen on {self.host}:{self.port}: "
                                 f"{_one_line(self._error)}") from None
        self._wait_accepting(timeout_s)
        return self

    def stop(self, timeout_s: float = 10.0) -> None:
        thread, loop, stop = self._thread, self._loop, self._stop
        if thread is None:
            return
        self._stop_requested.set()
        if loop is not None and stop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(stop.set)
            except RuntimeError:  # loop closed between the check and the call
                pass
        thread.join(timeout_s)
        self._thread = None
        if thread.is_alive():
            raise TelemetryError(f"embedded broker on {self.host}:{self.port} did not stop within {timeout_s:g} s")

    def serve_forever(self, on_ready: Callable[[], None] | None = None) -> None:
        """Run until SIGINT or SIGTERM, then shut down cleanly.  Call from the main thread.

        The signal handlers go in before the broker starts, so there is no window in which a SIGTERM
        kills the process uncleanly; ``on_ready`` runs once the port accepts connections."""
        stop = threading.Event()
        previous = {}
        if threading.current_thread() is threading.main_thread():  # signal.signal() only works there
            previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            self.start()
            if on_ready is not None:
                on_ready()
            # wait() with a timeout so signal handlers run promptly and a dead broker thread ends us
            while not stop.wait(0.5) and self.running:
                pass
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self.stop()

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # -- broker thread ---------------------------------------------------------------------------

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._main())
        except BaseException as e:  # reported to start(); the thread must not die silently before ready
            self._error = self._error or e
        finally:
            self._ready.set()
            loop.close()

    async def _main(self) -> None:
        from amqtt.broker import Broker

        self._stop = asyncio.Event()
        config = {
            "listeners": {"default": {"type": "tcp", "bind": f"{self.host}:{self.port}"}},
            # Only anonymous auth: no $SYS publisher and no packet logger, which would only add load.
            "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
        }
        broker = Broker(config)
        try:
            await broker.start()
        except Exception as e:
            self._error = e
            self._ready.set()
            return
        if self.port == 0:
            # amqtt 0.12.1 has no public accessor for the bound socket.
            self.port = broker._servers["default"].instance.sockets[0].getsockname()[1]
        self._ready.set()
        try:
            if not self._stop_requested.is_set():
                await self._stop.wait()
        finally:
            await broker.shutdown()

    def _wait_accepting(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                with socket.create_connection((self.host, self.port), timeout=0.5):
                    return
            except OSError as e:
                if time.monotonic() > deadline or not self.running:
                    self.stop()
                    raise TelemetryError(f"embedded broker on {self.host}:{self.port} "
                                         f"does not accept connections: {e}") from None
                time.sleep(0.02)


def _one_line(e: BaseException) -> str:
    # amqtt wraps the OSError in BrokerError("Broker instance can't be started: [Errno 98] ...");
    # the root cause is the useful part.
    root: BaseException = e
    while root.__cause__ is not None:
        root = root.__cause__
    return " ".join(str(root).split()) or type(root).__name__
