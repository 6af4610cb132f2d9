// arcly-trio pages: helpers shared by the status, watch and publish pages (no library).
// The arcly.frames.v1 protocol is described in docs/frames-protocol.md of the project.
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

  return { params, base, token, httpUrl, wsUrl, streamFromPath, streamPath, el, getJson, fmtBits, fmtDuration,
           PROTOCOL, HEADER_SIZE, FLAG_KEY, FLAG_CONFIG, parseFrame, buildFrame, copyButton };
})();
