"""imgshard: turn an image folder into float16 ``.npy`` shards once, then stream them to Keras."""

from .append import AppendResult, append
from .build import BuildResult, build
from .build_plan import plan
from .config import BuildConfig
from .errors import ImgshardError
from .manifest import Manifest, read_manifest
from .merge import MergeResult, merge, reshard
from .reader import ReaderError, ReaderMix, ShardReader, mix
from .storage import Location
from .version import __version__

__all__ = ["AppendResult", "BuildConfig", "BuildResult", "ImgshardError", "Location", "Manifest", "MergeResult",
           "ReaderError", "ReaderMix", "ShardReader", "__version__", "append", "build", "merge",
           "mix", "plan", "read_manifest", "reshard"]
