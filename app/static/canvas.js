// The annotation canvas (runs as gr.HTML js_on_load: `element`, `trigger`, `props`, `server`, `watch`).
//
// The page keeps its own copy of the label map being drawn (Uint8Array, class index, 255 = none)
// in a "doc" per image and layer, so a tool, brush-size or image change can never drop strokes.
// After every stroke the doc is saved through server.canvas_save (one request in flight per doc;
// strokes drawn meanwhile are sent next), then the overlay is refreshed through
// server.canvas_preview. Undo/redo take back this page's own strokes (a history of pixel changes
// per project, image and layer, kept across image and project changes) and are saved like strokes,
// merged on top of whatever another window saved meanwhile: one annotator's undo never removes
// another's strokes. Docs and undo history are keyed by the project token as well as the image id
// and layer, so they never cross projects opened one after the other from the page.
// Messages from Python arrive in props.value (JSON): {"type": "load" | "empty" | "classes" | "refresh", ...}.
// A "load" or "empty" with "removed_image" follows the removal of that image: its strokes (saved or
// not) and undo history are dropped, so nothing more is sent for it; a server answer saying an image
// is gone ({"error", "gone": true}: removed from another window) does the same. A "classes" with
// "deleted" (the index of a deleted class) moves every stroke and undo step of the project held here
// to the new class numbers as the store did (that class's pixels become none, the ones after it
// move down one), then applies its "refresh" (the shown image's tags and status); every save says
// how many classes the page draws with, so the server refuses one made with out-of-date numbers.
// "load" shows an image (a stroke under way is finished and saved in its own layer first);
// "refresh" ({project, image_id, overlay_kinds, overlay_kind, status, final_id, tags}) follows a change of the
// project (a job ended) for the image shown: it updates the overlay buttons and the status only,
// and keeps the mode, the strokes (drawn, unsaved or in flight), the undo history and the overlay
// chosen. A "refresh" for another image or project is ignored.
(function () {
  const root = element.querySelector('.ws-root');
  if (!root) return;
  const q = (s) => root.querySelector(s);
  const stage = q('.ws-stage'), layers = q('.ws-layers'), img = q('.ws-img'), ovl = q('.ws-overlay');
  const cv = q('.ws-labels'), ctx = cv.getContext('2d'), cursor = q('.ws-cursor');
  const NAV_KEYS = {n: 'ws-next', p: 'ws-prev', u: 'ws-next-todo'};  // next, previous, next unannotated
  const KIND_NAMES = {preview: 'Live preview', final: 'Final', predicted: 'Prediction', imported: 'Imported',
                      pseudo: 'Pseudo-mask', none: 'None'};
  const S = {
    proj: null, roots: {}, id: null, W: 0, H: 0, classes: [], lut: [], cls: 1, erase: false, fill: false, path: null, size: 6, zoom: 1,
    mode: 'scribbles', docs: {}, doc: null, overlayKind: 'preview', overlayKinds: ['preview'],
    overlayWanted: false, overlayBusy: false, previewStroke: 0, label: '', opacity: 0.45, tags: {}, imgData: null,
    drawing: false, last: null, pointerId: null, status: '', seq: 0, navPending: null, navQueue: [], navTimer: null,
    hist: {}, before: null,  // docKey -> {undo: [], redo: []} of {idx, before, after}; labels at stroke start
    // previewStroke: the end time of the stroke whose preview is awaited (0: the next preview is not a stroke's)
  };
  root._ws = S;  // for tests and debugging

  // ------------------------------------------------------------------ helpers
  function hexToRgb(h) {
    const m = /^#?([0-9a-f]{6})$/i.exec(h || '');
    if (!m) return [255, 0, 255];
    const v = parseInt(m[1], 16);
    return [(v >> 16) & 255, (v >> 8) & 255, v & 255];
  }
  function rleEncode(a) {
    const out = [];
    if (!a.length) return out;
    let v = a[0], n = 1;
    for (let i = 1; i < a.length; i++) {
      if (a[i] === v) { n++; } else { out.push(v, n); v = a[i]; n = 1; }
    }
    out.push(v, n);
    return out;
  }
  function rleDecode(rle, n) {
    const a = new Uint8Array(n).fill(255);
    if (!rle) return a;
    let p = 0;
    for (let i = 0; i + 1 < rle.length; i += 2) { a.fill(rle[i], p, p + rle[i + 1]); p += rle[i + 1]; }
    return a;
  }
  function setStatus(text) { q('.ws-status').textContent = text; }
  function setTiming(text) { q('.ws-timing').textContent = text; }
  let errTimer = null;
  function showError(msg) {
    const e = q('.ws-error');
    e.textContent = '\u26a0 ' + msg;
    e.hidden = false;
    root.dataset.error = msg;
    clearTimeout(errTimer);
    errTimer = setTimeout(() => { e.hidden = true; }, 15000);
  }
  function clearError() { q('.ws-error').hidden = true; root.dataset.error = ''; }
  function updateFlags() {
    const pending = Object.values(allDocs).some((d) => d.dirty || d.inflight);
    root.dataset.saved = pending ? '0' : '1';
    root.dataset.version = S.doc ? String(S.doc.version) : '0';
    root.dataset.imageId = S.id == null ? '' : String(S.id);
    root.dataset.mode = S.mode;
  }
  const allDocs = {};  // key -> doc, every doc with unsaved work stays here until saved
  function docKey(proj, id, layer) { return proj + '|' + id + ':' + layer; }
  function isShown(d) { return !!d && d.proj === S.proj && d.id === S.id; }
  function makeDoc(id, layer, W, H, labels, version, kind) {
    const d = {proj: S.proj, id, layer, W, H, labels, version, kind: kind || '', dirty: false, inflight: false};
    const k = docKey(S.proj, id, layer);
    const old = allDocs[k];
    if (old && (old.dirty || old.inflight)) return old;  // keep unsaved strokes of a revisited image
    allDocs[k] = d;
    return d;
  }

  // Strokes the server has not taken (it is down or restarting) are also kept in the browser's
  // localStorage, by project folder, image and layer, until a save succeeds: Gradio reloads the page
  // when a restarted server comes back, and a reload would otherwise drop them. The next load of the
  // image (same classes) puts them back and saves them (a three-way merge with its base version).
  const STASH = 'weakseg-unsaved:', STASH_DAYS = 7;
  function stashKey(d) {
    const where = S.roots[d.proj];
    return where && d.layer === 'scribbles' ? STASH + where + '|' + d.id + ':' + d.layer : null;
  }
  function stash(d) {
    const k = stashKey(d);
    if (!k) return;
    try {
      localStorage.setItem(k, JSON.stringify({labels: rleEncode(d.labels), version: d.version, W: d.W, H: d.H,
                                              classes: S.classes.map((c) => c.name), epoch: S.classEpoch,
                                              t: Date.now()}));
    } catch (e) { /* storage full or off: the page still holds them */ }
  }
  function unstash(d) {
    const k = stashKey(d);
    if (k) try { localStorage.removeItem(k); } catch (e) { /* nothing kept */ }
  }
  function restoreStash(d) {
    // the unsaved strokes of an earlier page for this image, if any: true when they were put back
    const k = stashKey(d);
    let kept = null;
    try { kept = k ? JSON.parse(localStorage.getItem(k) || 'null') : null; } catch (e) { kept = null; }
    if (!kept || d.dirty || d.inflight) return false;
    const names = S.classes.map((c) => c.name);
    const fresh = Date.now() - kept.t < STASH_DAYS * 864e5;
    if (!(kept.W === d.W && kept.H === d.H && fresh && Array.isArray(kept.classes))) {
      unstash(d);
      if (fresh) showError('Strokes on this image that were not saved before the page reloaded were drawn on ' +
                           'another image size and cannot be put back.');
      return false;
    }
    // no class deleted since (the same class epoch): the numbers hold, whatever was renamed; else
    // classes are matched by name (a class deleted moved the numbers of the others)
    const sameEpoch = kept.epoch !== undefined && kept.epoch === S.classEpoch && kept.classes.length <= names.length;
    const map = kept.classes.map((n, i) => (sameEpoch ? i : names.indexOf(n)));
    const labels = rleDecode(kept.labels, d.W * d.H);
    let gone = 0;
    if (map.some((j, i) => j !== i)) {
      for (let p = 0; p < labels.length; p++) {
        const v = labels[p];
        if (v === 255) continue;
        const j = v < map.length ? map[v] : -1;
        if (j < 0) { labels[p] = 255; gone++; } else labels[p] = j;
      }
    }
    d.labels = labels;
    d.version = kept.version;
    d.dirty = true;
    // said once they are saved (a successful save clears the error line)
    if (gone) d.note = 'Strokes not saved before the page reloaded are back, except ' + gone +
                       ' pixel(s) of classes that no longer exist.';
    return true;
  }

  const HISTORY = 100;  // undo steps kept per image and layer
  function histOf(d) {
    const k = docKey(d.proj, d.id, d.layer);
    return S.hist[k] || (S.hist[k] = {undo: [], redo: []});
  }
  function record(d, before) {
    // one undo step: the pixels this edit changed, with their values before and after it
    const L = d.labels, idx = [];
    for (let i = 0; i < L.length; i++) if (L[i] !== before[i]) idx.push(i);
    if (!idx.length) return;
    const ix = Int32Array.from(idx), b = new Uint8Array(ix.length), a = new Uint8Array(ix.length);
    for (let k = 0; k < ix.length; k++) { b[k] = before[ix[k]]; a[k] = L[ix[k]]; }
    const h = histOf(d);
    h.undo.push({idx: ix, before: b, after: a});
    if (h.undo.length > HISTORY) h.undo.shift();
    h.redo = [];
  }

  // ------------------------------------------------------------------ rendering
  function buildLut() {
    S.lut = [];
    for (const c of S.classes) S.lut[c.idx] = hexToRgb(c.color);
  }
  function renderRect(x0, y0, x1, y1) {
    const d = S.doc;
    if (!d || !S.imgData) return;
    x0 = Math.max(0, x0 | 0); y0 = Math.max(0, y0 | 0);
    x1 = Math.min(d.W - 1, Math.ceil(x1)); y1 = Math.min(d.H - 1, Math.ceil(y1));
    if (x1 < x0 || y1 < y0) return;
    const px = S.imgData.data, L = d.labels;
    for (let y = y0; y <= y1; y++) {
      for (let x = x0; x <= x1; x++) {
        const i = y * d.W + x, v = L[i], o = i * 4, c = S.lut[v];
        if (v === 255 || !c) { px[o + 3] = 0; } else { px[o] = c[0]; px[o + 1] = c[1]; px[o + 2] = c[2]; px[o + 3] = 255; }
      }
    }
    ctx.putImageData(S.imgData, 0, 0, x0, y0, x1 - x0 + 1, y1 - y0 + 1);
  }
  function renderAll() { if (S.doc) renderRect(0, 0, S.doc.W - 1, S.doc.H - 1); }
  function applyOpacity() {
    if (S.mode === 'mask') {
      cv.style.opacity = String(Math.max(0.15, S.opacity));
      ovl.style.display = 'none';
    } else {
      cv.style.opacity = '1';
      ovl.style.display = (S.overlayKind === 'none' || !ovl.getAttribute('src')) ? 'none' : '';
      ovl.style.opacity = String(S.opacity);
    }
  }
  function applyZoom() {
    if (!S.W) return;
    layers.style.width = (S.W * S.zoom) + 'px';
    layers.style.height = (S.H * S.zoom) + 'px';
    q('.ws-zoom-val').textContent = Math.round(S.zoom * 100) + '%';
    layers.classList.toggle('ws-pixelated', S.zoom >= 2);
    updateCursorSize();
  }
  function fitZoom() {
    if (!S.W) return;
    const w = Math.max(200, stage.clientWidth - 8);
    // the whole image and the tag bar under it in the window (the page scrolled to the top), on a
    // laptop too: the toolbars above the stage take 300-400 px
    const top = stage.getBoundingClientRect().top + window.scrollY;
    const below = q('.ws-tags-bar').offsetHeight + q('.ws-statusline').offsetHeight + 24;
    const h = Math.max(240, Math.min(window.innerHeight - top - below, 900));
    S.zoom = Math.max(0.05, Math.min(w / S.W, h / S.H, 12));
    applyZoom();
  }
  function setZoom(z) { S.zoom = Math.max(0.05, Math.min(z, 32)); applyZoom(); }

  // ------------------------------------------------------------------ toolbar
  function buildClasses() {
    const box = q('.ws-classes');
    box.innerHTML = '';
    S.classes.forEach((c, k) => {
      const b = document.createElement('button');
      b.className = 'ws-btn ws-class';
      b.dataset.cls = String(c.idx);
      const key = classKey(k);
      b.title = 'Brush: ' + c.name + (key ? ' (key ' + key + ')' : '');
      const sw = document.createElement('span');
      sw.className = 'ws-swatch';
      sw.style.background = c.color;
      b.appendChild(sw);
      b.appendChild(document.createTextNode(c.name));
      b.addEventListener('click', () => selectClass(c.idx));
      box.appendChild(b);
    });
    if (!S.classes.some((c) => c.idx === S.cls)) S.cls = S.classes.length > 1 ? S.classes[1].idx : (S.classes[0] || {idx: 0}).idx;
    markTools();
  }
  function selectClass(idx) { S.cls = idx; S.erase = false; markTools(); }
  // keys: 1-9 the first nine classes, Shift+1-9 the next nine (10-18); C / Shift+C the next / previous
  // class, for every class there is
  function classKey(k) { return k < 9 ? String(k + 1) : (k < 18 ? 'Shift+' + (k - 8) : ''); }
  function classForKey(e) {
    // the top-row digit keys by their place (event.code Digit1..Digit9), whatever character the layout
    // gives: unshifted the classes 1-9 (on AZERTY these keys type & é " ' …), with Shift 10-18 (on
    // AZERTY Shift types the digit, on a US layout ! @ #); a key with no such place (the numeric keypad)
    // by its digit, classes 1-9
    const m = /^Digit([1-9])$/.exec(e.code || '');
    if (m) return (e.shiftKey ? 8 : -1) + Number(m[1]);
    if (e.key >= '1' && e.key <= '9' && e.key.length === 1) return Number(e.key) - 1;
    return -1;
  }
  function stepClass(step) {
    const n = S.classes.length, k = S.classes.findIndex((c) => c.idx === S.cls);
    if (n) selectClass(S.classes[((k < 0 ? 0 : k + step) % n + n) % n].idx);
  }
  function markTools() {
    root.querySelectorAll('.ws-class').forEach((b) => b.classList.toggle('ws-on', !S.erase && Number(b.dataset.cls) === S.cls));
    q('.ws-eraser').classList.toggle('ws-on', S.erase);
    q('.ws-fill').classList.toggle('ws-on', S.fill);
    root.dataset.fill = S.fill ? '1' : '0';
    root.querySelectorAll('.ws-mode').forEach((b) => b.classList.toggle('ws-on', b.dataset.mode === S.mode));
    const c = S.classes.find((c) => c.idx === S.cls);
    cursor.style.borderColor = S.erase ? '#ffffff' : (c ? c.color : '#fff');
    root.dataset.tool = S.erase ? 'eraser' : 'class-' + S.cls;
    markClear();
  }
  function buildOverlays() {
    const box = q('.ws-overlays');
    box.innerHTML = '';
    const kinds = S.overlayKinds.concat(['none']);
    for (const k of kinds) {
      const b = document.createElement('button');
      b.className = 'ws-btn ws-ovl';
      b.dataset.kind = k;
      b.textContent = KIND_NAMES[k] || k;
      b.addEventListener('click', () => { S.overlayKind = k; markOverlay(); requestOverlay(); });
      box.appendChild(b);
    }
    markOverlay();
  }
  function addFinalKind() {
    // the image has a final mask now (accepted or painted in the mask editor): offer it as overlay
    if (S.overlayKinds.includes('final')) return;
    S.overlayKinds.splice(S.overlayKinds[0] === 'preview' ? 1 : 0, 0, 'final');
    buildOverlays();
  }
  function removeFinalKind() {
    // the final mask this page's mask editor saved was taken back (Undo / Reset to the start)
    if (!S.overlayKinds.includes('final')) return;
    S.overlayKinds = S.overlayKinds.filter((k) => k !== 'final');
    if (S.overlayKind === 'final') S.overlayKind = S.overlayKinds[0] || 'none';
    buildOverlays();
  }
  function maskEdited() {
    // this visit to the mask editor changed the final mask (saved, or on its way)
    const m = S.docs.mask;
    return !!m && isShown(m) && !!(m.edited || m.dirty || m.inflight);
  }
  function markOverlay() {
    root.querySelectorAll('.ws-ovl').forEach((b) => b.classList.toggle('ws-on', b.dataset.kind === S.overlayKind));
    q('.ws-accept').disabled = S.overlayKind === 'none' || S.mode === 'mask';
    root.dataset.overlayKind = S.overlayKind;
  }
  function buildTags() {
    const box = q('.ws-tags');
    box.innerHTML = '';
    for (const c of S.classes) {
      const wrap = document.createElement('span');
      wrap.className = 'ws-tag';
      wrap.dataset.cls = String(c.idx);
      const name = document.createElement('span');
      name.className = 'ws-tag-name';
      name.innerHTML = '<span class="ws-swatch"></span>';
      name.querySelector('.ws-swatch').style.background = c.color;
      name.appendChild(document.createTextNode(c.name));
      wrap.appendChild(name);
      for (const [state, label, tip] of [['present', '\u2713 present', 'the class is in this image'],
                                         ['absent', '\u2717 absent', 'the class is not in this image'],
                                         ['unknown', '?', 'not tagged']]) {
        const b = document.createElement('button');
        b.className = 'ws-btn ws-tagbtn';
        b.dataset.state = state;
        b.textContent = label;
        b.title = c.name + ': ' + tip;
        b.addEventListener('click', () => setTag(c.idx, state));
        wrap.appendChild(b);
      }
      box.appendChild(wrap);
    }
    const rest = document.createElement('button');
    rest.className = 'ws-btn ws-tags-rest';
    rest.textContent = 'Others \u2717 absent';
    rest.title = 'Every class not tagged here (and not drawn) is absent from this image';
    rest.addEventListener('click', tagOthersAbsent);
    box.appendChild(rest);
    markTags();
  }
  function markTags() {
    root.querySelectorAll('.ws-tag').forEach((w) => {
      const st = S.tags[w.dataset.cls] || 'unknown';
      w.dataset.state = st;
      w.querySelectorAll('.ws-tagbtn').forEach((b) => b.classList.toggle('ws-on', b.dataset.state === st));
    });
  }

  // ------------------------------------------------------------------ server calls
  function pageClasses() {
    // what this page knows of the project's classes: the server refuses a save or a tag from a page
    // whose class numbers are out of date (a class deleted and another added elsewhere)
    return {n_classes: S.classes.length, class_names: S.classes.map((c) => c.name), class_epoch: S.classEpoch};
  }
  async function call(name, payload, how) {
    // how (optional): gets .unanswered = true when the server gave no answer at all
    const req = Object.assign({project: S.proj}, payload);
    // the project's folder, so a restarted server (tokens live in its memory) knows which it is
    if (req.root === undefined && S.roots[req.project]) req.root = S.roots[req.project];
    let r, why = '';
    try {
      r = await server[name](req);
    } catch (e) {
      r = undefined;
      why = e && e.message ? e.message : String(e);
    }
    if (r && r.error) {
      showError(r.error);
      if (r.gone) forget(req.project, req.image_id, true);
      if (r.retry && how) how.unanswered = true;  // the database was busy: sent again by itself, as unanswered
      if (r.refresh) refresh(r.refresh);  // e.g. the final mask another window saved: its overlay, its id
      return null;
    }
    if (r === null || r === undefined || typeof r !== 'object') {
      // no answer at all (the server is down or restarting): never taken as a success
      if (how) how.unanswered = true;
      showError('The server did not answer' + (why ? ' (' + why + ')' : '') +
                ': nothing was saved. Your strokes are kept in this page and are sent again when it answers.');
      return null;
    }
    return r;
  }
  function forget(proj, id, shownToo) {
    // the image is no longer in the project: its docs (unsaved strokes too) and undo history go, so
    // nothing more is sent for it; shown here (removed in another window), the canvas empties
    const prefix = proj + '|' + id + ':';
    for (const k of Object.keys(allDocs)) {
      if (!k.startsWith(prefix)) continue;
      allDocs[k].gone = true; allDocs[k].dirty = false;
      delete allDocs[k];
    }
    for (const k of Object.keys(S.hist)) if (k.startsWith(prefix)) delete S.hist[k];
    if (S.proj === proj && S.id === id) {
      S.drawing = false; S.path = null; S.before = null;
      if (shownToo) {
        load({type: 'empty', project: proj, message: root.dataset.error || 'This image is no longer in the project.'});
      }
    }
    updateFlags();
  }
  function remapClasses(proj, deleted) {
    // class `deleted` is gone: its pixels become none and the classes after it move down one, in every
    // doc and undo step of the project held here (as the store remapped every version), so a save or
    // an undo afterwards means the same classes
    const lut = new Uint8Array(256);
    for (let v = 0; v < 256; v++) lut[v] = v === deleted ? 255 : (v > deleted && v < 255 ? v - 1 : v);
    const map = (a) => { if (a) for (let i = 0; i < a.length; i++) a[i] = lut[a[i]]; };
    const docs = new Set(Object.values(allDocs).concat(Object.values(S.docs)));  // each doc once
    for (const d of docs) if (d && d.proj === proj) { map(d.labels); map(d.start); }
    for (const [k, h] of Object.entries(S.hist)) {
      if (!k.startsWith(proj + '|')) continue;
      for (const e of h.undo.concat(h.redo)) { map(e.before); map(e.after); }
    }
    if (S.proj === proj) {
      if (S.drawing) map(S.before);
      if (S.cls === deleted) S.cls = -1; else if (S.cls > deleted) S.cls -= 1;  // -1: buildClasses picks one
    }
  }
  // Tell Python to refresh the image list and progress, only when this image's status changed.
  function notifySaved(status, force) {
    if (!force && (status === undefined || status === S.status)) return;
    if (status !== undefined) S.status = status;
    try { trigger('saved'); } catch (e) { /* listener optional */ }
  }

  async function flush(d) {
    // a stroke being drawn is sent when it ends (endStroke), never half-drawn: one version per stroke
    if (d.gone || d.inflight || !d.dirty || (S.drawing && d === S.doc)) { updateFlags(); return; }
    d.inflight = true;
    d.dirty = false;
    updateFlags();
    const sent = d.labels.slice();
    setStatus('Saving…');
    const how = {};
    const extra = d.layer === 'mask' && d.openedFinal !== undefined
      ? {start_version: d.startVersion, opened_final: d.openedFinal} : {};  // Undo / Reset back to the start
    const r = await call('canvas_save', {project: d.proj, image_id: d.id, layer: d.layer, labels: rleEncode(sent),
                                         version: d.version, kind: d.kind, ...extra, ...pageClasses()}, how);
    d.inflight = false;
    if (d.gone) { updateFlags(); return; }  // the image was removed meanwhile: nothing to keep or resend
    d.failed = !r;
    if (!r) {
      d.dirty = true;  // keep the strokes; they go with the next save
      stash(d);  // and in the browser, should the page be reloaded meanwhile (or as a refusal asks)
      setStatus(how.unanswered ? 'Not saved: your strokes are kept in this page and will be saved with the next stroke.'
        : d.layer === 'mask'
          ? 'Not saved: your mask edits are kept in this page, not if it reloads; the message says why.'
          : 'Not saved: your strokes are kept in this page (and in this browser, should it reload); the message says why.');
      // no answer (the server is down or restarting): try again by itself until it answers
      if (how.unanswered && !d.retry) d.retry = setTimeout(() => { d.retry = null; flush(d); }, 3000);
      updateFlags();
      return;
    }
    d.version = r.version;
    unstash(d);
    if (d.layer === 'mask' && r.taken_back) {
      // back to the map the editor opened with, on an image that had no final mask: the final mask
      // this visit saved is taken back (the status is what it was), and the next edit starts over
      d.kind = d.startKind;
      d.edited = false;
      if (isShown(d)) {
        S.finalId = r.final_id || 0;
        if (!S.finalId) removeFinalKind();
      }
    } else if (d.layer === 'mask') {
      d.kind = 'final';
      d.edited = true;
      if (isShown(d)) {
        S.finalId = r.version;
        addFinalKind();
        if (S.mode !== 'mask' && S.overlayKind === 'final') requestOverlay();  // left the editor before this save
      }
    }
    if (r.labels) {  // merged with someone else's work: take theirs plus what was drawn since
      const merged = rleDecode(r.labels, d.W * d.H), cur = d.labels;
      // a stroke under way: the other window's pixels are not part of it (its undo leaves them)
      const b = S.drawing && d === S.doc && S.before && S.before.length === cur.length ? S.before : null;
      for (let i = 0; i < cur.length; i++) {
        if (b && merged[i] !== sent[i]) b[i] = merged[i];
        if (cur[i] !== sent[i]) merged[i] = cur[i];
      }
      d.labels = merged;
      if (d === S.doc) renderAll();
    }
    clearError();
    if (d === S.doc && r.taken_back) {
      setStatus('The mask is as the editor opened it: no final mask is kept from this edit (the image is ' +
                r.status + ' again).');
    } else if (d === S.doc) {
      setStatus(d.layer === 'mask' ? 'Final mask saved' + (r.merged ? ' (merged with another window\'s edits)' : '')
        : 'Saved' + (r.merged ? ' (merged with another window\'s strokes)' : '') + ' \u00b7 version ' + r.version +
          (r.note ? '. ' + r.note : '') + (d.note ? '. ' + d.note : ''));
      d.note = null;
      if (r.labels && d.layer === 'scribbles') { S.seq++; requestOverlay(); }  // merged: preview what is stored now
    }
    if (isShown(d) && r.tags) { S.tags = r.tags; markTags(); }  // another window may have changed them
    if (isShown(d)) notifySaved(r.status); else notifySaved(undefined, true);  // an earlier image's save
    if (d.dirty) flush(d); else updateFlags();
  }
  function waitSaved(d) {
    // until the doc is saved, or a save tried meanwhile failed (refused, e.g. a mask with no labelled
    // pixel: the doc stays unsaved and it is said; trying again at once would only repeat the refusal)
    return new Promise((resolve) => {
      let tried = false;
      const tick = () => {
        if (!d || (!d.dirty && !d.inflight) || (tried && !d.inflight && d.failed)) { resolve(); return; }
        if (d.inflight) tried = true; else { flush(d); tried = tried || d.inflight; }
        setTimeout(tick, 30);
      };
      tick();
    });
  }
  function requestOverlay(strokeTime) {
    // strokeTime: the end of the stroke this preview follows (its latency is shown); none for any other reason
    if (strokeTime) S.previewStroke = strokeTime;
    S.overlayWanted = true;
    if (!S.overlayBusy) runOverlay();
  }
  async function runOverlay() {
    S.overlayBusy = true;
    while (S.overlayWanted) {
      S.overlayWanted = false;
      const id = S.id, proj = S.proj, kind = S.overlayKind, t0 = S.previewStroke, seq = S.seq, d = S.docs.scribbles;
      S.previewStroke = 0;
      if (id == null || S.mode === 'mask') break;
      if (kind === 'none') { ovl.removeAttribute('src'); applyOpacity(); root.dataset.overlay = 'none'; continue; }
      // the live preview is computed from the strokes in this page, beside their save
      const req = {image_id: id, kind};
      if (kind === 'preview' && d && d.id === id && d.proj === proj) Object.assign(req, {labels: rleEncode(d.labels)}, pageClasses());
      const r = await call('canvas_preview', req);
      if (!r || id !== S.id || proj !== S.proj || kind !== S.overlayKind) continue;
      if (r.overlay) {
        await new Promise((res) => { ovl.onload = res; ovl.onerror = res; ovl.src = r.overlay; });
        root.dataset.overlay = kind + ':' + seq;
        if (kind === 'preview' && t0) {
          const dt = (performance.now() - t0) / 1000;
          root.dataset.previewLatency = dt.toFixed(3);
          setTiming('preview ' + dt.toFixed(2) + ' s after the stroke (compute ' + (r.seconds || 0).toFixed(2) + ' s)');
        } else {
          setTiming(r.message || (kind === 'preview' ? 'preview computed in ' + (r.seconds || 0).toFixed(2) + ' s' : ''));
        }
      } else {
        ovl.removeAttribute('src');
        root.dataset.overlay = kind + ':empty';
        setTiming(r.message || '');
      }
      applyOpacity();
    }
    S.overlayBusy = false;
  }
  async function sendTags(req, done) {
    // one canvas_tag request for the image shown; its answer holds every tag of the image
    if (S.id == null) return;
    const id = S.id;
    const r = await call('canvas_tag', Object.assign({image_id: id}, pageClasses(), req));
    if (!r || id !== S.id) return;
    S.tags = r.tags || {};
    markTags();
    setStatus(done);
    notifySaved(r.status);
  }
  async function setTag(idx, state) {
    if (S.id == null) return;
    const id = S.id;
    await waitSaved(S.docs.scribbles);  // a stroke still being saved counts (absent is refused for a drawn class)
    if (id !== S.id) return;
    return sendTags({class_idx: idx, state},
                    'Tag saved: ' + (S.classes.find((c) => c.idx === idx) || {name: idx}).name + ' ' + state);
  }
  async function tagOthersAbsent() {
    if (S.id == null) return;
    const id = S.id;
    await waitSaved(S.docs.scribbles);  // the strokes under way count as "drawn"
    if (id === S.id) await sendTags({others: 'absent'}, 'Every other class tagged absent');
  }
  function undoRedo(redo) {
    const d = S.doc;
    if (!d || S.drawing) return;
    const h = histOf(d), from = redo ? h.redo : h.undo, to = redo ? h.undo : h.redo;
    if (!from.length) { setStatus('Nothing to ' + (redo ? 'redo' : 'undo') + ' in this window.'); return; }
    const e = from.pop(), want = redo ? e.after : e.before, have = redo ? e.before : e.after;
    let kept = 0;
    for (let k = 0; k < e.idx.length; k++) {
      const i = e.idx[k];
      if (d.labels[i] === have[k]) d.labels[i] = want[k]; else kept++;  // drawn over since (another window): theirs
    }
    to.push(e);
    d.dirty = true;
    renderAll();
    const end = performance.now();
    setStatus((redo ? 'Redone' : 'Undone') + (kept ? ' (pixels drawn over since are kept)' : ''));
    flush(d);
    if (d.layer === 'scribbles') { S.seq++; requestOverlay(end); }
  }
  function clearAll() {
    const d = S.doc;
    if (!d || S.drawing) return;
    if (d.layer === 'mask') { resetMask(d); return; }  // an empty final mask would be refused
    const before = d.labels;
    d.labels = new Uint8Array(d.W * d.H).fill(255);
    record(d, before);
    d.dirty = true;
    renderAll();
    const end = performance.now();
    flush(d);
    if (d.layer === 'scribbles') { S.seq++; requestOverlay(end); }
  }
  function resetMask(d) {
    // the mask editor's Clear: back to the mask it opened with, as one edit (Undo brings the edits
    // back); saved as the final mask like any edit, except on an image that had no final mask when the
    // editor opened: there the server takes back the final mask this visit saved (canvas_save)
    if (!d.start || !d.startLabelled) return;
    const before = d.labels, start = d.start;
    let same = before.length === start.length;
    for (let i = 0; same && i < start.length; i++) same = before[i] === start[i];
    if (same) { setStatus('The mask is as the editor opened it already.'); return; }
    d.labels = start.slice();
    record(d, before);
    d.dirty = true;
    renderAll();
    flush(d);
  }
  function markClear() {
    // Clear removes the strokes; in the mask editor it is Reset (an empty final mask is refused)
    const b = q('.ws-clear'), d = S.doc, m = S.mode === 'mask' && !!d && d.layer === 'mask';
    const ok = m && !!d.start && d.startLabelled;
    b.textContent = m ? 'Reset' : 'Clear';
    b.title = !m ? 'Remove every stroke of this image (can be undone)'
      : ok ? 'Put the mask back as the editor opened it (' + (KIND_NAMES[d.startKind] || d.startKind) +
             '); saved as the final mask (on an image that had none, none is kept), and Undo brings your edits back'
      : 'Nothing to reset to: the editor opened on an empty mask (use Undo or the eraser)';
    b.disabled = m && !ok;
    root.dataset.clear = b.disabled ? 'off' : (m ? 'reset' : 'clear');
  }
  async function setMode(mode) {
    if (mode === S.mode || S.id == null || S.drawing) return;
    if (mode === 'mask') {
      const id = S.id, proj = S.proj;
      const r = await call('canvas_mask_layer', {image_id: id, shown: S.overlayKind});  // edit what is shown
      if (!r || id !== S.id || proj !== S.proj || S.mode === 'mask' || S.drawing) return;  // the image changed meanwhile
      S.mode = 'mask';
      const startMap = rleDecode(r.labels, S.W * S.H);
      S.doc = makeDoc(S.id, 'mask', S.W, S.H, startMap.slice(), r.version, r.kind);
      if (!S.doc.start) {  // what Reset goes back to (a revisit with unsaved edits keeps its first start)
        S.doc.start = startMap;
        S.doc.startKind = r.kind;
        S.doc.startLabelled = startMap.some((v) => v !== 255);
        S.doc.startVersion = r.version;  // the start as the server knows it
        // the final mask the image had (0: none): back to the start map, this visit's final is taken back
        S.doc.openedFinal = typeof r.final_id === 'number' ? r.final_id : undefined;
      }
      setTiming('');
      setStatus(r.kind === 'none' ? 'Mask editor: nothing to start from; paint the classes.' :
        'Mask editor: editing the ' + r.kind + ' mask. Your changes are saved as the final mask.');
    } else {
      S.mode = 'scribbles';
      S.doc = S.docs.scribbles;
      setStatus('Scribbles');
      if (maskEdited()) { addFinalKind(); S.overlayKind = 'final'; }  // show what was painted, so Accept keeps it
      requestOverlay();
    }
    S.docs[S.mode] = S.doc;
    renderAll();
    markTools();
    markOverlay();
    applyOpacity();
    updateFlags();
  }
  async function accept() {
    if (S.id == null || S.mode === 'mask') return;
    if (S.overlayKind === 'none') {  // as the disabled button: Accept stores the mask shown
      showError('No mask is shown (the overlay is None), so there is nothing to accept: choose the overlay to accept first.');
      return;
    }
    if (S.accepting) {  // a second click while the first is computed would compute it all again
      setStatus('Still accepting this image\u2026');
      return;
    }
    const d = S.docs.scribbles, id = S.id, proj = S.proj;
    S.accepting = true;
    root.dataset.accepting = '1';
    let r;
    try {
      await waitSaved(d);
      await waitSaved(S.docs.mask);
      if (id !== S.id || proj !== S.proj) return;
      if (d && (d.dirty || d.failed)) {  // the final mask would leave out the strokes the person sees
        showError('Not accepted: your strokes on this image are not saved yet (their save was refused or got no ' +
                  'answer), and the final mask would leave them out; accept again once they are saved.');
        return;
      }
      // the full-size mask is computed now (a large photo takes seconds): say so meanwhile
      setStatus('Accepting: computing the full-size mask\u2026');
      r = await call('canvas_accept', {image_id: id, kind: S.overlayKind, final_id: S.finalId, ...pageClasses()});
    } finally {
      S.accepting = false;
      delete root.dataset.accepting;
    }
    if (!r && id === S.id && proj === S.proj) setStatus('Not accepted: the message says why.');
    if (!r || id !== S.id || proj !== S.proj) return;
    S.finalId = r.final_id;
    setStatus(r.message);
    addFinalKind();
    S.overlayKind = 'final';
    buildOverlays();
    requestOverlay();
    notifySaved(r.status, true);
  }

  // ------------------------------------------------------------------ drawing
  function toImage(e) {
    const r = cv.getBoundingClientRect();
    return [(e.clientX - r.left) * S.W / r.width, (e.clientY - r.top) * S.H / r.height];
  }
  function stamp(d, cx, cy, rad, val) {
    const x0 = Math.max(0, Math.floor(cx - rad)), x1 = Math.min(d.W - 1, Math.ceil(cx + rad));
    const y0 = Math.max(0, Math.floor(cy - rad)), y1 = Math.min(d.H - 1, Math.ceil(cy + rad));
    const r2 = rad * rad;
    for (let y = y0; y <= y1; y++) {
      const dy = y + 0.5 - cy;
      for (let x = x0; x <= x1; x++) {
        const dx = x + 0.5 - cx;
        if (dx * dx + dy * dy <= r2) d.labels[y * d.W + x] = val;
      }
    }
  }
  function segment(a, b) {
    const d = S.doc, rad = Math.max(0.5, S.size / 2), val = S.erase ? 255 : S.cls;
    const len = Math.hypot(b[0] - a[0], b[1] - a[1]);
    const n = Math.max(1, Math.ceil(len / Math.max(0.5, rad * 0.4)));
    for (let i = 0; i <= n; i++) {
      const t = i / n;
      stamp(d, a[0] + (b[0] - a[0]) * t, a[1] + (b[1] - a[1]) * t, rad, val);
    }
    renderRect(Math.min(a[0], b[0]) - rad - 1, Math.min(a[1], b[1]) - rad - 1,
               Math.max(a[0], b[0]) + rad + 1, Math.max(a[1], b[1]) + rad + 1);
  }
  function fillPolygon(d, pts, val) {
    // even-odd fill of the closed path through pts (image coordinates): pixels whose centre is inside
    let y0 = Infinity, y1 = -Infinity;
    for (const p of pts) { y0 = Math.min(y0, p[1]); y1 = Math.max(y1, p[1]); }
    const ya = Math.max(0, Math.floor(y0)), yb = Math.min(d.H - 1, Math.ceil(y1));
    const n = pts.length;
    let x0 = d.W, x1 = -1;
    for (let y = ya; y <= yb; y++) {
      const cy = y + 0.5, xs = [];
      for (let i = 0; i < n; i++) {
        const a = pts[i], b = pts[(i + 1) % n];
        if ((a[1] <= cy) !== (b[1] <= cy)) xs.push(a[0] + (cy - a[1]) * (b[0] - a[0]) / (b[1] - a[1]));
      }
      xs.sort((u, v) => u - v);
      for (let k = 0; k + 1 < xs.length; k += 2) {
        const xa = Math.max(0, Math.ceil(xs[k] - 0.5)), xb = Math.min(d.W - 1, Math.floor(xs[k + 1] - 0.5));
        for (let x = xa; x <= xb; x++) d.labels[y * d.W + x] = val;
        if (xa <= xb) { x0 = Math.min(x0, xa); x1 = Math.max(x1, xb); }
      }
    }
    if (x1 >= x0) renderRect(x0 - 1, ya - 1, x1 + 1, yb + 1);
  }
  function updateCursorSize() {
    const px = Math.max(3, S.size * S.zoom);
    cursor.style.width = px + 'px';
    cursor.style.height = px + 'px';
  }
  cv.addEventListener('pointerdown', (e) => {
    if (!S.doc || e.button !== 0) return;
    e.preventDefault();  // (so the focus stays: a slider touched before would keep the keys from working)
    const fa = document.activeElement;
    if (fa && fa !== document.body && fa.blur) fa.blur();
    cv.setPointerCapture(e.pointerId);
    S.drawing = true;
    S.pointerId = e.pointerId;
    S.before = S.doc.labels.slice();
    S.last = toImage(e);
    S.path = S.fill ? [S.last] : null;
    segment(S.last, S.last);
    S.doc.dirty = true;
    updateFlags();
  });
  cv.addEventListener('pointermove', (e) => {
    const r = layers.getBoundingClientRect();
    cursor.style.left = (e.clientX - r.left) + 'px';
    cursor.style.top = (e.clientY - r.top) + 'px';
    cursor.style.display = 'block';
    if (!S.drawing || e.pointerId !== S.pointerId) return;
    const p = toImage(e);
    segment(S.last, p);
    S.last = p;
    if (S.path) S.path.push(p);
  });
  function endStroke(e) {
    if (!S.drawing || (e && e.pointerId !== S.pointerId)) return;
    finishStroke();
  }
  function finishStroke() {
    // the stroke under way ends here (pointer up, or an image load while drawing): recorded and saved
    // in the layer it was drawn in
    S.drawing = false;
    const end = performance.now(), d = S.doc;
    if (!d) return;
    if (S.path && S.path.length >= 3) fillPolygon(d, S.path, S.erase ? 255 : S.cls);  // recorded with the stroke
    S.path = null;
    if (S.before && S.before.length === d.labels.length) record(d, S.before);
    S.before = null;
    d.dirty = true;
    flush(d);
    if (d.layer === 'scribbles') {
      S.seq++;
      if (S.overlayKind !== 'preview' && S.overlayKinds.includes('preview')) { S.overlayKind = 'preview'; markOverlay(); }
      requestOverlay(end);
    }
  }
  cv.addEventListener('pointerup', endStroke);
  cv.addEventListener('pointercancel', endStroke);
  cv.addEventListener('lostpointercapture', endStroke);  // a stroke always ends, so it is always saved
  cv.addEventListener('pointerleave', () => { cursor.style.display = 'none'; });
  stage.addEventListener('wheel', (e) => {
    if (!e.ctrlKey || !S.W) return;
    e.preventDefault();
    setZoom(S.zoom * (e.deltaY < 0 ? 1.25 : 0.8));
  }, {passive: false});

  q('.ws-eraser').addEventListener('click', () => { S.erase = true; markTools(); });
  q('.ws-fill').addEventListener('click', () => { S.fill = !S.fill; markTools(); });
  const size = q('.ws-size');
  size.addEventListener('input', () => { S.size = Number(size.value); q('.ws-size-val').textContent = S.size + ' px'; updateCursorSize(); });
  q('.ws-undo').addEventListener('click', () => undoRedo(false));
  q('.ws-redo').addEventListener('click', () => undoRedo(true));
  q('.ws-clear').addEventListener('click', clearAll);
  q('.ws-zoom-in').addEventListener('click', () => setZoom(S.zoom * 1.25));
  q('.ws-zoom-out').addEventListener('click', () => setZoom(S.zoom * 0.8));
  q('.ws-fit').addEventListener('click', fitZoom);
  root.querySelectorAll('.ws-mode').forEach((b) => b.addEventListener('click', () => setMode(b.dataset.mode)));
  // brightness / contrast of the image alone (dark scans, night street scenes); kept across images
  const bright = q('.ws-bright'), contrast = q('.ws-contrast');
  function applyLook() { img.style.filter = 'brightness(' + bright.value + '%) contrast(' + contrast.value + '%)'; }
  [bright, contrast].forEach((el) => {
    el.addEventListener('input', applyLook);
    el.addEventListener('dblclick', () => { el.value = '100'; applyLook(); });
  });
  const opacity = q('.ws-opacity');
  opacity.addEventListener('input', () => { S.opacity = Number(opacity.value) / 100; applyOpacity(); });
  q('.ws-accept').addEventListener('click', accept);
  q('.ws-error').addEventListener('click', clearError);
  // N, P, U pressed while the page still loads the image of the last press: Gradio drops a click on
  // a button whose event is under way, so three quick presses moved one image. Presses are queued
  // (ten at most) and sent one per image shown; a press whose answer loads nothing (the last image)
  // lets the next go after NAV_WAIT ms.
  const NAV_WAIT = 3000, NAV_QUEUE = 10, NAV_GAP = 80;
  function navigate(buttonId) {
    if (S.navPending) {
      if (S.navQueue.length < NAV_QUEUE) S.navQueue.push(buttonId);
      return;
    }
    const b = document.getElementById(buttonId);
    if (!b) return;
    S.navPending = buttonId;
    clearTimeout(S.navTimer);
    S.navTimer = setTimeout(navDone, NAV_WAIT);
    b.click();
  }
  function navDone() {
    // the image of the last press is shown (or it loaded nothing): the next queued press goes
    clearTimeout(S.navTimer);
    const next = S.navQueue.shift();
    if (!next) { S.navPending = null; return; }
    // a moment later: a click made while Gradio still finishes the event that showed this image is lost
    S.navTimer = setTimeout(() => { S.navPending = null; navigate(next); }, NAV_GAP);
  }
  const NON_TEXT_INPUTS = new Set(['range', 'checkbox', 'radio', 'button', 'submit', 'reset', 'color', 'file', 'image']);
  document.addEventListener('keydown', (e) => {
    if (!root.isConnected || S.id == null || root.offsetParent === null) return;
    const t = e.target;
    // keys typed into a text box are text; a slider, checkbox or button keeps no key of ours
    const typed = t && t.tagName === 'INPUT' && !NON_TEXT_INPUTS.has(String(t.type || '').toLowerCase());
    if (t && (typed || t.tagName === 'TEXTAREA' || t.tagName === 'SELECT' || t.isContentEditable)) return;
    const k = e.key;
    if ((e.ctrlKey || e.metaKey) && (k === 'z' || k === 'Z')) { e.preventDefault(); undoRedo(e.shiftKey); return; }
    if ((e.ctrlKey || e.metaKey) && (k === 'y' || k === 'Y')) { e.preventDefault(); undoRedo(true); return; }
    if ((e.ctrlKey || e.metaKey) && k === 'Enter') { e.preventDefault(); accept(); return; }
    if (e.ctrlKey || e.metaKey || e.altKey) return;
    const ck = classForKey(e);
    if (ck >= 0 && S.classes[ck]) selectClass(S.classes[ck].idx);
    else if (k === 'c' || k === 'C') stepClass(e.shiftKey ? -1 : 1);
    else if (k === 'e' || k === 'E') { S.erase = true; markTools(); }
    else if (k === 'f' || k === 'F') { S.fill = !S.fill; markTools(); }
    else if (NAV_KEYS[k.toLowerCase()] && !S.drawing) navigate(NAV_KEYS[k.toLowerCase()]);
    else if (k === '[') { size.value = String(Math.max(1, S.size - 2)); size.dispatchEvent(new Event('input')); }
    else if (k === ']') { size.value = String(Math.min(Number(size.max), S.size + 2)); size.dispatchEvent(new Event('input')); }
    else if (k === '+' || k === '=') setZoom(S.zoom * 1.25);
    else if (k === '-') setZoom(S.zoom * 0.8);
    else if (k === '0') fitZoom();
  });
  window.addEventListener('beforeunload', (e) => {
    if (Object.values(allDocs).some((d) => d.dirty || d.inflight)) { e.preventDefault(); e.returnValue = ''; }
  });

  // ------------------------------------------------------------------ messages from Python
  function setClasses(classes) {
    S.classes = classes || [];
    buildLut();
    buildClasses();
    buildTags();
    renderAll();
  }
  function labelOf(msg) { return (msg.name || '') + (msg.position ? '  (' + msg.position + ')' : ''); }
  function statusLine() {
    return S.label + (S.status ? ' \u00b7 ' + S.status : '') + (S.mode === 'mask' ? ' \u00b7 Mask editor' : '');
  }
  function refresh(msg) {
    // the project changed under the image shown (a job ended): new overlay kinds and status only
    if (S.id == null || msg.image_id !== S.id || (msg.project && msg.project !== S.proj)) return;
    const before = S.overlayKinds, kinds = (msg.overlay_kinds || before).slice();
    S.overlayKinds = kinds;
    if (maskEdited()) addFinalKind();  // its save may not have landed when the server looked
    const appeared = kinds.some((k) => !before.includes(k)), want = msg.overlay_kind;
    const sd = S.docs.scribbles, noStrokes = !sd || sd.labels.every((v) => v === 255);
    if (S.overlayKind !== 'none' && !kinds.includes(S.overlayKind)) {
      S.overlayKind = kinds.includes(want) ? want : (kinds[0] || 'none');
    } else if (S.overlayKind === 'preview' && appeared && noStrokes && !S.drawing && kinds.includes(want)) {
      S.overlayKind = want;
    }
    if (msg.status !== undefined) S.status = msg.status;
    if (msg.final_id !== undefined) S.finalId = msg.final_id;
    if (msg.position !== undefined) S.label = labelOf(msg);  // images added or removed: "(4 / 23)"
    if (msg.tags) { S.tags = msg.tags; markTags(); }
    buildOverlays();
    setStatus(statusLine());
    if (S.mode !== 'mask') requestOverlay();  // the mask shown (or the prediction under the preview) may be new
    updateFlags();
  }
  function load(msg) {
    if (!msg || !msg.type) return;
    if (msg.type === 'refresh') { refresh(msg); return; }
    // a stroke under way belongs to the doc it was drawn in: finish and save it there before any switch
    if (S.drawing && (msg.type === 'load' || msg.type === 'empty')) finishStroke();
    if (msg.removed_image != null) forget(msg.project || S.proj, msg.removed_image, false);
    const prevProj = S.proj;
    S.proj = msg.project || S.proj;
    if (msg.project && msg.root) S.roots[msg.project] = msg.root;
    if (msg.type === 'classes' && msg.deleted != null) remapClasses(S.proj, msg.deleted);
    if (msg.class_epoch !== undefined) S.classEpoch = msg.class_epoch;  // before setClasses: a stash is put back by it
    if (msg.classes) setClasses(msg.classes);
    if (msg.type === 'classes') {
      if (msg.refresh) refresh(msg.refresh);  // the tags and status as they are now
      else if (S.id != null) requestOverlay();
      return;
    }
    if (msg.type === 'empty') {
      S.id = null; S.doc = null; S.docs = {}; S.W = S.H = 0; S.mode = 'scribbles';
      root.classList.add('ws-noimage');
      q('.ws-empty').textContent = msg.message || 'No image.';
      setStatus(msg.message || '');
      markTools();
      updateFlags();
      if (S.navPending) navDone();
      return;
    }
    if (msg.type !== 'load') return;
    root.classList.remove('ws-noimage');
    const sameImage = S.id === msg.image_id && prevProj === S.proj;
    const keepFinal = sameImage && maskEdited();  // a mask edit saved or on its way: show it, not an older mask
    S.id = msg.image_id; S.W = msg.width; S.H = msg.height;
    // the brush is in image pixels: a 4000 px photo shown whole needs more than 60 of them
    const sizeMax = Math.max(60, Math.round(Math.max(S.W, S.H) / 25));
    if (Number(size.max) !== sizeMax) {
      size.max = String(sizeMax);
      if (S.size > sizeMax) { size.value = String(sizeMax); size.dispatchEvent(new Event('input')); }
    }
    S.mode = 'scribbles';
    if (!sameImage) S.fill = false;  // Fill is for one region: a C-shaped stroke on the next image stays a stroke
    const labels = msg.labels ? rleDecode(msg.labels, S.W * S.H) : new Uint8Array(S.W * S.H).fill(255);
    S.doc = makeDoc(S.id, 'scribbles', S.W, S.H, labels, msg.version);
    S.docs = {scribbles: S.doc};
    const restored = restoreStash(S.doc);  // strokes an earlier page could not save (the server was down)
    cv.width = S.W; cv.height = S.H;
    S.imgData = ctx.createImageData(S.W, S.H);
    renderAll();
    img.src = msg.image;
    ovl.removeAttribute('src');
    root.dataset.overlay = '';
    S.overlayKinds = (msg.overlay_kinds || ['preview']).slice();
    S.overlayKind = msg.overlay_kind || 'preview';
    if (keepFinal) { addFinalKind(); S.overlayKind = 'final'; }
    S.tags = msg.tags || {};
    S.status = msg.status;
    S.finalId = msg.final_id;  // the final mask this page has seen (0: none): Accept must not replace another
    S.label = labelOf(msg);
    buildOverlays();
    markTags();
    markTools();
    fitZoom();
    applyOpacity();
    clearError();
    setStatus(statusLine());
    setTiming('');
    S.previewStroke = 0;
    updateFlags();
    if (restored) {
      setStatus('Strokes that were not saved before the page reloaded are back; saving them…');
      flush(S.doc);
    }
    requestOverlay();
    root.dataset.ready = '1';
    if (S.navPending) navDone();  // the next N / P / U pressed meanwhile
  }
  function onValue(raw) {
    let msg = raw === undefined ? props.value : raw;
    if (typeof msg === 'string') { try { msg = msg ? JSON.parse(msg) : null; } catch (e) { msg = null; } }
    load(msg);
  }
  root._wsReceive = onValue;  // for tests: a message (JSON text or object) as if it came in props.value
  watch('value', () => onValue());
  window.addEventListener('resize', () => { if (S.W) fitZoom(); });
  onValue();
})();
