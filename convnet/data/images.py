"""Decoding one image file into 8-bit RGB, the way every reader and
`convnet.prepare` does it.

Rules (docs/data-format.md repeats them):
- any format Pillow reads (JPEG, PNG, GIF, BMP, TIFF, WebP, ...); animated
  files give their first frame;
- the EXIF orientation is applied (ImageOps.exif_transpose);
- grey, palette, CMYK, YCbCr, LAB, HSV and 1-bit images are converted to RGB;
- transparency (RGBA, LA, PA, palette with a transparent index) is composited
  on WHITE, the background a transparent web image is usually shown on;
- 16-bit and 32-bit integer images are scaled to 8 bits (v * 255 / 65535,
  rounded), float images are clipped to [0, 255];
- an image with more than `max_pixels` pixels (Pillow's own limit by default,
  89,478,485) is refused as a decompression bomb before it is decoded.

Every failure is an ImageError whose message is a short reason; callers
(prepare's report, the folder readers) add the path.
"""
import numpy as np
from PIL import Image, ImageOps

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".jpe", ".png", ".gif", ".bmp", ".dib", ".tif", ".tiff",
                    ".webp", ".ppm", ".pgm", ".pbm", ".pnm", ".tga", ".jfif")
MAX_PIXELS = 89_478_485          # Pillow's default Image.MAX_IMAGE_PIXELS
BACKGROUND = (255, 255, 255)     # transparent pixels are composited on white


class ImageError(Exception):
    """One image could not be used; str(e) is the reason."""


def is_image_name(name):
    return name.lower().endswith(IMAGE_EXTENSIONS)


def _to_rgb(im):
    """Any Pillow mode -> an RGB image (see the module's rules)."""
    mode = im.mode
    if mode == "RGB":
        return im
    if mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        a = np.asarray(im)
        if mode == "F":
            a = np.clip(np.nan_to_num(a.astype(np.float64)), 0, 255)
        else:
            a = a.astype(np.float64)
            if a.max(initial=0) > 255 or mode.startswith("I;16"):
                a = a * (255.0 / 65535.0)
            a = np.clip(a, 0, 255)
        g = np.rint(a).astype(np.uint8)
        return Image.fromarray(np.stack([g, g, g], axis=-1), "RGB")
    if mode == "P":
        im = im.convert("RGBA") if "transparency" in im.info else im.convert("RGB")
        mode = im.mode
    if mode in ("LA", "La", "PA", "RGBa"):
        im = im.convert("RGBA")
        mode = "RGBA"
    if mode == "L" and "transparency" in im.info:
        im = im.convert("RGBA")
        mode = "RGBA"
    if mode == "RGB" and "transparency" in im.info:
        im = im.convert("RGBA")
        mode = "RGBA"
    if mode == "RGBA":
        background = Image.new("RGB", im.size, BACKGROUND)
        background.paste(im, mask=im.getchannel("A"))
        return background
    if mode == "RGB":
        return im
    return im.convert("RGB")


def decode_image(path, size=None, max_pixels=MAX_PIXELS, min_side=1):
    """Read `path` into a uint8 (H, W, 3) RGB array.

    size: None keeps the image's own size; an int rescales the shorter side
    to `size` and keeps the central size x size square (the paper's rule).
    min_side: images whose shorter side is below it are refused ("too small").
    Raises ImageError with the reason.
    """
    try:
        # Pillow warns above Image.MAX_IMAGE_PIXELS and refuses twice that; the
        # limit here is checked from the header below. (No warnings filter: it is
        # process-global state, and trees are decoded in threads.)
        with Image.open(path) as im:
            w, h = im.size
            if w * h > max_pixels:
                raise ImageError(f"decompression bomb: {w}x{h} pixels is over the limit of {max_pixels}")
            if min(w, h) < min_side:
                raise ImageError(f"too small: {w}x{h}, the shorter side must be at least {min_side} pixels")
            if size is not None and im.format == "JPEG":
                im.draft("RGB", (size, size))      # DCT-domain downscaling, never below size
            im.seek(0)
            im.load()
            try:
                im = ImageOps.exif_transpose(im)
            except Exception:                      # unreadable EXIF: keep the stored orientation
                pass
            im = _to_rgb(im)
            if size is not None:
                w, h = im.size
                s = min(w, h)
                box = ((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s)
                im = im.resize((size, size), Image.Resampling.BICUBIC, box=box)
            a = np.asarray(im, dtype=np.uint8)
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageError(f"decompression bomb: {e}") from None
    except IsADirectoryError:
        raise ImageError("a directory, not an image file") from None
    except FileNotFoundError:
        raise ImageError("file not found (or a broken link)") from None
    except Image.UnidentifiedImageError:
        raise ImageError("not an image Pillow can read") from None
    except OSError as e:
        msg = str(e) or type(e).__name__
        if "truncated" in msg.lower():
            raise ImageError(f"truncated: {msg}") from None
        raise ImageError(f"unreadable: {msg}") from None
    except (ValueError, SyntaxError, EOFError, IndexError, TypeError, MemoryError) as e:
        raise ImageError(f"unreadable: {type(e).__name__}: {e}") from None
    if a.ndim != 3 or a.shape[2] != 3:
        raise ImageError(f"decoded to an unexpected shape {a.shape}")
    return np.ascontiguousarray(a)
