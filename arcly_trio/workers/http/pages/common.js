// arcly-trio pages: helpers shared by the status, watch and publish pages (no library).
// The arcly.frames.v1 protocol is described in docs/frames-protocol.md of the project; WHIP is
// RFC 9725 and WHEP its playback twin (the IETF draft): POST an SDP offer, get 201 + an answer
// and a Location to DELETE when done.
"use strict";

const Arcly = (() => {
  const params = new URLSearchParams(location.search);
  // The server is always the one this page came from: a page never talks to another origin (its
  // Content-Security-Policy says so too), so a link cannot send a visitor's camera elsewhere.
  const base = new URL(location.origin);
  const token = params.get("token");

  function httpUrl(path) { return new URL(path, base).href; }

  function wsUrl(path, withToken = true) {
    const url = new URL(path, base);
    url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    if (withToken && token) url.searchParams.set("token", token);
    return url.href;
  }

  // /watch/{app}/{stream} -> ["app", "stream"]
  function streamFromPath() {
    const parts = location.pathname.split("/").filter(Boolean).map(decodeURIComponent);
    return parts.length >= 3 ? [parts[1], parts.slice(2).join("/")] : ["live", "demo"];
  }

  function streamPath(app, stream) { return "/" + encodeURIComponent(app) + "/" + encodeURIComponent(stream); }

  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs)) {
      if (key === "class") node.className = value;
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else node.setAttribute(key, value);
    }
    for (const child of children) node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    return node;
  }

  async function getJson(path, timeoutMs = 4000) {
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(), timeoutMs);
    try {
      // The API token of the page's own URL (?api_token=, for a server with --api-token) goes on.
      const apiToken = params.get("api_token");
      const target = apiToken && path.startsWith("/api/")
        ? `${path}${path.includes("?") ? "&" : "?"}api_token=${encodeURIComponent(apiToken)}` : path;
      const response = await fetch(httpUrl(target), { signal: controller.signal, cache: "no-store" });
      if (!response.ok) throw new Error(`${path}: HTTP ${response.status}`);
      return await response.json();
    } finally { clearTimeout(timer); }
  }

  function fmtBits(bps) {
    if (!bps) return "0";
    return bps >= 1e6 ? (bps / 1e6).toFixed(2) + " Mb/s" : (bps / 1e3).toFixed(0) + " kb/s";
  }

  function fmtDuration(seconds) {
    seconds = Math.floor(seconds || 0);
    const h = Math.floor(seconds / 3600), m = Math.floor(seconds / 60) % 60, s = seconds % 60;
    return (h ? h + ":" + String(m).padStart(2, "0") : m) + ":" + String(s).padStart(2, "0");
  }

  // --- arcly.frames.v1 binary messages: 20-byte big-endian header, then the payload ---
  const PROTOCOL = "arcly.frames.v1";
  const HEADER_SIZE = 20;
  const KIND_VIDEO = 1, KIND_AUDIO = 2;
  const FLAG_KEY = 1, FLAG_CONFIG = 2;

  function parseFrame(buffer) {
    const view = new DataView(buffer);
    if (buffer.byteLength < HEADER_SIZE || view.getUint8(0) !== 1) throw new Error("not an arcly.frames.v1 frame");
    const flags = view.getUint8(2);
    return {
      kind: view.getUint8(1) === KIND_VIDEO ? "video" : "audio",
      key: (flags & FLAG_KEY) !== 0,
      config: (flags & FLAG_CONFIG) !== 0,
      track: view.getUint8(3),
      pts: Number(view.getBigInt64(4)),
      dts: Number(view.getBigInt64(12)),
      data: new Uint8Array(buffer, HEADER_SIZE),
    };
  }

  // A frame message whose payload is written by fill(Uint8Array) (e.g. chunk.copyTo).
  function buildFrame(kind, flags, track, pts, dts, size, fill) {
    const buffer = new ArrayBuffer(HEADER_SIZE + size);
    const view = new DataView(buffer);
    view.setUint8(0, 1);
    view.setUint8(1, kind === "video" ? KIND_VIDEO : KIND_AUDIO);
    view.setUint8(2, flags);
    view.setUint8(3, track);
    view.setBigInt64(4, BigInt(Math.round(pts)));
    view.setBigInt64(12, BigInt(Math.round(dts)));
    fill(new Uint8Array(buffer, HEADER_SIZE));
    return buffer;
  }

  function copyButton(text) {
    return el("button", {
      type: "button", title: "copy",
      onclick: async (event) => {
        const button = event.currentTarget;
        try { await navigator.clipboard.writeText(text); button.textContent = "copied"; }
        catch (err) {
          const range = document.createRange();
          range.selectNodeContents(button.previousElementSibling);
          getSelection().removeAllRanges(); getSelection().addRange(range);
          button.textContent = "selected";
        }
        setTimeout(() => { button.textContent = "copy"; }, 1500);
      },
    }, "copy");
  }

  // /api/server once per page ({} from an older server or when unreachable: the frames API).
  let infoPromise = null;
  function serverInfo() {
    infoPromise = infoPromise || getJson("/api/server").catch(() => ({}));
    return infoPromise;
  }

  // Which transport a page should use: ?via=frames|whep|whip forces one, else WebRTC when the
  // server says it serves it. Returns {webrtc: bool, forced: bool}.
  async function chooseTransport(webrtcName) {
    const via = params.get("via");
    if (via === "frames") return { webrtc: false, forced: true };
    if (via === webrtcName) return { webrtc: true, forced: true };
    const info = await serverInfo();
    return { webrtc: info.webrtc === true && !!window.RTCPeerConnection, forced: false };
  }

  // An error of the WHIP/WHEP exchange; status is the HTTP status (0: no answer at all).
  class SignalError extends Error {
    constructor(status, message) { super(message); this.status = status; }
  }

  // One WHIP/WHEP exchange: offer (no trickle: the ICE-lite server puts its candidates in the
  // answer, so ours go as they are once setLocalDescription resolves), POST it, apply the
  // answer. Resolves to the session's URL (its Location), for hangUp.
  async function signal(pc, path, timeoutMs = 8000) {
    await pc.setLocalDescription(await pc.createOffer());
    const headers = { "content-type": "application/sdp" };
    if (token) headers.authorization = "Bearer " + token;
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(), timeoutMs);
    let response, body;
    try {
      response = await fetch(httpUrl(path), { method: "POST", headers, body: pc.localDescription.sdp,
                                              signal: controller.signal, cache: "no-store" });
      body = await response.text();
    } catch (err) {
      throw new SignalError(0, `${path}: ${err.name === "AbortError" ? "no answer" : err.message || err}`);
    } finally { clearTimeout(timer); }
    if (response.status !== 201) {
      throw new SignalError(response.status, `${path}: HTTP ${response.status} ${body.slice(0, 200)}`.trim());
    }
    const location = response.headers.get("location");
    // The session URL must stay on this origin (the DELETE carries the token).
    const session = location ? new URL(location, response.url || httpUrl(path)) : null;
    try { await pc.setRemoteDescription({ type: "answer", sdp: body }); }
    catch (err) {
      if (session && session.origin === base.origin) hangUp(session.href);
      throw new SignalError(201, `${path}: unusable answer: ${err.message || err}`);
    }
    return session && session.origin === base.origin ? session.href : null;
  }

  // End a WHIP/WHEP session (DELETE its URL; keepalive so it also goes out when the page closes).
  function hangUp(sessionUrl) {
    if (!sessionUrl) return;
    const headers = token ? { authorization: "Bearer " + token } : {};
    fetch(sessionUrl, { method: "DELETE", headers, keepalive: true, cache: "no-store" }).catch(() => {});
  }

  // Resolves once ICE and DTLS are up; rejects when they fail or take longer than timeoutMs.
  function connected(pc, timeoutMs = 5000) {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => done(new Error(`ICE/DTLS not connected after ${timeoutMs / 1000} s`)), timeoutMs);
      const check = () => {
        if (pc.connectionState === "connected") done(null);
        else if (pc.connectionState === "failed" || pc.connectionState === "closed") done(new Error(`ICE/DTLS ${pc.connectionState}`));
      };
      function done(err) {
        clearTimeout(timer);
        pc.removeEventListener("connectionstatechange", check);
        if (err) reject(err); else resolve();
      }
      pc.addEventListener("connectionstatechange", check);
      check();
    });
  }

  // Put the codecs of mimeType (e.g. "video/H264") first in a transceiver's preferences, where
  // the browser lets us; packetization-mode=1 and the constrained baseline profile lead for H.264.
  function preferCodec(transceiver, kind, mimeType) {
    if (!transceiver.setCodecPreferences || !window.RTCRtpSender || !RTCRtpSender.getCapabilities) return false;
    const caps = RTCRtpSender.getCapabilities(kind);
    if (!caps) return false;
    const wanted = mimeType.toLowerCase();
    const rank = (codec) => {
      if (codec.mimeType.toLowerCase() !== wanted) return 3;
      if (wanted !== "video/h264") return 0;
      const fmtp = codec.sdpFmtpLine || "";
      if (!/packetization-mode=1/.test(fmtp)) return 2;
      return /profile-level-id=42e01f/.test(fmtp) ? 0 : 1;
    };
    if (!caps.codecs.some((codec) => rank(codec) < 3)) return false;
    try { transceiver.setCodecPreferences([...caps.codecs].sort((a, b) => rank(a) - rank(b))); return true; }
    catch (err) { return false; }
  }

  return { params, base, token, httpUrl, wsUrl, streamFromPath, streamPath, el, getJson, fmtBits, fmtDuration,
           PROTOCOL, HEADER_SIZE, FLAG_KEY, FLAG_CONFIG, parseFrame, buildFrame, copyButton,
           serverInfo, chooseTransport, SignalError, signal, hangUp, connected, preferCodec };
})();
