"""Render what members see under a result to a PNG, from the bot's own embed and view code.

    .venv/bin/python tools/render_result_preview.py [docs/result-preview.png]

The embed comes from ``cogs._render.result_embed`` and the buttons and menus from
``cogs._result_actions.result_view`` for a sample generation, so the picture follows the code.
It is drawn with Pillow in Discord's dark theme (no browser); emoji are drawn as the nearest
plain symbol of the DejaVu font, since Pillow has no colour emoji font to hand.
"""

from __future__ import annotations

import re
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFont

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cogs import _render as render  # noqa: E402
from cogs._result_actions import result_view  # noqa: E402
from services.aimlapi import GeneratedImage, GenerationResult  # noqa: E402
from services.parameters import GenerationParameters  # noqa: E402
from services.store import Generation, GenerationKind, GenerationStatus  # noqa: E402

FONTS = Path("/usr/share/fonts/truetype/dejavu")
BACKGROUND = (49, 51, 56)
EMBED = (43, 45, 49)
TEXT = (219, 222, 225)
MUTED = (148, 155, 164)
LINK = (0, 168, 252)
MENTION = (201, 205, 251)
MENTION_BACKGROUND = (60, 66, 112)
BUTTON = {1: (88, 101, 242), 2: (78, 80, 88), 3: (36, 128, 70), 4: (218, 55, 60)}
SELECT = (30, 31, 34)
#: Emoji the bot uses, as the nearest symbol DejaVu Sans has.
SYMBOLS = {
    "🎲": "⚄",
    "✏️": "✎",
    "ℹ️": "ℹ",
    "🗑️": "✕",
    "🌱": "☘",
    "🌪️": "≋",
    "🖼️": "▣",
    "🔍": "⚲",
    "✨": "✦",
}
WIDTH = 820
MARGIN = 20
CONTENT_X = 88  # where Discord starts a message's body, right of the avatar
GUILD, CHANNEL, USER = 1100000000000000000, 1200000000000000000, 1300000000000000000


def font(size: int, *, bold: bool = False) -> ImageFont.FreeTypeFont:
    name = "DejaVuSans-Bold.ttf" if bold else "DejaVuSans.ttf"
    return ImageFont.truetype(str(FONTS / name), size)


def sample(count: int) -> tuple[Generation, GenerationResult]:
    now = datetime(2026, 11, 30, 14, 2, tzinfo=UTC)
    generation = Generation(
        id=42,
        parent_id=None,
        kind=GenerationKind.IMAGINE,
        user_id=USER,
        guild_id=GUILD,
        channel_id=CHANNEL,
        thread_id=CHANNEL + 1,
        card_channel_id=CHANNEL,
        card_message_id=CHANNEL + 1,
        model="flux/dev/image-to-image",
        parameters=GenerationParameters(
            prompt="my cat as a knight in shining armour, oil painting", count=count
        ),
        seed=1234567,
        reference_url="https://cdn.example/reference.png",
        status=GenerationStatus.DONE,
        error=None,
        created_at=now,
        started_at=now,
        finished_at=now,
        inference_seconds=2.6,
    )
    result = GenerationResult(
        images=[GeneratedImage(url="https://cdn.example/x.png")] * count,
        seed=1234567,
        inference_seconds=2.6,
    )
    return generation, result


def sample_picture(width: int, height: int, hue: int) -> Image.Image:
    """A stand-in for a generated image: a soft gradient with a few shapes."""
    picture = Image.new("RGB", (width, height))
    draw = ImageDraw.Draw(picture)
    for y in range(height):
        t = y / max(1, height - 1)
        draw.line(
            [(0, y), (width, y)],
            fill=(min(255, int(40 + 120 * t + hue)), int(60 + 80 * (1 - t)), int(140 + 90 * t)),
        )
    draw.ellipse([width * 0.3, height * 0.25, width * 0.7, height * 0.85], fill=(230, 200, 120))
    for ear in (
        ((0.36, 0.35), (0.42, 0.12), (0.48, 0.3)),
        ((0.52, 0.3), (0.58, 0.12), (0.64, 0.35)),
    ):
        draw.polygon([(width * x, height * y) for x, y in ear], fill=(230, 200, 120))
    draw.rectangle([width * 0.3, height * 0.62, width * 0.7, height * 0.7], fill=(180, 185, 200))
    return picture


def symbolise(text: str) -> str:
    for emoji, symbol in SYMBOLS.items():
        text = text.replace(emoji, symbol)
    return text


def plain(text: str) -> list[tuple[str, str]]:
    """Discord markdown as ``(kind, text)`` runs: links, mentions and plain text."""
    runs: list[tuple[str, str]] = []
    for piece in re.split(r"(\[[^\]]+\]\([^)]+\)|<@\d+>)", text):
        if not piece:
            continue
        if piece.startswith("[") and "](" in piece:
            runs.append(("link", piece[1 : piece.index("](")]))
        elif piece.startswith("<@"):
            runs.append(("mention", "@alice"))
        else:
            runs.append(("text", piece.replace("\\", "")))
    return runs


