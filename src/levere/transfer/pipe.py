"""Request bodies carried from the event loop to a worker thread in large buffers.

Design notes
------------
The web server hands a body over in small pieces (tens of KiB). Hashing and writing them one by one
would spend most of the time in per-call overhead, and doing it on the event loop would stall every
other request. :class:`BodyPipe` gathers the pieces into buffers of ``buffer_size`` on the loop and
queues at most ``depth`` of them for one worker thread, which hashes and writes while the loop
receives the next bytes. Memory stays at about ``depth x buffer_size`` whatever the body's size, and
when the worker falls behind the loop stops reading, so TCP flow control slows the client down.

Buffers are fixed-size ``bytearray`` objects, filled by copying each piece in once (a growing buffer
would be copied again each time it is enlarged), and handed out as memoryviews. A consumer that is
done with one gives it back with :meth:`ByteSource.recycle`, and the next buffer is filled in it:
a long upload then runs in the same few megabytes of memory instead of new ones every 4 MiB.

A body that ends early (the client went away) still delivers every byte received before the break,
then ends with :attr:`BodyPipe.interrupted` set, so the caller can keep those bytes.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import queue
from collections.abc import AsyncIterator, Iterable

MiB = 1024 * 1024
#: a client that sends nothing for this long is treated as gone
IDLE_TIMEOUT = 300.0


class _End:
    def __init__(self, error: str | None) -> None:
        self.error = error


class ByteSource:
    """What a consumer reads: buffers in order, ``None`` at the end; :meth:`unread` puts one back."""

    interrupted: str | None = None

    def __init__(self) -> None:
        self._back: list[bytes | bytearray | memoryview] = []

    def next_buffer(self) -> bytes | bytearray | memoryview | None:
        if self._back:
            return self._back.pop()
        return self._next()

    def _next(self) -> bytes | bytearray | memoryview | None:
        raise NotImplementedError

    def unread(self, data: bytes | bytearray | memoryview) -> None:
        if len(data):
            self._back.append(data)

    def recycle(self, data: bytes | bytearray | memoryview) -> None:
        """The consumer is done with ``data`` (a buffer this source gave it, or the last part of
        one) and holds no reference into it any more: the source may fill it again."""

    def close(self) -> None:
        """The consumer will read no more."""


class ListSource(ByteSource):
    """A body already in memory (a verified Upload-Checksum request, tests, service callers)."""

    def __init__(
        self, buffers: Iterable[bytes | bytearray | memoryview], interrupted: str | None = None
    ) -> None:
        super().__init__()
        self._items = list(buffers)
        self._items.reverse()
        self._interrupted_at_end = interrupted

    def _next(self) -> bytes | bytearray | memoryview | None:
        if self._items:
            return self._items.pop()
        self.interrupted = self._interrupted_at_end
        return None


class BodyPipe(ByteSource):
    """Made on the event loop (inside the request handler) around the request's body stream. Nothing
    is read from the client until the worker asks for the first buffer, so a request refused by the
    permission and state checks costs no transfer; :meth:`stop` ends the reading afterwards."""

    def __init__(
        self,
        stream: AsyncIterator[bytes],
        buffer_size: int = 4 * MiB,
        depth: int = 2,
        idle_timeout: float = IDLE_TIMEOUT,
    ) -> None:
        super().__init__()
        self._stream = stream
        self._size = buffer_size
        self._depth = depth
        self._idle = idle_timeout
        self._queue: queue.Queue[memoryview | _End] = queue.Queue()
        self._free: collections.deque[bytearray] = collections.deque()
        self._loop = asyncio.get_running_loop()
        self._slots = asyncio.Semaphore(depth)
        self._feeding: concurrent.futures.Future[None] | None = None
        self._closed = False
        self._ended = False
        #: bytes that arrived from the client
        self.received = 0

    async def stop(self) -> None:
        """After the worker is done: stop reading the body (the answer goes out without it)."""
        self.close()
        if self._feeding is not None and not self._feeding.done():
            self._feeding.cancel()
            with contextlib.suppress(asyncio.CancelledError, concurrent.futures.CancelledError):
                await asyncio.wrap_future(self._feeding)

    # --- the event loop's side ----------------------------------------------------------------------
    def _new_buffer(self) -> memoryview:
        try:
            return memoryview(self._free.popleft())
        except IndexError:
            return memoryview(bytearray(self._size))

    async def _feed(self) -> None:
        """Read the body to its end (or until the consumer closes) into the queue. Never raises for
        a broken body: the consumer sees the end, with :attr:`interrupted` set."""
        buf = self._new_buffer()
        filled = 0
        error: str | None = None
        try:
            async for piece in self._stream:
                if self._closed:
                    break
                self.received += len(piece)
                data = memoryview(piece)
                while data:
                    take = min(len(data), self._size - filled)
                    buf[filled : filled + take] = data[:take]
                    filled += take
                    data = data[take:]
                    if filled == self._size:
                        await self._put(buf)
                        buf, filled = self._new_buffer(), 0
        except asyncio.CancelledError:
            error = "the request was cancelled"
            raise
        except Exception as exc:  # the client went away or sent a broken body: keep what came
            error = f"the connection broke after {self.received} bytes ({type(exc).__name__})"
        finally:
            if filled and not self._closed:
                self._queue.put(buf[:filled])
            self._queue.put(_End(error))

    async def _put(self, buf: memoryview) -> None:
        await self._slots.acquire()
        if not self._closed:
            self._queue.put(buf)

    # --- the worker thread's side ---------------------------------------------------------------------
    def recycle(self, data: bytes | bytearray | memoryview) -> None:
        owner = data.obj if isinstance(data, memoryview) else data
        if isinstance(owner, bytearray) and len(owner) == self._size and len(self._free) <= self._depth:
            self._free.append(owner)

    def _next(self) -> memoryview | None:
        if self._ended:
            return None
        if self._feeding is None:
            self._feeding = asyncio.run_coroutine_threadsafe(self._feed(), self._loop)
        try:
            item = self._queue.get(timeout=self._idle)
        except queue.Empty:
            self.interrupted = f"no bytes arrived for {self._idle:.0f} seconds"
            self._ended = True
            self.close()
            return None
        if isinstance(item, _End):
            self.interrupted = item.error
            self._ended = True
            return None
        self._loop.call_soon_threadsafe(self._slots.release)
        return item

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if not self._loop.is_closed():
            # wake a feeder waiting for room, so that it sees the pipe is closed and stops reading
            for _ in range(self._depth):
                self._loop.call_soon_threadsafe(self._slots.release)
