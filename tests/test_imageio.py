"""edge.imageio: header-first size checks, EXIF orientation, format conversions, bad input."""

from __future__ import annotations

import io
import struct
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.errors import BadImageError, ImageTooLargeError
from edge.imageio import decode_image, image_header, read_image_file

LIMIT = 40_000_000


def _two_colour(h: int = 20, w: int = 40) -> np.ndarray:
    """RGB image: left half red, right half blue (orientation is visible)."""
    img = np.zeros((h, w, 3), np.uint8)
    img[:, : w // 2] = (255, 0, 0)
    img[:, w // 2 :] = (0, 0, 255)
    return img


def _encode(ext: str, img: np.ndarray, params: list[int] | None = None) -> bytes:
    ok, buf = cv2.imencode(ext, img, params or [])
    assert ok
    return buf.tobytes()


def _jpeg(rgb: np.ndarray) -> bytes:
    return _encode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])


def _with_exif_orientation(jpeg: bytes, orientation: int) -> bytes:
    """Insert a hand-built APP1 Exif segment (little-endian TIFF, one IFD0 entry) after SOI."""
    ifd = struct.pack("<H", 1) + struct.pack("<HHIHH", 0x0112, 3, 1, orientation, 0)
    tiff = b"II*\x00" + struct.pack("<I", 8) + ifd + struct.pack("<I", 0)
    payload = b"Exif\x00\x00" + tiff
    app1 = b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload
    return jpeg[:2] + app1 + jpeg[2:]