class Canvas:
    def __init__(
        self, height: int, *, background: tuple[int, int, int] = BACKGROUND, width: int = WIDTH
    ) -> None:
        self.image = Image.new("RGB", (width, height), background)
        self.draw = ImageDraw.Draw(self.image)

    def runs(self, x: int, y: int, text: str, size: int = 15, *, bold: bool = False) -> int:
        """Draw one line of markdown runs; returns the x after it."""
        face = font(size, bold=bold)
        for kind, piece in plain(text):
            width = int(self.draw.textlength(piece, font=face))
            if kind == "mention":
                self.draw.rounded_rectangle(
                    [x - 2, y - 1, x + width + 2, y + size + 4], 3, fill=MENTION_BACKGROUND
                )
            colour = {"link": LINK, "mention": MENTION}.get(kind, TEXT)
            self.draw.text((x, y), piece, font=face, fill=colour)
            x += width
        return x

    def wrapped(self, x: int, y: int, text: str, width: int, size: int = 15) -> int:
        """Plain text wrapped to ``width``; returns the y below it."""
        face = font(size)
        line = ""
        for word in text.split():
            trial = f"{line} {word}".strip()
            if self.draw.textlength(trial, font=face) > width and line:
                self.draw.text((x, y), line, font=face, fill=TEXT)
                y += size + 6
                line = word
            else:
                line = trial
        if line:
            self.draw.text((x, y), line, font=face, fill=TEXT)
            y += size + 6
        return y

    def header(self, y: int) -> int:
        self.draw.ellipse([MARGIN + 8, y, MARGIN + 48, y + 40], fill=render.COLOUR.to_rgb())
        self.draw.text((MARGIN + 21, y + 7), "f", font=font(22, bold=True), fill=(255, 255, 255))
        x = self.runs(CONTENT_X, y, "fluxbot", 16, bold=True) + 6
        self.draw.rounded_rectangle([x, y + 2, x + 34, y + 18], 3, fill=BUTTON[1])
        self.draw.text((x + 4, y + 3), "APP", font=font(11, bold=True), fill=(255, 255, 255))
        self.draw.text((x + 44, y + 2), "Today at 14:02", font=font(12), fill=MUTED)
        return y + 28

    def embed(self, y: int, data: dict[str, Any], picture: Image.Image | None) -> int:
        """Draw the embed on its own panel, then paste it with rounded corners and its bar."""
        width = 520
        panel = Canvas(4000, background=EMBED, width=width)
        inner = panel.wrapped(16, 12, data["description"], width - 32) + 6
        column = 0
        for field in data.get("fields", []):
            inline = field.get("inline", True)
            if not inline and column:
                inner += 46
                column = 0
            x = 16 + column * 165
            panel.draw.text((x, inner), field["name"], font=font(13, bold=True), fill=TEXT)
            panel.runs(x, inner + 20, field["value"], 14)
            column = column + 1 if inline else 0
            if column == 3 or not inline:
                inner += 46
                column = 0
        if column:
            inner += 46
        if picture is not None:
            size = (width - 32, int((width - 32) * picture.height / picture.width))
            panel.image.paste(picture.resize(size), (16, inner + 4))
            inner += size[1] + 14
        panel.draw.text((16, inner), data["footer"]["text"], font=font(12), fill=MUTED)
        inner += 28
        card = panel.image.crop((0, 0, width, inner))
        mask = Image.new("L", card.size, 0)
        ImageDraw.Draw(mask).rounded_rectangle([0, 0, width - 1, inner - 1], 5, fill=255)
        self.image.paste(card, (CONTENT_X, y), mask)
        self.draw.rounded_rectangle(
            [CONTENT_X, y, CONTENT_X + 4, y + inner - 1], 2, fill=render.COLOUR.to_rgb()
        )
        return y + inner + 8

    def components(self, y: int, rows: list[dict[str, Any]]) -> int:
        for row in rows:
            x = CONTENT_X
            for component in row["components"]:
                if component["type"] == 2:
                    x = self.button(x, y, component) + 8
                else:
                    self.select(x, y, component)
            y += 40
        return y

    def button(self, x: int, y: int, component: dict[str, Any]) -> int:
        emoji = (component.get("emoji") or {}).get("name", "")
        label = f"{symbolise(emoji)}  {component.get('label', '')}".strip()
        width = int(self.draw.textlength(label, font=font(14))) + 32
        colour = BUTTON[component["style"]]
        self.draw.rounded_rectangle([x, y, x + width, y + 32], 4, fill=colour)
        self.draw.text((x + 16, y + 7), label, font=font(14), fill=(255, 255, 255))
        return x + width

    def select(self, x: int, y: int, component: dict[str, Any]) -> None:
        self.draw.rounded_rectangle([x, y, x + 520, y + 34], 4, fill=SELECT, outline=(20, 20, 22))
        self.draw.text((x + 12, y + 8), component["placeholder"], font=font(14), fill=MUTED)
        self.draw.text((x + 496, y + 6), "⌄", font=font(18), fill=TEXT)


def caption(canvas: Canvas, y: int, text: str) -> int:
    canvas.draw.text((MARGIN, y), text, font=font(13, bold=True), fill=MUTED)
    return y + 26


def main() -> int:
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs" / "result-preview.png"
    one, one_result = sample(1)
    four, _ = sample(4)
    embed = render.result_embed(one, one_result, image_filename="fluxbot-42-1.png").to_dict()
    single = result_view(one, images=1).to_components()
    several = result_view(four, images=4).to_components()
    picture = sample_picture(768, 512, hue=0)

    canvas = Canvas(1400)
    y = caption(canvas, 16, "A result in the job's thread (one image):")
    y = canvas.header(y)
    y = canvas.embed(y, embed, picture)
    y = canvas.components(y, single) + 16
    y = caption(canvas, y, "With count:4, one menu per image instead of the image buttons:")
    thumbs = [sample_picture(256, 170, hue=40 * n) for n in range(4)]
    for n, thumb in enumerate(thumbs):
        canvas.image.paste(thumb, (CONTENT_X + (n % 2) * 264, y + (n // 2) * 178))
    y += 2 * 178 + 8
    y = canvas.components(y, several) + 12
    canvas.image.crop((0, 0, WIDTH, y)).save(target, optimize=True)
    print(f"wrote {target.relative_to(ROOT) if target.is_relative_to(ROOT) else target}")  # noqa: T201
    return 0


if __name__ == "__main__":
    sys.exit(main())
