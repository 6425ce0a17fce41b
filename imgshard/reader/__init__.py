"""Reading a shard directory back: :class:`ShardReader` and the modules it is made of, and
:func:`mix`, batches of several readers in given proportions."""

from .batches import BATCH_ALIGNMENT
from .checks import ReaderError
from .mixing import ReaderMix, mix
from .shard_reader import ShardReader
from .tf import set_import_time_environment

# On `import imgshard`, before any model exists: TensorFlow reads these when it makes its first
# tensor, so set later they would do nothing (see tf.IMPORT_TIME_ENVIRONMENT for what and why).
set_import_time_environment()

__all__ = ["BATCH_ALIGNMENT", "ReaderError", "ReaderMix", "ShardReader", "mix"]
