"""Reading and writing images and label maps, safely.

Images come back as ``(H, W) uint8`` (grayscale) or ``(H, W, 3) uint8`` (RGB) for display and for
the segmenter. EXIF orientation is applied, alpha is dropped (composited on nothing: just removed),
16-bit images are scaled to 8 bit for display by their own min/max (the stored original is never
changed). Label maps are ``(H, W) uint8`` PNG index maps: class index, 255 = none / ignore.

All writes go through :func:`atomic_write_bytes`: temp file in the same folder, fsync, rename,
fsync of the folder, so a crash leaves either the old file or the new one, never half of one.
The files it writes get the mode of any new file (``0666`` less the umask, and the folder's
default ACL): a project folder shared by a group stays readable by it (``tempfile.mkstemp``
would make every file ``0600``).
"""
from __future__ import annotations

import io
import os
import secrets
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from .errors import ImageError, LabelMapError

#: Images with more pixels than this are refused (decompression-bomb guard). 8K x 8K.
MAX_PIXELS = 8192 * 8192
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp")
IGNORE = 255

# We do our own check; keep PIL's warning-level check from turning into a crash at 2x.
Image.MAX_IMAGE_PIXELS = None
ImageFile.LOAD_TRUNCATED_IMAGES = False


def _check_pixels(size: tuple[int, int], name: str, max_pixels: int) -> None:
    w, h = size
    if w <= 0 or h <= 0:
        raise ImageError(f"{name}: the image has no pixels ({w}x{h}).")
    if w * h > max_pixels:
        raise ImageError(
            f"{name}: {w}x{h} = {w * h:,} pixels is over the limit of {max_pixels:,} pixels; "
            "downscale or tile the image before importing it."
        )


def _to_uint8(arr: np.ndarray) -> np.ndarray:
    if arr.dtype == np.uint8:
        return arr
    a = arr.astype(np.float64)
    lo, hi = float(np.nanmin(a)), float(np.nanmax(a))
    if hi <= lo:
        return np.zeros(a.shape, np.uint8)
    return np.clip((a - lo) * (255.0 / (hi - lo)) + 0.5, 0, 255).astype(np.uint8)


def decode_image(data: bytes, name: str = "image", max_pixels: int = MAX_PIXELS, upright: bool = True) -> np.ndarray:
    """Decode image bytes to ``(H, W)`` or ``(H, W, 3)`` uint8, turned upright by its EXIF
    orientation (``upright=False``: the pixels as stored). Raises :class:`ImageError`."""
    if len(data) == 0:
        raise ImageError(f"{name}: the file is empty (0 bytes).")
    try:
        with Image.open(io.BytesIO(data)) as im:
            _check_pixels(im.size, name, max_pixels)
            im.load()
            if upright:
                im = ImageOps.exif_transpose(im)
            mode = im.mode
            if mode in ("I;16", "I;16B", "I;16L", "I", "F"):
                arr = _to_uint8(np.asarray(im))
            elif mode in ("L", "1"):
                arr = np.asarray(im.convert("L"))
            elif mode == "LA":
                arr = np.asarray(im.convert("L"))
            elif mode == "P":
                arr = np.asarray(im.convert("RGB"))
            else:
                arr = np.asarray(im.convert("RGB"))
    except ImageError:
        raise
    except UnidentifiedImageError:
        raise ImageError(f"{name}: not an image file that can be read (PNG, JPEG, TIFF, BMP).") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageError(f"{name}: the image is damaged or truncated ({e}).") from None
    if arr.ndim == 3 and arr.shape[2] == 3 and arr.dtype != np.uint8:
        arr = _to_uint8(arr)
    return np.ascontiguousarray(arr)


