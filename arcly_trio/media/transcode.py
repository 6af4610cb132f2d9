"""Audio transcoding between AAC and Opus with PyAV (blocking: run it in a thread).

What it is for: the audio bridge (:mod:`arcly_trio.services.audio_bridge`) gives WebRTC
players Opus made from an RTMP publisher's AAC (:class:`AacToOpus`), and legacy players (FLV,
HLS-TS) AAC made from a browser publisher's Opus (:class:`OpusToAac`). Both take the kernel's
:class:`~arcly_trio.core.frame.Frame` objects in and give frames out, one call at a time:
``push(frame) -> list[Frame]`` and ``flush() -> list[Frame]``. Neither imports trio nor does
I/O; they do block (PyAV decodes and encodes on the calling thread), so the bridge calls them
with ``trio.to_thread.run_sync``, a batch of frames per hop.

How it works: a chain decoder → ``av.AudioResampler`` (to the encoder's sample format,
layout and rate) → ``av.AudioFifo`` (cut into the encoder's frame size: 960 samples, 20 ms, for
Opus; 1024 for AAC) → encoder. A config frame (AudioSpecificConfig, OpusHead) sets the decoder
up; the same config again is ignored, a different one drains the old chain first. The encoder
is opened on the first decoded audio (mono stays mono, anything with more channels becomes
stereo) and its config frame comes out first: an ``OpusHead`` (made with
:func:`~arcly_trio.media.codecs.opus.opus_head`, its pre-skip the encoder's delay) or the AAC
encoder's AudioSpecificConfig. Opus goes out at 48 kHz, 96 kbit/s for stereo and 64 kbit/s for
mono; AAC-LC at 48 kHz, 128 kbit/s.

Timestamps: output frames carry the input's timeline in milliseconds. The first output
frame's pts is the first input frame's pts; after that each output pts is computed from the
count of samples encoded since that anchor (``anchor + samples * 1000 / rate``, rounded once),
never by adding a rounded frame duration, so the audio does not drift from the video. A jump
in the input timeline (a publisher's gap or restart: an input pts more than
:data:`JUMP_MS` away from what the samples decoded so far predict) moves the anchor: the
samples still queued keep the times before the jump.

G.711 (an IP camera's 8 kHz A-law or mu-law audio, codecs ``pcma`` and ``pcmu``, pulled over
RTSP) has no config frame: :class:`PcmaToAac` and :class:`PcmuToAac` open FFmpeg's
``pcm_alaw``/``pcm_mulaw`` decoder at 8 kHz mono and give AAC-LC (48 kHz mono) out, which the
kernel's legacy paths (RTMP, FLV, HLS) take as they are and the bridge turns into Opus for
WebRTC players like any AAC.

Attacker's view: the input is a peer's media. An input frame larger than
:data:`MAX_INPUT_BYTES` is not decoded, and one that decodes to more than
:data:`MAX_FRAME_SECONDS` of audio is dropped, so one call gives out a bounded number of
frames (a second of audio at most); channels beyond two are mixed down. FFmpeg's decoders are
the parsers here; what they refuse is counted.

Error policy: ``push`` never raises for bad input: a malformed or oversized frame, a frame
before the decoder could be set up, a config FFmpeg refuses, are skipped and counted
(:attr:`Transcoder.skipped`); frames of another codec or kind are ignored (not counted). Only
a programming error escapes.
"""

from __future__ import annotations

import fractions
import logging
from typing import Final

import av
import av.error

from arcly_trio.core.frame import Frame, FrameKind
from arcly_trio.media.codecs.aac import parse_audio_specific_config
from arcly_trio.media.codecs.errors import CodecError
from arcly_trio.media.codecs.opus import opus_head, parse_opus_head

__all__ = [
    "AacToOpus",
    "OpusToAac",
    "G711ToAac",
    "PcmaToAac",
    "PcmuToAac",
    "Transcoder",
    "JUMP_MS",
    "MAX_INPUT_BYTES",
    "MAX_FRAME_SECONDS",
]

log = logging.getLogger("arcly_trio.transcode")

#: An input pts further than this (ms) from what the decoded samples predict is a jump.
JUMP_MS: Final = 200
#: Input frames larger than this are skipped (an AAC frame is at most 768 bytes per channel,
#: an Opus packet at most 1275 bytes per frame, 120 ms).
MAX_INPUT_BYTES: Final = 16384
#: Input frames that decode to more audio than this (seconds) are skipped.
MAX_FRAME_SECONDS: Final = 0.25

_BAD_INPUT = (av.error.FFmpegError, ValueError, CodecError)


