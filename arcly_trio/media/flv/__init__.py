"""FLV, sans-IO: tag bodies (:mod:`.tags`: the format, its errors and tables) read into frames
(:mod:`.read`) and written from them (:mod:`.write`), the FLV byte stream (:mod:`.container`),
and frames -> one FLV stream with its header flags decided (:mod:`.stream`).

Everything public is re-exported here: ``from arcly_trio.media import flv; flv.read_frames(...)``.
"""

from arcly_trio.media.flv.container import *  # noqa: F403
from arcly_trio.media.flv.container import __all__ as _container_all
from arcly_trio.media.flv.read import *  # noqa: F403
from arcly_trio.media.flv.read import __all__ as _read_all
from arcly_trio.media.flv.stream import FlvStreamWriter, frame_tags, metadata_tracks
from arcly_trio.media.flv.tags import *  # noqa: F403
from arcly_trio.media.flv.tags import __all__ as _tags_all
from arcly_trio.media.flv.write import *  # noqa: F403
from arcly_trio.media.flv.write import __all__ as _write_all

__all__ = [*_tags_all, *_read_all, *_write_all, *_container_all, "FlvStreamWriter", "frame_tags", "metadata_tracks"]
