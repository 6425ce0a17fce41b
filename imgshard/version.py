"""imgshard's version: in a module of its own, so that any module can name it without importing
the whole package (``imgshard/__init__.py`` imports the pipeline)."""

__version__ = "0.1.0"