def test_png_rgb_round_trips_exactly() -> None:
    # given an RGB image saved as PNG
    img = _two_colour()
    data = _encode(".png", cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    # when decoded
    out = decode_image(data, max_pixels=LIMIT)
    # then the pixels are the same RGB values
    assert out.dtype == np.uint8 and np.array_equal(out, img)


def test_exif_orientation_6_is_rotated_clockwise() -> None:
    # given a 40x20 JPEG (red left, blue right) tagged orientation 6 (rotate 90 CW to display)
    data = _with_exif_orientation(_jpeg(_two_colour()), 6)
    # when decoded
    out = decode_image(data, max_pixels=LIMIT)
    # then it is 20 wide x 40 high with the red half on top
    assert out.shape == (40, 20, 3)
    assert out[5, 10, 0] > 200 and out[5, 10, 2] < 60
    assert out[35, 10, 2] > 200 and out[35, 10, 0] < 60


@pytest.mark.parametrize("orientation", [2, 3, 4, 5, 6, 7, 8])
def test_exif_orientation_matches_pillow(orientation: int) -> None:
    # given a JPEG with each EXIF orientation
    from PIL import Image, ImageOps

    data = _with_exif_orientation(_jpeg(_two_colour(24, 48)), orientation)
    # when decoded by us and by Pillow's exif_transpose
    ours = decode_image(data, max_pixels=LIMIT)
    ref = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB"))
    # then both agree in shape and (within JPEG decoder differences) in pixels
    assert ours.shape == ref.shape
    assert np.abs(ours.astype(int) - ref.astype(int)).mean() < 3.0


def test_sixteen_bit_png_becomes_eight_bit() -> None:
    # given a 16-bit greyscale ramp PNG with known values
    img16 = np.array([[0, 257 * 100, 65535]], dtype=np.uint16)
    data = _encode(".png", img16)
    # when decoded
    out = decode_image(data, max_pixels=LIMIT)
    # then values are scaled to 8 bits and replicated to RGB
    assert out.dtype == np.uint8 and out.shape == (1, 3, 3)
    assert out[0, :, 0].tolist() == [0, 100, 255]


def test_greyscale_png_becomes_rgb() -> None:
    # given a greyscale PNG
    grey = np.full((5, 6), 77, np.uint8)
    # when decoded
    out = decode_image(_encode(".png", grey), max_pixels=LIMIT)
    # then it has three equal channels
    assert out.shape == (5, 6, 3) and (out == 77).all()


def test_rgba_png_is_composited_on_white() -> None:
    # given an RGBA PNG: one opaque red pixel, one fully transparent, one half-transparent black
    bgra = np.array([[[0, 0, 255, 255], [0, 0, 0, 0], [0, 0, 0, 128]]], np.uint8)
    # when decoded
    out = decode_image(_encode(".png", bgra), max_pixels=LIMIT)
    # then transparent areas read as white
    assert out[0, 0].tolist() == [255, 0, 0]
    assert out[0, 1].tolist() == [255, 255, 255]
    assert abs(int(out[0, 2, 0]) - 127) <= 1


def test_webp_and_bmp_decode() -> None:
    # given the same image as WebP (lossless) and BMP
    img = cv2.cvtColor(_two_colour(), cv2.COLOR_RGB2BGR)
    for ext, params in ((".webp", [cv2.IMWRITE_WEBP_QUALITY, 101]), (".bmp", [])):
        data = _encode(ext, img, params)
        # when decoded
        out = decode_image(data, max_pixels=LIMIT)
        # then the size comes out right
        assert out.shape == (20, 40, 3), ext


@pytest.mark.parametrize("ext", [".jpg", ".png", ".webp", ".bmp", ".tiff"])
def test_header_size_matches_encoded_size(ext: str) -> None:
    # given an encoded 37x23 image
    data = _encode(ext, np.zeros((23, 37, 3), np.uint8))
    # when only the header is parsed
    _fmt, w, h = image_header(data)
    # then it reports the true width and height
    assert (w, h) == (37, 23)


def test_huge_png_refused_from_header() -> None:
    # given a PNG header announcing 20000 x 20000 (no pixel data at all)
    ihdr = struct.pack(">IIBBBBB", 20000, 20000, 8, 2, 0, 0, 0)
    data = b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + ihdr + b"\0\0\0\0"
    # when decoded with the default 40 MP limit
    # then it is refused as too large before any decoding
    with pytest.raises(ImageTooLargeError, match="20000x20000"):
        decode_image(data, max_pixels=LIMIT)


def test_huge_jpeg_refused_from_header() -> None:
    # given a small JPEG whose SOF0 frame header is rewritten to 20000 x 20000
    data = bytearray(_jpeg(_two_colour()))
    sof = data.index(b"\xff\xc0")
    struct.pack_into(">HH", data, sof + 5, 20000, 20000)
    # when decoded
    # then the header alone triggers the size refusal
    with pytest.raises(ImageTooLargeError):
        decode_image(bytes(data), max_pixels=LIMIT)


def test_pixel_limit_is_configurable() -> None:
    # given a 40x20 image and a limit of 799 pixels
    data = _encode(".png", _two_colour())
    # when decoded
    # then it is refused
    with pytest.raises(ImageTooLargeError):
        decode_image(data, max_pixels=799)


def test_zero_bytes_refused() -> None:
    with pytest.raises(BadImageError, match="empty"):
        decode_image(b"", max_pixels=LIMIT)


def test_text_file_refused_as_unsupported() -> None:
    with pytest.raises(BadImageError, match="unsupported image type"):
        decode_image(b"hello, this is not an image\n" * 10, max_pixels=LIMIT)


def test_truncated_jpeg_refused() -> None:
    # given a JPEG cut in the middle of its scan data
    data = _jpeg(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    # when decoded
    # then it is refused instead of being half-decoded
    with pytest.raises(BadImageError, match="truncated"):
        decode_image(data[: len(data) // 2], max_pixels=LIMIT)


def test_jpeg_cut_inside_header_refused() -> None:
    data = _jpeg(_two_colour())
    with pytest.raises(BadImageError) as err:
        decode_image(data[:30], max_pixels=LIMIT)
    assert not isinstance(err.value, ImageTooLargeError)


def test_truncated_png_refused() -> None:
    data = _encode(".png", np.random.default_rng(1).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    with pytest.raises(BadImageError, match="truncated"):
        decode_image(data[: len(data) // 2], max_pixels=LIMIT)


def test_corrupt_png_body_refused() -> None:
    # given a PNG whose compressed data is overwritten with garbage (header and IEND intact)
    data = bytearray(
        _encode(".png", np.random.default_rng(2).integers(0, 255, (32, 32, 3), dtype=np.uint8))
    )
    idat = data.index(b"IDAT")
    data[idat + 4 : idat + 200] = b"\x00" * 196
    # when decoded
    # then it is a BadImageError, not a crash or garbage pixels
    with pytest.raises(BadImageError):
        decode_image(bytes(data), max_pixels=LIMIT)


def test_read_image_file_missing_is_bad_image(tmp_path: Path) -> None:
    with pytest.raises(BadImageError, match="cannot read"):
        read_image_file(tmp_path / "nope.jpg", max_pixels=LIMIT)


def test_cmyk_jpeg_becomes_rgb() -> None:
    # given a red CMYK JPEG (as some print workflows and scanners write)
    from PIL import Image

    buf = io.BytesIO()
    Image.new("CMYK", (20, 10), (0, 255, 255, 0)).save(buf, "JPEG", quality=95)
    # when decoded
    out = decode_image(buf.getvalue(), max_pixels=LIMIT)
    # then it is three-channel RGB red (JPEG tolerance 10 levels)
    assert out.shape == (10, 20, 3)
    assert out[5, 10, 0] > 245 and out[5, 10, 1] < 10 and out[5, 10, 2] < 10


def test_greyscale_jpeg_becomes_rgb() -> None:
    grey = np.full((6, 8), 77, np.uint8)
    out = decode_image(_encode(".jpg", grey), max_pixels=LIMIT)
    assert out.shape == (6, 8, 3) and (np.abs(out.astype(int) - 77) <= 1).all()
