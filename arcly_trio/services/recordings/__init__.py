"""Recordings: the catalog of recorded segments (and, beside it, the recorder that writes them).

:mod:`.catalog` says which segments each stream's recording holds (``Catalog``,
``SegmentRecord``, ``Span``), from the index kept beside the files; :mod:`.scan` reads a segment's
boxes back when the index does not describe it. The layout on disk and the index format are
described in :mod:`.catalog`.
"""

from arcly_trio.services.recordings.catalog import Catalog, SegmentRecord, Span

__all__ = ["Catalog", "SegmentRecord", "Span"]
