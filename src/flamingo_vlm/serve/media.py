"""Image parts → decoded pictures, under the server's caps.

Images arrive as ``data:image/…;base64,…`` URLs. ``http(s)`` URLs are fetched only with
``--allow-remote-images`` (a server that fetches any URL it is given can be made to probe the
network it sits in), with a timeout and the byte cap. The pixel count is read from the image header
before decoding, so a small file that decodes to gigabytes (a decompression bomb) is refused cheaply.
"""

from __future__ import annotations

import base64
import binascii
import io
import urllib.error
import urllib.request

from PIL import Image, UnidentifiedImageError

from flamingo_vlm.image_processing import upright
from flamingo_vlm.serve.errors import APIError
from flamingo_vlm.serve.limits import ServeLimits
from flamingo_vlm.serve.mapping import ImageRef


def load_image(ref: ImageRef, limits: ServeLimits, allow_remote: bool) -> Image.Image:
    """The decoded picture of one image part; :class:`APIError` (400/413) naming the part otherwise."""
    data = _image_bytes(ref, limits, allow_remote)
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
            if width * height > limits.max_image_pixels:
                raise APIError(413, f"{ref.where}: image of {width}x{height} pixels exceeds the cap of "
                                    f"{limits.max_image_pixels} pixels", ref.where, "image_too_large")  # fmt: skip
            return upright(image)  # decodes here, while the buffer is open
    except APIError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError, SyntaxError) as e:
        raise APIError(400, f"{ref.where}: cannot decode the image: {e}", ref.where, "invalid_image") from e


def _image_bytes(ref: ImageRef, limits: ServeLimits, allow_remote: bool) -> bytes:
    url = ref.url.strip()
    if url.startswith("data:"):
        header, sep, payload = url.partition(",")
        if not sep or not header.endswith(";base64"):
            raise APIError(400, f"{ref.where}: expected a data URL like data:image/png;base64,…", ref.where)
        if len(payload) * 3 // 4 > limits.max_image_bytes + 3:
            raise APIError(413, f"{ref.where}: image exceeds {limits.max_image_bytes} bytes", ref.where,
                           "image_too_large")  # fmt: skip
        try:
            return base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError) as e:
            raise APIError(400, f"{ref.where}: the data URL is not valid base64: {e}", ref.where) from e
    if url.startswith(("http://", "https://")):
        if not allow_remote:
            message = (
                "remote image URLs are off on this server (send a data URL, or start it with --allow-remote-images)"
            )
            raise APIError(400, f"{ref.where}: {message}", ref.where, "remote_images_disabled")
        return _download(ref, limits)
    raise APIError(400, f"{ref.where}: unsupported image URL scheme (data: URLs only)", ref.where)


def _download(ref: ImageRef, limits: ServeLimits) -> bytes:
    """GET the image, at most ``max_image_bytes`` read and ``remote_timeout_s`` per blocking step."""
    try:
        with urllib.request.urlopen(ref.url, timeout=limits.remote_timeout_s) as response:  # noqa: S310 (scheme checked)
            data = response.read(limits.max_image_bytes + 1)
    except (urllib.error.URLError, OSError, ValueError) as e:
        raise APIError(400, f"{ref.where}: cannot fetch the image: {e}", ref.where, "image_fetch_failed") from e
    if len(data) > limits.max_image_bytes:
        raise APIError(413, f"{ref.where}: image exceeds {limits.max_image_bytes} bytes", ref.where, "image_too_large")
    return data
