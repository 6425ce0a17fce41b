"""The root of imgshard's own errors: each one carries a one-line message meant for the user.

The command line turns any :class:`ImgshardError` into ``Error: <message>`` and exit code 1;
everything else is a bug and is allowed to show its traceback.
"""


class ImgshardError(Exception):
    """An input, option or file that imgshard cannot use; ``str(error)`` explains it in a line."""


class ShardError(ImgshardError):
    """A shard file is missing, unreadable, or not what the manifest says it is."""


class MissingShardError(ShardError):
    """The shard file is not there (a cache may fetch it again)."""
