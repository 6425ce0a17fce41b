"""EXIF orientation: the eight ways a camera stores a photo turned or flipped, and what they do
to a DCT-scaled decode (shared by both decoders, ``transform.py`` and ``fast_decode.py``).

A JPEG decoded at 1/n covers a little more than the image when a side is not a multiple of n:
its last pixel stands for a whole n-pixel block of which only part is image. An orientation
that reverses an axis (a flip, or a rotation by 90 or 180 degrees) puts that excess first, so a
region of the upright image must be moved by it before it is scaled into decoded pixels.
"""

from __future__ import annotations

from PIL import Image

#: The EXIF tag that holds the orientation.
EXIF_ORIENTATION = 0x0112
#: Orientations that turn the image by 90 degrees, so width and height trade places.
TRANSPOSING_ORIENTATIONS = frozenset({5, 6, 7, 8})
#: Which stored axis (0: x, 1: y) ends up reversed along the upright x and y, per orientation.
REVERSED_AXES = {2: (0, None), 3: (0, 1), 4: (None, 1), 6: (1, None), 7: (1, 0), 8: (None, 0)}


def orientation_of(image: Image.Image) -> int:
    """The image's EXIF orientation, 1 (as stored) when it has none or an invalid one."""
    try:
        value = image.getexif().get(EXIF_ORIENTATION, 1)
    except Exception:  # noqa: BLE001 - corrupt EXIF means no orientation, not a lost image
        return 1
    return value if value in range(1, 9) else 1


def reversal_shifts(stored: tuple[int, int], decoded: tuple[int, int], scale: float,
                    orientation: int) -> tuple[float, float]:
    """Where the upright image starts in the decoded one, in stored pixels along the upright x
    and y (``stored``, ``decoded``: (W, H) as stored; ``scale``: decoded pixels per stored
    pixel, the same along both axes)."""
    excess = [decoded[axis] / scale - stored[axis] for axis in (0, 1)]
    return tuple(0.0 if axis is None else excess[axis]
                 for axis in REVERSED_AXES.get(orientation, (None, None)))
