// Paintbridge web page: the live parts (queue progress, the generate preview, download progress) over the engine's
// WebSocket (/v1/ws, msgpack frames, the same protocol as the plug-ins). The browser's session cookie signs the
// socket in at the upgrade; this script never sees a token. Every page works without it (forms post back).
"use strict";
(function () {
  const body = document.body;
  const page = body.dataset.page;
  const admin = body.dataset.admin === "1";

  document.addEventListener("submit", function (e) {
    const button = e.submitter;
    if (button && button.dataset.confirm && !window.confirm(button.dataset.confirm)) e.preventDefault();
  });

  function el(tag, attrs, text) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
    if (text !== undefined && text !== null) node.textContent = String(text);   // text, never markup
    return node;
  }

  function toSignIn(expired) {
    location.href = "/signin?next=" + encodeURIComponent(location.pathname + location.search) + (expired ? "&expired=1" : "");
  }

  function setLive(on) {
    const live = document.getElementById("live");
    if (!live) return;
    live.textContent = on ? "· live" : "· live updates paused (reconnecting)";
    live.classList.toggle("on", on);
  }

  class Live {
    constructor() { this.id = 0; this.pending = new Map(); this.handlers = []; this.onopen = null; }

    connect() {
      const ws = new WebSocket((location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/v1/ws");
      ws.binaryType = "arraybuffer";
      this.ws = ws;
      ws.onopen = () => { setLive(true); if (this.onopen) this.onopen(); };
      ws.onmessage = (m) => {
        if (typeof m.data === "string") return;
        let msg;
        try { msg = MessagePack.decode(new Uint8Array(m.data)); } catch (err) { return; }
        if (msg.event) { for (const h of this.handlers) h(msg.event, msg.data || {}); return; }
        const p = this.pending.get(msg.re);
        if (!p) return;
        this.pending.delete(msg.re);
        if (msg.ok) p.resolve(msg.result); else p.reject(msg.error);
      };
      ws.onclose = () => {
        setLive(false);
        for (const p of this.pending.values()) p.reject({ code: "closed", message: "connection closed" });
        this.pending.clear();
        // Signed out (expired, or by an admin) or only a dropped link? The session endpoint says.
        fetch("/session", { credentials: "same-origin" }).then((r) => r.json()).then((s) => {
          if (!s.signed_in) toSignIn(s.expired); else setTimeout(() => this.connect(), 2000);
        }).catch(() => setTimeout(() => this.connect(), 5000));
      };
    }

    call(op, args) {
      return new Promise((resolve, reject) => {
        if (!this.ws || this.ws.readyState !== WebSocket.OPEN) { reject({ code: "closed" }); return; }
        const id = ++this.id;
        this.pending.set(id, { resolve, reject });
        this.ws.send(MessagePack.encode({ id: id, op: op, args: args || {} }));
      });
    }

    on(handler) { this.handlers.push(handler); }
  }

  function drawPreview(canvas, layer) {
    if (!canvas || !layer || layer.format !== "rgba8" || !layer.data) return;
    canvas.width = layer.w;
    canvas.height = layer.h;
    const pixels = new Uint8ClampedArray(layer.data.buffer, layer.data.byteOffset, layer.w * layer.h * 4);
    canvas.getContext("2d").putImageData(new ImageData(pixels, layer.w, layer.h), 0, 0);
  }

  // ---- queue ----------------------------------------------------------------------------------------------
  function queuePage(live) {
    const tbody = document.querySelector("#jobs tbody");
    const progress = {};   // job -> {step, total}
    let names = null;
    let timer = null;

    function cancelForm(job) {
      const form = el("form", { method: "post", action: "/queue/cancel", class: "inline" });
      form.append(el("input", { type: "hidden", name: "job", value: job }), el("button", { type: "submit", class: "cancel" }, "Cancel"));
      return form;
    }

    function row(j) {
      const tr = el("tr", { "data-job": j.job, "data-status": j.status });
      const p = progress[j.job];
      const bar = el("progress", { max: "1", value: j.status === "completed" ? "1" : (p ? String(p.step / p.total) : "0") });
      const cells = [el("td"), el("td", { class: "status" }, j.status), el("td")];
      cells[0].append(el("code", {}, j.job.slice(0, 8)));
      cells[2].append(bar, " ", el("span", { class: "step" }, p && j.status === "running" ? p.step + "/" + p.total : ""));
      if (admin) cells.push(el("td", { class: "user" }, names ? (names[j.owner] || "") : ""));
      const prompt = (j.request && j.request.prompt) || "";
      cells.push(el("td", {}, j.app || ""), el("td", {}, j.kind), el("td", { class: "prompt" }, prompt.slice(0, 200)),
        el("td", {}, j.created ? new Date(j.created * 1000).toLocaleString() : ""));
      const last = el("td");
      if (j.status === "queued" || j.status === "running") last.append(cancelForm(j.job));
      cells.push(last);
      tr.append(...cells);
      return tr;
    }

    async function refresh() {
      timer = null;
      try {
        if (admin && names === null) {
          names = {};
          for (const u of (await live.call("users.list")).users) names[u.id] = u.name;
        }
        const jobs = (await live.call("job.list", { limit: 50, everyone: admin })).jobs;
        tbody.replaceChildren(...jobs.map(row));
        if (!jobs.length) { const tr = el("tr", { class: "empty" }); tr.append(el("td", { colspan: "9" }, "No jobs yet.")); tbody.append(tr); }
      } catch (err) { /* the socket closed: it reconnects and refreshes */ }
    }

    live.onopen = refresh;
    live.on(function (name, data) {
      if (name === "job.progress") {
        progress[data.job] = { step: data.step, total: data.total };
        const tr = tbody.querySelector('tr[data-job="' + CSS.escape(data.job) + '"]');
        if (!tr) { if (!timer) timer = setTimeout(refresh, 300); return; }
        tr.querySelector("progress").value = data.step / data.total;
        tr.querySelector(".step").textContent = data.step + "/" + data.total;
        const status = tr.querySelector(".status");
        if (status.textContent !== "running") { status.textContent = "running"; tr.dataset.status = "running"; }
      } else if (name.startsWith("job.")) {
        if (!timer) timer = setTimeout(refresh, 200);
      }
    });
  }

  // ---- generate -------------------------------------------------------------------------------------------
  function generatePage(live) {
    const form = document.getElementById("generate-form");
    const img2img = form.querySelector("fieldset.img2img");
    function modeChanged() {
      const mode = form.querySelector('input[name="mode"]:checked');
      img2img.hidden = !mode || mode.value !== "img2img";
    }
    form.addEventListener("change", modeChanged);
    modeChanged();

    const job = body.dataset.job;
    if (!job) return;
    const status = document.getElementById("job-status");
    const bar = document.getElementById("job-progress");
    const canvas = document.getElementById("preview");
    const results = document.getElementById("results");
    const cancel = document.getElementById("cancel");
    let shown = false;

    function showImages(ids) {
      if (shown || !ids.length) return;
      shown = true;
      for (const id of ids) {
        const a = el("a", { href: "/gallery/" + encodeURIComponent(id), class: "result" });
        a.append(el("img", { src: "/gallery/" + encodeURIComponent(id) + "/image.png", alt: "result" }));
        results.append(a);
      }
      results.append(el("p", {}, "In your gallery: click the image for its page."));
    }
    function finished(text) { status.textContent = text; if (cancel) cancel.form.hidden = true; }
    function apply(j) {
      if (j.status === "queued") status.textContent = "queued";
      else if (j.status === "running") status.textContent = j.progress ? "step " + j.progress.step + " of " + j.progress.total : "running";
      else if (j.status === "completed") { bar.value = 1; finished("done"); showImages((j.layers || []).map((l) => l.image_id).filter(Boolean)); }
      else if (j.status === "failed") finished("failed: " + ((j.error && j.error.message) || ""));
      else if (j.status === "canceled") finished("canceled");
    }
    live.onopen = function () { live.call("job.get", { job: job }).then(apply).catch(function (err) { status.textContent = (err && err.message) || "job not found"; }); };
    live.on(function (name, data) {
      if (data.job !== job) return;
      if (name === "job.queued") status.textContent = "queued (" + data.position + " ahead)";
      else if (name === "job.started") status.textContent = "starting (loading the model)…";
      else if (name === "job.progress") {
        bar.value = data.step / data.total;
        status.textContent = "step " + data.step + " of " + data.total;
        drawPreview(canvas, data.preview);
      } else if (name === "job.result") { bar.value = 1; finished("done"); showImages((data.layers || []).map((l) => l.image_id).filter(Boolean)); }
      else if (name === "images.added") showImages(data.images.map((i) => i.id));
      else if (name === "job.failed") finished("failed: " + ((data.error && data.error.message) || ""));
      else if (name === "job.canceled") finished("canceled");
    });
  }

  // ---- models: download progress ----------------------------------------------------------------------------
  function modelsPage(live) {
    const out = document.getElementById("downloads");
    if (!out) return;
    live.on(function (name, d) {
      if (name !== "models.download.progress") return;
      const size = d.total ? " of " + Math.round(d.total / 1048576) + " MB" : "";
      out.textContent = (d.name || d.source) + ": " + d.state + " " + Math.round(d.bytes / 1048576) + " MB" + size +
        (d.error ? " — " + (d.error.message || "") : "");
    });
  }

  // ---- gallery: say when new images arrived --------------------------------------------------------------
  function galleryPage(live) {
    const count = document.getElementById("count");
    live.on(function (name) {
      if (name !== "images.added" || document.getElementById("new-images")) return;
      const a = el("a", { href: location.pathname + location.search, id: "new-images" }, "New images: show them");
      count.append(" · ", a);
    });
  }

  const pages = { queue: queuePage, generate: generatePage, models: modelsPage, gallery: galleryPage };
  if (pages[page] && typeof MessagePack !== "undefined") {
    const live = new Live();
    pages[page](live);
    live.connect();
  }
})();
