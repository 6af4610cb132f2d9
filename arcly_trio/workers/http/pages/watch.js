// The watch page: WHEP (an RTCPeerConnection into a <video>, sound included) when the server
// serves WebRTC, else (or when WHEP fails: an HTTP error, or ICE/DTLS not up within 5 s) the
// frames API: arcly.frames.v1 -> WebCodecs VideoDecoder -> canvas, AudioDecoder -> Web Audio.
// ?via=frames or ?via=whep forces one. window.arclyPlayer = {transport, state, stats} says
// which runs and how it goes (tests read it); window.arclyWatch is the frames player's readout.
//
// WHEP: recvonly video and audio transceivers, the offer POSTed as soon as it is made (the
// server is ICE-lite and puts its candidates in the answer: no trickle). An unmuted <video>
// with autoplay; where the browser refuses sound without a click, it plays muted and the
// "Unmute sound" button turns it on. Once a second getStats() gives the readout: latency
// (the jitter buffer's delay per emitted frame over the last second, plus half the round
// trip), packets lost, NACKs sent, bitrate, picture size and rate. A session that fails after
// it played is started again (a 404 means the stream is not live yet: the page waits); a
// picture that stops for 3 s is said ("no picture…", state "stalled") until it comes back.
//
// Frames: one media clock maps stream timestamps (microseconds) to performance.now(): video
// frames are drawn when their time comes, audio is scheduled on the AudioContext at the same
// instants, so picture and sound stay in sync by timestamps. The page reconnects by itself
// when the stream ends or the connection drops.
//
// HLS (?via=hls): the stream's HLS in the <video>, with a scrub bar over the seekable range (the
// DVR window of an application with --dvr-window, else the few live segments) and a "live"
// button that returns to the live edge. The player is hls.js, which the server serves
// (/pages/vendor/, HLS_JS below) and this page loads only then, where the browser has Media
// Source Extensions; without them (iOS Safari before 17.1) the browser's own player, which in
// Safari seeks in the window. A browser whose own player cannot seek in a live playlist
// (Chromium 156's plays it from its first segment with an empty seekable range: it gets hls.js
// unless the script fails to load) has the bar hidden, and the page says so.
// window.arclyPlayer.dvr = {start, end, time, behind} (null while there is nothing to seek in);
// window.arclyPlayer.engine = "hls.js" or "native".
//
// Each configuration is checked with VideoDecoder/AudioDecoder.isConfigSupported before a
// decoder is made (frames that arrive meanwhile wait, a few hundred at most): a codec this
// browser cannot decode (HEVC in Chromium builds without it...) is said in plain words, with the
// URLs of the protocols that would play it elsewhere, instead of a decoder error per frame.
"use strict";

