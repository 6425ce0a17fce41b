"""imgshard: turn an image folder into float16 ``.npy`` shards once, then stream them to Keras."""

__version__ = "0.1.0"

from .build import BuildResult, build, plan  # noqa: E402
from .config import BuildConfig  # noqa: E402
from .errors import ImgshardError  # noqa: E402
from .manifest import Manifest, read_manifest  # noqa: E402
from .reader import ReaderError, ShardReader  # noqa: E402
from .storage import Location  # noqa: E402

__all__ = ["BuildConfig", "BuildResult", "ImgshardError", "Location", "Manifest", "ReaderError",
           "ShardReader", "__version__", "build", "plan", "read_manifest"]
