"""Upload buffers are freed when a send ends, whatever keeps the request around."""

from __future__ import annotations

import pytest

from cogs._uploads import uploads


def test_buffers_are_closed_after_the_send_and_after_a_failed_send():
    with uploads([(b"\x89PNG data", "a.png", False), (b"more", "b.png", True)]) as files:
        assert [f.filename for f in files] == ["a.png", "SPOILER_b.png"]
        assert files[0].fp.read() == b"\x89PNG data"
    assert all(f.fp.closed for f in files)

    with pytest.raises(RuntimeError), uploads([(b"x", "c.png", False)]) as failed:
        raise RuntimeError("Discord said no")
    assert failed[0].fp.closed
