// The operator page of xacoord: polls the token-guarded API every 2 s and renders it. Every
// value from the server is put into the page as text (never as HTML): it is untrusted.
'use strict';

const POLL_MS = 2000;
const HISTORY_MS = 10 * 60 * 1000;
const TOKEN_KEY = 'xacoord.token';
const $ = (sel) => document.querySelector(sel);

let samples = []; // {t, committed, aborted, buckets: [[le, count]...]} from /metrics
let timer = null;

function token() { return sessionStorage.getItem(TOKEN_KEY) || ''; }

class Unauthorized extends Error {}

async function api(method, path) {
  const headers = {};
  if (token()) headers.Authorization = 'Bearer ' + token();
  const resp = await fetch(path, { method, headers, cache: 'no-store' });
  if (resp.status === 401) throw new Unauthorized('the API refused the token');
  const text = await resp.text();
  return { status: resp.status, text };
}

async function apiJson(path) {
  const r = await api('GET', path);
  if (r.status !== 200) throw new Error(`${path}: HTTP ${r.status}: ${r.text.slice(0, 200)}`);
  return JSON.parse(r.text);
}

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
}

function fillRows(tbody, rows, emptyHint) {
  tbody.replaceChildren(...rows);
  if (emptyHint) emptyHint.hidden = rows.length > 0;
}

function age(s) {
  if (s < 120) return `${s.toFixed(0)} s`;
  if (s < 7200) return `${(s / 60).toFixed(0)} min`;
  return `${(s / 3600).toFixed(1)} h`;
}

// ---- sections ---------------------------------------------------------------------------

function renderStatus(st) {
  $('#node').textContent = `node ${st.node_id} · identity ${st.identity} · boot ${st.boot} · v${st.version}`;
  const ready = $('#ready');
  ready.textContent = st.draining ? 'draining' : st.ready ? 'ready' : 'not ready';
  ready.className = 'badge ' + (st.ready && !st.draining ? 'ok' : 'bad');
  fillRows($('#participants tbody'), st.participants.map((p) => {
    const tr = el('tr');
    tr.dataset.name = p.name;
    tr.append(el('td', p.name), el('td', p.driver),
      el('td', p.state, 'state ' + (p.usable && p.state === 'ready' ? 'ok' : p.usable ? 'warn' : 'bad')),
      el('td', p.up ? 'up' : 'down', p.up ? 'ok' : 'bad'),
      el('td', p.safe ? 'safe' : 'UNSAFE', p.safe ? 'ok' : 'bad'),
      el('td', `${p.pool.busy} / ${p.pool.open} / ${p.pool.size}`, 'num'),
      el('td', p.pool.waiting, 'num'), el('td', p.pool.connect_failures, 'num'));
    return tr;
  }));
  const f = st.inflight;
  const total = f.working + f.deciding + f.committing + f.aborting;
  const t = st.transactions;
  $('#inflight tbody tr').replaceChildren(
    ...[f.working, f.deciding, f.committing, f.aborting, `${total} / ${st.max_inflight}`,
      t.committed, t.aborted, t.rejected].map((v) => el('td', v, 'num')));
}

function renderInDoubt(list) {
  fillRows($('#indoubt tbody'), list.branches.map((b) => {
    const tr = el('tr');
    tr.dataset.xid = b.xid;
    tr.dataset.participant = b.participant;
    const actions = el('td');
    for (const action of ['commit', 'rollback']) {
      const btn = el('button', action === 'commit' ? 'Commit' : 'Roll back', action);
      btn.type = 'button';
      btn.addEventListener('click', () => resolve(b, action));
      actions.append(btn, ' ');
    }
    tr.append(el('td', b.xid, 'xid'), el('td', b.participant), el('td', age(b.age_s), 'num'),
      el('td', b.decision, 'decision'), el('td', b.identity || ''), actions);
    return tr;
  }), $('#indoubt-empty'));
}

