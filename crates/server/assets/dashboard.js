// Errand dashboard: a single-page operator UI over the /v1 API. Plain ES2020, no dependencies.
// Every piece of text from the API goes into the DOM through textContent or text nodes, never as HTML.
'use strict';
(() => {
  // ---------------------------------------------------------------- constants
  const STATES = ['waiting', 'delayed', 'active', 'waiting_children', 'completed', 'cancelled', 'dead'];
  const FINAL = new Set(['completed', 'cancelled', 'dead']);
  const STATE_LABEL = {
    waiting: 'Waiting', delayed: 'Delayed', active: 'Active', waiting_children: 'Waiting children',
    completed: 'Completed', cancelled: 'Cancelled', dead: 'Dead',
  };
  const ALL_SCOPES = ['produce', 'work', 'read', 'admin'];
  const PAGE_SIZE = 50;
  const CHART_WINDOW_MS = 5 * 60 * 1000;
  const RATE_WINDOW_MS = 10 * 1000;
  const SVG_NS = 'http://www.w3.org/2000/svg';
  const SS = { key: 'errand.key', name: 'errand.name', scopes: 'errand.scopes' };

  // ---------------------------------------------------------------- formatting
  const NF = new Intl.NumberFormat('en-US');
  const fmtInt = (n) => (n == null || !Number.isFinite(Number(n)) ? '—' : NF.format(Number(n)));

  function fmtNumber(v) {
    if (v == null || !Number.isFinite(v)) return '—';
    if (Number.isInteger(v)) return NF.format(v);
    const abs = Math.abs(v);
    const digits = abs >= 100 ? 0 : abs >= 10 ? 1 : abs >= 1 ? 2 : 3;
    return new Intl.NumberFormat('en-US', { maximumFractionDigits: digits }).format(v);
  }

  function fmtRate(r) {
    if (r == null || !Number.isFinite(r)) return '—';
    if (r === 0) return '0/s';
    return fmtNumber(r >= 100 ? Math.round(r) : r) + '/s';
  }

  function fmtDuration(ms) {
    if (ms == null || !Number.isFinite(ms)) return '—';
    ms = Math.max(0, ms);
    if (ms < 1000) return (ms < 10 && ms > 0 ? ms.toFixed(1) : Math.round(ms)) + ' ms';
    const s = ms / 1000;
    if (s < 60) return (s < 10 ? s.toFixed(1) : Math.round(s)) + ' s';
    const m = Math.floor(s / 60);
    if (m < 60) return `${m} m ${Math.floor(s % 60)} s`;
    const hr = Math.floor(m / 60);
    if (hr < 48) return `${hr} h ${m % 60} m`;
    return `${Math.floor(hr / 24)} d ${hr % 24} h`;
  }

  const fmtSeconds = (sec) => (sec == null || !Number.isFinite(sec) ? '—' : fmtDuration(sec * 1000));
  const fmtDate = (ms) => (ms == null || !Number.isFinite(Number(ms)) ? '—' : new Date(Number(ms)).toLocaleString());

  function fmtRelative(ms) {
    if (ms == null) return '';
    const d = Number(ms) - Date.now();
    if (Math.abs(d) < 1000) return 'now';
    return d > 0 ? 'in ' + fmtDuration(d) : fmtDuration(-d) + ' ago';
  }

  function pretty(v) {
    if (v === undefined) return '—';
    try { return JSON.stringify(v, null, 2); } catch (_) { return String(v); }
  }

  const enc = encodeURIComponent;
  const plural = (n, one, many) => `${fmtInt(n)} ${n === 1 ? one : many}`;

  // ---------------------------------------------------------------- DOM helpers
  const $ = (sel, root = document) => root.querySelector(sel);

  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    if (attrs) {
      for (const [k, v] of Object.entries(attrs)) {
        if (v === undefined || v === null || v === false) continue;
        if (k === 'class') el.className = v;
        else if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
        else if (k === 'disabled' || k === 'checked' || k === 'hidden' || k === 'selected') el[k] = true;
        else if (k === 'value') el.value = v;
        else el.setAttribute(k, v === true ? '' : String(v));
      }
    }
    appendAll(el, children);
    return el;
  }

  function appendAll(el, children) {
    for (const c of children.flat(Infinity)) {
      if (c === null || c === undefined || c === false) continue;
      el.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return el;
  }

  function svg(tag, attrs, ...children) {
    const el = document.createElementNS(SVG_NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) if (v != null) el.setAttribute(k, String(v));
    for (const c of children) if (c != null) el.append(c instanceof Node ? c : document.createTextNode(String(c)));
    return el;
  }

  const timeEl = (ms) => (ms == null ? h('span', { class: 'muted' }, '—')
    : h('time', { datetime: new Date(Number(ms)).toISOString(), title: fmtRelative(ms) }, fmtDate(ms)));
  const agoEl = (ms) => (ms == null ? h('span', { class: 'muted' }, '—')
    : h('time', { datetime: new Date(Number(ms)).toISOString(), title: fmtDate(ms) }, fmtRelative(ms)));
  const stateEl = (state, id) => h('span', { class: `state state-${state}`, id }, state);
  const jobLink = (id) => h('a', { href: '#/jobs/' + enc(id), class: 'mono' }, id);
  const queueLink = (q) => h('a', { href: '#/queues/' + enc(q) }, q);
  const emptyRow = (cols, text) => h('tr', { class: 'empty' }, h('td', { colspan: cols }, text));
  const preJson = (id, v) => h('pre', { id, class: 'json' + (v === undefined ? ' muted' : '') }, pretty(v));

  function queueHash(name, params) {
    const qs = new URLSearchParams();
    for (const [k, v] of Object.entries(params || {})) if (v) qs.set(k, v);
    const s = qs.toString();
    return '#/queues/' + enc(name) + (s ? '?' + s : '');
  }

  // ---------------------------------------------------------------- toast
  let toastTimer = null;
  function toast(message, kind = 'ok') {
    const t = $('#toast');
    if (!t) return;
    t.textContent = message;
    t.className = 'toast ' + kind;
    t.hidden = false;
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => { t.hidden = true; }, kind === 'error' ? 8000 : 4000);
  }

  // ---------------------------------------------------------------- session and API
  let auth = null; // {key, name, scopes}

  function loadAuth() {
    const name = sessionStorage.getItem(SS.name);
    if (name === null) return null;
    let scopes = [];
    try { scopes = JSON.parse(sessionStorage.getItem(SS.scopes) || '[]'); } catch (_) { scopes = []; }
    return { key: sessionStorage.getItem(SS.key) || '', name, scopes: Array.isArray(scopes) ? scopes : [] };
  }

  function saveAuth(a) {
    sessionStorage.setItem(SS.key, a.key);
    sessionStorage.setItem(SS.name, a.name);
    sessionStorage.setItem(SS.scopes, JSON.stringify(a.scopes));
  }

  function clearAuth() {
    for (const k of Object.values(SS)) sessionStorage.removeItem(k);
  }

  class ApiError extends Error {
    constructor(status, code, message, field) {
      super(message);
      this.status = status;
      this.code = code;
      this.field = field;
    }
  }

  // One HTTP call. Non-2xx answers become an ApiError carrying the server's {"error": {...}}.
  async function request(method, path, opts = {}) {
    const key = opts.key !== undefined ? opts.key : (auth ? auth.key : '');
    const headers = { Accept: opts.text ? 'text/plain, */*' : 'application/json' };
    if (key) headers.Authorization = 'Bearer ' + key;
    const init = { method, headers, cache: 'no-store', credentials: 'omit' };
    if (opts.body !== undefined) {
      headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(opts.body);
    }
    let res;
    try {
      res = await fetch(path, init);
    } catch (e) {
      throw new ApiError(0, 'unreachable', 'server unreachable');
    }
    if (!res.ok) {
      let code = 'http_' + res.status;
      let message = `${res.status} ${res.statusText || ''}`.trim();
      let field;
      try {
        const j = await res.json();
        if (j && j.error) {
          code = j.error.code || code;
          message = j.error.message || message;
          field = j.error.field || undefined;
        }
      } catch (_) { /* not JSON */ }
      throw new ApiError(res.status, code, message, field);
    }
    const body = await res.text();
    if (opts.text) return body;
    if (!body) return null;
    try { return JSON.parse(body); } catch (_) { throw new ApiError(res.status, 'bad_json', 'the server answered something that is not JSON'); }
  }

  // request(), and a 401 sends the user back to the login.
  async function api(method, path, opts) {
    try {
      return await request(method, path, opts);
    } catch (e) {
      if (e instanceof ApiError && e.status === 401) sessionExpired(e.message);
      throw e;
    }
  }

  const get = (path) => api('GET', path);
  const post = (path, body) => api('POST', path, body === undefined ? {} : { body });
  const del = (path) => api('DELETE', path);

  function report(e) {
    if (e instanceof ApiError) {
      if (e.status === 401) return; // the login is shown
      toast(e.field && !e.message.includes(e.field) ? `${e.message} (${e.field})` : e.message, 'error');
    } else if (e && e.name !== 'AbortError') {
      toast(String(e.message || e), 'error');
    }
  }

  function can(scopes) {
    if (!auth) return false;
    return auth.scopes.includes('admin') || scopes.some((s) => auth.scopes.includes(s));
  }

  function needsTitle(scopes) {
    const other = scopes.filter((s) => s !== 'admin');
    return other.length ? `needs a ${other.join(' or ')} or admin key` : 'needs an admin key';
  }

  // A button carrying data-action; disabled with a title when the key lacks the scope. `run` returns
  // the success message; errors are toasted; the current view refreshes either way.
  function actionButton(name, label, run, opts = {}) {
    const scopes = opts.scopes || ['admin'];
    const allowed = can(scopes);
    const b = h('button', {
      type: 'button', class: 'btn ' + (opts.cls || ''), 'data-action': name,
      disabled: !allowed, title: allowed ? opts.title : needsTitle(scopes),
    }, label);
    b.addEventListener('click', async (ev) => {
      ev.stopPropagation();
      if (opts.confirm) {
        const text = typeof opts.confirm === 'function' ? opts.confirm() : opts.confirm;
        if (!window.confirm(text)) return;
      }
      b.disabled = true;
      try {
        const msg = await run();
        toast(msg || 'done', 'ok');
      } catch (e) {
        report(e);
      } finally {
        b.disabled = !can(scopes);
        if (current) refreshView(current, true);
      }
    });
    return b;
  }

  // ---------------------------------------------------------------- metrics (Prometheus text)
  function parseMetrics(text) {
    const out = [];
    for (const raw of String(text).split('\n')) {
      const line = raw.trim();
      if (!line || line[0] === '#') continue;
      let i = 0;
      while (i < line.length && /[A-Za-z0-9_:]/.test(line[i])) i++;
      const name = line.slice(0, i);
      if (!name) continue;
      const labels = {};
      if (line[i] === '{') {
        i++;
        while (i < line.length && line[i] !== '}') {
          while (line[i] === ',' || line[i] === ' ') i++;
          if (line[i] === '}') break;
          const eq = line.indexOf('=', i);
          if (eq < 0) { i = line.length; break; }
          const key = line.slice(i, eq).trim();
          i = eq + 1;
          if (line[i] !== '"') { i = line.length; break; }
          i++;
          let val = '';
          while (i < line.length && line[i] !== '"') {
            if (line[i] === '\\' && i + 1 < line.length) {
              const c = line[i + 1];
              val += c === 'n' ? '\n' : c;
              i += 2;
            } else {
              val += line[i++];
            }
          }
          i++;
          labels[key] = val;
        }
        i++;
      }
      const tok = line.slice(i).trim().split(/\s+/)[0];
      if (!tok) continue;
      const value = tok === '+Inf' ? Infinity : tok === '-Inf' ? -Infinity : Number(tok);
      if (Number.isNaN(value)) continue;
      out.push({ name, labels, value });
    }
    return out;
  }

  const FAMILIES = {
    errand_jobs_completed_total: 'completed',
    errand_jobs_enqueued_total: 'enqueued',
    errand_jobs_failed_total: 'failed',
    errand_job_processing_seconds_sum: 'procSum',
    errand_job_processing_seconds_count: 'procCount',
    errand_job_wait_seconds_sum: 'waitSum',
    errand_job_wait_seconds_count: 'waitCount',
  };

  // One scrape, summed per queue over kinds.
  function summarize(series, t) {
    const s = { t };
    for (const f of Object.values(FAMILIES)) s[f] = {};
    for (const { name, labels, value } of series) {
      const f = FAMILIES[name];
      if (!f || labels.queue === undefined) continue;
      s[f][labels.queue] = (s[f][labels.queue] || 0) + value;
    }
    return s;
  }

  // Per-queue increase of a counter between two scrapes; a counter that went down was reset.
  function increase(a, b, queue) {
    const now = b[queue] || 0;
    const before = a[queue] || 0;
    return now >= before ? now - before : now;
  }

  function totalIncrease(a, b) {
    let sum = 0;
    for (const q of Object.keys(b)) sum += increase(a, b, q);
    return sum;
  }

  function pointBetween(a, b) {
    const dt = (b.t - a.t) / 1000;
    if (dt <= 0) return null;
    const procN = totalIncrease(a.procCount, b.procCount);
    const waitN = totalIncrease(a.waitCount, b.waitCount);
    return {
      t: b.t,
      completed: totalIncrease(a.completed, b.completed) / dt,
      enqueued: totalIncrease(a.enqueued, b.enqueued) / dt,
      proc: procN > 0 ? totalIncrease(a.procSum, b.procSum) / procN : null,
      wait: waitN > 0 ? totalIncrease(a.waitSum, b.waitSum) / waitN : null,
    };
  }

  const metrics = { samples: [], points: [], lastAt: 0, error: null, inflight: null };

  function addSample(s) {
    const prev = metrics.samples[metrics.samples.length - 1];
    if (prev && s.t - prev.t > RATE_WINDOW_MS * 1.5) {
      metrics.samples = []; // a long gap: start over rather than average over it
      metrics.points.push({ t: prev.t + 1, completed: null, enqueued: null, proc: null, wait: null });
    } else if (prev) {
      const p = pointBetween(prev, s);
      if (p) metrics.points.push(p);
    }
    metrics.samples.push(s);
    metrics.samples = metrics.samples.filter((x) => s.t - x.t <= RATE_WINDOW_MS * 1.5);
    metrics.points = metrics.points.filter((p) => s.t - p.t <= CHART_WINDOW_MS);
  }

  async function scrapeMetrics() {
    if (Date.now() - metrics.lastAt < 1500) return;
    if (metrics.inflight) return metrics.inflight;
    metrics.inflight = (async () => {
      try {
        const text = await api('GET', '/metrics', { text: true });
        metrics.lastAt = Date.now();
        addSample(summarize(parseMetrics(text), metrics.lastAt));
        metrics.error = null;
      } catch (e) {
        metrics.error = e;
        if (e instanceof ApiError && e.status === 401) throw e;
      } finally {
        metrics.inflight = null;
      }
    })();
    return metrics.inflight;
  }

  // The minutes before the page opened, from the server's recent activity (GET /v1/activity), so that
  // the charts do not start flat at 0/s when jobs ran a minute ago. Once per page load, before any
  // scraped point; a server without the route, or a key not allowed it, leaves the charts to fill
  // from the scrapes as before.
  const activity = { loaded: false, inflight: null };

  function seedPoints(a, now) {
    const out = [];
    const len = Number(a.bucket_ms) || 0;
    if (!(len > 0) || !Array.isArray(a.buckets)) return out;
    // Buckets are on the server's clock; the charts on this browser's.
    const shift = now - Number(a.now);
    for (const b of a.buckets) {
      const at = Number(b.at);
      // The last bucket is still filling: its rate is over the part of it that has passed.
      const end = Math.min(at + len, Number(a.now));
      const dt = Math.max(end - at, 1000) / 1000;
      out.push({
        t: end + shift,
        completed: Number(b.completed || 0) / dt,
        enqueued: Number(b.enqueued || 0) / dt,
        proc: b.ran > 0 ? Number(b.ran_ms_sum) / Number(b.ran) / 1000 : null,
        wait: b.claimed > 0 ? Number(b.waited_ms_sum) / Number(b.claimed) / 1000 : null,
      });
    }
    return out.filter((p) => now - p.t <= CHART_WINDOW_MS);
  }

  async function loadHistory() {
    if (activity.loaded) return;
    if (activity.inflight) return activity.inflight;
    activity.inflight = (async () => {
      try {
        const a = await request('GET', '/v1/activity');
        const seeded = seedPoints(a || {}, Date.now());
        // Points scraped meanwhile are newer: the history goes before them.
        const first = metrics.points.length ? metrics.points[0].t : Infinity;
        metrics.points = seeded.filter((p) => p.t < first).concat(metrics.points);
      } catch (_) {
        /* the charts fill from the scrapes alone */
      } finally {
        activity.loaded = true;
        activity.inflight = null;
      }
    })();
    return activity.inflight;
  }

  // A queue's completed/s over the last ~10 s of scrapes; null until two scrapes exist.
  function queueRate(queue, family = 'completed') {
    const ss = metrics.samples;
    if (ss.length < 2) return null;
    const last = ss[ss.length - 1];
    const first = ss.find((x) => last.t - x.t <= RATE_WINDOW_MS + 1000) || ss[ss.length - 2];
    const a = first === last ? ss[ss.length - 2] : first;
    const dt = (last.t - a.t) / 1000;
    return dt > 0 ? increase(a[family], last[family], queue) / dt : null;
  }

  // ---------------------------------------------------------------- charts (SVG)
  function niceMax(v) {
    if (!(v > 0) || !Number.isFinite(v)) return 1;
    const p = Math.pow(10, Math.floor(Math.log10(v)));
    for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
    return 10 * p;
  }

  function makeChart(id, title, unit, series, fmtY) {
    const W = 560, H = 196, L = 58, R = 12, T = 22, B = 26;
    const pw = W - L - R, ph = H - T - B;
    const root = svg('svg', { viewBox: `0 0 ${W} ${H}`, class: 'chart-svg', role: 'img', 'aria-label': title });
    const legend = h('div', { class: 'legend' });
    const items = series.map((s) => {
      const value = h('span', { class: 'legend-value' }, '—');
      legend.append(h('span', { class: 'legend-item' }, h('span', { class: 'swatch ' + s.cls }), s.label + ' ', value));
      return value;
    });
    const el = h('figure', { class: 'chart', id }, h('figcaption', null, title), root, legend);

    function draw(points, now) {
      root.replaceChildren();
      const from = now - CHART_WINDOW_MS;
      const pts = points.filter((p) => p.t >= from);
      let max = 0;
      for (const p of pts) for (const s of series) if (p[s.key] != null && Number.isFinite(p[s.key])) max = Math.max(max, p[s.key]);
      // The highest value drawn, for tests and for anyone inspecting the page.
      el.dataset.peak = String(max);
      el.dataset.points = String(pts.length);
      max = niceMax(max);
      const x = (t) => L + ((t - from) / CHART_WINDOW_MS) * pw;
      const y = (v) => T + ph - (v / max) * ph;
      const grid = svg('g', { class: 'grid' });
      const axis = svg('g', { class: 'axis' });
      for (let i = 0; i <= 4; i++) {
        const v = (max * i) / 4;
        const yy = y(v).toFixed(1);
        grid.append(svg('line', { x1: L, x2: L + pw, y1: yy, y2: yy }));
        axis.append(svg('text', { x: L - 6, y: yy, 'text-anchor': 'end', 'dominant-baseline': 'middle' }, fmtY(v)));
      }
      for (let m = 5; m >= 0; m--) {
        const xx = x(now - m * 60000).toFixed(1);
        grid.append(svg('line', { x1: xx, x2: xx, y1: T, y2: T + ph, class: 'vgrid' }));
        axis.append(svg('text', { x: xx, y: H - 8, 'text-anchor': m === 0 ? 'end' : m === 5 ? 'start' : 'middle' }, m === 0 ? 'now' : `−${m} min`));
      }
      axis.append(svg('text', { x: 4, y: 10, class: 'unit' }, unit));
      axis.append(svg('line', { x1: L, x2: L, y1: T, y2: T + ph, class: 'axis-line' }));
      axis.append(svg('line', { x1: L, x2: L + pw, y1: T + ph, y2: T + ph, class: 'axis-line' }));
      root.append(grid, axis);
      series.forEach((s, si) => {
        let d = '';
        let pen = false;
        for (const p of pts) {
          const v = p[s.key];
          if (v == null || !Number.isFinite(v)) { pen = false; continue; }
          d += `${pen ? 'L' : 'M'}${x(p.t).toFixed(1)},${y(v).toFixed(1)}`;
          pen = true;
        }
        if (d) root.append(svg('path', { d, class: 'line ' + s.cls }));
        const last = [...pts].reverse().find((p) => p[s.key] != null);
        items[si].textContent = last ? fmtY(last[s.key]) : '—';
      });
      if (pts.length === 0) {
        root.append(svg('text', { x: L + pw / 2, y: T + ph / 2, 'text-anchor': 'middle', class: 'chart-note' },
          metrics.error ? 'metrics unavailable: ' + metrics.error.message : 'collecting…'));
      }
    }
    return { el, draw };
  }

  const fmtAxisRate = (v) => fmtNumber(v >= 100 ? Math.round(v) : v) + '/s';
  const fmtAxisSeconds = (v) => (v === 0 ? '0' : fmtSeconds(v));

  // ---------------------------------------------------------------- alerts badge
  let badgeAt = 0;
  async function refreshAlertBadge(alerts) {
    const badge = $('#nav-alerts-count');
    if (!badge) return;
    try {
      if (!alerts) {
        if (Date.now() - badgeAt < 1500) return;
        badgeAt = Date.now();
        alerts = ((await api('GET', '/v1/alerts')) || {}).alerts || [];
      }
      const firing = alerts.filter((a) => a.state === 'firing').length;
      badge.textContent = String(firing);
      badge.hidden = firing === 0;
    } catch (_) { /* the badge is best effort */ }
  }

  // ---------------------------------------------------------------- views
  let current = null;

  function mount(view) {
    unmount();
    current = view;
    view.alive = true;
    $('#view').replaceChildren(view.el);
    for (const a of document.querySelectorAll('#nav a[data-nav]')) {
      a.classList.toggle('active', a.dataset.nav === view.nav);
      if (a.dataset.nav === view.nav) a.setAttribute('aria-current', 'page'); else a.removeAttribute('aria-current');
    }
    document.title = view.title ? `${view.title} · Errand` : 'Errand';
    refreshView(view, true);
    if (view.interval) {
      view.timer = setInterval(() => {
        if (document.hidden || view.busy) return;
        if (view.shouldPoll && !view.shouldPoll()) return;
        refreshView(view, false);
      }, view.interval);
    }
  }

  function unmount() {
    if (!current) return;
    current.alive = false;
    clearInterval(current.timer);
    clearTimeout(current.pokeTimer);
    current = null;
  }

  async function refreshView(view, forced) {
    if (!view || !view.alive) return;
    if (view.busy) { if (forced) view.again = true; return; }
    view.busy = true;
    try {
      await view.refresh(!!forced);
    } catch (e) {
      if (view.alive) report(e);
    } finally {
      view.busy = false;
      if (view.again && view.alive) { view.again = false; refreshView(view, true); }
    }
  }

  // Refresh on an event, at most once per 500 ms.
  function poke(view) {
    if (!view || !view.alive || view.pokeTimer) return;
    const wait = Math.max(0, 500 - (Date.now() - (view.lastPoke || 0)));
    view.pokeTimer = setTimeout(() => {
      view.pokeTimer = null;
      view.lastPoke = Date.now();
      refreshView(view, true);
    }, wait);
  }

  function notice(text, cls = 'notice') { return h('p', { class: cls }, text); }

  // ---- #/ : queues
  function QueuesView() {
    const tbody = h('tbody');
    const tfoot = h('tfoot');
    const throughput = makeChart('chart-throughput', 'Throughput, all queues', 'jobs/s',
      [{ key: 'completed', label: 'completed/s', cls: 's-completed' }, { key: 'enqueued', label: 'enqueued/s', cls: 's-enqueued' }], fmtAxisRate);
    const latency = makeChart('chart-latency', 'Mean latency, all queues', 'seconds',
      [{ key: 'proc', label: 'processing', cls: 's-proc' }, { key: 'wait', label: 'wait', cls: 's-wait' }], fmtAxisSeconds);
    const summary = h('span', { class: 'muted', id: 'queues-summary' });
    const head = h('tr', null, h('th', null, 'Queue'),
      STATES.map((s) => h('th', { class: 'num', 'data-state': s }, STATE_LABEL[s])),
      h('th', { class: 'num' }, 'Oldest waiting'), h('th', { class: 'num' }, 'Completed/s'), h('th', { class: 'actions' }, ''));
    const el = h('section', { class: 'page page-queues' },
      h('div', { class: 'page-head' }, h('h1', null, 'Queues'), summary),
      h('div', { class: 'charts' }, throughput.el, latency.el),
      h('table', { id: 'queues', class: 'grid' }, h('thead', null, head), tbody, tfoot));

    const view = {
      el, nav: 'queues', title: 'Queues', interval: 2000, refreshesBadge: true,
      async refresh() {
        const [list] = await Promise.all([get('/v1/queues'), scrapeMetrics(), loadHistory()]);
        refreshAlertBadge();
        if (!view.alive) return;
        const queues = (list && list.queues) || [];
        const totals = Object.fromEntries(STATES.map((s) => [s, 0]));
        let rateSum = null;
        tbody.replaceChildren(...queues.map((q) => {
          const counts = q.counts || {};
          for (const s of STATES) totals[s] += Number(counts[s] || 0);
          const rate = queueRate(q.name);
          if (rate != null) rateSum = (rateSum || 0) + rate;
          const enq = queueRate(q.name, 'enqueued');
          const busy = Number(counts.waiting || 0) > 0 || q.oldest_waiting_age_ms > 0;
          return h('tr', { 'data-queue': q.name, class: q.paused ? 'paused' : null },
            h('td', { class: 'name' }, queueLink(q.name), q.paused ? h('span', { class: 'badge badge-paused' }, 'paused') : null),
            STATES.map((s) => {
              const n = Number(counts[s] || 0);
              return h('td', { class: `num count${n > 0 ? ' has-' + s : ''}`, 'data-count': s },
                n > 0 ? h('a', { href: queueHash(q.name, { state: s }) }, fmtInt(n)) : fmtInt(n));
            }),
            h('td', { class: 'num', 'data-field': 'oldest', title: busy ? `${fmtInt(q.oldest_waiting_age_ms)} ms` : null },
              busy ? fmtDuration(q.oldest_waiting_age_ms) : '—'),
            h('td', { class: 'num', 'data-field': 'rate', title: enq == null ? null : `enqueued ${fmtRate(enq)}` }, fmtRate(rate)),
            h('td', { class: 'actions' }, q.paused
              ? actionButton('resume', 'Resume', async () => { await post(`/v1/queues/${enc(q.name)}/resume`); return `queue ${q.name} resumed`; })
              : actionButton('pause', 'Pause', async () => { await post(`/v1/queues/${enc(q.name)}/pause`); return `queue ${q.name} paused`; })));
        }));
        if (queues.length === 0) tbody.append(emptyRow(STATES.length + 4, 'No queues yet: enqueue a job to create one.'));
        tfoot.replaceChildren(queues.length > 1 ? h('tr', { class: 'totals' }, h('td', null, 'All queues'),
          STATES.map((s) => h('td', { class: 'num' }, fmtInt(totals[s]))), h('td'), h('td', { class: 'num' }, fmtRate(rateSum)), h('td')) : '');
        summary.textContent = `${plural(queues.length, 'queue', 'queues')} · ${fmtInt(totals.waiting)} waiting · ${fmtInt(totals.active)} active · ${fmtInt(totals.dead)} dead`;
        const now = Date.now();
        throughput.draw(metrics.points, now);
        latency.draw(metrics.points, now);
      },
      onEvent() { poke(view); },
    };
    return view;
  }

  // ---- #/queues/NAME
  function QueueView(name, query) {
    const tab = STATES.includes(query.get('state')) ? query.get('state') : 'waiting';
    const kind = query.get('kind') || '';
    const uniqueKey = query.get('unique_key') || '';
    const cursors = [null];
    let pageIdx = 0;
    let nextCursor = null;
    let ticks = 0;
    let loadedJobs = [];
    const selected = new Set();
    const qpath = `/v1/queues/${enc(name)}`;

    const pausedBadge = h('span', { id: 'queue-paused', class: 'badge badge-paused', hidden: true }, 'paused');
    const headActions = h('span', { id: 'queue-actions', class: 'head-actions' });
    const tabs = h('nav', { class: 'tabs', id: 'state-tabs' }, STATES.map((s) => h('a', {
      href: queueHash(name, { state: s, kind, unique_key: uniqueKey }), 'data-tab': s,
      class: s === tab ? 'active' : null, 'aria-selected': s === tab ? 'true' : 'false',
    }, STATE_LABEL[s], ' ', h('span', { class: 'count', 'data-tab-count': s }, '·'))));

    const searchBy = h('select', { id: 'job-search-by', 'aria-label': 'search by' },
      ['id', 'kind', 'unique_key'].map((o) => h('option', { value: o, selected: (o === 'kind' && kind && !uniqueKey) || (o === 'unique_key' && !!uniqueKey) }, o)));
    const searchInput = h('input', { id: 'job-search', type: 'search', placeholder: 'job id, kind or unique key', value: uniqueKey || kind, spellcheck: 'false' });
    const filterNote = (kind || uniqueKey)
      ? h('span', { class: 'filter-chip', id: 'job-filter' }, uniqueKey ? `unique_key = ${uniqueKey}` : `kind = ${kind}`, ' ',
        h('a', { href: queueHash(name, { state: tab }), id: 'job-filter-clear', title: 'clear the filter' }, '×'))
      : null;
    const searchForm = h('form', { id: 'job-search-form', class: 'toolbar', role: 'search' }, searchBy, searchInput,
      h('button', { type: 'submit', class: 'btn', id: 'job-search-submit' }, 'Search'), filterNote);
    searchBy.value = uniqueKey ? 'unique_key' : kind ? 'kind' : 'id';
    searchForm.addEventListener('submit', (ev) => {
      ev.preventDefault();
      const v = searchInput.value.trim();
      const by = searchBy.value;
      if (by === 'id' && v) location.hash = '#/jobs/' + enc(v);
      else if (by === 'kind') location.hash = queueHash(name, { state: tab, kind: v });
      else if (by === 'unique_key') location.hash = queueHash(name, { state: tab, unique_key: v });
      else location.hash = queueHash(name, { state: tab });
    });

    const matching = () => (kind ? ` of kind "${kind}"` : '');
    const deadToolbar = tab !== 'dead' ? null : h('div', { class: 'toolbar', id: 'dead-toolbar' },
      actionButton('replay-selected', 'Replay selected', async () => {
        const ids = [...selected];
        if (ids.length === 0) throw new ApiError(0, 'invalid', 'select dead jobs first');
        let ok = 0;
        let firstError = null;
        for (const id of ids) {
          try { await post(`/v1/jobs/${enc(id)}/retry`); ok++; selected.delete(id); } catch (e) {
            if (e.status === 401) throw e;
            firstError = firstError || e;
          }
        }
        if (firstError) throw new ApiError(firstError.status, firstError.code, `replayed ${ok} of ${ids.length}: ${firstError.message}`);
        return `replayed ${plural(ok, 'job', 'jobs')}`;
      }),
      actionButton('replay-filter', kind ? `Replay all matching (kind ${kind})` : 'Replay all dead', async () => {
        const r = await post(`${qpath}/dead/replay`, kind ? { kind } : {});
        return `replayed ${plural(r ? r.count : 0, 'job', 'jobs')}`;
      }, { confirm: () => `Replay every dead job of queue "${name}"${matching()}?` }),
      actionButton('purge', kind ? `Purge all matching (kind ${kind})` : 'Purge all dead', async () => {
        const r = await del(`${qpath}/dead${kind ? '?kind=' + enc(kind) : ''}`);
        return `purged ${plural(r ? r.count : 0, 'job', 'jobs')}`;
      }, { cls: 'btn-danger', confirm: () => `Delete every dead job of queue "${name}"${matching()} for good?` }),
      uniqueKey ? h('span', { class: 'muted' }, 'replay and purge all ignore the unique_key filter') : null);

    const selectAll = tab === 'dead' ? h('input', { type: 'checkbox', id: 'select-all', 'aria-label': 'select all on this page' }) : null;
    if (selectAll) {
      selectAll.addEventListener('change', () => {
        for (const j of loadedJobs) { if (selectAll.checked) selected.add(j.id); else selected.delete(j.id); }
        for (const cb of tbody.querySelectorAll('input[data-select]')) cb.checked = selectAll.checked;
      });
    }
    const stateCol = { waiting: 'Due', delayed: 'Runs', active: 'Started', waiting_children: 'Pending children', completed: 'Finished', cancelled: 'Finished', dead: 'Died' }[tab];
    const infoCol = { active: 'Worker', completed: 'Took', dead: 'Last error', delayed: 'Last error', waiting: 'Keys', waiting_children: 'Keys', cancelled: 'Last error' }[tab];
    const cols = 7 + (selectAll ? 1 : 0);
    const tbody = h('tbody');
    const table = h('table', { id: 'jobs', class: 'grid jobs', 'data-state': tab }, h('thead', null, h('tr', null,
      selectAll ? h('th', { class: 'check' }, selectAll) : null,
      h('th', null, 'Job'), h('th', null, 'Kind'), h('th', { class: 'num' }, 'Priority'), h('th', { class: 'num' }, 'Attempts'),
      h('th', null, 'Created'), h('th', null, stateCol), h('th', null, infoCol))), tbody);
    tbody.addEventListener('click', (ev) => {
      const tr = ev.target.closest('tr[data-job]');
      if (!tr || ev.target.closest('a, button, input, label')) return;
      location.hash = '#/jobs/' + enc(tr.dataset.job);
    });

    const prevBtn = h('button', { type: 'button', class: 'btn', id: 'prev-page', disabled: true }, '‹ Previous');
    const nextBtn = h('button', { type: 'button', class: 'btn', id: 'next-page', disabled: true }, 'Next page ›');
    const pageInfo = h('span', { class: 'muted', id: 'page-info' });
    prevBtn.addEventListener('click', () => { if (pageIdx > 0) { pageIdx--; refreshView(view, true); } });
    nextBtn.addEventListener('click', () => {
      if (!nextCursor) return;
      cursors.length = pageIdx + 1;
      cursors.push(nextCursor);
      pageIdx++;
      refreshView(view, true);
    });

    const groupsBody = h('tbody');
    const groupsNote = h('p', { class: 'muted', hidden: true });
    const groupsPanel = h('section', { class: 'panel', id: 'dead-groups' }, h('h2', null, 'Dead-letter groups'), groupsNote,
      h('table', { class: 'grid groups' }, h('thead', null, h('tr', null, h('th', null, 'Failure'), h('th', null, 'Kind'),
        h('th', null, 'Last failed'), h('th', { class: 'actions' }, ''))), groupsBody));
    const configPre = h('pre', { id: 'queue-config', class: 'json' }, '…');
    // Flow control as it stands: shown only for a queue that has some.
    const flowSummary = h('dl', { class: 'flow-summary' });
    const flowBody = h('tbody');
    const flowPanel = h('section', { class: 'panel', id: 'flow', hidden: true }, h('h2', null, 'Flow control'), flowSummary,
      h('table', { class: 'grid', id: 'flow-groups' }, h('thead', null, h('tr', null, h('th', null, 'Group'),
        h('th', { class: 'num' }, 'Active'), h('th', { class: 'num' }, 'Tokens'), h('th', null, 'Next token'))), flowBody));
    const missing = h('p', { class: 'notice error', id: 'queue-missing', hidden: true });

    const el = h('section', { class: 'page page-queue' },
      h('div', { class: 'crumbs' }, h('a', { href: '#/' }, 'Queues'), ' / '),
      h('div', { class: 'page-head' }, h('h1', { id: 'queue-name' }, name), pausedBadge, h('span', { class: 'spacer' }), headActions),
      missing, tabs, searchForm, deadToolbar, table,
      h('div', { class: 'pager' }, prevBtn, pageInfo, nextBtn),
      h('div', { class: 'panels' }, flowPanel, groupsPanel, h('section', { class: 'panel' }, h('h2', null, 'Configuration'), configPre)));

    function tokensText(b, rate) {
      const cap = rate ? (rate.burst != null ? rate.burst : rate.limit) : null;
      return `${fmtNumber(Math.floor(b.tokens * 100) / 100)}${cap != null ? ' of ' + fmtNumber(cap) : ''}`;
    }
    function nextTokenText(b) {
      const wait = b.next_token_at - Date.now();
      return b.tokens >= 1 || wait <= 0 ? 'now' : 'in ' + fmtDuration(wait);
    }
    async function loadFlow() {
      let f;
      try {
        f = await get(`${qpath}/flow`);
      } catch (e) {
        if (e.status === 401) throw e;
        return;
      }
      if (!view.alive || !f) return;
      const limited = f.concurrency != null || f.rate_limit || f.group_concurrency != null || f.group_rate_limit || (f.groups || []).length;
      flowPanel.hidden = !limited;
      if (!limited) return;
      const item = (id, label, value) => [h('dt', null, label), h('dd', { 'data-flow': id }, value)];
      flowSummary.replaceChildren(
        ...item('active', 'Active', `${fmtInt(f.active)}${f.concurrency != null ? ' of ' + fmtInt(f.concurrency) : ''}`),
        ...(f.bucket ? [
          ...item('tokens', 'Tokens', tokensText(f.bucket, f.rate_limit)),
          ...item('next-token', 'Next token', nextTokenText(f.bucket)),
          ...item('rate', 'Rate', `${fmtInt(f.rate_limit.limit)} per ${fmtDuration(f.rate_limit.period_ms)}`),
        ] : []),
        ...(f.group_concurrency != null ? item('group-concurrency', 'Per group', `at most ${fmtInt(f.group_concurrency)} active`) : []),
        ...(f.group_rate_limit ? item('group-rate', 'Group rate', `${fmtInt(f.group_rate_limit.limit)} per ${fmtDuration(f.group_rate_limit.period_ms)}`) : []));
      flowBody.replaceChildren(...(f.groups || []).map((g) => h('tr', { 'data-group': g.key },
        h('td', { class: 'mono' }, g.key), h('td', { class: 'num', 'data-group-active': '' }, fmtInt(g.active)),
        h('td', { class: 'num', 'data-group-tokens': '' }, g.bucket ? tokensText(g.bucket, f.group_rate_limit) : '—'),
        h('td', null, g.bucket ? nextTokenText(g.bucket) : '—'))));
      if (!(f.groups || []).length) flowBody.append(emptyRow(4, 'No group is active or limited now.'));
    }

    function renderJobs(jobs) {
      loadedJobs = jobs;
      tbody.replaceChildren(...jobs.map((j) => {
        const last = j.errors && j.errors.length ? j.errors[j.errors.length - 1] : null;
        let when;
        let info;
        switch (tab) {
          case 'waiting': when = agoEl(j.run_at); info = keysText(j); break;
          case 'delayed': when = agoEl(j.run_at); info = last ? last.message : ''; break;
          case 'active': when = agoEl(j.started_at); info = j.lease ? j.lease.worker_id : ''; break;
          case 'waiting_children': when = fmtInt(j.pending_children || 0); info = keysText(j); break;
          case 'completed': when = agoEl(j.finished_at); info = j.started_at && j.finished_at ? fmtDuration(j.finished_at - j.started_at) : '—'; break;
          default: when = agoEl(j.finished_at); info = last ? last.message : (j.dead_reason || '');
        }
        const cb = tab === 'dead' ? h('input', { type: 'checkbox', 'data-select': j.id, checked: selected.has(j.id), 'aria-label': 'select ' + j.id }) : null;
        if (cb) cb.addEventListener('change', () => { if (cb.checked) selected.add(j.id); else selected.delete(j.id); });
        return h('tr', { 'data-job': j.id, class: 'clickable' },
          cb ? h('td', { class: 'check' }, cb) : null,
          h('td', null, jobLink(j.id)), h('td', null, j.kind), h('td', { class: 'num' }, fmtInt(j.priority)),
          h('td', { class: 'num' }, `${fmtInt(j.attempts)}/${fmtInt(j.max_attempts)}`),
          h('td', null, agoEl(j.created_at)), h('td', { class: tab === 'waiting_children' ? 'num' : null }, when),
          h('td', { class: 'info', title: typeof info === 'string' && info ? info : null },
            tab === 'dead' && j.dead_reason ? h('span', { class: 'tag' }, j.dead_reason) : null, info));
      }));
      if (jobs.length === 0) {
        tbody.append(emptyRow(cols, `No ${STATE_LABEL[tab].toLowerCase()} jobs${kind ? ' of kind ' + kind : ''}${uniqueKey ? ' with unique key ' + uniqueKey : ''}.`));
      }
      if (selectAll) selectAll.checked = jobs.length > 0 && jobs.every((j) => selected.has(j.id));
    }

    function keysText(j) {
      return [j.unique_key && 'unique ' + j.unique_key, j.group_key && 'group ' + j.group_key, j.concurrency_key && 'key ' + j.concurrency_key]
        .filter(Boolean).join(' · ');
    }

    // Grouping reads every dead job of the queue: at most every 10 s, not on each event.
    let groupsAt = 0;
    async function loadGroups() {
      groupsAt = Date.now();
      try {
        const r = await get(`${qpath}/dead/groups`);
        const groups = (r && r.groups) || [];
        groupsNote.hidden = groups.length > 0;
        groupsNote.textContent = 'No dead letters.';
        groupsBody.replaceChildren(...groups.map((g) => h('tr', { 'data-fingerprint': g.fingerprint },
          h('td', { class: 'group-msg' }, h('strong', null, plural(Number(g.count), 'job', 'jobs')), ' failed with: ',
            h('span', { class: 'error-text' }, g.error)),
          h('td', null, g.kind == null ? '—' : g.kind), h('td', null, agoEl(g.last_failed_at)),
          h('td', { class: 'actions' },
            actionButton('replay-group', 'Replay', async () => {
              const c = await post(`${qpath}/dead/replay`, { fingerprint: g.fingerprint });
              groupsAt = 0;
              return `replayed ${plural(c ? c.count : 0, 'job', 'jobs')}`;
            }),
            actionButton('purge-group', 'Purge', async () => {
              const c = await del(`${qpath}/dead?fingerprint=${enc(g.fingerprint)}`);
              groupsAt = 0;
              return `purged ${plural(c ? c.count : 0, 'job', 'jobs')}`;
            }, { cls: 'btn-danger', confirm: () => `Delete the ${fmtInt(g.count)} dead jobs that failed with "${g.error}" for good?` })))));
      } catch (e) {
        if (e.status === 401) throw e;
        groupsBody.replaceChildren();
        groupsNote.hidden = false;
        groupsNote.textContent = e.status === 404 ? 'Grouping dead letters is not available on this server.' : 'Could not load the groups: ' + e.message;
      }
    }

    async function loadConfig() {
      try {
        configPre.textContent = pretty(await get(`${qpath}/config`));
      } catch (e) {
        if (e.status === 401) throw e;
        configPre.textContent = 'unavailable: ' + e.message;
      }
    }

    const view = {
      el, nav: 'queues', title: name, interval: 2000,
      async refresh(forced) {
        const slow = forced || ticks % 5 === 0;
        ticks++;
        const qs = new URLSearchParams({ state: tab, limit: String(PAGE_SIZE) });
        if (kind) qs.set('kind', kind);
        if (uniqueKey) qs.set('unique_key', uniqueKey);
        if (cursors[pageIdx]) qs.set('cursor', cursors[pageIdx]);
        const jobsP = get(`${qpath}/jobs?${qs}`);
        jobsP.catch(() => {});
        let info;
        try {
          info = await get(qpath);
        } catch (e) {
          if (e.status !== 404) throw e;
          info = null;
        }
        if (!view.alive) return;
        missing.hidden = !!info;
        if (!info) missing.textContent = `No queue named "${name}" (it was never used or configured).`;
        if (info) {
          pausedBadge.hidden = !info.paused;
          for (const s of STATES) {
            const c = tabs.querySelector(`[data-tab-count="${s}"]`);
            if (c) c.textContent = fmtInt((info.counts || {})[s] || 0);
          }
          headActions.replaceChildren(info.paused
            ? actionButton('resume', 'Resume queue', async () => { await post(`${qpath}/resume`); return `queue ${name} resumed`; })
            : actionButton('pause', 'Pause queue', async () => { await post(`${qpath}/pause`); return `queue ${name} paused`; }));
        }
        let page;
        try {
          page = await jobsP;
        } catch (e) {
          if (!info && e.status !== 401) page = { jobs: [] }; else throw e;
        }
        if (!view.alive) return;
        nextCursor = (page && (page.next_cursor || page.next)) || null;
        renderJobs((page && page.jobs) || []);
        prevBtn.disabled = pageIdx === 0;
        nextBtn.disabled = !nextCursor;
        pageInfo.textContent = `page ${pageIdx + 1} · ${plural(loadedJobs.length, 'job', 'jobs')}`;
        if (Date.now() - groupsAt >= 10000) await loadGroups();
        await loadFlow();
        if (slow) await loadConfig();
      },
      onEvent(ev) { if (ev.queue === name) poke(view); },
    };
    return view;
  }

  // ---- #/jobs/ID
  function JobView(id) {
    let job = null;
    let sig = '';
    let gone = false;
    let childIds = new Set();
    const el = h('section', { class: 'page page-job' }, h('p', { class: 'muted' }, 'Loading…'));

    function field(label, value, attrs) {
      return [h('dt', null, label), h('dd', attrs || null, value == null || value === '' ? h('span', { class: 'muted' }, '—') : value)];
    }

    function render(j, logs, children) {
      const final = FINAL.has(j.state);
      const actions = h('div', { class: 'head-actions', id: 'job-actions' });
      if (j.state === 'dead' || j.state === 'cancelled') {
        actions.append(actionButton('retry', 'Retry', async () => {
          const r = await post(`/v1/jobs/${enc(j.id)}/retry`);
          return `job retried: now ${r ? r.state : 'waiting'}`;
        }));
      }
      if (j.state === 'delayed') {
        actions.append(actionButton('promote', 'Run now', async () => {
          const r = await post(`/v1/jobs/${enc(j.id)}/promote`);
          return `job promoted: now ${r ? r.state : 'waiting'}`;
        }, { title: 'promote: make the job due now' }));
      }
      if (!final) {
        actions.append(actionButton('cancel', j.state === 'active' ? 'Request cancel' : 'Cancel', async () => {
          const r = await post(`/v1/jobs/${enc(j.id)}/cancel`);
          return r && r.outcome === 'requested' ? 'cancel requested: the worker stops at its next heartbeat' : 'job cancelled';
        }, { scopes: ['produce'], cls: 'btn-danger' }));
      }
      const b = j.backoff || {};
      const backoff = b.type ? `${b.type}, ${fmtDuration(b.delay_ms)}${b.jitter ? `, jitter ${b.jitter}` : ''}${b.max_ms != null ? `, max ${fmtDuration(b.max_ms)}` : ''}` : '—';
      const errors = j.errors || [];
      const lease = j.lease;
      el.replaceChildren();
      appendAll(el, [
        h('div', { class: 'crumbs' }, h('a', { href: '#/' }, 'Queues'), ' / ', queueLink(j.queue), ' / ',
          h('a', { href: queueHash(j.queue, { state: j.state }) }, j.state)),
        h('div', { class: 'page-head' }, h('h1', null, j.kind), stateEl(j.state, 'job-state'),
          j.cancel_requested ? h('span', { class: 'badge badge-warn' }, 'cancel requested') : null,
          h('span', { class: 'mono muted', id: 'job-id' }, j.id), h('span', { class: 'spacer' }), actions),
        h('div', { class: 'columns' },
          h('section', { class: 'panel' }, h('h2', null, 'Job'), h('dl', { class: 'kv', id: 'job-fields' },
            field('Kind', j.kind, { id: 'job-kind' }),
            field('Queue', queueLink(j.queue), { id: 'job-queue' }),
            field('Priority', fmtInt(j.priority), { id: 'job-priority' }),
            field('Attempts', `${fmtInt(j.attempts)} / ${fmtInt(j.max_attempts)}`, { id: 'job-attempts' }),
            field('Created', timeEl(j.created_at)),
            field(j.state === 'delayed' ? 'Runs at' : 'Due at', timeEl(j.run_at)),
            field('Started', j.started_at == null ? null : timeEl(j.started_at)),
            field('Finished', j.finished_at == null ? null : timeEl(j.finished_at)),
            j.state === 'dead' || j.dead_reason ? field('Dead reason', j.dead_reason, { id: 'job-dead-reason', class: 'error-text' }) : null,
            field('Unique key', j.unique_key, { class: 'mono' }),
            field('Group key', j.group_key, { class: 'mono' }),
            field('Concurrency key', j.concurrency_key, { class: 'mono' }),
            field('Idempotency key', j.idempotency_key, { class: 'mono' }),
            j.parent_id ? field('Parent', jobLink(j.parent_id), { id: 'job-parent' }) : null,
            j.pending_children ? field('Pending children', fmtInt(j.pending_children)) : null,
            lease ? field('Worker', lease.worker_id, { class: 'mono' }) : null,
            lease ? field('Lease expires', timeEl(lease.expires_at)) : null,
            lease ? field('Deadline', timeEl(lease.deadline_at)) : null)),
          h('section', { class: 'panel' }, h('h2', null, 'Options'), h('dl', { class: 'kv', id: 'job-options' },
            field('Backoff', backoff),
            field('Timeout', fmtDuration(j.timeout_ms)),
            field('Heartbeat', j.heartbeat_ms == null ? 'none promised' : fmtDuration(j.heartbeat_ms)),
            field('Lease', fmtDuration(j.lease_ms)),
            field('Stalls', `${fmtInt(j.stalls)} of at most ${fmtInt(j.max_stalled)}`)),
          h('h2', null, 'Progress'), preJson('job-progress', j.progress),
          h('h2', null, 'Result'), preJson('job-result', j.result))),
        h('section', { class: 'panel' }, h('h2', null, 'Payload'), preJson('job-payload', j.payload)),
        h('section', { class: 'panel' }, h('h2', null, `Errors (${fmtInt(errors.length)})`),
          h('table', { class: 'grid', id: 'job-errors' }, h('thead', null, h('tr', null, h('th', { class: 'num' }, 'Attempt'),
            h('th', null, 'At'), h('th', null, 'Kind'), h('th', null, 'Message'))),
          h('tbody', null, errors.length ? errors.map((e) => h('tr', { 'data-attempt': e.attempt },
            h('td', { class: 'num' }, fmtInt(e.attempt)), h('td', null, timeEl(e.at)), h('td', null, h('span', { class: 'tag' }, e.kind || 'error')),
            h('td', null, h('pre', { class: 'error-text message' }, e.message),
              e.stack || e.details ? h('pre', { class: 'stack' }, typeof (e.stack || e.details) === 'string' ? (e.stack || e.details) : pretty(e.stack || e.details)) : null)))
            : emptyRow(4, 'No failed attempts.')))),
        children.length > 0 || j.pending_children > 0 ? h('section', { class: 'panel' }, h('h2', null, `Children (${fmtInt(children.length)})`),
          h('table', { class: 'grid', id: 'job-children' }, h('thead', null, h('tr', null, h('th', null, 'Job'), h('th', null, 'Queue'),
            h('th', null, 'Kind'), h('th', null, 'State'), h('th', { class: 'num' }, 'Attempts'))),
          h('tbody', null, children.map((c) => h('tr', { 'data-job': c.id }, h('td', null, jobLink(c.id)), h('td', null, queueLink(c.queue)),
            h('td', null, c.kind), h('td', null, stateEl(c.state)), h('td', { class: 'num' }, `${fmtInt(c.attempts)}/${fmtInt(c.max_attempts)}`)))))) : null,
        h('section', { class: 'panel' }, h('h2', null, 'Log'),
          logs.error ? notice('log unavailable: ' + logs.error.message, 'muted') : null,
          h('table', { class: 'grid logs', id: 'job-logs' }, h('thead', null, h('tr', null, h('th', null, 'At'), h('th', { class: 'num' }, 'Attempt'), h('th', null, 'Line'))),
            h('tbody', null, (logs.logs || []).length ? logs.logs.map((l) => h('tr', null, h('td', { class: 'nowrap' }, timeEl(l.at)),
              h('td', { class: 'num' }, fmtInt(l.attempt)), h('td', null, h('span', { class: 'log-line' }, l.line))))
              : emptyRow(3, 'No log lines.'))))]);
    }

    const view = {
      el, nav: 'queues', title: 'Job ' + id, interval: 2000,
      shouldPoll: () => !gone && (!job || !FINAL.has(job.state)),
      async refresh() {
        let j;
        try {
          j = await get(`/v1/jobs/${enc(id)}`);
        } catch (e) {
          if (e.status === 404 || (e.status === 400 && !job)) {
            gone = true;
            el.replaceChildren(h('div', { class: 'crumbs' }, h('a', { href: '#/' }, 'Queues')),
              h('p', { class: 'notice error', id: 'job-not-found' }, e.status === 404 ? `No job with id ${id}.` : e.message));
            return;
          }
          throw e;
        }
        gone = false;
        const [logs, kids] = await Promise.all([
          get(`/v1/jobs/${enc(id)}/logs`).catch((e) => { if (e.status === 401) throw e; return { error: e }; }),
          get(`/v1/jobs/${enc(id)}/children`).catch((e) => { if (e.status === 401) throw e; return { jobs: [] }; }),
        ]);
        if (!view.alive) return;
        job = j;
        const children = (kids && kids.jobs) || [];
        childIds = new Set(children.map((c) => c.id));
        const s = JSON.stringify([j, logs.logs || null, logs.error ? logs.error.message : null, children, auth && auth.scopes]);
        if (s === sig) return; // nothing changed: keep selections and scroll as they are
        sig = s;
        view.title = `${j.kind} ${j.id}`;
        document.title = `${j.kind} · ${j.state} · Errand`;
        render(j, logs, children);
      },
      onEvent(ev) { if (ev.job_id === id || childIds.has(ev.job_id)) poke(view); },
    };
    return view;
  }

  // ---- #/schedules
  function SchedulesView() {
    const tbody = h('tbody');
    const el = h('section', { class: 'page' }, h('div', { class: 'page-head' }, h('h1', null, 'Schedules')),
      h('table', { id: 'schedules', class: 'grid' }, h('thead', null, h('tr', null, h('th', null, 'Name'), h('th', null, 'Cron'),
        h('th', null, 'Time zone'), h('th', null, 'Queue'), h('th', null, 'Kind'), h('th', null, 'State'), h('th', null, 'Next runs'),
        h('th', null, 'Last run'), h('th', { class: 'actions' }, ''))), tbody));
    const view = {
      el, nav: 'schedules', title: 'Schedules', interval: 5000,
      async refresh() {
        const r = await get('/v1/schedules');
        if (!view.alive) return;
        const list = (r && r.schedules) || [];
        tbody.replaceChildren(...list.map((s) => {
          const p = `/v1/schedules/${enc(s.name)}`;
          const runs = s.next_runs || [];
          return h('tr', { 'data-schedule': s.name, class: s.paused ? 'paused' : null },
            h('td', { class: 'name' }, s.name), h('td', null, h('code', null, s.cron)), h('td', null, s.timezone),
            h('td', null, queueLink(s.queue)), h('td', null, s.kind),
            h('td', { 'data-field': 'paused' }, s.paused ? h('span', { class: 'badge badge-paused' }, 'paused') : h('span', { class: 'muted' }, 'active')),
            h('td', { 'data-field': 'next-runs', title: runs.map(fmtDate).join('\n') || null },
              runs.length ? runs.slice(0, 3).map((t, i) => h('div', { class: i ? 'muted' : null }, fmtDate(t), i === 0 ? ` (${fmtRelative(t)})` : ''))
                : h('span', { class: 'muted' }, 'never')),
            h('td', null, s.last_run_at ? [timeEl(s.last_run_at), s.last_job_id ? [h('br'), jobLink(s.last_job_id)] : null] : h('span', { class: 'muted' }, '—')),
            h('td', { class: 'actions' },
              s.paused
                ? actionButton('resume', 'Resume', async () => { await post(`${p}/resume`); return `schedule ${s.name} resumed`; })
                : actionButton('pause', 'Pause', async () => { await post(`${p}/pause`); return `schedule ${s.name} paused`; }),
              actionButton('trigger', 'Trigger now', async () => {
                const j = await post(`${p}/trigger`);
                return j && j.id ? `schedule ${s.name} enqueued job ${j.id}` : `schedule ${s.name} triggered`;
              }, { scopes: ['produce'] })));
        }));
        if (!list.length) tbody.append(emptyRow(9, 'No schedules. Create one with PUT /v1/schedules/{name}.'));
      },
    };
    return view;
  }

  // ---- #/workers
  function WorkersView() {
    const tbody = h('tbody');
    const el = h('section', { class: 'page' }, h('div', { class: 'page-head' }, h('h1', null, 'Workers'),
      h('span', { class: 'muted' }, 'workers that fetched or heartbeat recently')),
    h('table', { id: 'workers', class: 'grid' }, h('thead', null, h('tr', null, h('th', null, 'Worker'), h('th', null, 'Queues'),
      h('th', null, 'Last seen'))), tbody));
    const view = {
      el, nav: 'workers', title: 'Workers', interval: 5000,
      async refresh() {
        const r = await get('/v1/workers');
        if (!view.alive) return;
        const list = (r && r.workers) || [];
        tbody.replaceChildren(...list.map((w) => h('tr', { 'data-worker': w.id },
          h('td', { class: 'mono' }, w.id),
          h('td', null, (w.queues || []).map((q, i) => [i ? ', ' : '', queueLink(q)])),
          h('td', null, agoEl(w.last_seen_at)))));
        if (!list.length) tbody.append(emptyRow(3, 'No worker seen recently.'));
      },
    };
    return view;
  }

  // ---- #/alerts
  function AlertsView() {
    const tbody = h('tbody');
    const el = h('section', { class: 'page' }, h('div', { class: 'page-head' }, h('h1', null, 'Alerts')),
      h('table', { id: 'alerts', class: 'grid' }, h('thead', null, h('tr', null, h('th', null, 'State'), h('th', null, 'Rule'),
        h('th', null, 'Queue'), h('th', { class: 'num' }, 'Value'), h('th', { class: 'num' }, 'Threshold'), h('th', null, 'Since'),
        h('th', null, 'Message'))), tbody));
    const view = {
      el, nav: 'alerts', title: 'Alerts', interval: 5000, refreshesBadge: true,
      async refresh() {
        const r = await get('/v1/alerts');
        if (!view.alive) return;
        const list = ((r && r.alerts) || []).slice().sort((a, b) => (b.state === 'firing') - (a.state === 'firing'));
        refreshAlertBadge(list);
        tbody.replaceChildren(...list.map((a) => h('tr', { 'data-alert': `${a.rule}:${a.queue == null ? '' : a.queue}`, class: 'alert-' + a.state },
          h('td', null, h('span', { class: `state alert-state-${a.state}` }, a.state)), h('td', null, a.rule),
          h('td', null, a.queue == null ? '—' : queueLink(a.queue)), h('td', { class: 'num' }, fmtNumber(a.value)),
          h('td', { class: 'num' }, fmtNumber(a.threshold)), h('td', null, agoEl(a.since)), h('td', null, a.message))));
        if (!list.length) tbody.append(emptyRow(7, 'No alerts.'));
      },
    };
    return view;
  }

  // ---- #/audit
  function AuditView() {
    const tbody = h('tbody');
    const cursors = [null];
    let idx = 0;
    let next = null;
    const prevBtn = h('button', { type: 'button', class: 'btn', id: 'audit-prev', disabled: true }, '‹ Newer');
    const nextBtn = h('button', { type: 'button', class: 'btn', id: 'audit-next', disabled: true }, 'Older ›');
    prevBtn.addEventListener('click', () => { if (idx > 0) { idx--; refreshView(view, true); } });
    nextBtn.addEventListener('click', () => { if (next) { cursors.length = idx + 1; cursors.push(next); idx++; refreshView(view, true); } });
    const el = h('section', { class: 'page' }, h('div', { class: 'page-head' }, h('h1', null, 'Audit log')),
      h('table', { id: 'audit', class: 'grid' }, h('thead', null, h('tr', null, h('th', null, 'At'), h('th', null, 'Key'),
        h('th', null, 'Action'), h('th', null, 'Target'), h('th', null, 'Detail'))), tbody),
      h('div', { class: 'pager' }, prevBtn, nextBtn));

    function target(e) {
      const t = e.target == null ? '' : String(e.target);
      if (!t) return h('span', { class: 'muted' }, '—');
      const a = String(e.action || '');
      if (a.startsWith('job')) return jobLink(t);
      if (a.startsWith('queue') || a.startsWith('dead')) return queueLink(t);
      if (a.startsWith('schedule')) return h('a', { href: '#/schedules' }, t);
      return h('span', { class: 'mono' }, t);
    }

    const view = {
      el, nav: 'audit', title: 'Audit', interval: 10000,
      shouldPoll: () => idx === 0,
      async refresh() {
        const qs = new URLSearchParams({ limit: '100' });
        if (cursors[idx] != null) qs.set('cursor', cursors[idx]);
        const r = await get(`/v1/audit?${qs}`);
        if (!view.alive) return;
        const list = (r && r.entries) || [];
        next = r && (r.next != null ? r.next : r.next_cursor) != null ? String(r.next != null ? r.next : r.next_cursor) : null;
        prevBtn.disabled = idx === 0;
        nextBtn.disabled = !next;
        tbody.replaceChildren(...list.map((e) => {
          const detail = e.detail && typeof e.detail === 'object' && Object.keys(e.detail).length === 0 ? '' : JSON.stringify(e.detail);
          return h('tr', { 'data-audit': e.id }, h('td', { class: 'nowrap' }, timeEl(e.at)), h('td', null, e.key),
            h('td', null, h('code', null, e.action)), h('td', null, target(e)), h('td', null, detail ? h('code', { class: 'detail' }, detail) : ''));
        }));
        if (!list.length) tbody.append(emptyRow(5, 'No audit entries.'));
      },
    };
    return view;
  }

  // ---- #/audit/report
  function AuditReportView() {
    const tbody = h('tbody');
    const summary = h('p', { id: 'audit-summary', class: 'muted' }, '…');
    const el = h('section', { class: 'page' }, h('div', { class: 'page-head' }, h('h1', null, 'Audit'),
      h('span', { class: 'muted' }, 'this deployment checked against docs/AUDIT.md (errand audit)')), summary,
      h('table', { id: 'audit-report', class: 'grid' }, h('thead', null, h('tr', null, h('th', null, 'Verdict'), h('th', null, 'Subject'),
        h('th', null, 'Check'), h('th', null, 'Rows'), h('th', null, 'Found'), h('th', null, 'Fix'))), tbody));
    const view = {
      el, nav: 'audit-report', title: 'Audit', interval: 15000,
      async refresh() {
        const r = await get('/v1/audit/report');
        if (!view.alive || !r) return;
        summary.replaceChildren(h('span', { class: 'verdict verdict-fail', 'data-count': 'fail' }, `${r.fail} fail`), ' · ',
          h('span', { class: 'verdict verdict-warn', 'data-count': 'warn' }, `${r.warn} warn`), ' · ',
          h('span', { class: 'verdict verdict-pass', 'data-count': 'pass' }, `${r.pass} pass`));
        tbody.replaceChildren(...(r.checks || []).map((c) => h('tr', { 'data-check': c.id, 'data-subject': c.subject, class: 'check-' + c.verdict },
          h('td', null, h('span', { class: 'verdict verdict-' + c.verdict }, c.verdict)), h('td', null, c.subject),
          h('td', null, h('code', null, c.id)), h('td', { class: 'mono' }, (c.rows || []).join(', ')),
          h('td', null, c.detail), h('td', null, c.fix ? h('code', { class: 'detail' }, c.fix) : ''))));
      },
    };
    return view;
  }

  function NotFoundView() {
    return { el: h('section', { class: 'page' }, notice('No such page. '), h('a', { href: '#/' }, 'Back to the queues')), nav: '', title: 'Not found', refresh() {} };
  }

  // ---------------------------------------------------------------- routing
  function parseHash(hash) {
    let raw = String(hash || '').replace(/^#/, '');
    if (!raw.startsWith('/')) raw = '/' + raw;
    const qi = raw.indexOf('?');
    const path = qi < 0 ? raw : raw.slice(0, qi);
    const query = new URLSearchParams(qi < 0 ? '' : raw.slice(qi + 1));
    const parts = path.split('/').filter(Boolean).map((p) => { try { return decodeURIComponent(p); } catch (_) { return p; } });
    return { parts, query };
  }

  function route() {
    if (!auth) return;
    const { parts, query } = parseHash(location.hash);
    const [a, b] = parts;
    let view;
    if (!a || (a === 'queues' && !b)) view = QueuesView();
    else if (a === 'queues') view = QueueView(b, query);
    else if (a === 'jobs' && b) view = JobView(b);
    else if (a === 'schedules') view = SchedulesView();
    else if (a === 'workers') view = WorkersView();
    else if (a === 'alerts') view = AlertsView();
    else if (a === 'audit' && b === 'report') view = AuditReportView();
    else if (a === 'audit') view = AuditView();
    else view = NotFoundView();
    mount(view);
  }

  // ---------------------------------------------------------------- event stream (SSE over fetch)
  const live = { ctrl: null, retry: null, last: null, state: 'off' };

  function setLive(state) {
    live.state = state;
    const el = $('#live-status');
    if (!el) return;
    el.textContent = state === 'live' ? 'live' : state === 'off' ? '' : 'polling';
    el.className = 'live-status live-' + state;
    el.title = state === 'live' ? 'receiving job events as they happen' : 'event stream unavailable: refreshing by polling';
  }

  // Feeds text into an SSE parser; calls onEvent({event, id, data}) for each complete event.
  function sseParser(onEvent) {
    let buf = '';
    let ev = { event: '', id: null, data: [] };
    return (chunk) => {
      buf += chunk;
      let nl;
      while ((nl = buf.indexOf('\n')) >= 0) {
        let line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        if (line.endsWith('\r')) line = line.slice(0, -1);
        if (line === '') {
          if (ev.data.length || ev.event) onEvent({ event: ev.event || 'message', id: ev.id, data: ev.data.join('\n') });
          ev = { event: '', id: null, data: [] };
          continue;
        }
        if (line[0] === ':') continue;
        const c = line.indexOf(':');
        const name = c < 0 ? line : line.slice(0, c);
        let value = c < 0 ? '' : line.slice(c + 1);
        if (value[0] === ' ') value = value.slice(1);
        if (name === 'event') ev.event = value;
        else if (name === 'data') ev.data.push(value);
        else if (name === 'id') ev.id = value;
      }
    };
  }

  function onStreamEvent(e) {
    if (e.id) live.last = e.id;
    if (e.event === 'missed') { if (current) poke(current); return; }
    if (e.event !== 'job' && e.event !== 'message') return;
    let data;
    try { data = JSON.parse(e.data); } catch (_) { return; }
    if (!e.id && data) {
      if (data.cursor != null) live.last = String(data.cursor);
      else if (data.seq != null) live.last = String(data.seq);
    }
    if (current && current.onEvent && data) current.onEvent(data);
  }

  function stopEvents() {
    clearTimeout(live.retry);
    live.retry = null;
    if (live.ctrl) live.ctrl.abort();
    live.ctrl = null;
  }

  function startEvents() {
    stopEvents();
    if (!auth || typeof ReadableStream === 'undefined') { setLive('polling'); return; }
    const ctrl = new AbortController();
    live.ctrl = ctrl;
    (async () => {
      try {
        const headers = { Accept: 'text/event-stream' };
        if (auth.key) headers.Authorization = 'Bearer ' + auth.key;
        const url = '/v1/events' + (live.last ? '?after=' + enc(live.last) : '');
        const res = await fetch(url, { headers, signal: ctrl.signal, cache: 'no-store', credentials: 'omit' });
        if (res.status === 401) { sessionExpired('unknown API key'); return; }
        if (res.status === 400 && live.last) live.last = null; // a cursor the server does not take
        if (!res.ok || !res.body) throw new Error('event stream: ' + res.status);
        setLive('live');
        const reader = res.body.getReader();
        const decoder = new TextDecoder();
        const feed = sseParser(onStreamEvent);
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          feed(decoder.decode(value, { stream: true }));
        }
        throw new Error('event stream ended');
      } catch (_) {
        if (ctrl.signal.aborted || live.ctrl !== ctrl) return;
        setLive('polling');
        live.retry = setTimeout(() => { if (auth && live.ctrl === ctrl) startEvents(); }, 5000);
      }
    })();
  }

  // ---------------------------------------------------------------- login and boot
  let badgeTimer = null;

  function showLogin(message) {
    unmount();
    stopEvents();
    clearInterval(badgeTimer);
    document.body.classList.remove('booting', 'signed-in');
    document.body.classList.add('signed-out');
    $('#login').hidden = false;
    $('#view').replaceChildren();
    $('#login-error').textContent = message || '';
    const input = $('#login-key');
    input.value = '';
    input.focus();
  }

  function sessionExpired(message) {
    if (!auth) return;
    auth = null;
    clearAuth();
    showLogin(message ? `Signed out: ${message}` : 'Signed out: the key was refused.');
  }

  function enterApp() {
    document.body.classList.remove('booting', 'signed-out');
    document.body.classList.add('signed-in');
    $('#login').hidden = true;
    $('#login-error').textContent = '';
    $('#identity-name').textContent = auth.name;
    // No key and yet signed in: the server has no keys, and every visitor is an admin. Say so.
    $('#open-notice').hidden = !(auth.key === '' && auth.name === 'anonymous');
    $('#identity-scopes').replaceChildren(...auth.scopes.map((s) => h('span', { class: 'scope scope-' + s, 'data-scope': s }, s)));
    startEvents();
    clearInterval(badgeTimer);
    refreshAlertBadge();
    badgeTimer = setInterval(() => { if (!document.hidden && !(current && current.refreshesBadge)) refreshAlertBadge(); }, 10000);
    route();
  }

  // Checks a key (or none) with GET /v1/whoami; a server without that route is checked with /v1/queues.
  async function identify(key) {
    try {
      const me = await request('GET', '/v1/whoami', { key });
      return { key, name: String(me && me.name != null ? me.name : 'unknown'), scopes: Array.isArray(me && me.scopes) ? me.scopes.map(String) : [] };
    } catch (e) {
      if (e.status !== 404) throw e;
      await request('GET', '/v1/queues', { key });
      return { key, name: key ? 'key' : 'anonymous', scopes: ALL_SCOPES.slice() };
    }
  }

  async function signIn(key, button) {
    const err = $('#login-error');
    err.textContent = '';
    button.disabled = true;
    try {
      auth = await identify(key);
      saveAuth(auth);
      enterApp();
    } catch (e) {
      auth = null;
      err.textContent = e.status === 401 ? (key ? `Key refused: ${e.message}` : 'This server needs an API key.') : e.message;
    } finally {
      button.disabled = false;
    }
  }

  function boot() {
    $('#login-form').addEventListener('submit', (ev) => {
      ev.preventDefault();
      const key = $('#login-key').value.trim();
      if (!key) { $('#login-error').textContent = 'Enter an API key, or continue without one.'; return; }
      signIn(key, $('#login-submit'));
    });
    $('#login-anonymous').addEventListener('click', () => signIn('', $('#login-anonymous')));
    $('#logout').addEventListener('click', () => { auth = null; clearAuth(); showLogin('Signed out.'); });
    $('#toast').addEventListener('click', () => { $('#toast').hidden = true; });
    window.addEventListener('hashchange', route);
    document.addEventListener('visibilitychange', () => { if (!document.hidden && current) refreshView(current, true); });

    auth = loadAuth();
    if (auth) {
      enterApp();
      // Scopes may have changed since the key was stored: check again, quietly.
      identify(auth.key).then((me) => {
        if (!auth || auth.key !== me.key) return;
        const changed = JSON.stringify(me.scopes) !== JSON.stringify(auth.scopes) || me.name !== auth.name;
        auth = me;
        saveAuth(me);
        if (changed) enterApp();
      }).catch((e) => { if (e.status === 401) sessionExpired(e.message); });
      return;
    }
    // No key stored: a server without keys answers whoami without one.
    identify('').then((me) => { auth = me; saveAuth(me); enterApp(); })
      .catch((e) => showLogin(e.status === 0 ? 'Server unreachable.' : ''));
  }

  if (typeof document !== 'undefined' && typeof window !== 'undefined') {
    if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', boot);
    else boot();
  }
  if (typeof module !== 'undefined' && module.exports) {
    module.exports = { parseMetrics, summarize, pointBetween, sseParser, parseHash, fmtDuration, fmtRate, fmtInt, niceMax };
  }
})();
