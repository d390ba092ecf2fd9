"""Attachments and the CDN that serves them under signed URLs that expire, like Discord's.

A URL is signed when a message or upload is rendered and stays valid for 24 h of the fake
clock, so a bot that keeps an old URL instead of refetching the message gets a 404 here.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import mimetypes
import re
import warnings
from typing import TYPE_CHECKING, Any

from aiohttp import web

from tests.fakes.discord.state import Attachment

if TYPE_CHECKING:
    from tests.fakes.discord.server import FakeDiscord

CDN_URL_LIFETIME = 24 * 3600


class CdnMixin:
    """Attachments of FakeDiscord (``self`` is always a FakeDiscord)."""

    def upload_attachment(
        self: FakeDiscord,
        channel_id: int,
        filename: str,
        data: bytes,
        content_type: str | None,
        *,
        ephemeral: bool = False,
    ) -> dict[str, Any]:
        """A user's upload, as Discord puts it in ``resolved.attachments``."""
        att = self._store_attachment(channel_id, filename, data, content_type, ephemeral=ephemeral)
        return self._attachment_payload(att)

    def revoke_attachment(self: FakeDiscord, attachment_id: int | str) -> None:
        """Make the CDN answer 404 for this attachment from now on (ephemeral uploads vanish)."""
        self._attachments[int(attachment_id)].revoked = True

    def attachment_bytes(self: FakeDiscord, url_or_attachment: str | dict[str, Any]) -> bytes:
        """The stored bytes behind an attachment URL or payload (ignores expiry)."""
        if isinstance(url_or_attachment, dict):
            return self._attachments[int(url_or_attachment["id"])].data
        m = re.search(r"/attachments/\d+/(\d+)/", url_or_attachment)
        assert m, f"not a fake CDN URL: {url_or_attachment}"
        return self._attachments[int(m.group(1))].data

    def _store_attachment(
        self: FakeDiscord,
        channel_id: int,
        filename: str,
        data: bytes,
        content_type: str | None,
        *,
        ephemeral: bool = False,
        description: str | None = None,
    ) -> Attachment:
        """Store an upload; ``content_type=""`` means sniff it, as Discord does for bot files."""
        width = height = None
        sniffed: str | None = None
        try:
            from PIL import Image

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                with Image.open(io.BytesIO(data)) as img:
                    width, height = img.size
                    sniffed = Image.MIME.get(img.format or "")
        except Exception:  # not an image Pillow can read: no dimensions
            pass
        att = Attachment(
            id=self._snowflake(),
            channel_id=channel_id,
            filename=re.sub(r"[^\w.\-]", "_", filename),
            data=data,
            content_type=content_type,
            width=width,
            height=height,
            ephemeral=ephemeral,
            description=description,
        )
        if content_type == "":
            att.content_type = sniffed or mimetypes.guess_type(filename)[0]
        self._attachments[att.id] = att
        return att

    def _sign(self: FakeDiscord, att: Attachment, issued: int) -> str:
        ex = issued + CDN_URL_LIFETIME
        return hmac.new(
            self._secret, f"{att.id}:{ex:x}:{issued:x}".encode(), hashlib.sha256
        ).hexdigest()

    def _attachment_url(self: FakeDiscord, att: Attachment) -> str:
        issued = int(self.now())
        ex = issued + CDN_URL_LIFETIME
        path = f"/attachments/{att.channel_id}/{att.id}/{att.filename}"
        return f"{self.url}{path}?ex={ex:x}&is={issued:x}&hm={self._sign(att, issued)}&"

    def _attachment_payload(self: FakeDiscord, att: Attachment) -> dict[str, Any]:
        url = self._attachment_url(att)
        payload: dict[str, Any] = {
            "id": str(att.id),
            "filename": att.filename,
            "size": len(att.data),
            "url": url,
            "proxy_url": url,
            "content_type": att.content_type,
        }
        if att.width is not None:
            payload.update(width=att.width, height=att.height)
        if att.ephemeral:
            payload["ephemeral"] = True
        if att.description is not None:
            payload["description"] = att.description
        return payload

    async def _cdn(self: FakeDiscord, request: web.Request) -> web.Response:
        """Serve attachment bytes only for a valid, unexpired signature of a live attachment."""
        q = request.query
        att = self._attachments.get(int(request.match_info["attachment_id"]))
        try:
            issued, ex = int(q["is"], 16), int(q["ex"], 16)
            valid = (
                att is not None
                and not att.revoked
                and str(att.channel_id) == request.match_info["channel_id"]
                and att.filename == request.match_info["filename"]
                and ex == issued + CDN_URL_LIFETIME
                and hmac.compare_digest(q["hm"], self._sign(att, issued))
                and self.now() < ex
            )
        except (KeyError, ValueError):
            valid = False
        if not valid or att is None:
            self.rejections.append({"status": 404, "cdn": str(request.rel_url)})
            return web.Response(status=404, text="This content is no longer available.")
        content_type = att.content_type or "application/octet-stream"
        return web.Response(body=att.data, headers={"Content-Type": content_type})
