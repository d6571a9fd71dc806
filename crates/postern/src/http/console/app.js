// Postern console: a small single-page app over the REST API (/api/v1). No framework, no
// build step, no network access beyond the gateway. Everything shown is built with DOM nodes
// and textContent, never innerHTML: statements and results are attacker-controlled text.
'use strict';

const MASKED = '[masked]';
const state = { me: null, csrf: null, cleanup: [] };

// ---------------------------------------------------------------------------------------------
// Helpers

class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

async function api(path, opts = {}) {
  const headers = { Accept: 'application/json' };
  const init = { method: opts.method || 'GET', headers, credentials: 'same-origin' };
  if (opts.body !== undefined) {
    headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(opts.body);
  }
  if (init.method !== 'GET' && state.csrf) headers['X-Postern-CSRF'] = state.csrf;
  const response = await fetch(path, init);
  let data = null;
  try { data = await response.json(); } catch (_) { /* not JSON */ }
  if (response.status === 401 && !opts.quiet) {
    state.me = null;
    if (location.hash !== '#/login') location.hash = '#/login';
  }
  if (!response.ok) throw new ApiError(response.status, (data && data.error) || response.statusText);
  return data;
}

// h('tag', {attr: value, onclick: fn}, child, ...): children are nodes or text.
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'class') el.className = v;
    else if (k === 'text') el.textContent = v;
    else el.setAttribute(k, v === true ? '' : v);
  }
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

function toast(message, isError) {
  const el = document.getElementById('toast');
  el.textContent = message;
  el.className = 'toast' + (isError ? ' error' : '');
  el.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { el.hidden = true; }, 6000);
}

function every(ms, fn) {
  let stopped = false;
  let timer = null;
  const tick = async () => {
    if (stopped) return;
    try { await fn(); } catch (e) { if (!(e instanceof ApiError && e.status === 401)) console.warn(e); }
    if (!stopped) timer = setTimeout(tick, ms);
  };
  tick();
  state.cleanup.push(() => { stopped = true; clearTimeout(timer); });
}

const fmtTime = (iso) => (iso ? iso.replace('T', ' ').replace(/\.\d+Z$|Z$/, ' UTC') : '');
function fmtBytes(n) {
  const units = ['B', 'KiB', 'MiB', 'GiB'];
  let v = n; let u = 0;
  while (v >= 1024 && u < units.length - 1) { v /= 1024; u += 1; }
  return u === 0 ? `${n} B` : `${v.toFixed(v < 10 ? 1 : 0)} ${units[u]}`;
}
function fmtOffset(us) { return `+${(us / 1e6).toFixed(3)}s`; }
function inWords(ms) {
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${s % 60}s`;
  return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m`;
}

// SQL syntax highlighting into spans (text only).
const KEYWORDS = new Set(('select from where and or not insert into values update set delete create ' +
  'alter drop table view index join left right inner outer full on as group by order having limit ' +
  'offset union all distinct case when then else end is null true false in exists between like ilike ' +
  'returning with begin commit rollback truncate grant revoke copy explain analyze asc desc cascade ' +
  'primary key references default do nothing conflict using lateral cross natural').split(' '));
function sql(text) {
  const pre = h('pre', { class: 'sql' });
  const re = /(--[^\n]*|\/\*[\s\S]*?(?:\*\/|$))|('(?:[^']|'')*'?)|("(?:[^"]|"")*"?)|(\$\d+)|(\b\d+(?:\.\d+)?\b)|([A-Za-z_][A-Za-z_0-9$]*)/g;
  let last = 0;
  for (const m of text.matchAll(re)) {
    if (m.index > last) pre.append(text.slice(last, m.index));
    const [tok, com, str, id, param, num, word] = m;
    let cls = null;
    if (com) cls = 'com';
    else if (str) cls = 'str';
    else if (id) cls = 'id';
    else if (param) cls = 'param';
    else if (num) cls = 'num';
    else if (word && KEYWORDS.has(word.toLowerCase())) cls = 'kw';
    pre.append(cls ? h('span', { class: cls }, tok) : tok);
    last = m.index + tok.length;
  }
  if (last < text.length) pre.append(text.slice(last));
  return pre;
}