class Transcoder:
    """One audio chain, decoder to encoder (see the module docstring); subclasses name the codecs.

    Counters: ``frames_in`` (input frames of our codec, configs included), ``frames_out``,
    ``skipped`` (input frames that could not be used).
    """

    in_codec: str = ""
    out_codec: str = ""
    encoder_name: str = ""
    out_rate: int = 48000
    frame_size: int = 960

    def __init__(self) -> None:
        self.frames_in = 0
        self.frames_out = 0
        self.skipped = 0
        self._config: bytes | None = None
        self._decoder: av.CodecContext | None = None
        self._resampler: av.AudioResampler | None = None
        self._resampler_key: tuple[str, str, int] | None = None
        self._fifo: av.AudioFifo | None = None
        self._encoder: av.CodecContext | None = None
        self._channels = 0
        # The timeline (see the module docstring): input side...
        self._in_anchor = 0
        self._in_samples = 0
        self._in_rate = 0
        # ... and output side: samples written towards the encoder and encoded, since the start.
        self._written = 0
        self._encoded = 0
        self._out_anchor = 0.0
        self._out_anchor_samples = 0
        self._config_due = True

    # ------------------------------------------------------------------ hooks

    def _open_decoder(self, config: bytes | None) -> av.CodecContext:
        raise NotImplementedError

    def _tune_encoder(self, encoder: av.CodecContext, channels: int) -> None:
        raise NotImplementedError

    def _config_payload(self, encoder: av.CodecContext, channels: int) -> bytes:
        raise NotImplementedError

    # ------------------------------------------------------------------ public

    def push(self, frame: Frame) -> list[Frame]:
        """Take one input frame; give the output frames it completes (maybe none)."""
        if frame.kind is not FrameKind.AUDIO or frame.codec != self.in_codec:
            return []
        self.frames_in += 1
        out: list[Frame] = []
        if frame.config:
            if frame.payload != self._config:
                out = self.flush()
                try:
                    self._decoder = self._open_decoder(frame.payload)
                    self._config = frame.payload
                except _BAD_INPUT:
                    self._decoder = None
                    self._config = None
                    self.skipped += 1
            return out
        if len(frame.payload) > MAX_INPUT_BYTES:
            self.skipped += 1
            return out
        try:
            if self._decoder is None:
                self._decoder = self._open_decoder(None)
            decoded = self._decoder.decode(av.Packet(frame.payload))
        except _BAD_INPUT:
            self.skipped += 1
            return out
        if not decoded:
            return out
        samples = sum(d.samples for d in decoded)
        rate = decoded[0].sample_rate
        if not rate or samples > rate * MAX_FRAME_SECONDS:
            self.skipped += 1
            return out
        try:
            if self._encoder is None:
                self._open_encoder(min(max(len(decoded[0].layout.channels), 1), 2))
            self._timeline(frame.pts, rate)
            for d in decoded:
                out.extend(self._feed(d))
            self._in_samples += samples
        except _BAD_INPUT:
            self.skipped += 1
        return out

    def flush(self) -> list[Frame]:
        """Give out everything still queued (the last frame may be short) and close the encoder;
        the decoder stays, so later frames go on (with a new output config frame first)."""
        out: list[Frame] = []
        if self._encoder is None:
            return out
        try:
            if self._resampler is not None:
                for piece in self._resampler.resample(None):
                    out.extend(self._queue(piece))
            out.extend(self._encode_queued(final=True))
            out.extend(self._packets(self._encoder.encode(None)))
        except _BAD_INPUT:
            self.skipped += 1
        self._encoder = None
        self._resampler = None
        self._resampler_key = None
        self._fifo = None
        self._in_rate = 0
        return out

    # ------------------------------------------------------------------ chain

    def _timeline(self, pts: int, rate: int) -> None:
        """Anchor the output timeline on the first frame, and again on a jump."""
        if self._in_rate:
            expected = self._in_anchor + self._in_samples * 1000 / self._in_rate
            if abs(pts - expected) <= JUMP_MS and rate == self._in_rate:
                return
        queued = self._written - self._encoded
        self._out_anchor = pts - queued * 1000 / self.out_rate
        self._out_anchor_samples = self._encoded
        self._in_anchor = pts
        self._in_samples = 0
        self._in_rate = rate

    def _feed(self, decoded: av.AudioFrame) -> list[Frame]:
        out: list[Frame] = []
        key = (decoded.format.name, decoded.layout.name, decoded.sample_rate)
        if self._resampler is None or key != self._resampler_key:
            if self._resampler is not None:
                for piece in self._resampler.resample(None):
                    out.extend(self._queue(piece))
            encoder = self._encoder
            assert encoder is not None
            self._resampler = av.AudioResampler(format=encoder.format, layout=encoder.layout, rate=self.out_rate)
            self._resampler_key = key
        decoded.pts = None
        for piece in self._resampler.resample(decoded):
            out.extend(self._queue(piece))
        return out

    def _open_encoder(self, channels: int) -> None:
        encoder = av.CodecContext.create(self.encoder_name, "w")
        encoder.sample_rate = self.out_rate
        encoder.layout = "mono" if channels == 1 else "stereo"
        encoder.time_base = fractions.Fraction(1, self.out_rate)
        self._tune_encoder(encoder, channels)
        encoder.open()
        self._encoder = encoder
        self._channels = channels
        self._fifo = av.AudioFifo()
        self._written = self._encoded = 0
        self._out_anchor_samples = 0
        self._config_due = True

    def _queue(self, piece: av.AudioFrame) -> list[Frame]:
        assert self._fifo is not None
        piece.pts = None
        self._fifo.write(piece)
        self._written += piece.samples
        return self._encode_queued(final=False)

    def _encode_queued(self, *, final: bool) -> list[Frame]:
        fifo, encoder = self._fifo, self._encoder
        assert fifo is not None and encoder is not None
        out: list[Frame] = []
        while True:
            chunk = fifo.read(self.frame_size, partial=final)
            if chunk is None or chunk.samples == 0:
                return out
            chunk.pts = self._encoded
            chunk.time_base = encoder.time_base
            out.extend(self._packets(encoder.encode(chunk)))

    def _packets(self, packets: list[av.Packet]) -> list[Frame]:
        out: list[Frame] = []
        for packet in packets:
            size = packet.duration or self.frame_size
            pts = round(self._out_anchor + (self._encoded - self._out_anchor_samples) * 1000 / self.out_rate)
            self._encoded += size
            if self._config_due:
                encoder = self._encoder
                assert encoder is not None
                payload = self._config_payload(encoder, self._channels)
                out.append(Frame(FrameKind.AUDIO, self.out_codec, pts, pts, payload, config=True))
                self._config_due = False
            out.append(Frame(FrameKind.AUDIO, self.out_codec, pts, pts, bytes(packet)))
        self.frames_out += len(out)
        return out


