"""Files for one Discord send, their buffers freed as soon as the send ends."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterable, Iterator
from typing import Any

import discord
from aiohttp.abc import AbstractStreamWriter
from aiohttp.payload import Payload, payload_type


class UploadBuffer(io.BytesIO):
    """A file's bytes for one send; aiohttp writes it with :class:`UploadPayload`."""


@payload_type(UploadBuffer)
class UploadPayload(Payload):
    """The file's bytes written to the socket in one call, as they are.

    aiohttp's own payload for an ``io.BytesIO`` first copies it (``getbuffer``), then writes it
    in 64 KiB reads, each a copy, a send and a turn of the event loop: ~0.2 ms of CPU more per
    1.5 MB upload (issue 10). These bytes are in memory already; the transport's buffer and
    write flow control pace the send just the same.
    """

    _value: memoryview

    def __init__(self, value: UploadBuffer, *args: Any, **kwargs: Any) -> None:
        # getvalue() hands back the bytes the buffer was made from (no copy: never exported).
        view = memoryview(value.getvalue())[value.tell() :]
        super().__init__(view, *args, **kwargs)
        self._size = len(view)

    def decode(self, encoding: str = "utf-8", errors: str = "strict") -> str:
        return bytes(self._value).decode(encoding, errors)

    async def write(self, writer: AbstractStreamWriter) -> None:
        await writer.write(self._value)

    async def write_with_length(
        self, writer: AbstractStreamWriter, content_length: int | None
    ) -> None:
        await writer.write(self._value if content_length is None else self._value[:content_length])

    def _close(self) -> None:
        """Drop the bytes: an idle pooled connection may keep its last request's body."""
        self._value = memoryview(b"")


@contextlib.contextmanager
def uploads(items: Iterable[tuple[bytes, str, bool]]) -> Iterator[list[discord.File]]:
    """``(data, filename, spoiler)`` items as files for one send.

    aiohttp's idle pooled connections can keep their last request's body alive, and
    ``BytesIO.getbuffer`` makes the buffer a private copy: without closing it, a burst of
    uploads kept ~1.5 MB per request until each connection was reused (measured with memray).
    discord.py also closes the File after a send, so a retry needs new ones (made per call).
    """
    buffers: list[io.BytesIO] = []
    files = []
    for data, filename, spoiler in items:
        buffers.append(UploadBuffer(data))
        files.append(discord.File(buffers[-1], filename=filename, spoiler=spoiler))
    try:
        yield files
    finally:
        for buffer in buffers:
            # discord.File stubs out ``close`` on the object, so call the class's own; a view
            # still exported elsewhere keeps the buffer, which only costs memory.
            with contextlib.suppress(BufferError):
                io.BytesIO.close(buffer)