function decisionChips(decisions) {
  const wrap = h('span', { class: 'chips' });
  for (const [kind, n] of Object.entries(decisions || {})) {
    wrap.append(h('span', { class: `badge d-${kind}` }, `${kind} ${n}`));
  }
  return wrap;
}

function verificationBadge(v) {
  const labels = { verified: 'Verified', open: 'Not sealed yet', failed: 'Verification failed',
    unverified: 'Not verified', not_recorded: 'Not recorded' };
  return h('span', { class: `badge ${v.status}`, 'data-testid': 'verification', 'data-status': v.status,
    title: v.message }, labels[v.status] || v.status);
}

// ---------------------------------------------------------------------------------------------
// Routing

const routes = [
  [/^#\/login$/, loginPage],
  [/^#\/sessions$/, sessionsPage],
  [/^#\/sessions\/([A-Za-z0-9._-]+)$/, sessionPage],
  [/^#\/approvals$/, approvalsPage],
  [/^#\/audit$/, auditPage],
];

async function render() {
  for (const stop of state.cleanup.splice(0)) stop();
  const hash = location.hash || '#/sessions';
  if (hash !== '#/login' && !state.me) {
    try {
      state.me = await api('/api/v1/me', { quiet: true });
      state.csrf = state.me.csrf_token;
    } catch (_) {
      location.hash = '#/login';
      return;
    }
  }
  const main = document.getElementById('main');
  main.replaceChildren();
  document.getElementById('top').hidden = !state.me || hash === '#/login';
  if (state.me) chrome();
  for (const [re, page] of routes) {
    const m = hash.match(re);
    if (m) {
      document.querySelectorAll('[data-nav]').forEach((a) => {
        if (hash.startsWith(`#/${a.dataset.nav}`)) a.setAttribute('aria-current', 'page');
        else a.removeAttribute('aria-current');
      });
      await page(main, ...m.slice(1));
      return;
    }
  }
  location.hash = '#/sessions';
}

function chrome() {
  const me = state.me;
  const roles = me.roles.length ? me.roles.join(', ') : 'no role';
  document.getElementById('who').textContent = `${me.subject} (${roles})`;
  document.getElementById('nav-audit').hidden = !(me.roles.includes('admin') || me.roles.includes('auditor'));
  every(5000, async () => {
    const list = await api('/api/v1/approvals?state=pending', { quiet: true });
    const n = list.approvals.filter((a) => a.can_decide).length;
    document.getElementById('pending-count').textContent = n ? String(n) : '';
  });
}

// ---------------------------------------------------------------------------------------------
// Login

function loginPage(main) {
  document.title = 'Log in · Postern';
  const error = h('p', { class: 'error', role: 'alert', id: 'login-error' });
  const token = h('textarea', { id: 'token', name: 'token', rows: 5, required: true, autocomplete: 'off',
    spellcheck: 'false', 'aria-describedby': 'token-help' });
  const form = h('form', { class: 'card', onsubmit: async (ev) => {
    ev.preventDefault();
    error.textContent = '';
    try {
      state.me = await api('/api/v1/login', { method: 'POST', body: { token: token.value.trim() }, quiet: true });
      state.csrf = state.me.csrf_token;
      location.hash = '#/sessions';
    } catch (e) {
      error.textContent = `Login refused: ${e.message}`;
      token.focus();
    }
  } },
  h('label', { for: 'token' }, 'Gateway token'),
  token,
  h('p', { id: 'token-help', class: 'muted' },
    'Paste a token from ', h('code', {}, 'postern token issue --subject NAME --group G'),
    ' (or an OIDC token of a configured provider). It is kept in an HttpOnly cookie for this browser session.'),
  h('button', { type: 'submit' }, 'Log in'),
  error);
  const sso = h('p', { hidden: true });
  main.append(h('div', { class: 'login' }, h('h1', {}, 'Postern console'), sso, form));
  token.focus();
  api('/api/v1/oidc', { quiet: true }).then((oidc) => {
    if (!oidc.enabled) return;
    sso.replaceChildren(h('a', { class: 'button', href: '/api/v1/oidc/login', 'data-testid': 'sso' },
      `Log in with ${oidc.issuer}`), h('span', { class: 'muted' }, ' or paste a token:'));
    sso.hidden = false;
  }).catch(() => {});
}

// ---------------------------------------------------------------------------------------------
// Sessions

function sessionsPage(main) {
  document.title = 'Sessions · Postern';
  const field = (id, label, input) => h('div', {}, h('label', { for: id }, label), input);
  const params = new URLSearchParams(sessionStorage.getItem('sessionFilters') || '');
  const identity = h('input', { id: 'f-identity', name: 'identity', value: params.get('identity') || '' });
  const target = h('input', { id: 'f-target', name: 'target', value: params.get('target') || '' });
  const select = (id, name, options) => {
    const s = h('select', { id, name }, options.map(([v, t]) => h('option', { value: v }, t)));
    s.value = params.get(name) || '';
    return s;
  };
  const kind = select('f-kind', 'kind', [['', 'any'], ['human', 'human'], ['agent', 'agent'], ['service', 'service']]);
  const since = select('f-since', 'since', [['', 'any time'], ['1h', 'last hour'], ['24h', 'last day'], ['7days', 'last week']]);
  const decision = select('f-decision', 'decision', [['', 'any'], ['block', 'blocked'], ['approve', 'held for approval'],
    ['approved', 'approved'], ['denied', 'denied'], ['expired', 'expired'], ['allow', 'allowed']]);
  const live = h('input', { type: 'checkbox', id: 'f-live', name: 'live' });
  live.checked = params.get('live') === 'true';
  const form = h('form', { class: 'filters', role: 'search', 'aria-label': 'Filter sessions', onsubmit: (ev) => { ev.preventDefault(); load(); } },
    field('f-identity', 'Identity', identity), field('f-kind', 'Kind', kind), field('f-target', 'Target', target),
    field('f-since', 'Started', since), field('f-decision', 'Decision', decision),
    h('div', { class: 'check' }, live, h('label', { for: 'f-live' }, 'Live only')),
    h('button', { type: 'submit' }, 'Filter'));
  const body = h('tbody', {});
  const status = h('p', { class: 'muted', role: 'status' });
  main.append(h('h1', {}, 'Sessions'), form,
    h('table', { 'aria-label': 'Sessions', 'data-testid': 'sessions' },
      h('thead', {}, h('tr', {}, ['Started', 'Identity', 'Target', 'Status', 'Decisions', 'Bytes in / out', 'Ended because']
        .map((t) => h('th', { scope: 'col' }, t)))),
      body),
    status);
  const query = () => {
    const q = new URLSearchParams();
    for (const el of [identity, target, kind, since, decision]) if (el.value) q.set(el.name, el.value);
    if (live.checked) q.set('live', 'true');
    sessionStorage.setItem('sessionFilters', q.toString());
    return q.toString();
  };
  async function load() {
    const list = await api(`/api/v1/sessions?${query()}`);
    body.replaceChildren(...list.sessions.map((s) => h('tr', { 'data-testid': 'session-row', 'data-session-id': s.id, 'data-subject': s.subject, 'data-live': String(s.live) },
      h('td', { class: 'nowrap' }, h('a', { href: `#/sessions/${s.id}`, 'aria-label': `Session ${s.id} of ${s.subject}` }, fmtTime(s.started_at))),
      h('td', {}, s.subject, ' ', h('span', { class: 'muted' }, `(${s.kind})`)),
      h('td', {}, s.target),
      h('td', {}, s.live ? h('span', { class: 'badge live' }, 'Live') : s.open ? h('span', { class: 'badge open' }, 'Open') : h('span', { class: 'badge ended' }, 'Ended')),
      h('td', {}, decisionChips(s.decisions)),
      h('td', { class: 'num nowrap' }, `${fmtBytes(s.bytes_in)} / ${fmtBytes(s.bytes_out)}`),
      h('td', { class: 'wrap' }, s.close_reason || ''))));
    status.textContent = list.sessions.length ? `${list.sessions.length} session(s)` : 'No sessions match.';
  }
  every(3000, load);
}

// ---------------------------------------------------------------------------------------------
// One session: the replay

async function sessionPage(main, id) {
  document.title = `Session ${id.slice(0, 13)} · Postern`;
  let session;
  try {
    session = await api(`/api/v1/sessions/${id}`);
  } catch (e) {
    main.append(h('h1', {}, 'Session'), h('p', { class: 'error', role: 'alert' }, e.message));
    return;
  }
  const badges = h('span', { class: 'chips', id: 'badges' });
  const meta = h('dl', { class: 'meta' });
  const header = h('section', { class: 'card', 'aria-labelledby': 'session-h' },
    h('h1', { id: 'session-h' }, 'Session ', h('span', { class: 'mono' }, id), ' ', badges), meta);
  main.append(h('p', {}, h('a', { href: '#/sessions' }, '← Sessions')), header);

  function showHeader(s) {
    badges.replaceChildren(
      s.live ? h('span', { class: 'badge live', 'data-testid': 'live' }, 'Live') : h('span', { class: 'badge ended' }, s.open ? 'Open' : 'Ended'),
      verificationBadge(s.verification));
    const rows = [['Identity', `${s.subject} (${s.kind})${s.groups.length ? ' · groups ' + s.groups.join(', ') : ''}`],
      ['Target', s.target], ['Client', s.client_addr || ''], ['Started', fmtTime(s.started_at)],
      ['Ended', s.ended_at ? `${fmtTime(s.ended_at)} — ${s.close_reason || ''}` : '—'],
      ['Traffic', `${fmtBytes(s.bytes_in)} in, ${fmtBytes(s.bytes_out)} out`],
      ['Recording', s.verification.message]];
    meta.replaceChildren(...rows.flatMap(([k, v]) => [h('dt', {}, k), h('dd', {}, v)]));
    if (s.approvals.length) {
      meta.append(h('dt', {}, 'Approvals'), h('dd', {}, s.approvals.map((a, i) => [i ? ', ' : '', h('a', { href: '#/approvals' }, a)])));
    }
  }
  showHeader(session);

  // An admin can end a live session.
  if (session.live && state.me.roles.includes('admin')) {
    const reason = h('input', { id: 'terminate-reason', name: 'reason', placeholder: 'why (shown to the client)', size: 40 });
    const form = h('form', { class: 'card', 'aria-label': 'Terminate session', onsubmit: async (ev) => {
      ev.preventDefault();
      try {
        await api(`/api/v1/sessions/${id}/terminate`, { method: 'POST', body: { reason: reason.value } });
        toast('Session terminated: the client was told who ended it.');
        form.remove();
      } catch (e) { toast(`Not terminated: ${e.message}`, true); }
    } },
    h('label', { for: 'terminate-reason' }, 'Terminate this live session'), ' ', reason, ' ',
    h('button', { type: 'submit', class: 'danger', 'data-testid': 'terminate' }, 'Terminate session'));
    main.append(form);
  }

  // Play / step controls over the timeline.
  const position = h('span', { class: 'muted', role: 'status', 'data-testid': 'position' });
  const speed = h('select', { id: 'speed', 'aria-label': 'Playback speed' },
    [['1', '1×'], ['2', '2×'], ['10', '10×']].map(([v, t]) => h('option', { value: v }, t)));
  const timeline = h('ol', { class: 'timeline', 'aria-label': 'Timeline', 'data-testid': 'timeline' });
  const player = { entries: [], cursor: 0, timer: null };
  const showUpTo = (n) => {
    player.cursor = n;
    player.entries.forEach((e, i) => { e.el.hidden = i >= n; });
    position.textContent = `${n} of ${player.entries.length} events shown`;
  };
  const pause = () => { clearTimeout(player.timer); player.timer = null; };
  const play = () => {
    pause();
    if (player.cursor >= player.entries.length) showUpTo(0);
    const next = () => {
      if (player.cursor >= player.entries.length) { pause(); return; }
      showUpTo(player.cursor + 1);
      const cur = player.entries[player.cursor - 1];
      cur.el.scrollIntoView({ block: 'nearest' });
      const following = player.entries[player.cursor];
      if (!following) { pause(); return; }
      const gap = Math.min(3000, (following.offset - cur.offset) / 1000 / Number(speed.value));
      player.timer = setTimeout(next, Math.max(0, gap));
    };
    next();
  };
  const step = () => {
    pause();
    if (player.cursor >= player.entries.length) showUpTo(0);
    showUpTo(player.cursor + 1);
    const cur = player.entries[player.cursor - 1];
    if (cur) { cur.el.scrollIntoView({ block: 'nearest' }); }
  };
  main.append(h('h2', {}, 'Timeline'),
    h('div', { class: 'toolbar', role: 'toolbar', 'aria-label': 'Replay controls' },
      h('button', { type: 'button', onclick: play, 'data-testid': 'play' }, '▶ Play'),
      h('button', { type: 'button', class: 'secondary', onclick: pause }, '❚❚ Pause'),
      h('button', { type: 'button', class: 'secondary', onclick: step, 'data-testid': 'step' }, 'Step ›'),
      h('button', { type: 'button', class: 'secondary', onclick: () => { pause(); showUpTo(player.entries.length); } }, 'Show all'),
      speed, position),
    timeline);
  state.cleanup.push(pause);

  // The renderer keeps the current result table and the latest decision's masked columns.
  const ctx = { table: null, columns: [], masked: new Set(), shownRows: 0, lastStart: null };
  const add = (ev, kind, cls, ...content) => {
    const li = h('li', { class: cls || '', 'data-type': ev.type, 'data-seq': ev.seq },
      h('span', { class: 't' }, fmtOffset(ev.offset_us)), h('span', { class: 'k' }, kind), h('div', {}, ...content));
    timeline.append(li);
    const following = player.cursor >= player.entries.length;
    player.entries.push({ offset: ev.offset_us, el: li });
    if (following) showUpTo(player.entries.length); else li.hidden = true;
    return li;
  };
  function renderEvent(ev) {
    switch (ev.type) {
      case 'session_start':
        ctx.lastStart = ev;
        add(ev, 'start', '', `${ev.subject} (${ev.identity_kind}) → ${ev.target} from ${ev.client_addr || '?'} via ${ev.node}`);
        break;
      case 'command': {
        ctx.table = null;
        const parts = [];
        if (ev.text) parts.push(sql(ev.text));
        else parts.push(h('span', { class: 'mono' }, [ev.statement && `statement ${ev.statement || '(unnamed)'}`, ev.portal && `portal ${ev.portal}`].filter(Boolean).join(' ') || ev.kind));
        if (ev.params && ev.params.length) parts.push(h('div', { class: 'muted mono' }, 'params: ' + ev.params.map((p, i) => `$${i + 1}=${p === null ? 'NULL' : typeof p === 'string' ? `'${p}'` : '(bytes)'}`).join(', ')));
        if (ev.causal_id) {
          parts.push(h('div', {}, 'Caused by ', h('button', { type: 'button', class: 'link', 'data-testid': 'causal-link', onclick: () => {
            const target = document.getElementById(`intent-${ev.causal_id}`);
            if (target) { target.hidden = false; target.scrollIntoView({ block: 'center' }); target.classList.add('flash'); target.focus(); }
          } }, `tool call ${ev.causal_id}`)));
        }
        add(ev, ev.kind, 'e-command', ...parts);
        break;
      }
      case 'decision': {
        ctx.masked = new Set(ev.masked || []);
        const words = { allow: 'allowed', block: 'blocked', approve: 'held for approval', approved: 'approved',
          denied: 'denied', expired: 'expired waiting for approval', pending: 'pending approval' };
        add(ev, 'decision', '', h('span', { class: `badge d-${ev.decision}` }, words[ev.decision] || ev.decision),
          ev.rule ? ` rule “${ev.rule}”` : '', ev.reason ? ` — ${ev.reason}` : '', ev.approval_id ? ` (${ev.approval_id})` : '',
          ev.masked && ev.masked.length ? h('span', { class: 'muted' }, ` · masked: ${ev.masked.join(', ')}`) : '');
        break;
      }
      case 'row_description': {
        ctx.columns = ev.columns.map((c) => c.name);
        ctx.shownRows = 0;
        const table = h('table', {}, h('thead', {}, h('tr', {}, ctx.columns.map((c) => h('th', { scope: 'col' }, c)))), h('tbody', {}));
        ctx.table = table;
        add(ev, 'result', '', h('div', { class: 'result' }, table));
        break;
      }
      case 'rows': {
        if (!ctx.table) break;
        const tbody = ctx.table.tBodies[0];
        for (const row of ev.rows) {
          ctx.shownRows += 1;
          if (ctx.shownRows > 200) continue;
          tbody.append(h('tr', {}, row.map((v, i) => {
            const masked = v === MASKED || ctx.masked.has(ctx.columns[i]);
            if (v === null) return h('td', { class: 'null' }, 'NULL');
            const text = typeof v === 'string' ? v : '(bytes)';
            return h('td', masked ? { class: 'masked', 'data-testid': 'masked-cell', title: 'masked by policy', 'aria-label': `masked: ${text}` } : {}, text);
          })));
        }
        break;
      }
      case 'command_complete':
        if (ctx.table && ctx.shownRows > 200) ctx.table.after(h('p', { class: 'muted' }, `${ctx.shownRows - 200} more row(s) not shown`));
        add(ev, 'done', '', h('code', {}, ev.tag));
        ctx.table = null;
        break;
      case 'error':
      case 'notice':
        add(ev, ev.type, ev.type === 'error' ? 'e-error' : '', `${ev.severity || ev.type}${ev.code ? ' ' + ev.code : ''}: ${ev.message}`,
          ev.detail ? h('div', { class: 'muted' }, `DETAIL: ${ev.detail}`) : '', ev.hint ? h('div', { class: 'muted' }, `HINT: ${ev.hint}`) : '');
        break;
      case 'intent': {
        let text = ev.text;
        try { text = JSON.stringify(JSON.parse(ev.text), null, 2); } catch (_) { /* plain text */ }
        const li = add(ev, 'intent', 'e-intent', h('div', { class: 'muted' }, `tool call ${ev.causal_id}`), h('pre', {}, text));
        li.id = `intent-${ev.causal_id}`;
        li.tabIndex = -1;
        break;
      }
      case 'session_end':
        add(ev, 'end', '', ev.reason);
        break;
      case 'results_truncated':
        add(ev, 'capped', '', `results capped (${ev.reason}): ${ev.omitted_rows} more row(s) not recorded`);
        break;
      case 'gap':
        add(ev, 'GAP', 'e-error', `${ev.lost_events} event(s) not recorded: ${ev.reason}`);
        break;
      case 'copy_data':
        break;
      default:
        add(ev, ev.type, '', '');
    }
  }

  // Load the timeline page by page; while the session is live, follow it.
  let after = null;
  let ended = false;
  async function more() {
    for (;;) {
      const q = new URLSearchParams({ limit: '1000' });
      if (after !== null) q.set('after', String(after));
      const page = await api(`/api/v1/sessions/${id}/events?${q}`);
      page.events.forEach(renderEvent);
      if (page.next_after !== null && page.next_after !== undefined) after = page.next_after;
      if (page.damaged) add({ type: 'damage', seq: -1, offset_us: 0 }, 'DAMAGED', 'e-error', page.damaged);
      if (page.ended) ended = true;
      if (!page.more) return;
    }
  }
  await more();
  if (!ended) {
    every(1000, async () => {
      if (ended) return;
      await more();
      if (ended) {
        const s = await api(`/api/v1/sessions/${id}`);
        showHeader(s);
        document.querySelector('form[aria-label="Terminate session"]')?.remove();
      }
    });
  }
}

// ---------------------------------------------------------------------------------------------
// Approvals

function approvalsPage(main) {
  document.title = 'Approvals · Postern';
  const queue = h('div', { id: 'queue', 'aria-live': 'polite', 'data-testid': 'queue' });
  const empty = h('p', { class: 'empty' }, 'Nothing is waiting for a decision.');
  const recent = h('tbody', {});
  main.append(h('h1', {}, 'Approvals'),
    h('section', { 'aria-labelledby': 'pending-h' }, h('h2', { id: 'pending-h' }, 'Waiting for a decision'), queue, empty),
    h('section', { 'aria-labelledby': 'recent-h' }, h('h2', { id: 'recent-h' }, 'Recent decisions'),
      h('table', { 'aria-label': 'Recent decisions' }, h('thead', {}, h('tr', {},
        ['Approval', 'State', 'Requested by', 'Rule', 'Statement', 'Decided by', 'Reason / window'].map((t) => h('th', { scope: 'col' }, t)))), recent)));

  const cards = new Map();
  function card(a) {
    const decide = async (verb, body) => {
      buttons.forEach((b) => { b.disabled = true; });
      try {
        const done = await api(`/api/v1/approvals/${a.id}/${verb}`, { method: 'POST', body });
        toast(`${a.id} ${done.state}${done.window_until ? ' until ' + fmtTime(done.window_until) : ''}.`);
        refresh();
      } catch (e) {
        toast(`Not decided: ${e.message}`, true);
        buttons.forEach((b) => { b.disabled = false; });
      }
    };
    const windowSel = h('select', { id: `window-${a.id}`, name: 'window' },
      [['15m', '15 minutes'], ['1h', '1 hour'], ['4h', '4 hours'], ['1day', '1 day']].map(([v, t]) => h('option', { value: v }, t)));
    const reason = h('input', { id: `reason-${a.id}`, name: 'reason', size: 32, placeholder: 'shown to the requester' });
    const buttons = [
      h('button', { type: 'button', class: 'ok', 'data-testid': 'approve', onclick: () => decide('approve', {}) }, 'Approve once'),
      h('button', { type: 'button', class: 'secondary', 'data-testid': 'approve-window', onclick: () => decide('approve', { window: windowSel.value }) }, 'Approve for window'),
      h('button', { type: 'button', class: 'danger', 'data-testid': 'deny', onclick: () => decide('deny', { reason: reason.value }) }, 'Deny'),
    ];
    const expires = h('span', { class: 'muted' });
    const actions = a.can_decide
      ? h('div', { class: 'actions' }, buttons[0],
        h('div', {}, h('label', { for: `window-${a.id}` }, 'Window'), h('span', {}, windowSel, ' ', buttons[1])),
        h('div', {}, h('label', { for: `reason-${a.id}` }, 'Reason'), h('span', {}, reason, ' ', buttons[2])))
      : h('p', { class: 'muted', 'data-testid': 'cannot-decide' },
        a.subject === state.me.subject
          ? 'You asked for this one: someone else decides it.'
          : `Only members of ${a.approvers.join(', ') || '(nobody)'} may decide this; you are not one of them.`);
    const el = h('article', { class: 'card approval', 'data-testid': 'approval', 'data-approval-id': a.id, 'aria-labelledby': `h-${a.id}` },
      h('header', {}, h('h3', { id: `h-${a.id}` }, a.id), h('span', { class: 'badge d-approve' }, `rule ${a.rule}`), expires),
      sql(a.statement),
      h('dl', { class: 'meta' },
        h('dt', {}, 'Requested by'), h('dd', {}, `${a.subject} (${a.kind})${a.groups.length ? ' · groups ' + a.groups.join(', ') : ''}`),
        h('dt', {}, 'Target'), h('dd', {}, a.target),
        h('dt', {}, 'Session'), h('dd', {}, h('a', { href: `#/sessions/${a.session_id}` }, a.session_id)),
        h('dt', {}, 'Requested'), h('dd', {}, fmtTime(a.requested_at)),
        h('dt', {}, 'Approvers'), h('dd', {}, a.approvers.join(', '))),
      actions);
    el.tick = () => { expires.textContent = `expires in ${inWords(Date.parse(a.expires_at) - Date.now())}`; };
    el.tick();
    return el;
  }
  async function refresh() {
    const pending = (await api('/api/v1/approvals?state=pending')).approvals;
    const ids = new Set(pending.map((a) => a.id));
    for (const [id, el] of cards) if (!ids.has(id)) { el.remove(); cards.delete(id); }
    // Oldest first: the one that expires soonest is on top.
    for (const a of pending.slice().reverse()) {
      if (!cards.has(a.id)) { const el = card(a); cards.set(a.id, el); queue.append(el); }
      cards.get(a.id).tick();
    }
    empty.hidden = cards.size > 0;
    const decided = (await api('/api/v1/approvals?limit=20')).approvals.filter((a) => a.state !== 'pending');
    recent.replaceChildren(...decided.map((a) => h('tr', { 'data-approval-id': a.id },
      h('td', { class: 'mono' }, a.id), h('td', {}, h('span', { class: `badge d-${a.state}` }, a.state)),
      h('td', {}, a.subject), h('td', {}, a.rule), h('td', {}, h('code', {}, a.statement.length > 80 ? a.statement.slice(0, 79) + '…' : a.statement)),
      h('td', {}, a.decided_by || ''), h('td', {}, a.reason || (a.window_until ? `window until ${fmtTime(a.window_until)}` : '')))));
  }
  every(1500, refresh);
}

// ---------------------------------------------------------------------------------------------
// Audit log

function auditPage(main) {
  document.title = 'Audit log · Postern';
  const kinds = ['', 'session_opened', 'session_closed', 'auth_failed', 'access_denied', 'upstream_failed', 'approval_requested', 'approval_decided'];
  const kind = h('select', { id: 'a-kind', name: 'kind' }, kinds.map((k) => h('option', { value: k }, k || 'any')));
  const subject = h('input', { id: 'a-subject', name: 'subject' });
  const session = h('input', { id: 'a-session', name: 'session', size: 38 });
  const body = h('tbody', {});
  const status = h('p', { role: 'status', class: 'muted' });
  main.append(h('h1', {}, 'Audit log'),
    h('form', { class: 'filters', role: 'search', 'aria-label': 'Filter audit events', onsubmit: (ev) => { ev.preventDefault(); load(); } },
      h('div', {}, h('label', { for: 'a-kind' }, 'Kind'), kind), h('div', {}, h('label', { for: 'a-subject' }, 'Subject'), subject),
      h('div', {}, h('label', { for: 'a-session' }, 'Session'), session), h('button', { type: 'submit' }, 'Filter')),
    h('table', { 'aria-label': 'Audit events', 'data-testid': 'audit' }, h('thead', {}, h('tr', {},
      ['Time', 'Kind', 'Subject', 'Target', 'Session', 'Client', 'Detail'].map((t) => h('th', { scope: 'col' }, t)))), body), status);
  async function load() {
    const q = new URLSearchParams({ limit: '200' });
    if (kind.value) q.set('kind', kind.value);
    if (subject.value) q.set('subject', subject.value);
    if (session.value) q.set('session', session.value);
    try {
      const list = await api(`/api/v1/audit?${q}`);
      body.replaceChildren(...list.events.map((e) => h('tr', {},
        h('td', { class: 'mono nowrap' }, fmtTime(e.at)), h('td', {}, e.kind), h('td', {}, e.subject || ''), h('td', {}, e.target || ''),
        h('td', { class: 'nowrap' }, e.session_id ? h('a', { href: `#/sessions/${e.session_id}`, class: 'mono' }, e.session_id.slice(0, 13) + '…') : ''),
        h('td', { class: 'mono' }, e.client_addr || ''), h('td', { class: 'wrap' }, e.detail || ''))));
      status.textContent = `${list.events.length} event(s)`;
    } catch (e) {
      status.textContent = e.status === 403 ? 'The audit log is for the admin and auditor roles.' : e.message;
    }
  }
  every(5000, load);
}

// ---------------------------------------------------------------------------------------------

document.getElementById('logout').addEventListener('click', async () => {
  await api('/api/v1/logout', { method: 'POST', quiet: true }).catch(() => {});
  state.me = null;
  state.csrf = null;
  location.hash = '#/login';
});
window.addEventListener('hashchange', render);
render();