function renderHeuristics(h) {
  $('#heuristics-total').textContent = `(${h.total} since start)`;
  fillRows($('#heuristics tbody'), h.heuristics.map((e) => {
    const tr = el('tr');
    tr.append(el('td', e.time), el('td', e.xid, 'xid'), el('td', e.id), el('td', e.participant),
      el('td', e.decision), el('td', e.data_loss ? 'DATA LOSS' : 'no', e.data_loss ? 'bad' : ''),
      el('td', e.what));
    return tr;
  }), $('#heuristics-empty'));
}

async function resolve(branch, action) {
  const verb = action === 'commit' ? 'Commit' : 'Roll back';
  if (!window.confirm(`${verb} branch ${branch.xid} on ${branch.participant}?`)) return;
  const out = $('#action-result');
  const path = `/v1/in-doubt/${encodeURIComponent(branch.xid)}/${action}` +
    `?participant=${encodeURIComponent(branch.participant)}`;
  let r;
  try {
    r = await api('POST', path);
  } catch (e) {
    return showError(e);
  }
  let body = {};
  try { body = JSON.parse(r.text); } catch (e) { body = { error: r.text }; }
  out.hidden = false;
  const parts = Object.entries(body.participants || {}).map(([p, what]) => `${p}: ${what}`);
  if (r.status === 200) {
    out.className = 'done';
    out.textContent = `${verb} of ${branch.xid}: ${parts.join('; ')}`;
  } else {
    // 409: the journal forbids it; 502: a participant refused or failed its branch.
    out.className = 'refused';
    out.textContent = `${verb} of ${branch.xid} refused (HTTP ${r.status}): ${body.error || r.text}` +
      (parts.length ? ` (${parts.join('; ')})` : '');
  }
  poll();
}

// ---- throughput and latency from /metrics ----------------------------------------------

function parseMetrics(text) {
  const s = { t: Date.now(), committed: 0, aborted: 0, buckets: [] };
  for (const line of text.split('\n')) {
    let m = line.match(/^xacoord_transactions_total\{outcome="(committed|aborted)"\} (\d+)/);
    if (m) s[m[1]] = Number(m[2]);
    m = line.match(/^xacoord_transaction_duration_seconds_bucket\{le="([^"]+)"\} (\d+)/);
    if (m) s.buckets.push([m[1] === '+Inf' ? Infinity : Number(m[1]), Number(m[2])]);
  }
  return s;
}

// The q-quantile (ms) of the observations between two samples, from the cumulative buckets:
// the upper bound of the bucket where it falls, so it errs high, never low.
function quantile(a, b, q) {
  const n = b.buckets.length ? b.buckets[b.buckets.length - 1][1] - a.buckets[a.buckets.length - 1][1] : 0;
  if (n <= 0) return null;
  for (let i = 0; i < b.buckets.length; i++) {
    if (b.buckets[i][1] - a.buckets[i][1] >= q * n) {
      const le = b.buckets[i][0];
      return Number.isFinite(le) ? le * 1000 : b.buckets[i - 1][0] * 1000;
    }
  }
  return null;
}

function series() {
  const out = { committed: [], aborted: [], p50: [], p95: [] };
  for (let i = 1; i < samples.length; i++) {
    const a = samples[i - 1], b = samples[i], dt = (b.t - a.t) / 1000;
    out.committed.push([b.t, (b.committed - a.committed) / dt]);
    out.aborted.push([b.t, (b.aborted - a.aborted) / dt]);
    out.p50.push([b.t, quantile(a, b, 0.5)]);
    out.p95.push([b.t, quantile(a, b, 0.95)]);
  }
  return out;
}

// The x axis spans what the page has seen, at least a minute and at most HISTORY_MS.
function span() {
  const seen = samples.length ? Date.now() - samples[0].t : 0;
  return Math.min(HISTORY_MS, Math.max(60 * 1000, seen));
}

