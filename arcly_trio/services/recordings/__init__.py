"""Recordings: segment files with an index, the recorder that writes them, the catalog that reads them.

:mod:`.catalog` says which segments each stream's recording holds (``Catalog``,
``SegmentRecord``, ``Span``), from the index kept beside the files; :mod:`.mp4scan` reads a
segment's boxes back (for the catalog when the index does not describe it, for playback
always); :mod:`.segmenter` cuts frames into segment files, :mod:`.recorder` is the stream
service that writes them (always or on demand, with retention), :mod:`.routes` its HTTP API.
The layout on disk and the index format are described in :mod:`.catalog`.
"""

from arcly_trio.services.recordings.catalog import Catalog, SegmentRecord, Span
from arcly_trio.services.recordings.recorder import Recorder, SegmentFiles
from arcly_trio.services.recordings.segmenter import Segmenter

__all__ = ["Catalog", "SegmentRecord", "Span", "Recorder", "SegmentFiles", "Segmenter"]