(() => {
  const { wsUrl, httpUrl, streamFromPath, streamPath, parseFrame, PROTOCOL, params, base, token, el,
          fmtBits, chooseTransport, signal, hangUp, connected } = Arcly;
  const [app, stream] = streamFromPath();
  const url = wsUrl(streamPath(app, stream) + "/frames");
  const canvas = document.getElementById("canvas");
  const ctx2d = canvas.getContext("2d");
  const $ = (id) => document.getElementById(id);
  $("title").textContent = `${app}/${stream}`;
  document.title = `arcly-trio: ${app}/${stream}`;

  const JITTER_MS = 120;       // how far behind the first frame playback starts
  const RESYNC_MS = 1500;      // a gap this large between clock and frames resets the clock
  const CATCH_UP_MS = 500;     // more decoded video than this waiting: skip ahead to stay live
  const state = window.arclyWatch = {
    connected: false, status: "connecting", received: 0, decoded: 0, rendered: 0, late: 0, serverDropped: 0,
    skipped: 0, audioDecoded: 0, audioPlayed: 0, errors: 0, lastError: null, reconnects: 0, latencyMs: null,
    bufferMs: null, width: 0, height: 0, videoCodec: null, audioCodec: null, lastTimestamp: null, end: null,
    unsupported: null,  // {video: codec, audio: codec} this browser cannot decode, or null
  };

  const CODEC_NAMES = { avc1: "H.264", avc3: "H.264", hvc1: "HEVC", hev1: "HEVC", av01: "AV1", vp09: "VP9",
                        vp8: "VP8", mp4a: "AAC", opus: "Opus", flac: "FLAC", mp3: "MP3" };
  const codecName = (codec) => CODEC_NAMES[String(codec).split(".")[0]] || String(codec);
  const HOLD_MAX = 600;        // frames kept while a configuration is being checked

  let ws = null, videoDecoder = null, audioDecoder = null, pending = null;
  let videoConfig = null, audioConfig = null, waitKey = true;
  let offset = null;           // performance.now() - timestamp/1000, plus JITTER_MS
  let frames = [];             // decoded VideoFrames waiting for their time
  const arrivals = new Map();  // video timestamp -> performance.now() at arrival
  let audioCtx = null, muted = true, retryMs = 500, retryTimer = null;
  // Per kind: "checking" (frames are held), "ok" (decode), "unsupported" (frames are dropped).
  const support = { video: null, audio: null };
  const held = { video: [], audio: [] };

  // What plays and how it goes: transport "whep" or "frames"; stats: the WHEP readout, or the
  // frames player's (window.arclyWatch); fallback: why WHEP was left for the frames API.
  const player = window.arclyPlayer = { transport: null, state: "starting", stats: null, error: null, fallback: null };

  function setStatus(text, cls = "badge") { if (player.transport === "frames") player.state = text; state.status = text; $("status").textContent = text; $("status").className = "status " + cls; }
  function fail(err) { state.errors += 1; state.lastError = String(err && err.message || err); $("error").textContent = state.lastError; }

  // --- decoders ---------------------------------------------------------------------------
  function makeVideoDecoder() {
    return new VideoDecoder({
      output: (frame) => {
        state.decoded += 1;
        if (offset === null) offset = performance.now() - frame.timestamp / 1000 + JITTER_MS;
        frames.push(frame);
        if (frames.length > 90) { frames.shift().close(); state.late += 1; }
      },
      error: (err) => { fail(err); videoDecoder = null; waitKey = true; },
    });
  }

  function makeAudioDecoder() {
    return new AudioDecoder({
      output: (data) => { state.audioDecoded += 1; playAudio(data); },
      error: (err) => { fail(err); audioDecoder = null; },
    });
  }

  async function isSupported(kind, decoderConfig) {
    const Decoder = kind === "video" ? window.VideoDecoder : window.AudioDecoder;
    if (!Decoder) return false;  // no WebCodecs at all
    try { return (await Decoder.isConfigSupported(decoderConfig)).supported === true; }
    catch (err) { return false; }
  }

  function configure(config, record) {
    const kind = config.kind === "video" ? "video" : "audio";
    const decoderConfig = Object.assign({}, config.decoderConfig);
    if (config.description && record) decoderConfig.description = record.slice();
    if (kind === "video") { state.videoCodec = decoderConfig.codec; videoConfig = decoderConfig; }
    else { state.audioCodec = decoderConfig.codec; audioConfig = decoderConfig; }
    $("codecs").textContent = [state.videoCodec, state.audioCodec].filter(Boolean).join(" + ");
    support[kind] = "checking";
    held[kind] = [];
    const session = ws;
    isSupported(kind, decoderConfig).then((ok) => {
      const current = kind === "video" ? videoConfig : audioConfig;
      if (ws !== session || current !== decoderConfig) return;  // reconnected or reconfigured meanwhile
      if (!ok) { unsupported(kind, decoderConfig.codec); return; }
      support[kind] = "ok";
      if (kind === "video") {
        if (!videoDecoder || videoDecoder.state === "closed") videoDecoder = makeVideoDecoder();
        try { videoDecoder.configure(decoderConfig); } catch (err) { fail(err); videoDecoder = null; }
        waitKey = true;
      } else {
        if (!audioDecoder || audioDecoder.state === "closed") audioDecoder = makeAudioDecoder();
        try { audioDecoder.configure(decoderConfig); } catch (err) { fail(err); audioDecoder = null; }
      }
      const waiting = held[kind];
      held[kind] = [];
      for (const msg of waiting) onFrame(msg);
    });
  }

  // Say plainly that this browser cannot decode the stream's codec, and what would play it.
  async function unsupported(kind, codec) {
    support[kind] = "unsupported";
    held[kind] = [];
    state.unsupported = Object.assign({}, state.unsupported, { [kind]: codec });
    const name = codecName(codec);
    const box = $("unsupported");
    if (kind === "audio" && support.video !== "unsupported") {
      box.replaceChildren(`This browser cannot decode ${name} audio (${codec}): the picture plays without sound.`);
      box.hidden = false;
      return;
    }
    setStatus(`cannot decode ${name}`, "badge warn");
    const path = streamPath(app, stream);
    const tokenQuery = token ? "?token=" + encodeURIComponent(token) : "";
    let info = { rtmp_port: null, hls: false };
    info = Object.assign(info, await Arcly.serverInfo());  // {} from an older server: no RTMP port
    const tries = [];
    if (info.hls) tries.push(["HLS, in Safari (which decodes HEVC) or any HLS player", httpUrl(path + "/index.m3u8") + tokenQuery]);
    if (info.rtmp_port) {
      const port = info.rtmp_port === 1935 ? "" : ":" + info.rtmp_port;
      tries.push(["RTMP, in ffplay or VLC", `rtmp://${base.hostname}${port}${path}${tokenQuery}`]);
    }
    tries.push(["HTTP-FLV, in ffplay or VLC", httpUrl(path + ".flv") + tokenQuery]);
    box.replaceChildren(
      `This browser cannot decode ${name} ${kind} (${codec}), so this page cannot play the stream. Try:`,
      el("ul", {}, ...tries.map(([how, url]) => el("li", {}, how + ": ", el("code", {}, url)))));
    box.hidden = false;
  }

  function onFrame(msg) {
    const kind = msg.kind === "video" ? "video" : "audio";
    if (msg.track !== 0 || support[kind] === "unsupported") return;
    if (support[kind] === "checking") {
      if (held[kind].length < HOLD_MAX) held[kind].push(msg);
      return;
    }
    if (msg.kind === "video") {
      if (!videoDecoder && videoConfig) { videoDecoder = makeVideoDecoder(); videoDecoder.configure(videoConfig); waitKey = true; }
      if (!videoDecoder || videoDecoder.state !== "configured") return;
      if (waitKey && !msg.key) return;
      if (videoDecoder.decodeQueueSize > 30 && !msg.key) { state.late += 1; waitKey = true; return; }
      waitKey = false;
      arrivals.set(msg.pts, performance.now());
      if (arrivals.size > 300) arrivals.delete(arrivals.keys().next().value);
      try {
        videoDecoder.decode(new EncodedVideoChunk({ type: msg.key ? "key" : "delta", timestamp: msg.pts, data: msg.data }));
      } catch (err) { fail(err); waitKey = true; }
    } else {
      if (msg.track !== 0 || !audioDecoder || audioDecoder.state !== "configured") return;
      try { audioDecoder.decode(new EncodedAudioChunk({ type: "key", timestamp: msg.pts, data: msg.data })); }
      catch (err) { fail(err); }
    }
  }

  // --- audio: scheduled on the AudioContext at the media clock's time ---------------------
  function playAudio(data) {
    try {
      if (muted || !audioCtx || offset === null) return;
      const due = offset + data.timestamp / 1000;            // performance.now() time of this sample
      const when = audioCtx.currentTime + (due - performance.now()) / 1000;
      if (when < audioCtx.currentTime) return;                // late: skip rather than drift
      const buffer = audioCtx.createBuffer(data.numberOfChannels, data.numberOfFrames, data.sampleRate);
      for (let ch = 0; ch < data.numberOfChannels; ch++) {
        const plane = new Float32Array(data.numberOfFrames);
        data.copyTo(plane, { planeIndex: ch, format: "f32-planar" });
        buffer.copyToChannel(plane, ch);
      }
      const source = audioCtx.createBufferSource();
      source.buffer = buffer;
      source.connect(audioCtx.destination);
      source.start(when);
      state.audioPlayed += 1;
    } catch (err) { fail(err); } finally { data.close(); }
  }

  async function unmute() {
    try {
      audioCtx = audioCtx || new AudioContext({ latencyHint: "interactive" });
      await audioCtx.resume();
      muted = audioCtx.state !== "running";
    } catch (err) { muted = true; }
    $("unmute").textContent = muted ? "Unmute sound" : "Mute sound";
  }
  $("unmute").addEventListener("click", () => {
    if (player.transport === "whep" || player.transport === "hls") { whepSound(video.muted); return; }
    if (!muted) { muted = true; $("unmute").textContent = "Unmute sound"; return; }
    unmute();
  });

  // --- rendering ------------------------------------------------------------------------------
  function render() {
    requestAnimationFrame(render);
    if (!frames.length || offset === null) return;
    const now = performance.now();
    let clock = (now - offset) * 1000;                        // media time due now, microseconds
    const first = frames[0].timestamp, last = frames[frames.length - 1].timestamp;
    if (first - clock > RESYNC_MS * 1000 || clock - last > RESYNC_MS * 1000) {
      offset = now - first / 1000 + JITTER_MS / 2;              // a jump (reconnect, stall): start again
      clock = (now - offset) * 1000;
    }
    if (last - clock > CATCH_UP_MS * 1000) {                 // e.g. the GOP replayed on joining:
      offset = now - (last / 1000 - JITTER_MS);               // jump to near the newest frame
      clock = (now - offset) * 1000;
    }
    let show = -1;
    for (let i = 0; i < frames.length && frames[i].timestamp <= clock; i++) show = i;
    if (show < 0) return;
    for (let i = 0; i < show; i++) { frames[i].close(); state.late += 1; }
    const frame = frames[show];
    frames = frames.slice(show + 1);
    if (canvas.width !== frame.displayWidth || canvas.height !== frame.displayHeight) {
      canvas.width = frame.displayWidth; canvas.height = frame.displayHeight;
    }
    ctx2d.drawImage(frame, 0, 0, canvas.width, canvas.height);
    state.width = frame.displayWidth; state.height = frame.displayHeight;
    state.rendered += 1;
    state.lastTimestamp = frame.timestamp;
    const arrived = arrivals.get(frame.timestamp);
    if (arrived !== undefined) { state.latencyMs = Math.round(now - arrived); arrivals.delete(frame.timestamp); }
    state.bufferMs = frames.length ? Math.round((frames[frames.length - 1].timestamp - frame.timestamp) / 1000) : 0;
    frame.close();
  }
  requestAnimationFrame(render);

  setInterval(() => {
    if (player.transport !== "frames") return;
    $("r-decoded").textContent = state.decoded;
    $("r-rendered").textContent = state.rendered;
    $("r-late").textContent = state.late;
    $("r-server").textContent = state.serverDropped;
    $("r-audio").textContent = `${state.audioDecoded} decoded, ${state.audioPlayed} played`;
    $("r-latency").textContent = state.latencyMs === null ? "–" : state.latencyMs + " ms";
    $("r-buffer").textContent = state.bufferMs === null ? "–" : state.bufferMs + " ms";
    $("r-size").textContent = state.width ? `${state.width}×${state.height}` : "–";
    $("r-errors").textContent = state.errors;
    $("r-reconnects").textContent = state.reconnects;
  }, 250);

  // --- connection -----------------------------------------------------------------------------
  function reset() {
    for (const frame of frames) frame.close();
    frames = []; arrivals.clear(); offset = null; pending = null; waitKey = true;
    support.video = support.audio = null; held.video = []; held.audio = [];
    for (const decoder of [videoDecoder, audioDecoder]) if (decoder && decoder.state !== "closed") decoder.close();
    videoDecoder = audioDecoder = null; videoConfig = audioConfig = null;
  }

  function onText(text) {
    const msg = JSON.parse(text);
    if (msg.type === "config") {
      if (msg.record > 0) pending = msg; else configure(msg, null);
    } else if (msg.type === "stats") {
      state.serverDropped = msg.dropped;
      if (msg.skipped) { state.skipped += msg.skipped; waitKey = true; }
    } else if (msg.type === "end") {
      state.end = msg;
    } else if (msg.type === "start") {
      if (support.video !== "unsupported") setStatus("live", "badge live");
    }
  }

  function connect() {
    retryTimer = null;
    reset();
    ws = new WebSocket(url, PROTOCOL);
    ws.binaryType = "arraybuffer";
    ws.onopen = () => { state.connected = true; retryMs = 500; };
    ws.onmessage = (event) => {
      try {
        if (typeof event.data === "string") { onText(event.data); return; }
        state.received += 1;
        const msg = parseFrame(event.data);
        if (msg.config) { if (pending) { configure(pending, msg.data); pending = null; } return; }
        onFrame(msg);
      } catch (err) { fail(err); }
    };
    ws.onclose = (event) => {
      state.connected = false;
      const why = (state.end && state.end.message) || event.reason || `closed (${event.code})`;
      if (event.code === 4403 || event.code === 4406) { setStatus("refused: " + why, "badge warn"); return; }
      setStatus(event.code === 4404 ? "waiting for the stream…" : `reconnecting: ${why}`, "badge warn");
      state.end = null;
      retryMs = Math.min(retryMs * 2, 5000);
      state.reconnects += 1;
      retryTimer = setTimeout(connect, retryMs);
    };
  }

  function startFrames() {
    player.transport = "frames"; player.stats = state; player.state = state.status;
    $("via").textContent = "WebCodecs over arcly.frames.v1 — no player library";
    $("transport").textContent = "Playing over the frames API (WebCodecs).";
    $("readout").hidden = false; $("readout-whep").hidden = true;
    $("video").hidden = true; canvas.hidden = false;
    if (params.get("unmute") === "1") unmute();  // kiosks (autoplay policies permitting)
    connect();
  }

  // --- WHEP: an RTCPeerConnection into the <video> ------------------------------------------------
  const video = $("video");
  let pc = null, session = null, retryWhepMs = 1000, lastSample = null, whepTimer = null, downTimer = null;

  function closeWhep() {
    clearTimeout(downTimer);
    if (session) hangUp(session);
    if (pc) pc.close();
    pc = null; session = null; lastSample = null;
  }
  window.addEventListener("pagehide", closeWhep);

  // Sound on (or off); a browser that refuses sound without a click plays muted meanwhile.
  function whepSound(on) {
    video.muted = !on;
    video.play().catch(() => { video.muted = true; video.play().catch(() => {}); })
      .finally(() => { $("unmute").textContent = video.muted ? "Unmute sound" : "Mute sound"; });
  }

  async function startWhep(forced) {
    clearTimeout(whepTimer);
    closeWhep();
    player.transport = "whep"; player.state = "connecting";
    $("via").textContent = "WebRTC (WHEP) — no player library";
    $("transport").textContent = "Playing over WebRTC (WHEP)" + (forced ? ", as ?via=whep asks." : ".");
    $("readout").hidden = true; $("readout-whep").hidden = false;
    canvas.hidden = true; video.hidden = false;
    setStatus("connecting…");
    const own = pc = new RTCPeerConnection({ bundlePolicy: "max-bundle" });
    own.addTransceiver("video", { direction: "recvonly" });
    own.addTransceiver("audio", { direction: "recvonly" });
    const media = new MediaStream();
    own.ontrack = (event) => { media.addTrack(event.track); if (video.srcObject !== media) video.srcObject = media; };
    try {
      const url = await signal(own, streamPath(app, stream) + "/whep");
      if (pc !== own) { hangUp(url); return; }
      session = url;
      await connected(own, 5000);
    } catch (err) {
      if (pc === own) whepFailed(err, forced);
      return;
    }
    if (pc !== own) return;
    player.state = "live"; player.error = null; retryWhepMs = 1000;
    setStatus("live", "badge live");
    whepSound(true);
    own.addEventListener("connectionstatechange", () => {
      if (pc !== own) return;
      clearTimeout(downTimer);
      if (own.connectionState === "failed" || own.connectionState === "closed") whepLost(`ICE/DTLS ${own.connectionState}`);
      else if (own.connectionState === "disconnected") downTimer = setTimeout(() => whepLost("disconnected"), 5000);
    });
  }

  // A session that played went away (the stream ended, the network broke): start again.
  function whepLost(why) {
    closeWhep();
    state.reconnects += 1;
    player.state = "reconnecting";
    setStatus(`reconnecting: ${why}`, "badge warn");
    whepTimer = setTimeout(() => startWhep(params.get("via") === "whep"), 1000);
  }

  // WHEP did not come up. 401/403: refused (the frames API would be too); 404: the stream is
  // not live, wait for it; anything else falls back to the frames API unless ?via=whep.
  function whepFailed(err, forced) {
    closeWhep();
    const message = String(err && err.message || err);
    player.error = message;
    if (err.status === 401 || err.status === 403) {
      player.state = "refused";
      setStatus("refused: " + message, "badge warn");
      return;
    }
    if (err.status === 404 || forced) {
      player.state = err.status === 404 ? "waiting" : "retrying";
      setStatus(err.status === 404 ? "waiting for the stream…" : "WHEP failed, retrying", "badge warn");
      if (err.status !== 404) $("error").textContent = message;
      retryWhepMs = Math.min(retryWhepMs * 2, 5000);
      whepTimer = setTimeout(() => startWhep(forced), retryWhepMs);
      return;
    }
    player.fallback = message;
    $("error").textContent = `WHEP failed (${message}): playing over the frames API instead.`;
    startFrames();
  }

  // Once a second: the readout from getStats() (deltas over the last second where it matters).
  async function whepStats() {
    const own = pc;
    if (player.transport !== "whep" || !own || !["live", "stalled"].includes(player.state)) return;
    let report;
    try { report = await own.getStats(); } catch (err) { return; }
    if (pc !== own) return;
    let inVideo = null, inAudio = null, pair = null;
    const byId = new Map();
    report.forEach((entry) => byId.set(entry.id, entry));
    for (const entry of byId.values()) {
      if (entry.type === "inbound-rtp" && entry.kind === "video") inVideo = entry;
      else if (entry.type === "inbound-rtp" && entry.kind === "audio") inAudio = entry;
      else if (entry.type === "transport" && entry.selectedCandidatePairId) pair = byId.get(entry.selectedCandidatePairId) || pair;
    }
    if (!pair) for (const entry of byId.values()) if (entry.type === "candidate-pair" && entry.nominated && entry.state === "succeeded") pair = entry;
    const v = inVideo || {}, a = inAudio || {};
    const sample = { at: performance.now(), bytes: (v.bytesReceived || 0) + (a.bytesReceived || 0),
                     delay: v.jitterBufferDelay || 0, emitted: v.jitterBufferEmittedCount || 0 };
    const prev = lastSample;
    lastSample = sample;
    const emitted = prev ? sample.emitted - prev.emitted : sample.emitted;
    const delay = prev ? sample.delay - prev.delay : sample.delay;
    const jitterMs = emitted > 0 ? delay / emitted * 1000 : null;
    const rttMs = pair && typeof pair.currentRoundTripTime === "number" ? pair.currentRoundTripTime * 1000 : null;
    const codec = (entry) => entry && entry.codecId && byId.get(entry.codecId) ? byId.get(entry.codecId).mimeType : null;
    // No new picture for 3 s (the publisher left, or the network holds it back): say so; the
    // session stays (the server ends it, or the picture comes back).
    const progressed = !prev || (v.framesDecoded || 0) !== prev.frames;
    sample.frames = v.framesDecoded || 0;
    sample.progressAt = progressed ? sample.at : prev.progressAt;
    const stalled = sample.at - sample.progressAt > 3000;
    if (stalled !== (player.state === "stalled")) {
      player.state = stalled ? "stalled" : "live";
      if (stalled) setStatus("no picture…", "badge warn"); else setStatus("live", "badge live");
    }
    player.stats = {
      latencyMs: jitterMs === null ? null : Math.round(jitterMs + (rttMs || 0) / 2),
      jitterBufferMs: jitterMs === null ? null : Math.round(jitterMs),
      rttMs: rttMs === null ? null : Math.round(rttMs),
      packetsLost: (v.packetsLost || 0) + (a.packetsLost || 0),
      nackCount: (v.nackCount || 0) + (a.nackCount || 0),
      bitrate: prev && sample.at > prev.at ? Math.round((sample.bytes - prev.bytes) * 8000 / (sample.at - prev.at)) : null,
      width: v.frameWidth || 0, height: v.frameHeight || 0, fps: v.framesPerSecond || 0,
      framesDecoded: v.framesDecoded || 0, framesDropped: v.framesDropped || 0, freezeCount: v.freezeCount || 0,
      audioPackets: a.packetsReceived || 0, audioSamples: a.totalSamplesReceived || 0,
      videoCodec: codec(inVideo), audioCodec: codec(inAudio), muted: video.muted,
    };
    const s = player.stats;
    $("w-latency").textContent = s.latencyMs === null ? "–" : s.latencyMs + " ms";
    $("w-rtt").textContent = s.rttMs === null ? "–" : s.rttMs + " ms";
    $("w-lost").textContent = s.packetsLost;
    $("w-nacks").textContent = s.nackCount;
    $("w-bitrate").textContent = s.bitrate === null ? "–" : fmtBits(s.bitrate);
    $("w-size").textContent = s.width ? `${s.width}×${s.height} ${s.fps} fps` : "–";
    $("w-frames").textContent = `${s.framesDecoded} (${s.framesDropped})`;
    $("w-codecs").textContent = [s.videoCodec, s.audioCodec].filter(Boolean).join(" + ") || "–";
    $("w-reconnects").textContent = state.reconnects;
  }
  setInterval(whepStats, 1000);

  // --- HLS with a scrub bar over the DVR window -----------------------------------------------------
  const LIVE_SLACK = 8;          // seconds behind the seekable end still called live
  let dragging = false;

  function seekableRange() {
    const s = video.seekable;
    return s.length ? { start: s.start(0), end: s.end(s.length - 1) } : null;
  }

  let hlsjs = null;

  function goLive() {
    const range = seekableRange();
    const edge = hlsjs && hlsjs.liveSyncPosition;
    if (range) video.currentTime = edge && edge <= range.end ? edge : Math.max(range.start, range.end - 3);
    video.play().catch(() => {});
  }

  function showPosition() {
    const range = seekableRange();
    if (player.transport !== "hls") return;
    if (!range || !isFinite(range.end)) {
      player.dvr = null;
      $("scrub").hidden = $("golive").hidden = true;
      if (video.currentTime > 0) {
        $("behind").textContent = "this browser's HLS player cannot seek in a live stream (open it in Safari)";
        player.state = video.paused ? "paused" : "playing";
      }
      return;
    }
    $("scrub").hidden = $("golive").hidden = false;
    const span = Math.max(range.end - range.start, 0.001);
    const behind = Math.max(0, range.end - video.currentTime);
    player.dvr = { start: range.start, end: range.end, time: video.currentTime, behind };
    if (!dragging) $("scrub").value = String(Math.round((video.currentTime - range.start) / span * 1000));
    const live = behind <= LIVE_SLACK;
    $("behind").textContent = live ? `live (window ${Math.round(span)} s)` : `−${Math.round(behind)} s of ${Math.round(span)} s`;
    $("golive").disabled = live;
    player.state = video.paused ? "paused" : live ? "live" : "behind";
    setStatus(live ? "live" : "DVR", live ? "badge live" : "badge");
  }

  // hls.js, served by this server with a year-long cache: loaded on the first HLS play only.
  const HLS_JS = "/pages/vendor/hls-1.7.4.min.js";
  function loadHlsJs() {
    if (window.Hls) return Promise.resolve(window.Hls);
    return new Promise((resolve) => {
      const script = document.createElement("script");
      script.src = HLS_JS;
      script.onload = () => resolve(window.Hls || null);
      script.onerror = () => resolve(null);
      document.head.append(script);
    });
  }

  async function startHls() {
    player.transport = "hls"; player.state = "connecting";
    $("readout").hidden = true; $("readout-whep").hidden = true;
    canvas.hidden = true; video.hidden = false;
    const src = httpUrl(streamPath(app, stream) + "/index.m3u8") + (token ? "?token=" + encodeURIComponent(token) : "");
    const native = video.canPlayType("application/vnd.apple.mpegurl");
    const mse = Boolean(window.MediaSource || window.ManagedMediaSource);
    const Hls = mse ? await loadHlsJs() : null;
    const useHlsJs = Boolean(Hls && Hls.isSupported());
    if (mse && !useHlsJs) player.fallback = Hls ? "hls.js: not supported here" : "hls.js did not load";
    if (!useHlsJs && !native) {
      player.state = "unsupported";
      setStatus("no HLS here", "badge warn");
      $("unsupported").replaceChildren("This browser has no HLS player of its own and hls.js did not load: open the page "
        + "without ?via=hls, or play " + httpUrl(streamPath(app, stream) + "/index.m3u8") + " in Safari or an hls.js player.");
      $("unsupported").hidden = false;
      return;
    }
    $("transport").textContent = "Playing over HLS, as ?via=hls asks: drag the bar to go back, \"live\" returns.";
    const scrub = $("scrub");
    scrub.addEventListener("input", () => { dragging = true; });
    scrub.addEventListener("change", () => {
      dragging = false;
      const range = seekableRange();
      if (range) video.currentTime = range.start + Number(scrub.value) / 1000 * (range.end - range.start);
      video.play().catch(() => {});
    });
    $("golive").addEventListener("click", goLive);
    $("dvr").hidden = false;
    video.muted = true;  // autoplay; the button turns sound on
    video.addEventListener("error", () => { player.error = video.error && video.error.message; $("error").textContent = `HLS: ${player.error || "error"}`; });
    if (useHlsJs) {
      // No worker: the page's Content-Security-Policy allows no blob: scripts.
      hlsjs = new Hls({ lowLatencyMode: true, enableWorker: false });
      hlsjs.on(Hls.Events.ERROR, (event, data) => {
        if (!data.fatal) return;
        player.error = data.details;
        $("error").textContent = `HLS: ${data.details}`;
      });
      hlsjs.loadSource(src);
      hlsjs.attachMedia(video);
      player.engine = "hls.js";
      $("via").textContent = `HLS — hls.js ${Hls.version || ""}`.trim();
    } else {
      video.src = src;
      player.engine = "native";
      $("via").textContent = "HLS — the browser's own player";
    }
    video.play().catch(() => {});
    setInterval(showPosition, 250);
  }
  window.arclyGoLive = goLive;

  if (params.get("via") === "hls") startHls();
  else chooseTransport("whep").then(({ webrtc, forced }) => (webrtc ? startWhep(forced) : startFrames()));
})();