function draw(canvas, lines) {
  const ctx = canvas.getContext('2d'), w = canvas.width, h = canvas.height, pad = 30;
  const now = Date.now(), width = span();
  let max = 1;
  for (const l of lines) for (const [, v] of l.points) if (v !== null && v > max) max = v;
  ctx.clearRect(0, 0, w, h);
  ctx.strokeStyle = '#d5d9e0';
  ctx.fillStyle = '#667';
  ctx.font = '11px sans-serif';
  ctx.strokeRect(pad, 4, w - pad - 4, h - 20);
  ctx.fillText(max.toPrecision(3), 2, 14);
  ctx.fillText('0', 2, h - 16);
  ctx.fillText(width < 120000 ? `-${Math.round(width / 1000)} s` : `-${Math.round(width / 60000)} min`, pad, h - 3);
  ctx.fillText('now', w - 26, h - 3);
  for (const l of lines) {
    ctx.strokeStyle = l.color;
    ctx.beginPath();
    let started = false;
    for (const [t, v] of l.points) {
      if (v === null) { started = false; continue; }
      const x = pad + (w - pad - 4) * (1 - (now - t) / width);
      const y = 4 + (h - 20) * (1 - v / max);
      if (started) ctx.lineTo(x, y); else ctx.moveTo(x, y);
      started = true;
    }
    ctx.stroke();
  }
}

function renderCharts(metricsText) {
  samples.push(parseMetrics(metricsText));
  samples = samples.filter((s) => Date.now() - s.t <= HISTORY_MS);
  const s = series();
  draw($('#chart-rate'), [{ color: '#1f7a3a', points: s.committed }, { color: '#b3261e', points: s.aborted }]);
  draw($('#chart-latency'), [{ color: '#1f7a3a', points: s.p50 }, { color: '#a15c00', points: s.p95 }]);
  const last = (a) => (a.length ? a[a.length - 1][1] : null);
  const fmt = (v) => (v === null ? '-' : v.toFixed(1));
  $('#rate-now').textContent = `now ${fmt(last(s.committed))} / ${fmt(last(s.aborted))}`;
  $('#latency-now').textContent = `now ${fmt(last(s.p50))} / ${fmt(last(s.p95))}`;
}

// ---- polling and the token ------------------------------------------------------------

function showError(e) {
  if (e instanceof Unauthorized) {
    const typed = token() !== '';
    sessionStorage.removeItem(TOKEN_KEY);
    $('#main').hidden = true;
    $('#login').hidden = false;
    $('#login-error').textContent = typed ? e.message : '';
    clearTimeout(timer);
    return;
  }
  const banner = $('#error');
  banner.hidden = false;
  banner.textContent = `Cannot reach the coordinator: ${e.message}`;
}

async function poll() {
  clearTimeout(timer);
  try {
    const [st, indoubt, heur, metrics] = await Promise.all([
      apiJson('/v1/status'), apiJson('/v1/in-doubt'), apiJson('/v1/heuristics'),
      api('GET', '/metrics')]);
    renderStatus(st);
    renderInDoubt(indoubt);
    renderHeuristics(heur);
    if (metrics.status === 200) renderCharts(metrics.text);
    $('#error').hidden = true;
    $('#login').hidden = true;
    $('#main').hidden = false;
    $('#forget-token').hidden = token() === '';
    $('#updated').textContent = 'updated ' + new Date().toLocaleTimeString();
  } catch (e) {
    showError(e);
    if (e instanceof Unauthorized) return;
  }
  timer = setTimeout(poll, POLL_MS);
}

function start() {
  $('#login').addEventListener('submit', (ev) => {
    ev.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, $('#token').value.trim());
    $('#token').value = '';
    poll();
  });
  $('#forget-token').addEventListener('click', () => {
    sessionStorage.removeItem(TOKEN_KEY);
    location.reload();
  });
  poll();
}

document.addEventListener('DOMContentLoaded', start);
