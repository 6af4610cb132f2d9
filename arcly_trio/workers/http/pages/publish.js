// The publish page: camera + microphone (or a canvas test pattern and a tone), sent over WHIP
// (RFC 9725: POST /{app}/{stream}/whip) when the server serves WebRTC, else (or when WHIP fails:
// an HTTP error other than a refusal, or ICE/DTLS not up within 5 s) encoded with WebCodecs
// (H.264 where the browser has it, else VP9, else AV1; Opus audio) and sent over
// arcly.frames.v1 to /{app}/{stream}/ingest. ?via=frames or ?via=whip forces one.
//
// WHIP: the tracks go on sendonly transceivers (H.264 first in the codec preferences, or the
// codec ?codec= names), the offer is POSTed as soon as it is made (the server is ICE-lite: no
// trickle), and the bitrate control sets the video sender's maxBitrate (for the frames API:
// the encoder's bitrate). window.arclyPublisher = {transport, state, stats} says which runs and
// how it goes (stats from getStats() once a second); window.arclyPublish is the readout.
"use strict";

(() => {
  const { wsUrl, streamFromPath, streamPath, buildFrame, FLAG_KEY, FLAG_CONFIG, PROTOCOL, params, el,
          fmtBits, chooseTransport, signal, hangUp, connected, preferCodec } = Arcly;
  const [app, stream] = streamFromPath();
  const $ = (id) => document.getElementById(id);
  $("title").textContent = `${app}/${stream}`;
  document.title = `arcly-trio: publish ${app}/${stream}`;
  $("watch").href = "/watch" + streamPath(app, stream) + location.search.replace(/([?&])autostart=1&?/, "$1");

  const WIDTH = 640, HEIGHT = 360, FPS = 30, KEY_EVERY_MS = 2000, MAX_BUFFERED = 4 << 20;
  const CANDIDATES = {
    h264: { codec: "avc1.42e01f", avc: { format: "avc" } },
    vp9: { codec: "vp09.00.10.08" },
    av1: { codec: "av01.0.04M.08" },
  };
  const state = window.arclyPublish = {
    status: "idle", source: null, videoCodec: null, audioCodec: null, videoFrames: 0, audioFrames: 0,
    keyframes: 0, dropped: 0, bytes: 0, serverFrames: null, errors: 0, lastError: null, end: null,
    bitrate: null, nacks: null, retransmitted: null, rttMs: null,
  };
  // transport "whip" or "frames" (null before a start); stats: getStats()'s figures over WHIP,
  // the readout over the frames API; fallback: why WHIP was left.
  // maxBitrate: the video bitrate the control set, as the sender (or encoder) has it.
  const publisher = window.arclyPublisher = { transport: null, state: "idle", stats: null, error: null, fallback: null,
                                              maxBitrate: null };
  const MIME = { h264: "video/H264", vp9: "video/VP9", av1: "video/AV1", vp8: "video/VP8" };
  const canvas = $("canvas");
  const ctx2d = canvas.getContext("2d");
  let ws = null, media = null, video = null, videoEncoder = null, audioEncoder = null, running = false;
  let pc = null, session = null, videoSender = null, encoderConfig = null, toneStop = null, lastSample = null;
  let canvasTrack = null, stops = 0;
  let t0 = 0, lastSlot = -1, lastKey = -Infinity, needKey = true, audioBase = null, lastAudioTs = -1, timer = null, audioStop = null;

  function setStatus(text, cls = "badge") { state.status = text; publisher.state = text.replace(/^● /, ""); $("status").textContent = text; $("status").className = "status " + cls; }
  function fail(err) { state.errors += 1; state.lastError = String(err && err.message || err); $("error").textContent = state.lastError; }

  function send(buffer) {
    if (!ws || ws.readyState !== WebSocket.OPEN) return false;
    ws.send(buffer);
    state.bytes += buffer.byteLength;
    return true;
  }

  function sendConfig(kind, decoderConfig) {
    const description = decoderConfig.description ? new Uint8Array(
      decoderConfig.description.buffer || decoderConfig.description,
      decoderConfig.description.byteOffset || 0, decoderConfig.description.byteLength) : null;
    const config = { codec: decoderConfig.codec };
    if (kind === "video") { config.codedWidth = decoderConfig.codedWidth || WIDTH; config.codedHeight = decoderConfig.codedHeight || HEIGHT; }
    else { config.sampleRate = decoderConfig.sampleRate; config.numberOfChannels = decoderConfig.numberOfChannels; }
    ws.send(JSON.stringify({ type: "config", kind, track: 0, decoderConfig: config,
                             description: !!description, record: description ? description.byteLength : 0 }));
    if (description) send(buildFrame(kind, FLAG_CONFIG, 0, 0, 0, description.byteLength, (out) => out.set(description)));
  }

  // --- sources --------------------------------------------------------------------------------
  async function openSource() {
    if (state.source) return;                              // still open (WHIP fell back to frames)
    if (params.get("pattern") !== "1") {
      try {
        media = await navigator.mediaDevices.getUserMedia({
          video: { width: WIDTH, height: HEIGHT, frameRate: FPS }, audio: { channelCount: 1 } });
        video = el("video", { muted: "", playsinline: "" });
        video.muted = true;
        video.srcObject = new MediaStream(media.getVideoTracks());
        await video.play();
        state.source = "camera" + (media.getAudioTracks().length ? " + microphone" : "");
        return;
      } catch (err) { media = null; video = null; }
    }
    state.source = "test pattern + tone";
  }

  function drawPattern(ms) {
    const bars = ["#c0c0c0", "#c0c000", "#00c0c0", "#00c000", "#c000c0", "#c00000", "#0000c0"];
    const w = WIDTH / bars.length;
    bars.forEach((color, i) => { ctx2d.fillStyle = color; ctx2d.fillRect(i * w, 0, w + 1, HEIGHT); });
    const x = (ms / 8) % (WIDTH + 80) - 80;
    ctx2d.fillStyle = "#101418"; ctx2d.fillRect(x, HEIGHT * 0.62, 80, 80);
    ctx2d.fillStyle = "#000a"; ctx2d.fillRect(0, 0, WIDTH, 64);
    ctx2d.fillStyle = "#fff"; ctx2d.font = "bold 34px monospace";
    ctx2d.fillText(`arcly-trio ${app}/${stream}  ${(ms / 1000).toFixed(1)} s`, 18, 44);
  }

  // --- video --------------------------------------------------------------------------------
  async function openVideoEncoder() {
    const wanted = params.get("codec");
    const order = wanted && CANDIDATES[wanted] ? [wanted] : ["h264", "vp9", "av1"];
    for (const name of order) {
      const config = Object.assign({ width: WIDTH, height: HEIGHT, bitrate: 1_000_000, framerate: FPS,
                                     latencyMode: "realtime" }, CANDIDATES[name]);
      let support;
      try { support = await VideoEncoder.isConfigSupported(config); } catch (err) { continue; }
      if (!support.supported) continue;
      const encoder = new VideoEncoder({
        output: (chunk, metadata) => {
          if (metadata && metadata.decoderConfig) { sendConfig("video", metadata.decoderConfig); state.videoCodec = metadata.decoderConfig.codec; }
          const key = chunk.type === "key";
          const ok = send(buildFrame("video", key ? FLAG_KEY : 0, 0, chunk.timestamp, chunk.timestamp, chunk.byteLength, (out) => chunk.copyTo(out)));
          if (ok) { state.videoFrames += 1; if (key) state.keyframes += 1; }
        },
        error: (err) => { fail(err); stop("encoder error"); },
      });
      encoderConfig = Object.assign({}, support.config, { bitrate: bitrate() });
      publisher.maxBitrate = encoderConfig.bitrate;
      encoder.configure(encoderConfig);
      state.videoCodec = config.codec;
      return encoder;
    }
    throw new Error("this browser has no WebCodecs video encoder for H.264, VP9 or AV1");
  }

  function tick() {
    if (!running) return;
    // Timestamps on a regular 30 fps grid locked to the wall clock (a late timer skips a slot).
    const slot = Math.round((performance.now() - t0) * FPS / 1000);
    const ms = slot * 1000 / FPS;
    if (video) ctx2d.drawImage(video, 0, 0, WIDTH, HEIGHT); else drawPattern(ms);
    if (!videoEncoder || slot <= lastSlot) {
      // WHIP (no encoder here: the camera or the canvas goes as a track), or the timer fired
      // early and this slot was sent already
    } else if (ws.bufferedAmount > MAX_BUFFERED || videoEncoder.encodeQueueSize > 4) {
      state.dropped += 1; needKey = true;                   // congested: skip, then restart on a keyframe
    } else {
      lastSlot = slot;
      const frame = new VideoFrame(canvas, { timestamp: Math.round(ms * 1000), duration: Math.round(1e6 / FPS) });
      const keyFrame = needKey || ms - lastKey >= KEY_EVERY_MS;
      if (keyFrame) { lastKey = ms; needKey = false; }
      videoEncoder.encode(frame, { keyFrame });
      frame.close();
    }
    const next = t0 + Math.ceil((performance.now() - t0 + 1) / (1000 / FPS)) * (1000 / FPS);
    timer = setTimeout(tick, Math.max(0, next - performance.now()));
  }

  // --- audio --------------------------------------------------------------------------------
  function onAudioChunk(chunk, metadata) {
    if (metadata && metadata.decoderConfig) { sendConfig("audio", metadata.decoderConfig); state.audioCodec = metadata.decoderConfig.codec; }
    // Capture clocks differ from performance.now(): put the first chunk at "now" on the publish
    // timeline, then follow the encoder's own timestamps (sample accurate).
    if (audioBase === null) audioBase = chunk.timestamp - (performance.now() - t0) * 1000;
    const ts = Math.max(0, lastAudioTs, Math.round(chunk.timestamp - audioBase));
    lastAudioTs = ts;
    if (send(buildFrame("audio", FLAG_KEY, 0, ts, ts, chunk.byteLength, (out) => chunk.copyTo(out)))) state.audioFrames += 1;
  }

  // A quiet 440 Hz tone as a track (no microphone, or the test pattern).
  async function makeTone() {
    const ctx = new AudioContext({ sampleRate: 48000 });
    await ctx.resume().catch(() => {});
    const osc = ctx.createOscillator(), gain = ctx.createGain(), dest = ctx.createMediaStreamDestination();
    osc.frequency.value = 440; gain.gain.value = 0.1;
    osc.connect(gain).connect(dest); osc.start();
    return { track: dest.stream.getAudioTracks()[0], ctx };
  }

  async function openAudio() {
    let track = media && media.getAudioTracks()[0];
    let ctx = null;
    if (!track) ({ track, ctx } = await makeTone());
    const settings = track.getSettings();
    const config = { codec: "opus", sampleRate: 48000, numberOfChannels: 1, bitrate: 64000 };
    const support = await AudioEncoder.isConfigSupported(config).catch(() => ({ supported: false }));
    if (!support.supported) { state.audioCodec = "none (no Opus encoder)"; return; }
    audioEncoder = new AudioEncoder({ output: onAudioChunk, error: (err) => { fail(err); audioEncoder = null; } });
    audioEncoder.configure(config);
    state.audioCodec = "opus";
    const feed = (data) => {
      if (!running || !audioEncoder) { data.close(); return; }
      if (data.sampleRate !== 48000 || data.numberOfChannels !== 1) data = remix(data);
      audioEncoder.encode(data); data.close();
    };
    if (window.MediaStreamTrackProcessor) {
      const reader = new MediaStreamTrackProcessor({ track }).readable.getReader();
      audioStop = () => { reader.cancel().catch(() => {}); if (ctx) ctx.close(); };
      (async () => { for (;;) { const { value, done } = await reader.read(); if (done) break; feed(value); } })().catch(fail);
    } else {                                               // no track processor: a script processor
      ctx = ctx || new AudioContext({ sampleRate: 48000 });
      const source = ctx.createMediaStreamSource(new MediaStream([track]));
      const node = ctx.createScriptProcessor(1024, 1, 1);
      let samples = 0;
      node.onaudioprocess = (event) => {
        const pcm = event.inputBuffer.getChannelData(0);
        feed(new AudioData({ format: "f32-planar", sampleRate: ctx.sampleRate, numberOfFrames: pcm.length,
                             numberOfChannels: 1, timestamp: Math.round(samples / ctx.sampleRate * 1e6), data: pcm }));
        samples += pcm.length;
      };
      source.connect(node).connect(ctx.destination);
      audioStop = () => { node.disconnect(); ctx.close(); };
    }
    void settings;
  }

  // Down-mix to mono 48 kHz by picking channel 0 (rates other than 48 kHz are rare for capture).
  function remix(data) {
    const frames = data.numberOfFrames;
    const pcm = new Float32Array(frames);
    data.copyTo(pcm, { planeIndex: 0, format: "f32-planar" });
    const out = new AudioData({ format: "f32-planar", sampleRate: data.sampleRate, numberOfFrames: frames,
                                numberOfChannels: 1, timestamp: data.timestamp, data: pcm });
    data.close();
    return out;
  }

  // --- WHIP ---------------------------------------------------------------------------------------
  async function startWhip(forced) {
    const attempt = stops;
    publisher.transport = "whip";
    $("transport").textContent = "Sending over WebRTC (WHIP)" + (forced ? ", as ?via=whip asks." : ".");
    await openSource();
    let videoTrack = media && media.getVideoTracks()[0];
    let audioTrack = media && media.getAudioTracks()[0];
    const tone = audioTrack ? null : await makeTone();
    if (stops !== attempt) { if (tone) tone.ctx.close(); throw new Error("stopped"); }
    if (tone) { audioTrack = tone.track; toneStop = () => tone.ctx.close(); }
    if (!videoTrack) videoTrack = canvasTrack = canvas.captureStream(FPS).getVideoTracks()[0];  // the test pattern
    const own = pc = new RTCPeerConnection({ bundlePolicy: "max-bundle" });
    const streams = [new MediaStream([videoTrack, audioTrack])];
    const videoTransceiver = own.addTransceiver(videoTrack, { direction: "sendonly", streams,
                                                              sendEncodings: [{ maxBitrate: bitrate() }] });
    videoSender = videoTransceiver.sender;
    publisher.maxBitrate = bitrate();
    preferCodec(videoTransceiver, "video", MIME[params.get("codec")] || MIME.h264);
    preferCodec(own.addTransceiver(audioTrack, { direction: "sendonly", streams }), "audio", "audio/opus");
    running = true; t0 = performance.now(); lastSlot = -1;
    tick();                                               // draws the pattern (or the camera preview)
    const url = await signal(own, streamPath(app, stream) + "/whip");
    if (pc !== own) { hangUp(url); throw new Error("stopped"); }
    session = url;
    await connected(own, 5000);
    if (pc !== own) throw new Error("stopped");
    publisher.error = null;
    setStatus("● publishing", "badge live");
    own.addEventListener("connectionstatechange", () => {
      if (pc !== own || !["failed", "closed"].includes(own.connectionState)) return;
      fail(`ICE/DTLS ${own.connectionState}`);
      stop("connection lost");
    });
  }

  function closeWhip() {
    if (session) hangUp(session);
    if (pc) pc.close();
    if (toneStop) toneStop();
    if (canvasTrack) canvasTrack.stop();
    canvasTrack = null; pc = null; session = null; videoSender = null; toneStop = null; lastSample = null;
  }
  window.addEventListener("pagehide", closeWhip);

  // Once a second: the readout from getStats() (the sender's view, and the server's receiver
  // reports: loss and round trip).
  async function whipStats() {
    const own = pc;
    if (!own || publisher.transport !== "whip" || !running) return;
    let report;
    try { report = await own.getStats(); } catch (err) { return; }
    if (pc !== own) return;
    const byId = new Map();
    report.forEach((entry) => byId.set(entry.id, entry));
    const out = { video: {}, audio: {} }, remote = { video: {}, audio: {} };
    for (const entry of byId.values()) {
      if (entry.type === "outbound-rtp" && out[entry.kind]) out[entry.kind] = entry;
      if (entry.type === "remote-inbound-rtp" && remote[entry.kind]) remote[entry.kind] = entry;
    }
    const v = out.video, a = out.audio;
    const sample = { at: performance.now(), bytes: (v.bytesSent || 0) + (a.bytesSent || 0) };
    const prev = lastSample;
    lastSample = sample;
    const codec = byId.get(v.codecId), audioCodec = byId.get(a.codecId);
    const rtt = remote.video.roundTripTime ?? remote.audio.roundTripTime;
    publisher.stats = {
      bitrate: prev && sample.at > prev.at ? Math.round((sample.bytes - prev.bytes) * 8000 / (sample.at - prev.at)) : null,
      bytesSent: sample.bytes, framesEncoded: v.framesEncoded || 0, framesSent: v.framesSent || 0,
      keyFramesEncoded: v.keyFramesEncoded || 0, audioPackets: a.packetsSent || 0,
      nackCount: (v.nackCount || 0) + (a.nackCount || 0), retransmittedPackets: v.retransmittedPacketsSent || 0,
      pliCount: v.pliCount || 0, packetsLost: (remote.video.packetsLost || 0) + (remote.audio.packetsLost || 0),
      rttMs: typeof rtt === "number" ? Math.round(rtt * 1000) : null,
      width: v.frameWidth || 0, height: v.frameHeight || 0, fps: v.framesPerSecond || 0,
      qualityLimitation: v.qualityLimitationReason || null,
      videoCodec: codec ? codec.mimeType : null, audioCodec: audioCodec ? audioCodec.mimeType : null,
    };
    const s = publisher.stats;
    Object.assign(state, { videoFrames: s.framesSent, audioFrames: s.audioPackets, keyframes: s.keyFramesEncoded,
                           bytes: s.bytesSent, bitrate: s.bitrate, nacks: s.nackCount,
                           retransmitted: s.retransmittedPackets, rttMs: s.rttMs });
    if (s.videoCodec) state.videoCodec = s.videoCodec;
    if (s.audioCodec) state.audioCodec = s.audioCodec;
  }
  setInterval(whipStats, 1000);

  // The bitrate control: the sender's maxBitrate over WHIP, the encoder's bitrate otherwise.
  function bitrate() { return Number($("bitrate").value) || 1_000_000; }
  const wantedKbps = Number(params.get("kbps"));
  if (wantedKbps > 0) {
    const option = el("option", { value: String(Math.round(wantedKbps * 1000)) }, fmtBits(wantedKbps * 1000));
    $("bitrate").append(option);
    $("bitrate").value = option.value;
  }
  $("bitrate").addEventListener("change", async () => {
    try {
      if (videoSender) {
        const parameters = videoSender.getParameters();
        if (!parameters.encodings || !parameters.encodings.length) parameters.encodings = [{}];
        parameters.encodings[0].maxBitrate = bitrate();
        await videoSender.setParameters(parameters);
        publisher.maxBitrate = videoSender.getParameters().encodings[0].maxBitrate;  // as applied
      } else if (videoEncoder && encoderConfig) {
        encoderConfig.bitrate = publisher.maxBitrate = bitrate();
        videoEncoder.configure(encoderConfig);
        needKey = true;
      }
    } catch (err) { fail(err); }
  });

  // --- start / stop -----------------------------------------------------------------------------
  async function start() {
    if (running) return;
    $("start").hidden = true; $("stop").hidden = false;
    setStatus("starting…");
    publisher.fallback = null;
    const attempt = stops;
    const { webrtc, forced } = await chooseTransport("whip");
    if (stops !== attempt) return;                        // stopped meanwhile
    if (webrtc) {
      try { await startWhip(forced); return; }
      catch (err) {
        if (stops !== attempt) return;                    // stopped meanwhile (stop cleaned up)
        const refused = err.status === 401 || err.status === 403;
        closeWhip();
        running = false; clearTimeout(timer);
        publisher.error = String(err && err.message || err);
        if (forced || refused) { fail(err); stop(refused ? "refused: " + publisher.error : "failed"); return; }
        publisher.fallback = publisher.error;
        $("error").textContent = `WHIP failed (${publisher.error}): publishing over the frames API instead.`;
      }
    }
    await startFrames();
  }

  async function startFrames() {
    publisher.transport = "frames"; publisher.stats = state;
    $("transport").textContent = "Sending over the frames API (WebCodecs).";
    try {
      await openSource();
      videoEncoder = await openVideoEncoder();
      ws = new WebSocket(wsUrl(streamPath(app, stream) + "/ingest"), PROTOCOL);
      ws.binaryType = "arraybuffer";
      await new Promise((resolve, reject) => {
        ws.onmessage = (event) => {
          const msg = JSON.parse(event.data);
          if (msg.type === "start") resolve(); else if (msg.type === "end") { state.end = msg; reject(new Error(msg.message || msg.reason)); }
        };
        ws.onclose = (event) => reject(new Error((state.end && state.end.message) || event.reason || `connection closed (${event.code})`));
      });
      ws.onmessage = (event) => {
        if (typeof event.data !== "string") return;
        const msg = JSON.parse(event.data);
        if (msg.type === "stats") state.serverFrames = msg.frames;
        if (msg.type === "end") state.end = msg;
      };
      ws.onclose = (event) => { if (running) { fail((state.end && state.end.message) || event.reason || `closed (${event.code})`); stop("closed by the server"); } };
      running = true; t0 = performance.now(); lastSlot = -1; needKey = true;
      setStatus("● publishing", "badge live");
      await openAudio().catch(fail);
      tick();
    } catch (err) { fail(err); stop("failed"); }
  }

  function stop(why = "stopped") {
    const was = running;
    running = false; stops += 1;
    closeWhip();
    clearTimeout(timer);
    if (audioStop) { audioStop(); audioStop = null; }
    for (const encoder of [videoEncoder, audioEncoder]) if (encoder && encoder.state !== "closed") encoder.close();
    videoEncoder = audioEncoder = null; audioBase = null; lastAudioTs = -1;
    if (media) for (const track of media.getTracks()) track.stop();
    media = null; video = null; state.source = null;
    if (ws && ws.readyState === WebSocket.OPEN) { if (was) ws.send(JSON.stringify({ type: "end", reason: why })); ws.close(1000, why); }
    ws = null;
    $("start").hidden = false; $("stop").hidden = true;
    setStatus(why === "stopped" ? "not publishing" : why, why === "stopped" ? "badge" : "badge warn");
  }

  $("start").addEventListener("click", start);
  $("stop").addEventListener("click", () => stop());
  setInterval(() => {
    $("r-source").textContent = state.source || "–";
    $("r-vcodec").textContent = state.videoCodec || "–";
    $("r-acodec").textContent = state.audioCodec || "–";
    $("r-video").textContent = state.videoFrames;
    $("r-audio").textContent = state.audioFrames;
    $("r-keys").textContent = state.keyframes;
    $("r-dropped").textContent = state.dropped;
    $("r-bytes").textContent = (state.bytes / 1e6).toFixed(2) + " MB";
    $("r-server").textContent = state.serverFrames === null ? "–" : state.serverFrames + " frames";
    $("r-bitrate").textContent = state.bitrate === null ? "–" : fmtBits(state.bitrate);
    $("r-nacks").textContent = state.nacks === null ? "–" : `${state.nacks} (${state.retransmitted})`;
    $("r-rtt").textContent = state.rttMs === null ? "–" : state.rttMs + " ms";
    $("r-errors").textContent = state.errors;
  }, 250);
  drawPattern(0);
  // ?autostart=1 starts at once, only on a page that is not framed: another site must not get a
  // visitor's camera published without the visitor pressing the button on this very page.
  if (params.get("autostart") === "1" && window.top === window.self) start();
})();
