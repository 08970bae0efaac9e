"""Image decoding and preprocessing shared by training, batch prediction and the service.

One function turns a file or uploaded bytes into the model's input, so the pixels the network
saw in training are the pixels it sees in production. NumPy and Pillow only (no torch): the
serving image imports this module.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from .errors import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")
# The formats read, everywhere (training, batch prediction, the service): the ones the suffixes
# above name. Pillow would open many more (TIFF, PSD, ICO, ...); a file of another format is
# refused as unreadable, whatever its name says.
IMAGE_FORMATS = ("PNG", "JPEG", "BMP", "GIF", "WEBP")
FORMAT_NAMES = "PNG, JPEG, BMP, GIF or WebP"


class ImageTooLargeError(DataError):
    """The image would decode to more pixels than allowed (a "decompression bomb" or simply a
    needlessly large file)."""


@dataclass(frozen=True)
class ImageHeader:
    """An image's size as stored, and the size ``decode_image`` decodes it to."""

    width: int
    height: int
    decoded_width: int
    decoded_height: int

    @property
    def decoded_pixels(self) -> int:
        return self.decoded_width * self.decoded_height

    def describe(self) -> str:
        """``WxH``, plus the reduced size when it decodes smaller: for error messages."""
        stored = f"{self.width}x{self.height}"
        if (self.decoded_width, self.decoded_height) == (self.width, self.height):
            return stored
        return f"{stored} ({self.decoded_width}x{self.decoded_height} at reduced scale)"


def read_header(source: Path | bytes, size: int) -> ImageHeader:
    """The size of ``source`` and the size ``decode_image`` decodes it to, from its header alone.

    JPEG files are decoded at a reduced scale (1/2, 1/4 or 1/8, never below ``size``), so a
    large photo costs a fraction of its full size; other formats decode at their full size.
    Raises ``ImageTooLargeError`` past Pillow's own decompression-bomb limit and ``DataError``
    when the header is not one of ``IMAGE_FORMATS``.
    """
    with _open(source) as image:
        width, height = image.size
        _reduce(image, size)
        return ImageHeader(width, height, *image.size)


def decode_image(
    source: Path | bytes, size: int, channels: int, max_pixels: int | None = None
) -> np.ndarray:
    """Decode, convert to grayscale (1) or RGB (3), resize to ``size`` x ``size``.

    Returns float32 ``[channels, size, size]`` with values in [0, 1]; raises ``DataError`` with
    the reason when the input is not a readable image, and ``ImageTooLargeError`` (before
    decoding anything) when it would decode to more than ``max_pixels`` pixels.
    """
    try:
        with _open(source) as image:
            width, height = image.size
            _reduce(image, size)
            header = ImageHeader(width, height, *image.size)
            if max_pixels is not None and header.decoded_pixels > max_pixels:
                raise ImageTooLargeError(
                    f"image of {header.describe()} pixels is too large to decode "
                    f"(at most {max_pixels:,} pixels)"
                )
            image.load()
            converted = image.convert("L" if channels == 1 else "RGB")
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise DataError(f"{_name(source)} is not a readable image: {exc}") from None
    if converted.size != (size, size):
        converted = converted.resize((size, size), Image.Resampling.BILINEAR)
    array = np.asarray(converted, dtype=np.float32) / 255.0
    if channels == 1:
        return array[np.newaxis, :, :]
    return np.ascontiguousarray(array.transpose(2, 0, 1))


def _name(source: Path | bytes) -> str:
    return str(source) if isinstance(source, Path) else "uploaded image"


def _open(source: Path | bytes) -> Image.Image:
    """Open (header only) one of ``IMAGE_FORMATS``; errors as ``DataError``."""
    try:
        return Image.open(
            source if isinstance(source, Path) else io.BytesIO(source), formats=IMAGE_FORMATS
        )
    except Image.DecompressionBombError as exc:  # Pillow's own limit, far above ours
        raise ImageTooLargeError(f"{_name(source)} is too large to decode: {exc}") from None
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise DataError(
            f"{_name(source)} is not a readable image ({FORMAT_NAMES}): {exc}"
        ) from None


def _reduce(image: Image.Image, size: int) -> None:
    """Let the JPEG decoder scale down by 2, 4 or 8 while staying at least ``size`` a side
    (a no-op for other formats). Training and serving both decode through here, so both see
    the same pixels."""
    if image.format == "JPEG":
        image.draft(image.mode, (size, size))


def encode_png(pixels: np.ndarray) -> bytes:
    """A ``[C, H, W]`` array in [0, 1] as PNG bytes (sample data, reports, tests)."""
    scaled = np.clip(np.rint(pixels * 255.0), 0, 255).astype(np.uint8)
    image = Image.fromarray(scaled[0] if scaled.shape[0] == 1 else scaled.transpose(1, 2, 0))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