class AacToOpus(Transcoder):
    """AAC (any rate, mono or more) to Opus (48 kHz, 20 ms frames, mono or stereo)."""

    in_codec = "aac"
    out_codec = "opus"
    encoder_name = "libopus"
    out_rate = 48000
    frame_size = 960

    def _open_decoder(self, config: bytes | None) -> av.CodecContext:
        if config is None:
            raise CodecError("an AAC frame before its AudioSpecificConfig")
        parse_audio_specific_config(config)
        decoder = av.CodecContext.create("aac", "r")
        decoder.extradata = config
        decoder.open()
        return decoder

    def _tune_encoder(self, encoder: av.CodecContext, channels: int) -> None:
        encoder.format = "s16"
        encoder.bit_rate = 96000 if channels == 2 else 64000
        encoder.options = {"application": "audio", "frame_duration": "20"}

    def _config_payload(self, encoder: av.CodecContext, channels: int) -> bytes:
        pre_skip = 0
        if encoder.extradata:
            try:
                pre_skip = parse_opus_head(bytes(encoder.extradata)).pre_skip
            except CodecError:
                pre_skip = 0
        return opus_head(channels, 48000, pre_skip=pre_skip)


class OpusToAac(Transcoder):
    """Opus (mono or stereo, OpusHead optional) to AAC-LC (48 kHz, 128 kbit/s)."""

    in_codec = "opus"
    out_codec = "aac"
    encoder_name = "aac"
    out_rate = 48000
    frame_size = 1024

    def _open_decoder(self, config: bytes | None) -> av.CodecContext:
        head = opus_head(2) if config is None else config
        parse_opus_head(head)
        decoder = av.CodecContext.create("libopus", "r")
        decoder.extradata = head
        decoder.open()
        return decoder

    def _tune_encoder(self, encoder: av.CodecContext, channels: int) -> None:
        encoder.format = "fltp"
        encoder.bit_rate = 128000

    def _config_payload(self, encoder: av.CodecContext, channels: int) -> bytes:
        return bytes(encoder.extradata or b"")


class G711ToAac(Transcoder):
    """G.711 (8 kHz mono, no config frame) to AAC-LC (48 kHz); :class:`PcmaToAac` and
    :class:`PcmuToAac` name the law."""

    decoder_name = ""
    out_codec = "aac"
    encoder_name = "aac"
    out_rate = 48000
    frame_size = 1024

    def _open_decoder(self, config: bytes | None) -> av.CodecContext:
        decoder = av.CodecContext.create(self.decoder_name, "r")
        decoder.sample_rate = 8000
        decoder.layout = "mono"
        decoder.open()
        return decoder

    def _tune_encoder(self, encoder: av.CodecContext, channels: int) -> None:
        encoder.format = "fltp"
        encoder.bit_rate = 64000

    def _config_payload(self, encoder: av.CodecContext, channels: int) -> bytes:
        return bytes(encoder.extradata or b"")


class PcmaToAac(G711ToAac):
    """G.711 A-law (``pcma``) to AAC."""

    in_codec = "pcma"
    decoder_name = "pcm_alaw"


class PcmuToAac(G711ToAac):
    """G.711 mu-law (``pcmu``) to AAC."""

    in_codec = "pcmu"
    decoder_name = "pcm_mulaw"
