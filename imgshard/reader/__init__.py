"""Reading a shard directory back: :class:`ShardReader` and the modules it is made of."""

from .checks import ReaderError
from .shard_reader import BATCH_ALIGNMENT, ShardReader

__all__ = ["BATCH_ALIGNMENT", "ReaderError", "ShardReader"]
