"""Image decoding and preprocessing shared by training, batch prediction and the service.

One function turns a file or uploaded bytes into the model's input, so the pixels the network
saw in training are the pixels it sees in production. NumPy and Pillow only (no torch): the
serving image imports this module.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from .errors import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")


def decode_image(source: Path | bytes, size: int, channels: int) -> np.ndarray:
    """Decode, convert to grayscale (1) or RGB (3), resize to ``size`` x ``size``.

    Returns float32 ``[channels, size, size]`` with values in [0, 1]; raises ``DataError`` with
    the reason when the input is not a readable image.
    """
    name = str(source) if isinstance(source, Path) else "uploaded image"
    try:
        with Image.open(source if isinstance(source, Path) else io.BytesIO(source)) as image:
            image.load()
            converted = image.convert("L" if channels == 1 else "RGB")
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise DataError(f"{name} is not a readable image: {exc}") from None
    if converted.size != (size, size):
        converted = converted.resize((size, size), Image.Resampling.BILINEAR)
    array = np.asarray(converted, dtype=np.float32) / 255.0
    if channels == 1:
        return array[np.newaxis, :, :]
    return np.ascontiguousarray(array.transpose(2, 0, 1))


def encode_png(pixels: np.ndarray) -> bytes:
    """A ``[C, H, W]`` array in [0, 1] as PNG bytes (sample data, reports, tests)."""
    scaled = np.clip(np.rint(pixels * 255.0), 0, 255).astype(np.uint8)
    image = Image.fromarray(scaled[0] if scaled.shape[0] == 1 else scaled.transpose(1, 2, 0))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