def read_image(path: str | os.PathLike, max_pixels: int = MAX_PIXELS, upright: bool = True) -> np.ndarray:
    """Read an image file as ``(H, W)`` or ``(H, W, 3)`` uint8 (upright: see :func:`decode_image`).
    Raises :class:`ImageError`."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        raise ImageError(f"{p.name}: file not found ({p}).") from None
    except OSError as e:
        raise ImageError(f"{p.name}: cannot read the file ({e.strerror}).") from None
    return decode_image(data, p.name, max_pixels, upright)


#: EXIF orientations that :func:`decode_image` (``ImageOps.exif_transpose``) turns or flips the
#: pixels for; 5..8 swap width and height. Other values (1, none, nonsense) show the file as stored.
TURNING_ORIENTATIONS = (2, 3, 4, 5, 6, 7, 8)
SWAPPING_ORIENTATIONS = (5, 6, 7, 8)


#: PNG text chunks PIL reads an orientation from (``Image.getexif``): EXIF as text, and XMP.
_PNG_ORIENTING_TEXT = (b"Raw profile type exif", b"XML:com.adobe.xmp")


def _png_may_orient(path: str | os.PathLike) -> bool:
    """Whether a PNG file has a chunk PIL may read an EXIF orientation from (``eXIf``, or a text
    chunk of :data:`_PNG_ORIENTING_TEXT`), from the chunk headers alone: PIL's ``getexif`` of a
    PNG decodes all its pixels to find chunks after them (0.7 s for 12 megapixels)."""
    with open(path, "rb") as f:
        if f.read(8) != b"\x89PNG\r\n\x1a\n":
            return True  # PIL decides
        while len(head := f.read(8)) == 8:
            n, kind = int.from_bytes(head[:4], "big"), head[4:]
            if kind == b"eXIf":
                return True
            if kind == b"IEND":
                break
            skip = n + 4  # the data and the CRC
            if kind in (b"tEXt", b"zTXt", b"iTXt"):
                key = f.read(min(n, 80))
                if key.split(b"\0", 1)[0] in _PNG_ORIENTING_TEXT:
                    return True
                skip -= len(key)
            f.seek(skip, os.SEEK_CUR)
    return False


def _orientation(im, path: str | os.PathLike) -> int:
    """The orientation the tool applies to the opened image ``im`` of file ``path`` (see
    :func:`exif_orientation`)."""
    try:
        if im.format == "PNG" and not _png_may_orient(path):
            return 1
        orient = im.getexif().get(0x0112, 1)
    except Exception:
        return 1
    return orient if orient in TURNING_ORIENTATIONS else 1


def exif_orientation(path: str | os.PathLike) -> int:
    """The EXIF orientation the tool applies to an image file: 2..8 (see
    :data:`TURNING_ORIENTATIONS`), else 1; without decoding the pixels. 1 for a file that cannot be
    read."""
    try:
        with Image.open(path) as im:
            return _orientation(im, path)
    except Exception:  # PIL raises many kinds
        return 1


def has_alpha(path: str | os.PathLike) -> bool:
    """Whether an image file has transparency (an alpha channel or a transparent colour), which
    :func:`decode_image` drops; from its header. ``False`` for a file that cannot be read."""
    try:
        with Image.open(path) as im:
            return im.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in im.info
    except Exception:  # PIL raises many kinds
        return False


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """``(height, width)`` of an image file after EXIF orientation, without decoding pixels."""
    with Image.open(path) as im:
        w, h = im.size
        orient = _orientation(im, path)
    return (w, h) if orient in SWAPPING_ORIENTATIONS else (h, w)


#: Opens the JPEG comment that :func:`upright_image_bytes` writes: the sha256 of the file it was made from follows.
UPRIGHT_MARK = b"weakseg: upright copy (EXIF orientation applied) of the image file with sha256 "
_LOSSLESS_TIFF = ("raw", "tiff_lzw", "tiff_adobe_deflate", "tiff_deflate", "packbits")


def upright_image_bytes(path: str | os.PathLike, quality: int = 95, source_sha256: str | None = None) -> bytes | None:
    """The image file as the tool shows it (:func:`read_image`), re-encoded in its own format, or
    ``None`` when its EXIF orientation turns nothing (:func:`exif_orientation` is 1): the pixels
    turned / flipped by ``ImageOps.exif_transpose``, its orientation tag removed, the rest of its
    EXIF data and its colour profile kept. JPEG (also a phone's MPO) is written at ``quality``
    with the original's chroma subsampling and, with ``source_sha256``, a comment recording it
    (:data:`UPRIGHT_MARK`, read back by :func:`upright_source`); PNG and TIFF losslessly. Readers
    that ignore EXIF (PIL's ``Image.open``, torchvision, most COCO / VOC loaders) then see the
    image the size and way round of its masks."""
    from PIL import JpegImagePlugin

    if exif_orientation(path) == 1:
        return None
    name = Path(path).name
    with Image.open(path) as im:
        fmt = "JPEG" if im.format in ("JPEG", "MPO") else im.format
        params: dict = {}
        if fmt == "JPEG":
            params["quality"] = quality
            sampling = JpegImagePlugin.get_sampling(im)
            if sampling != -1:
                params["subsampling"] = sampling
            if source_sha256 is not None:
                own = im.info.get("comment") or b""
                params["comment"] = (own + b"\n" if own else b"") + UPRIGHT_MARK + source_sha256.encode("ascii")
        elif fmt == "TIFF":
            comp = im.info.get("compression", "raw")
            params["compression"] = comp if comp in _LOSSLESS_TIFF else "tiff_adobe_deflate"
        try:
            im.load()
        except (OSError, SyntaxError, ValueError) as e:
            raise ImageError(f"{name}: the image is damaged or truncated ({e}).") from None
        up = ImageOps.exif_transpose(im)
    exif = up.getexif()
    exif.pop(0x0112, None)
    params["exif"] = exif.tobytes()
    if up.info.get("icc_profile"):
        params["icc_profile"] = up.info["icc_profile"]
    buf = io.BytesIO()
    up.save(buf, format=fmt, **params)
    return buf.getvalue()


def upright_source(path: str | os.PathLike) -> str | None:
    """The sha256 that the comment of a JPEG written by :func:`upright_image_bytes` records (the
    file it is an upright copy of), or ``None``."""
    try:
        with Image.open(path) as im:
            comment = im.info.get("comment") or b""
    except Exception:  # PIL raises many kinds
        return None
    if isinstance(comment, str):
        comment = comment.encode("latin-1", "replace")
    at = comment.rfind(UPRIGHT_MARK)
    if at < 0:
        return None
    sha = comment[at + len(UPRIGHT_MARK):at + len(UPRIGHT_MARK) + 64].decode("ascii", "replace")
    return sha if len(sha) == 64 else None


def read_label_map(path: str | os.PathLike) -> np.ndarray:
    """Read a PNG index map as ``(H, W) uint8``. Palette PNGs give their indices, not colours."""
    p = Path(path)
    try:
        with Image.open(p) as im:
            if im.mode in ("P", "L"):
                arr = np.asarray(im)
            elif im.mode == "1":  # 1-bit: 0 and 1 (convert("L") would give 0 and 255, i.e. "ignore")
                arr = np.asarray(im).astype(np.uint8)
            elif im.mode in ("I;16", "I"):
                arr = np.asarray(im)
                if arr.max(initial=0) > 255:
                    raise LabelMapError(f"{p.name}: label values above 255 cannot be stored.")
                arr = arr.astype(np.uint8)
            elif im.mode in ("RGB", "RGBA"):
                a = np.asarray(im.convert("RGB"))
                if not (np.array_equal(a[..., 0], a[..., 1]) and np.array_equal(a[..., 0], a[..., 2])):
                    raise LabelMapError(
                        f"{p.name}: a colour image, not an index map; import it with a colour mapping."
                    )
                arr = a[..., 0]
            else:
                arr = np.asarray(im.convert("L"))
    except LabelMapError:
        raise
    except FileNotFoundError:
        raise LabelMapError(f"{p.name}: file not found ({p}).") from None
    except (OSError, SyntaxError, ValueError, UnidentifiedImageError) as e:
        raise LabelMapError(f"{p.name}: not a readable PNG label map ({e}).") from None
    return np.ascontiguousarray(arr, dtype=np.uint8)


def encode_label_png(label: np.ndarray, palette: list[tuple[int, int, int]] | None = None) -> bytes:
    """Encode a ``(H, W) uint8`` index map as PNG bytes (mode L, or P with ``palette``)."""
    label = np.asarray(label)
    if label.ndim != 2 or label.dtype != np.uint8:
        raise LabelMapError(f"a label map must be a (H, W) uint8 array, got {label.shape} {label.dtype}.")
    im = Image.fromarray(label, mode="L")
    if palette is not None:
        im = im.convert("P")
        flat = [0] * 768
        for i, c in enumerate(palette[:256]):
            flat[3 * i : 3 * i + 3] = list(c)
        im.putpalette(flat)
        im.frombytes(label.tobytes())
    buf = io.BytesIO()
    im.save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def encode_image_png(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.asarray(image)).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def fsync_dir(path: str | os.PathLike) -> None:
    try:
        fd = os.open(str(path), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _temp_name(folder: Path, prefix: str, suffix: str) -> Path:
    return folder / f"{prefix}{secrets.token_hex(6)}{suffix}"


def mkstemp_umask(folder: str | os.PathLike, prefix: str = ".", suffix: str = ".tmp") -> tuple[int, str]:
    """``tempfile.mkstemp`` (a new, unique file, opened for writing: ``(fd, path)``) with the
    permissions of any new file: created with mode ``0666``, so the kernel applies the umask and the
    folder's default ACL (mkstemp always makes ``0600``: unreadable for the rest of a group
    sharing the project)."""
    folder = Path(folder)
    flags = (os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0) | getattr(os, "O_NOFOLLOW", 0)
             | getattr(os, "O_CLOEXEC", 0))
    for _ in range(100):
        path = _temp_name(folder, prefix, suffix)
        try:
            return os.open(str(path), flags, 0o666), str(path)
        except FileExistsError:
            continue
    raise FileExistsError(f"{folder}: no unused temporary file name found.")  # pragma: no cover


def mkdtemp_umask(parent: str | os.PathLike, prefix: str = ".", suffix: str = "") -> Path:
    """``tempfile.mkdtemp`` with the permissions of any new folder (``0777`` less the umask;
    mkdtemp always makes ``0700``), for a folder that is renamed into place as a result."""
    parent = Path(parent)
    for _ in range(100):
        path = _temp_name(parent, prefix, suffix)
        try:
            os.mkdir(path, 0o777)
            return path
        except FileExistsError:
            continue
    raise FileExistsError(f"{parent}: no unused temporary folder name found.")  # pragma: no cover


def atomic_write_bytes(path: str | os.PathLike, data: bytes, durable: bool = True) -> None:
    """Write ``data`` to ``path`` atomically: temp file in the same folder, fsync, rename, fsync dir.

    ``durable=False`` skips both fsyncs (the caller then makes the data durable, e.g. ``os.sync()``
    once for a whole batch); the rename is atomic either way. The file gets the mode of any new
    file (``0666`` less the umask, see :func:`mkstemp_umask`), also when it replaces one.
    """
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = mkstemp_umask(p.parent, prefix=f".{p.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            if durable:
                os.fsync(f.fileno())
        os.replace(tmp, p)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    if durable:
        fsync_dir(p.parent)


def write_label_png(path: str | os.PathLike, label: np.ndarray, palette=None) -> None:
    atomic_write_bytes(path, encode_label_png(label, palette))
