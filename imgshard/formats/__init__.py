"""Shard formats: how a shard's rows are written to a file and mapped back.

Callers import from here, never from a format's own module, so that a second format is one new
module beside ``npy.py`` (today's only format: standard ``.npy`` arrays).
"""

from .npy import (
                  NPY_MAX_HEADER,
                  RowStream,
                  check_labels,
                  check_npy_size,
                  npy_header,
                  open_shard,
                  read_rows,
                  write_array_atomically,
                  write_rows_atomically,
)

__all__ = ["NPY_MAX_HEADER", "RowStream", "check_labels", "check_npy_size", "npy_header",
           "open_shard", "read_rows", "write_array_atomically", "write_rows_atomically"]
