"""Start the HTTP service with uvicorn: one worker process (scale out with more containers or
processes, one per core). Shared by ``python -m <package> serve`` and ``python -m
<package>.serving``.

uvicorn alone holds a connection as long as the client likes while it sends its request, and on
SIGTERM closes connections whose request it has not read yet. The protocol here adds what a
production service needs (limits from the ``serving`` config, see ``config_base.ServerSettings``):

- a request's headers must arrive within ``header_timeout_s`` (counted from its first byte, or
  from connecting for the first request) and be at most ``max_header_bytes``; its body within
  ``body_timeout_s`` of the headers. Otherwise the client gets 408 (431 for headers too large)
  and the connection is closed.
- at most ``max_connections`` connections are served at once (uvicorn answers 503 beyond);
  idle keep-alive connections close after ``keep_alive_timeout_s``.
- on SIGTERM the service stops accepting connections, then answers every request it accepted:
  requests in progress, and requests on connections it had accepted but not yet read (within
  their header timeout). Idle keep-alive connections close. Then the app shuts down (the MLOps
  service flushes its prediction log), and the process exits with status 0. Requests still
  running after ``shutdown_timeout_s`` are cancelled.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import threading
from types import FrameType
from typing import Any, ClassVar

import uvicorn
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from ..config import Config
from ..config_base import ServerSettings
from ..logging_config import configure_logging

logger = logging.getLogger(__name__)

# After SIGTERM, an idle keep-alive connection is closed this much later, so a request the
# client sent just before (already in the socket buffer) is read and answered.
IDLE_DRAIN_GRACE_S = 0.25
# Before the listening socket closes: one more turn of the event loop accepts connections the
# kernel completed just before the signal (closing would reset them).
ACCEPT_GRACE_S = 0.05


def run_server(cfg: Config, host: str | None = None, port: int | None = None) -> None:
    """Serve until SIGTERM or Ctrl-C; return when every accepted request is answered. uvicorn
    uses uvloop when installed; the HTTP parser is httptools."""
    from .app import create_app

    configure_logging(cfg.serving.log_level, json_lines=True)
    # The app sees the address it really listens on (the MLOps admin endpoint depends on it).
    serving = cfg.serving.model_copy(
        update={"host": host or cfg.serving.host, "port": port or cfg.serving.port}
    )
    cfg = cfg.model_copy(update={"serving": serving})
    limits: ServerSettings = serving  # every project type's ServingConfig extends it
    config = uvicorn.Config(
        quiet_disconnects(create_app(cfg)),
        host=serving.host,
        port=serving.port,
        http=guarded_protocol(limits),
        limit_concurrency=limits.max_connections,
        timeout_keep_alive=limits.keep_alive_timeout_s,
        timeout_graceful_shutdown=limits.shutdown_timeout_s,
        log_config=None,
        access_log=False,  # the app logs one JSON line per request with its latency
    )
    stopped_by: list[int] = []
    if threading.current_thread() is threading.main_thread():
        # uvicorn re-raises the signal that stopped it once it has shut down; with this
        # handler in place that ends here, and a graceful stop exits with status 0.
        def note(sig: int, _frame: FrameType | None) -> None:
            stopped_by.append(sig)

        previous = {sig: signal.signal(sig, note) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            DrainingServer(config).run()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
    else:
        DrainingServer(config).run()
    if stopped_by:
        logger.info("stopped by %s", signal.Signals(stopped_by[0]).name)


class DrainingServer(uvicorn.Server):
    """A ``uvicorn.Server`` whose shutdown first lets the loop accept what the kernel queued."""

    async def shutdown(self, sockets: Any = None) -> None:
        await asyncio.sleep(ACCEPT_GRACE_S)
        await super().shutdown(sockets)


def quiet_disconnects(app: ASGIApp) -> ASGIApp:
    """The app, except that a client gone before its request body arrived (or timed out by
    the protocol) ends the request quietly: nobody is left to answer, and it is not an error
    of the service (uvicorn would log a traceback)."""

    async def wrapped(scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await app(scope, receive, send)
        except ClientDisconnect:
            logger.debug("client disconnected before its request was read")

    return wrapped


def guarded_protocol(limits: ServerSettings) -> type[GuardedHttpToolsProtocol]:
    """The protocol class uvicorn instantiates per connection, bound to ``limits``."""
    return type("GuardedHttpToolsProtocol", (GuardedHttpToolsProtocol,), {"limits": limits})


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with header/body timeouts, a header size limit and a
    shutdown that answers every accepted request (see the module docstring).

    It relies on uvicorn's protocol attributes ``cycle``, ``transport`` and ``loop`` and its
    parser callbacks, stable across uvicorn 0.x; the serving tests exercise each of them.
    """

    limits: ClassVar[ServerSettings] = ServerSettings()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._timer: asyncio.TimerHandle | None = None
        self._in_head = False  # between a request's first byte and the end of its headers
        self._head_bytes = 0
        self._requests = 0  # requests whose headers arrived on this connection
        self._draining = False

    # Connection events.

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        # The first request must arrive in time too: a silent connection is closed.
        self._arm(self.limits.header_timeout_s, self._head_too_slow)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._in_head and not self.transport.is_closing():
            # Still in the headers after this chunk: all of it was header bytes.
            self._head_bytes += len(data)
            if self._head_bytes > self.limits.max_header_bytes:
                self._reply_and_close(431, "request headers too large")

    def shutdown(self) -> None:
        """SIGTERM: finish what was accepted, then close."""
        self._draining = True
        if self.cycle is not None and not self.cycle.response_complete:
            self.cycle.keep_alive = False  # in progress: answered, then closed
        elif self._in_head or self._requests == 0:
            pass  # a request is on its way; the header timeout bounds the wait
        else:
            self.loop.call_later(IDLE_DRAIN_GRACE_S, self._close_if_idle)

    # Parser callbacks.

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head = True
        self._head_bytes = 0
        if self._timer is None:  # armed since connecting for the first request
            self._arm(self.limits.header_timeout_s, self._head_too_slow)

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._requests += 1
        self._arm(self.limits.body_timeout_s, self._body_too_slow)
        super().on_headers_complete()
        if self._draining and self.cycle is not None:
            self.cycle.keep_alive = False

    def on_message_complete(self) -> None:
        self._disarm()
        super().on_message_complete()

    # Timers.

    def _arm(self, seconds: float, callback: Any) -> None:
        self._disarm()
        self._timer = self.loop.call_later(seconds, callback)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _head_too_slow(self) -> None:
        self._timer = None
        if self.transport.is_closing():
            return
        if self._in_head:
            self._reply_and_close(408, "request headers not received in time")
        elif self.cycle is None or self.cycle.response_complete:
            self.transport.close()  # connected but sent nothing: nobody to answer

    def _body_too_slow(self) -> None:
        self._timer = None
        if self.transport.is_closing() or self.cycle is None or not self.cycle.more_body:
            return
        if self.cycle.response_started:
            self.transport.close()
        else:
            self._reply_and_close(408, "request body not received in time")

    def _close_if_idle(self) -> None:
        if self.transport.is_closing() or self._in_head:
            return
        if self.cycle is None or self.cycle.response_complete:
            self.transport.close()

    def _reply_and_close(self, status: int, detail: str) -> None:
        body = json.dumps({"detail": detail}).encode()
        reason = {408: b"Request Timeout", 431: b"Request Header Fields Too Large"}[status]
        head = b"HTTP/1.1 %d %s\r\n" % (status, reason)
        self.transport.write(
            head
            + b"content-type: application/json\r\n"
            + b"content-length: %d\r\n" % len(body)
            + b"connection: close\r\n\r\n"
            + body
        )
        logger.info("answered %d and closed the connection: %s", status, detail)
        self._in_head = False
        if self.cycle is not None and not self.cycle.response_complete:
            # The handler waiting for the body sees a disconnect at once, and its answer is
            # dropped: this one was sent.
            self.cycle.disconnected = True
            self.cycle.message_event.set()
        self.transport.close()
