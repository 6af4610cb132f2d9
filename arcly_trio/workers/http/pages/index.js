// The status page: live streams from /api/streams, refreshed every second. When the server
// serves WebRTC (/api/server's "webrtc"), each stream also shows its WHEP (play) and WHIP
// (publish) URLs: their clients send a token as "Authorization: Bearer", so it is not put on them.
"use strict";

(() => {
  const { el, getJson, fmtBits, fmtDuration, httpUrl, wsUrl, streamPath, copyButton, base, token } = Arcly;
  let server = { rtmp_port: null, hls: false, webrtc: false };
  const state = { streams: 0, updates: 0, error: null };
  window.arclyStatus = state;

  function rtmpUrl(app, stream) {
    if (!server.rtmp_port) return null;
    const port = server.rtmp_port === 1935 ? "" : ":" + server.rtmp_port;
    return `rtmp://${base.hostname}${port}/${app}/${stream}`;
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
    return el("section", { class: "card stream", "data-key": doc.key },
      el("h2", {}, el("a", { href: watch }, doc.key), " ",
         el("span", { class: doc.publishing ? "badge live" : "badge" }, doc.publishing ? "LIVE" : "waiting"), " ",
         el("a", { href: watch, class: "badge ok" }, "▶ watch")),
      facts, urls);
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
      const box = document.getElementById("streams");
      const cards = [];
      for (const app of doc.apps) for (const stream of app.streams) cards.push(streamCard(app.name, stream));
      box.replaceChildren(...cards);
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
