"""A tiny HTTP/1.1 server, run in its own process, that logs when it answered each request.

``python stall_server.py LOG`` listens on a free 127.0.0.1 port and prints ``PORT <n>``.
Every request answers 200 at once; a request for ``/?i=<ns>`` logs the line
``<ns> <written_ns>``, ``written_ns`` being ``time.perf_counter_ns()`` just before the answer
is written. On Linux that clock is CLOCK_MONOTONIC, shared by every process, so the log gives
each request's true latency from the time the load generator meant to send it, measured
without the generator's help. The log is written to LOG on SIGTERM, then the server exits.

The test stops the process with SIGSTOP for a while: the kernel keeps accepting connections
into the listen backlog and buffering requests, and nothing is answered until SIGCONT.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import time

_ANSWER = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


class _Connection(asyncio.Protocol):
    def __init__(self, log: list[tuple[int, int]]) -> None:
        self.log = log
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while (end := self.buffer.find(b"\r\n\r\n")) >= 0:
            head, self.buffer = self.buffer[:end], self.buffer[end + 4 :]
            target = head.split(b" ", 2)[1]
            _, _, query = target.partition(b"?i=")
            written = time.perf_counter_ns()
            self.transport.write(_ANSWER)  # type: ignore[union-attr]
            if query:
                self.log.append((int(query), written))


async def main(log_path: str) -> None:
    log: list[tuple[int, int]] = []
    loop = asyncio.get_running_loop()
    done = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, done.set)
    # A backlog deep enough for every connection opened while the process is stopped.
    server = await loop.create_server(lambda: _Connection(log), "127.0.0.1", 0, backlog=4096)
    print("PORT", server.sockets[0].getsockname()[1], flush=True)
    await done.wait()
    server.close()
    with open(log_path, "w") as out:
        out.writelines(f"{intended} {written}\n" for intended, written in log)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
