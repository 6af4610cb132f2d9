// The publish page: camera + microphone (or a canvas test pattern and a tone) encoded with
// WebCodecs (H.264 where the browser has it, else VP9, else AV1; Opus audio) and sent over
// arcly.frames.v1 to /{app}/{stream}/ingest. window.arclyPublish holds the readout.
"use strict";

(() => {
  const { wsUrl, streamFromPath, streamPath, buildFrame, FLAG_KEY, FLAG_CONFIG, PROTOCOL, params, el } = Arcly;
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
  };
  const canvas = $("canvas");
  const ctx2d = canvas.getContext("2d");
  let ws = null, media = null, video = null, videoEncoder = null, audioEncoder = null, running = false;
  let t0 = 0, lastSlot = -1, lastKey = -Infinity, needKey = true, audioBase = null, lastAudioTs = -1, timer = null, audioStop = null;

  function setStatus(text, cls = "badge") { state.status = text; $("status").textContent = text; $("status").className = "status " + cls; }
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
      encoder.configure(support.config);
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
    if (slot <= lastSlot) {
      // the timer fired early: this slot was sent already
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

  async function openAudio() {
    let track = media && media.getAudioTracks()[0];
    let ctx = null;
    if (!track) {                                          // a quiet 440 Hz tone
      ctx = new AudioContext({ sampleRate: 48000 });
      await ctx.resume().catch(() => {});
      const osc = ctx.createOscillator(), gain = ctx.createGain(), dest = ctx.createMediaStreamDestination();
      osc.frequency.value = 440; gain.gain.value = 0.1;
      osc.connect(gain).connect(dest); osc.start();
      track = dest.stream.getAudioTracks()[0];
    }
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

  // --- start / stop -----------------------------------------------------------------------------
  async function start() {
    if (running) return;
    $("start").hidden = true; $("stop").hidden = false;
    setStatus("starting…");
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
    running = false;
    clearTimeout(timer);
    if (audioStop) { audioStop(); audioStop = null; }
    for (const encoder of [videoEncoder, audioEncoder]) if (encoder && encoder.state !== "closed") encoder.close();
    videoEncoder = audioEncoder = null; audioBase = null; lastAudioTs = -1;
    if (media) for (const track of media.getTracks()) track.stop();
    media = null; video = null;
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
    $("r-errors").textContent = state.errors;
  }, 250);
  drawPattern(0);
  // ?autostart=1 starts at once, only on a page that is not framed: another site must not get a
  // visitor's camera published without the visitor pressing the button on this very page.
  if (params.get("autostart") === "1" && window.top === window.self) start();
})();
