"""The test suite; its layout mirrors the package.

* ``tests/<package>/test_<module>.py`` tests ``arcly_trio/<package>/<module>.py`` (a module of a
  sub-package is prefixed with it: ``tests/protocols/test_rtmp_chunks.py`` tests
  ``arcly_trio/protocols/rtmp/chunks.py``); a file that covers one side of a module or of a whole
  package says so after an underscore (``test_rtmp_robustness.py``, ``test_relay_attacks.py``).
* Real-client (interop) tests live next to the module they prove, in the same folder (for
  example ``tests/workers/test_rtmp_interop.py``, ``tests/cluster/test_redis_interop.py``), and
  are marked ``@pytest.mark.interop``: the marker, not the folder, is what ``-m "not interop"``
  selects.
* At the top stay only what crosses every package (``test_layers.py``, ``test_examples.py``,
  ``test_authorization.py``: one authorization path over every protocol), ``conftest.py`` and
  ``data/``.
* Shared helpers are in ``tests/_*.py`` and nowhere else; a test module never imports another
  test module. ``_tools`` (real tools: present in CI, skipped elsewhere), ``_net`` (loopback host,
  free port, black hole), ``_serving`` (engines serving on loopback, polling), ``_ffmpeg``
  (ffmpeg/ffprobe publishers, players, probes), ``_cli`` (``arcly-trio serve`` in a subprocess),
  ``_nodes`` (relay and cluster nodes), ``_rtmp`` (a raw RTMP client), ``_hls``, ``_hooks``,
  ``_peers`` (nginx-rtmp, redis), ``_browser``, ``_npm``, ``_webrtc`` (SDP offers, WHIP/WHEP
  POSTs, the browser's WHEP/WHIP scripts and statistics), ``_rtp_payloads`` (clips and round trips
  of the RTP payload formats), and independent readers to check the
  package against: ``_media`` (FLV, avcC/hvcC), ``_mpegts``, ``_boxes`` (ISO BMFF).
"""
