// The status page: live streams from /api/streams, refreshed every second. When the server
// serves WebRTC (/api/server's "webrtc"), each stream also shows its WHEP (play) and WHIP
// (publish) URLs: their clients send a token as "Authorization: Bearer", so it is not put on them.
// When the server listens for SRT or RTSP/RTSPS (/api/server's srt_port, rtsp_port, rtsps_port),
// each stream also shows its srt://...?streamid=read:app/stream and rtsp(s):// play URLs.
// Each stream also gets a live thumbnail (/{app}/{stream}/thumbnail.jpg, reloaded every few
// seconds), its viewers and bitrate over the last minutes as inline SVG sparklines (from
// /api/history, every few seconds) and its recordings (/api/recordings, every 30 s) with links
// that play them; a stream of an application with a DVR window (/api/streams' hls_tracks.dvr_window)
// links to the watch page over HLS (?via=hls), which has a scrub bar over the window. Every text
// from the server goes into the page as text, never as HTML.
"use strict";

(() => {
  const { el, getJson, fmtBits, fmtDuration, httpUrl, wsUrl, streamPath, copyButton, base, token } = Arcly;
  let server = { rtmp_port: null, hls: false, webrtc: false, srt_port: null, rtsp_port: null, rtsps_port: null };
  const state = { streams: 0, updates: 0, error: null, thumbnails: 0, sparklines: 0, recordings: 0 };
  window.arclyStatus = state;
  const THUMB_WIDTH = 320, THUMB_EVERY_MS = 4000, HISTORY_EVERY_MS = 5000, RECORDINGS_EVERY_MS = 30000;
  // The sparkline's SVG comes from a <template> of index.html (the HTML parser gives it the SVG
  // namespace), so no script here names a URL.
  const SPARK = document.getElementById("sparkline").content.firstElementChild;
  // Per stream key: the elements that outlive a refresh (a thumbnail keeps loading while the
  // card around it is rebuilt) and what was last fetched for it.
  const kept = new Map();
  let history = { streams: {} }, historyAt = 0;

  function keptFor(app, doc) {
    let entry = kept.get(doc.key);
    if (!entry) {
      const img = el("img", { class: "thumb", alt: `${doc.key} (latest keyframe)`, width: "240", height: "135" });
      const note = el("span", { class: "thumb-note muted" });
      img.addEventListener("load", () => { img.hidden = false; note.textContent = ""; state.thumbnails += 1; });
      img.addEventListener("error", () => { img.hidden = true; note.textContent = "no picture yet"; });
      entry = { img, note, loadedAt: 0, recordings: el("div", { class: "recordings" }), recordingsAt: 0 };
      kept.set(doc.key, entry);
    }
    entry.seen = state.updates;
    const now = Date.now();
    if (now - entry.loadedAt >= THUMB_EVERY_MS) {
      entry.loadedAt = now;
      const path = streamPath(app, doc.name) + `/thumbnail.jpg?width=${THUMB_WIDTH}&t=${Math.floor(now / 1000)}`;
      entry.img.src = withToken(path);
    }
    if (now - entry.recordingsAt >= RECORDINGS_EVERY_MS) {
      entry.recordingsAt = now;
      loadRecordings(app, doc.name, entry.recordings);
    }
    return entry;
  }

  // A sparkline of numbers (oldest first) as an inline SVG polyline, with its newest value.
  function sparkline(label, values, fmt) {
    const width = 120, height = 28;
    const svg = SPARK.cloneNode(true);
    svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
    svg.setAttribute("aria-label", `${label} over the last minutes`);
    const points = values.length === 1 ? [values[0], values[0]] : values;
    const top = Math.max(1, ...points);
    const step = width / Math.max(1, points.length - 1);
    const line = svg.querySelector("polyline");
    line.setAttribute("points", points.map((v, i) =>
      `${(i * step).toFixed(1)},${(height - 2 - (Math.max(0, Number(v) || 0) / top) * (height - 4)).toFixed(1)}`).join(" "));
    const newest = values[values.length - 1];
    return el("span", { class: "spark", title: `${label}: last ${values.length} samples` },
      el("b", {}, label + " "), svg, el("span", { class: "muted" }, fmt(newest)));
  }

  function sparklines(key) {
    const series = history.streams && history.streams[key];
    if (!series || !series.viewers || !series.viewers.length) return el("div", { class: "sparks" });
    state.sparklines += 1;
    return el("div", { class: "sparks" },
      sparkline("viewers", series.viewers, (v) => String(v)),
      sparkline("bitrate", series.bitrate, fmtBits));
  }

  async function loadHistory() {
    if (Date.now() - historyAt < HISTORY_EVERY_MS) return;
    historyAt = Date.now();
    try { history = await getJson("/api/history"); } catch (err) { history = { streams: {} }; }
  }

  // /api/recordings: {"recordings": [{"key", "spans": [{"start" (ISO 8601), "start_epoch",
  // "duration" (s), ...}]}]}; each span gets links that play it from its start.
  async function loadRecordings(app, stream, box) {
    let doc;
    try {
      doc = await getJson(`/api/recordings?app=${encodeURIComponent(app)}&stream=${encodeURIComponent(stream)}`);
    } catch (err) { box.replaceChildren(); return; }
    const spans = (Array.isArray(doc.recordings) ? doc.recordings : [])
      .filter((r) => r && r.app === app && r.stream === stream)
      .flatMap((r) => (Array.isArray(r.spans) ? r.spans : []))
      .filter((s) => s && typeof s.start === "string" && Number.isFinite(s.start_epoch) &&
                     Number.isFinite(s.duration) && s.duration > 0)
      .sort((a, b) => b.start_epoch - a.start_epoch).slice(0, 8);
    if (!spans.length) { box.replaceChildren(); return; }
    const path = streamPath(app, stream);
    const rows = spans.map((span) => {
      const query = `?start=${encodeURIComponent(span.start)}&duration=${Math.ceil(span.duration)}`;
      const when = new Date(span.start_epoch * 1000).toLocaleString();
      return el("li", {},
        el("span", {}, `${when} · ${fmtDuration(span.duration)} `),
        el("a", { href: withToken(path + "/playback.m3u8" + query) }, "HLS"), " ",
        el("a", { href: withToken(path + "/playback.mp4" + query) }, "MP4"));
    });
    state.recordings += rows.length;
    box.replaceChildren(el("b", {}, "recordings"), el("ul", {}, ...rows));
  }

  function rtmpUrl(app, stream) {
    if (!server.rtmp_port) return null;
    const port = server.rtmp_port === 1935 ? "" : ":" + server.rtmp_port;
    return `rtmp://${base.hostname}${port}/${app}/${stream}`;
  }

  // SRT (MediaMTX's streamid form) and RTSP(S) play URLs, when the server listens there
  // (/api/server gives their ports; null: off). The token rides in the streamid / the query.
  function srtUrl(app, stream) {
    if (!server.srt_port) return null;
    const tail = token ? "?token=" + encodeURIComponent(token) : "";
    return `srt://${base.hostname}:${server.srt_port}?streamid=read:${app}/${stream}${tail}`;
  }

  function rtspUrls(app, stream) {
    const urls = [];
    if (server.rtsp_port) urls.push(["RTSP", withToken(`rtsp://${base.hostname}:${server.rtsp_port}/${app}/${stream}`)]);
    if (server.rtsps_port) urls.push(["RTSPS", withToken(`rtsps://${base.hostname}:${server.rtsps_port}/${app}/${stream}`)]);
    return urls;
  }

  // The page's own ?token= (a server with --play-token) goes on every URL it offers to copy.
  function withToken(url) {
    if (!token) return url;
    return url + (url.includes("?") ? "&" : "?") + "token=" + encodeURIComponent(token);
  }

  // [label, url to copy] rows, or [label, null, why] when there is nothing to play there.
  function urlsOf(app, doc) {
    const path = streamPath(app, doc.name);
    const rows = [];
    const rtmp = rtmpUrl(encodeURIComponent(app), encodeURIComponent(doc.name));
    if (rtmp) rows.push(["RTMP", withToken(rtmp)]);
    const srt = srtUrl(encodeURIComponent(app), encodeURIComponent(doc.name));
    if (srt) rows.push(["SRT", srt]);
    rows.push(...rtspUrls(encodeURIComponent(app), encodeURIComponent(doc.name)));
    rows.push(["HTTP-FLV", withToken(httpUrl(path + ".flv"))]);
    rows.push(["WS-FLV", wsUrl(path + ".flv")]);
    const unavailable = doc.hls_tracks && doc.hls_tracks.unavailable;
    if (doc.hls) rows.push(["HLS", withToken(httpUrl(doc.hls))]);
    else if (unavailable) rows.push(["HLS", null, unavailable]);
    if (doc.dash) rows.push(["DASH", withToken(httpUrl(doc.dash))]);
    rows.push(["frames", wsUrl(path + "/frames")]);
    if (server.webrtc) {
      rows.push([token ? "WHEP (Bearer token)" : "WHEP", httpUrl(path + "/whep")]);
      rows.push([token ? "WHIP (Bearer token)" : "WHIP", httpUrl(path + "/whip")]);
    }
    return rows;
  }

  function streamCard(app, doc) {
    const video = doc.video, audio = doc.audio;
    const viewers = Object.entries(doc.subscribers.by_protocol).map(([p, n]) => `${p} ${n}`).join(", ") || "none";
    const facts = el("div", { class: "facts" },
      el("span", {}, el("b", {}, "video "), video ? `${video.codec || "?"} ${video.width && video.height ? video.width + "×" + video.height : ""} ${video.fps.toFixed(1)} fps ${fmtBits(video.bitrate)}` : "none"),
      el("span", {}, el("b", {}, "audio "), audio ? `${audio.codec || "?"} ${audio.sample_rate ? audio.sample_rate + " Hz" : ""} ${fmtBits(audio.bitrate)}` : "none"),
      el("span", {}, el("b", {}, "viewers "), `${doc.subscribers.total} (${viewers})`),
      el("span", {}, el("b", {}, "drops "), doc.drops),
      el("span", {}, el("b", {}, "uptime "), fmtDuration(doc.uptime)),
      el("span", {}, el("b", {}, "from "), doc.publisher ? `${doc.publisher.protocol || "?"} ${doc.publisher.address || ""}` : "—"),
    );
    const urls = el("div", { class: "urls" });
    for (const [label, url, why] of urlsOf(app, doc)) {
      if (url) urls.append(el("span", { class: "muted" }, label), el("code", {}, url), copyButton(url));
      else urls.append(el("span", { class: "muted" }, label), el("span", { class: "unavailable" }, "not available: " + why), el("span"));
    }
    const watch = "/watch" + streamPath(app, doc.name) + location.search;
    const mine = keptFor(app, doc);
    // An application with a DVR window (--dvr-window): the watch page over HLS, with its scrub bar.
    const window_ = Number(doc.hls_tracks && doc.hls_tracks.dvr_window) || 0;
    const rewind = [];
    if (window_ > 0) {
      const query = new URLSearchParams(location.search);
      query.set("via", "hls");
      rewind.push(" ", el("a", { href: "/watch" + streamPath(app, doc.name) + "?" + query, class: "badge dvr-link",
                                 title: `watch over HLS and go back up to ${fmtDuration(window_)}` }, `⏪ DVR ${fmtDuration(window_)}`));
    }
    return el("section", { class: "card stream", "data-key": doc.key },
      el("h2", {}, el("a", { href: watch }, doc.key), " ",
         el("span", { class: doc.publishing ? "badge live" : "badge" }, doc.publishing ? "LIVE" : "waiting"), " ",
         el("a", { href: watch, class: "badge ok" }, "▶ watch"), ...rewind),
      el("div", { class: "stream-body" },
        el("a", { href: watch, class: "thumb-box" }, mine.img, mine.note),
        el("div", {}, facts, sparklines(doc.key), urls, mine.recordings)));
  }

  function showEmpty(apps) {
    const app = apps.length ? apps[0].name : "live";
    const port = server.rtmp_port && server.rtmp_port !== 1935 ? ":" + server.rtmp_port : "";
    const rtmp = `rtmp://${base.hostname}${port}/${app}`;
    document.getElementById("ffmpeg-test").textContent =
      `ffmpeg -re -f lavfi -i testsrc2=size=1280x720:rate=30 -f lavfi -i sine=frequency=440 \\\n` +
      `       -c:v libx264 -preset veryfast -tune zerolatency -g 60 -c:a aac -f flv ${rtmp}/mystream`;
    document.getElementById("ffmpeg-file").textContent =
      `ffmpeg -re -i input.mp4 -c:v libx264 -c:a aac -f flv ${rtmp}/mystream`;
    document.getElementById("obs-server").textContent = rtmp;
    document.getElementById("whip-hint").hidden = !server.webrtc;
    document.getElementById("whip-server").textContent = httpUrl(streamPath(app, "mystream") + "/whip");
    const publish = document.getElementById("publish-link");
    publish.href = `/publish/${encodeURIComponent(app)}/mystream${location.search}`;
    publish.textContent = `/publish/${app}/mystream`;
  }

  async function refresh() {
    try {
      const doc = await getJson("/api/streams");
      await loadHistory();
      const box = document.getElementById("streams");
      const cards = [];
      for (const app of doc.apps) for (const stream of app.streams) cards.push(streamCard(app.name, stream));
      box.replaceChildren(...cards);
      for (const [key, entry] of kept) if (entry.seen !== state.updates) kept.delete(key);  // gone
      document.getElementById("empty").hidden = cards.length > 0;
      if (!cards.length) showEmpty(doc.apps);
      state.streams = cards.length; state.updates += 1; state.error = null;
      document.getElementById("updated").textContent = `${cards.length} live · updated ${new Date().toLocaleTimeString()}`;
    } catch (err) {
      state.error = String(err);
      document.getElementById("updated").textContent = `cannot reach the server (${err.message || err}); retrying…`;
    }
  }

  (async () => {
    server = Object.assign(server, await Arcly.serverInfo());  // {} from an older server: no RTMP URL
    await refresh();
    setInterval(refresh, 1000);
  })();
})();
