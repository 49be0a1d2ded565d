// adrec demo page: pick a listing or upload an image -> similar ads (score, A/B variant) -> click.
// Plain JS against the public API; text goes in with textContent only (never innerHTML).
"use strict";

window.__demoErrors = [];  // uncaught script errors (the browser test asserts there are none)
window.addEventListener("error", (e) => window.__demoErrors.push(String(e.message)));
window.addEventListener("unhandledrejection", (e) => window.__demoErrors.push(String(e.reason)));

(() => {
  const $ = (sel) => document.querySelector(sel);
  const ID = /^[A-Za-z0-9][A-Za-z0-9_.:\-]{0,63}$/;
  const state = { config: null, shuffle: 0, selected: null, requestId: null, busy: false };

  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) {
      if (v === null || v === undefined) continue;
      if (k === "class") node.className = v;
      else if (k === "text") node.textContent = v;
      else if (k.startsWith("data-")) node.setAttribute(k, v);
      else node[k] = v;
    }
    for (const c of children) if (c) node.append(c);
    return node;
  }

  class ApiError extends Error {
    constructor(message, status, requestId) { super(message); this.status = status; this.requestId = requestId; }
  }

  // fetch + JSON; a 4xx/5xx becomes an ApiError with the API's own message
  async function api(url, options = {}) {
    let resp;
    try {
      resp = await fetch(url, options);
    } catch (err) {
      throw new ApiError(`cannot reach the recommender: ${err.message}`, 0, null);
    }
    const text = await resp.text();
    let body = null;
    try { body = text ? JSON.parse(text) : null; } catch (_) { body = null; }
    if (!resp.ok) {
      const e = body && body.error;
      const msg = e ? `${e.code}: ${e.message}` : (text.slice(0, 300) || resp.statusText);
      throw new ApiError(`HTTP ${resp.status} — ${msg}`, resp.status, (e && e.request_id) || resp.headers.get("x-request-id"));
    }
    return body;
  }

  function showError(err, what) {
    const box = $("#error");
    const rid = err.requestId ? ` (request id ${err.requestId})` : "";
    box.textContent = `${what} failed: ${err.message}${rid}`;
    box.dataset.status = String(err.status ?? "");
    box.hidden = false;
  }
  function clearError() { $("#error").hidden = true; $("#error").textContent = ""; }
  function setStatus(text) { $("#status").textContent = text; }

  function imageSrc(item) {
    if (item.image_url) return item.image_url;
    if (item.image_uri && /^https?:\/\//i.test(item.image_uri)) return item.image_uri;
    return `/demo/images/${encodeURIComponent(item.listing_id)}`;
  }

  function userId() {
    const v = $("#user-id").value.trim();
    if (v && !ID.test(v)) throw new ApiError("user id: letters, digits and _ . : - only (max 64)", 0, null);
    return v;
  }

  function params(extra = {}) {
    const p = new URLSearchParams({ k: $("#k").value });
    const uid = userId();
    if (uid) p.set("user_id", uid);
    for (const [k, v] of Object.entries(extra)) if (v !== null && v !== undefined) p.set(k, v);
    return p;
  }

  // --- 1. the listings to pick from -----------------------------------------------------
  async function loadListings() {
    const strip = $("#listings");
    strip.setAttribute("aria-busy", "true");
    const p = new URLSearchParams({ limit: "24", seed: String(state.shuffle) });
    const cat = $("#category").value;
    if (cat) p.set("category", cat);
    try {
      const body = await api(`/demo/api/listings?${p}`);
      strip.replaceChildren(...body.items.map((item) => {
        const b = el("button", { type: "button", class: "listing", title: item.title || item.listing_id,
                                 "data-listing-id": item.listing_id },
          el("img", { src: imageSrc(item), alt: item.title || item.listing_id, loading: "lazy" }),
          el("span", { class: "t", text: item.title || item.listing_id }));
        b.addEventListener("click", () => similarToListing(item, b));
        return b;
      }));
      const select = $("#category");
      if (select.options.length === 1) {
        for (const c of body.categories) select.append(el("option", { value: c.name, text: `${c.name} (${c.count})` }));
      }
      $("#listing-count").textContent = `${body.items.length} of ${body.total} indexed listings`;
    } catch (err) {
      showError(err, "Loading listings");
    } finally {
      strip.setAttribute("aria-busy", "false");
    }
  }

  // --- 2. similar ads ----------------------------------------------------------------------
  async function run(label, queryImage, call) {
    if (state.busy) return;
    state.busy = true;
    clearError();
    setStatus("searching…");
    $("#grid").setAttribute("aria-busy", "true");
    try {
      const body = await call();
      render(body, label, queryImage);
      setStatus(`${body.items.length} similar ads`);
    } catch (err) {
      setStatus("");
      showError(err, "Finding similar ads");
    } finally {
      state.busy = false;
      $("#grid").setAttribute("aria-busy", "false");
    }
  }

  function similarToListing(item, button) {
    document.querySelectorAll(".listing.selected").forEach((b) => b.classList.remove("selected"));
    if (button) button.classList.add("selected");
    state.selected = item;
    return run(`Similar to: ${item.title || item.listing_id}`, imageSrc(item), () => {
      const p = params({ category: $("#same-category").checked ? "same" : null });
      return api(`/v1/listings/${encodeURIComponent(item.listing_id)}/similar?${p}`);
    });
  }

  function similarToUpload(file) {
    const preview = URL.createObjectURL(file);
    return run(`Similar to your image: ${file.name}`, preview, () => {
      const form = new FormData();
      form.append("image", file, file.name);
      return api(`/v1/similar?${params()}`, { method: "POST", body: form });
    });
  }

  function render(body, label, queryImage) {
    state.requestId = body.request_id;
    $("#results").hidden = false;
    $("#results").dataset.requestId = body.request_id;
    $("#query-label").textContent = label;
    const qi = $("#query-image");
    if (queryImage) { qi.src = queryImage; qi.hidden = false; } else { qi.hidden = true; }
    const chips = body.experiments.length
      ? body.experiments.map((a) => el("span", { class: "variant", "data-experiment": a.experiment_id,
                                                 "data-variant": a.variant, text: `${a.experiment_id}: ${a.variant}` }))
      : [el("span", { class: "hint", text: "no experiment" })];
    $("#variants").replaceChildren(...chips);
    $("#user-variant").textContent = body.experiments.length
      ? `user ${body.user_id} → ${body.experiments.map((a) => a.variant).join(", ")}` : "";
    $("#request-id").textContent = body.request_id;
    $("#model-version").textContent = body.model_version ? `model ${body.model_version}` : "";
    const fb = $("#fallback");
    fb.hidden = !body.fallback;
    fb.textContent = body.fallback ? `degraded: ${body.fallback}` : "";
    $("#click-status").textContent = "";
    const start = (body.page - 1) * body.k;
    $("#grid").replaceChildren(...body.items.map((item, i) => card(item, start + i, body.request_id)));
  }

  function card(item, position, requestId) {
    const price = typeof item.price === "number" ? `${item.price.toFixed(2)} ${item.currency || ""}`.trim() : "";
    const node = el("article", { class: "ad", tabIndex: 0, title: `click: record a click on ${item.listing_id}`,
                                 "data-listing-id": item.listing_id, "data-shop-id": item.shop_id,
                                 "data-position": String(position) },
      el("span", { class: "pos", text: `#${position + 1}` }),
      el("img", { src: imageSrc(item), alt: item.title || item.listing_id, loading: "lazy" }),
      el("div", { class: "title", text: item.title || item.listing_id }),
      el("div", { class: "row" },
        el("span", { class: "price", text: price }),
        el("span", { class: "score", "data-score": String(item.score), text: `score ${item.score.toFixed(3)}` })),
      el("div", { class: "meta", text: [item.category, item.shop_id].filter(Boolean).join(" · ") }));
    const click = () => recordClick(item, node, requestId);
    node.addEventListener("click", click);
    node.addEventListener("keydown", (e) => { if (e.key === "Enter") click(); });
    return node;
  }

  // --- 3. clicks ---------------------------------------------------------------------------
  async function recordClick(item, node, requestId) {
    clearError();
    try {
      const body = await api("/v1/events/click", {
        method: "POST", headers: { "content-type": "application/json" },
        body: JSON.stringify({ request_id: requestId, listing_id: item.listing_id }),
      });
      node.classList.add("clicked");
      if (!node.querySelector(".clicked-badge")) node.append(el("span", { class: "clicked-badge", text: "clicked ✓" }));
      const status = $("#click-status");
      status.dataset.listingId = body.listing_id;
      status.dataset.eventId = body.event_id;
      status.textContent = `Click recorded: ${body.listing_id} at position ${body.position + 1}` +
        ` (event ${body.event_id.slice(0, 12)}…) — see the A/B dashboard for the CTR per variant.`;
    } catch (err) {
      showError(err, "Recording the click");
    }
  }

  // --- wiring --------------------------------------------------------------------------------
  async function init() {
    try {
      state.config = await api("/demo/api/config");
      const link = $("#dashboard-link");
      link.href = state.config.dashboard_url;
      link.title = state.config.experiments.map((e) => `${e.id}: ${e.variants.join(" / ")}`).join("; ");
      const k = $("#k");
      if (![...k.options].some((o) => o.value === String(state.config.default_k))) {
        k.append(el("option", { value: String(state.config.default_k), text: String(state.config.default_k) }));
      }
      k.value = String(state.config.default_k);
    } catch (err) {
      showError(err, "Loading the configuration");
    }
    $("#category").addEventListener("change", () => { state.shuffle = 0; loadListings(); });
    $("#shuffle").addEventListener("click", () => { state.shuffle += 1; loadListings(); });
    $("#upload-form").addEventListener("submit", (e) => {
      e.preventDefault();
      const file = $("#upload-file").files[0];
      if (!file) { showError(new ApiError("choose an image file first", 0, null), "Upload"); return; }
      if (state.config && file.size > state.config.max_upload_bytes) {
        showError(new ApiError(`the image is larger than ${state.config.max_upload_bytes} bytes`, 413, null), "Upload");
        return;
      }
      similarToUpload(file);
    });
    await loadListings();
    document.body.dataset.ready = "true";
  }

  document.addEventListener("DOMContentLoaded", init);
})();
