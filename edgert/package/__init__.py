"""Model package (`model.pkg`) I/O: the validating, zero-copy reader and its helpers.

The writer lives with the converter (converters/package_writer.py); signing in .signing."""
from __future__ import annotations

from edgert.package.reader import Package, ReadOptions, SectionInfo, read_package

__all__ = ["Package", "ReadOptions", "SectionInfo", "read_package"]
