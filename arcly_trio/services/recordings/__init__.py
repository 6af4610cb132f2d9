"""Recordings: the catalog of what was recorded, and playing it back (see :mod:`.playback`)."""
