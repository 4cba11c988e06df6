"""Turning the base64 frames of a request into validated RGB images.

Every check names the shot and frame it concerns, because a caller sending 64 shots of 5 frames
needs to know which one was bad. Decompression bombs are refused from the header, before any
pixel is decoded. Truncated frames are refused, never passed off as data: Pillow's
``LOAD_TRUNCATED_IMAGES`` is kept off (a cut file is an error), the decode is forced in full
(``load()``), and a JPEG that ends early *with* an end marker (which libjpeg fills with grey and
reports only as a warning) is caught from its structure by ``jpeg_structure``.
"""

from __future__ import annotations

import base64
import binascii
import io
import logging
import warnings

from PIL import Image, ImageFile

from ..errors import InvalidInput
from .jpeg_structure import jpeg_shortfall

log = logging.getLogger("qwen_server.images")

_MAGIC = {b"\xff\xd8\xff": "JPEG", b"\x89PNG\r\n\x1a\n": "PNG"}


def _strip_data_url(data: str) -> str:
    # Accept "data:image/jpeg;base64,...." as browsers and some SDKs produce it.
    if data.startswith("data:"):
        _, sep, rest = data.partition(",")
        if not sep:
            raise ValueError("data URL without a comma")
        return rest
    return data


def decode_image(
    data: str, *, max_pixels: int, where: str, keep_pixels: int | None = None
) -> Image.Image:
    """Decode one base64 JPEG/PNG frame into an RGB image, or raise InvalidInput.

    ``where`` (e.g. ``"shot 3 image 2"``) prefixes every message. ``max_pixels`` bounds
    width x height before decoding (``server.max_image_pixels``). ``keep_pixels`` (the model's
    ``max_pixels``) bounds what is kept: larger frames are shrunk right after decoding, so a
    request of many small-but-highly-compressible large frames cannot hold gigabytes of
    pixels while it waits for the GPU. JPEGs are decoded at a reduced scale when they can be.
    """
    try:
        raw = base64.b64decode(_strip_data_url(data), validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInput(f"{where}: not valid base64") from None
    if not raw:
        raise InvalidInput(f"{where}: empty image")
    kind = next((name for magic, name in _MAGIC.items() if raw.startswith(magic)), None)
    if kind is None:
        raise InvalidInput(f"{where}: not a JPEG or PNG image")
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        # A process-wide switch some libraries turn on; with it, cut frames decode as grey.
        ImageFile.LOAD_TRUNCATED_IMAGES = False
        log.warning("PIL.ImageFile.LOAD_TRUNCATED_IMAGES was on; turned it off")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(raw), formats=[kind])
            width, height = img.size
            if width * height > max_pixels:
                raise InvalidInput(
                    f"{where}: image is {width}x{height} = {width * height} pixels, over the "
                    f"limit of {max_pixels} (server.max_image_pixels)"
                )
            shortfall = jpeg_shortfall(raw) if kind == "JPEG" else None
            if shortfall is not None:
                raise InvalidInput(f"{where}: truncated JPEG ({shortfall})")
            if keep_pixels is not None and kind == "JPEG" and width * height > 4 * keep_pixels:
                # DCT scaling: decode at 1/2, 1/4 or 1/8 size while staying above the target.
                scale = (keep_pixels / (width * height)) ** 0.5
                img.draft("RGB", (max(1, int(width * scale)), max(1, int(height * scale))))
            img.load()
    except InvalidInput:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise InvalidInput(
            f"{where}: image dimensions exceed the limit of {max_pixels} pixels"
        ) from None
    except Exception as exc:  # PIL raises OSError, SyntaxError, ValueError... for bad files
        raise InvalidInput(f"{where}: truncated or corrupt {kind} ({type(exc).__name__})") from None
    if width < 1 or height < 1:
        raise InvalidInput(f"{where}: image has no pixels")
    img = img.convert("RGB") if img.mode != "RGB" else img
    if keep_pixels is not None and img.width * img.height > keep_pixels:
        scale = (keep_pixels / (img.width * img.height)) ** 0.5
        size = (max(1, int(img.width * scale)), max(1, int(img.height * scale)))
        img = img.resize(size, Image.Resampling.BICUBIC)
    return img
