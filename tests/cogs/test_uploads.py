"""Upload buffers are freed when a send ends, whatever keeps the request around."""

from __future__ import annotations

import aiohttp.payload
import pytest

from cogs._uploads import UploadPayload, uploads


def test_buffers_are_closed_after_the_send_and_after_a_failed_send():
    with uploads([(b"\x89PNG data", "a.png", False), (b"more", "b.png", True)]) as files:
        assert [f.filename for f in files] == ["a.png", "SPOILER_b.png"]
        assert files[0].fp.read() == b"\x89PNG data"
    assert all(f.fp.closed for f in files)

    with pytest.raises(RuntimeError), uploads([(b"x", "c.png", False)]) as failed:
        raise RuntimeError("Discord said no")
    assert failed[0].fp.closed


class Writer:
    """What aiohttp's stream writer is asked to send."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []

    async def write(self, chunk: bytes | bytearray | memoryview) -> None:
        self.writes.append(bytes(chunk))


async def test_a_files_bytes_go_to_the_socket_in_one_write_and_are_let_go_after():
    data = bytes(range(256)) * 8192  # 2 MiB: aiohttp's BytesIO payload would write 32 pieces
    with uploads([(data, "a.png", False)]) as files:
        part = aiohttp.payload.get_payload(files[0].fp, filename="a.png")
        assert isinstance(part, UploadPayload) and part.size == len(data)
        writer = Writer()
        await part.write_with_length(writer, None)  # type: ignore[arg-type]  # a fake writer
        assert writer.writes == [data]
        await part.close()
        assert part.size == len(data) and part.decode("latin-1") == ""
