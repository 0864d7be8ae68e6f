// The approval console page. Plain browser JavaScript, no build step, loaded as a module (no inline
// script, so the CSP can forbid it). Everything from the server that came from users or agents —
// arguments, evidence, reasons, ids — is untrusted: the DOM is built with textContent only.
/* global document, window, fetch, setTimeout, clearTimeout */

const POLL_MS = 2000;
const $ = (id) => document.getElementById(id);

const state = {
  csrf: '',
  principal: null,
  view: 'pending',
  timer: undefined,
  /** Follows the outcome of the last decision for the confirmation banner. */
  followTimer: undefined,
  /** Server clock minus ours, so ages and expiries do not depend on the approver's clock. */
  skewMs: 0,
  /** id → { el, key, refresh(approval) } so a poll never wipes a reason being typed. */
  cards: new Map(),
  /** Pages of the view loaded ("Show more" adds one); each poll reloads that many. */
  pages: 1,
  /** Pending ids already shown, so only new ones are announced; undefined until the first load. */
  known: undefined,
};

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === 'text') node.textContent = value;
    else if (key === 'class') node.className = value;
    else node.setAttribute(key, value);
  }
  for (const child of children) if (child) node.append(child);
  return node;
}

/**
 * `poll`: a background request (the list poll, following a decision). It is marked so the server
 * does not count it as activity: an unattended tab reaches the idle timeout and signs out.
 */
async function api(method, path, body, poll = false) {
  const headers = { Accept: 'application/json' };
  if (poll) headers['X-Console-Poll'] = '1';
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  if (method !== 'GET' && state.csrf) headers['X-CSRF-Token'] = state.csrf;
  const res = await fetch(path, {
    method,
    headers,
    credentials: 'same-origin',
    ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
  });
  // Error pages from a proxy may not be JSON; the caller falls back to the status.
  const data = await res.json().catch(() => ({}));
  return { status: res.status, ok: res.ok, data };
}

// ---------- time ----------

function duration(ms) {
  const s = Math.round(Math.abs(ms) / 1000);
  if (s < 90) return `${s}s`;
  if (s < 90 * 60) return `${Math.round(s / 60)}m`;
  if (s < 36 * 3600) return `${Math.round(s / 3600)}h`;
  return `${Math.round(s / 86400)}d`;
}

const serverNow = () => Date.now() + state.skewMs;
const age = (iso) => `${duration(serverNow() - Date.parse(iso))} ago`;
function expiry(iso) {
  const left = Date.parse(iso) - serverNow();
  return left > 0 ? `in ${duration(left)}` : `${duration(left)} ago`;
}
const stamp = (iso) => new Date(iso).toLocaleString();

// ---------- rendering untrusted values ----------

function scalar(value) {
  if (value === null || value === undefined) return '—';
  if (typeof value === 'string') return value;
  return JSON.stringify(value);
}

/** Nested objects as definition lists, arrays as lists; depth-limited, then JSON. Text only. */
function renderValue(value, depth = 0) {
  if (value === null || typeof value !== 'object') return el('span', { text: scalar(value) });
  if (depth > 3) return el('code', { text: JSON.stringify(value) });
  if (Array.isArray(value)) {
    if (value.length === 0) return el('span', { class: 'muted', text: 'none' });
    if (value.every((v) => v === null || typeof v !== 'object'))
      return el('span', { text: value.map(scalar).join(', ') });
    return el('ul', { class: 'plain' }, ...value.map((v) => el('li', {}, renderValue(v, depth + 1))));
  }
  const entries = Object.entries(value);
  if (entries.length === 0) return el('span', { class: 'muted', text: 'none' });
  const dl = el('dl', { class: 'kv' });
  for (const [key, v] of entries) dl.append(el('dt', { text: key }), el('dd', {}, renderValue(v, depth + 1)));
  return dl;
}

const asObject = (v) => (v && typeof v === 'object' && !Array.isArray(v) ? v : undefined);

/**
 * The things an approver looks at first, for the abuse type the call acts on: score and band,
 * reasons, the decision and label in force, and for suppressions whether marketing is already off.
 * (`highest_score` / `latest_decisions`: approvals recorded before evidence was per abuse type.)
 */
function evidenceSummary(evidence) {
  const items = [];
  const score = asObject(evidence.score) ?? asObject(evidence.highest_score);
  const type = evidence.abuse_type ?? score?.abuse_type;
  if (score) {
    const value = score.sift_score ?? score.score;
    const parts = [
      value !== undefined ? `score ${scalar(value)}` : '',
      scalar(score.risk_band ?? ''),
      scalar(type ?? ''),
    ];
    items.push(['Score', parts.filter((p) => p && p !== '—').join(' · ')]);
    if (Array.isArray(score.reasons)) {
      const names = score.reasons.map((r) =>
        asObject(r) ? `${scalar(r.name)}${r.value !== undefined ? ` (${scalar(r.value)})` : ''}` : scalar(r),
      );
      items.push(['Reasons', names.length ? names.join('; ') : 'none given']);
    }
  } else if ('score' in evidence) {
    items.push(['Score', `no ${type ? `${scalar(type)} ` : ''}score in Sift`]);
  }
  if ('current_decision' in evidence || Array.isArray(evidence.latest_decisions)) {
    const current =
      'current_decision' in evidence
        ? asObject(evidence.current_decision)
        : evidence.latest_decisions.map(asObject).filter(Boolean)[0];
    items.push([
      'Current decision',
      current
        ? [current.category, current.decision_id, current.decided ? `since ${current.decided}` : '']
            .filter(Boolean)
            .map(scalar)
            .join(' · ')
        : 'none',
    ]);
  }
  if ('current_label' in evidence) {
    const label = asObject(evidence.current_label);
    items.push([
      'Current label',
      label
        ? `${label.is_bad ? 'bad' : 'not bad'}${label.labelled ? ` · since ${scalar(label.labelled)}` : ''}`
        : 'none',
    ]);
  }
  if (typeof evidence.currently_suppressed === 'boolean') {
    items.push(['Marketing', evidence.currently_suppressed ? 'already suppressed' : 'not suppressed']);
  }
  if (typeof evidence.system === 'string') items.push(['System', evidence.system]);
  if (typeof evidence.unavailable === 'string') items.push(['Unavailable', evidence.unavailable]);
  if (typeof evidence.requester_identity === 'string')
    items.push(['Requester identity', evidence.requester_identity]);
  if (items.length === 0) return undefined;
  const dl = el('dl', { class: 'kv summary' });
  for (const [k, v] of items) dl.append(el('dt', { text: k }), el('dd', { text: v }));
  return dl;
}

function field(label, ...content) {
  return el(
    'div',
    { class: 'field' },
    el('div', { class: 'label', text: label }),
    el('div', { class: 'value' }, ...content),
  );
}

// ---------- cards ----------

/** Pending: when it was asked for and when it expires. Decided: when it was asked for and decided, no expiry. */
function timesText(a) {
  const created = `created ${age(a.created_at)} (${stamp(a.created_at)})`;
  if (a.state === 'pending') return `${created} · expires ${expiry(a.expires_at)} (${stamp(a.expires_at)})`;
  if (!a.decided_at) return created;
  const how = a.state === 'expired' || a.state === 'superseded' ? a.state : 'decided';
  return `${created} · ${how} ${age(a.decided_at)} (${stamp(a.decided_at)})`;
}

function outcomeText(a) {
  const parts = [];
  if (a.decided_by) parts.push(`${a.state === 'denied' ? 'denied' : 'approved'} by ${a.decided_by}`);
  if (a.decided_at) parts.push(stamp(a.decided_at));
  if (a.reason) parts.push(`reason: ${a.reason}`);
  if (a.state === 'expired' && !a.decided_by) parts.push('expired without a decision');
  if (a.error) parts.push(`error: ${a.error.code}: ${a.error.message}`);
  return parts.join(' · ');
}

function buildCard(a) {
  const times = el('span', { class: 'muted', text: timesText(a) });
  const card = el(
    'li',
    { class: `card state-${a.state}`, 'data-approval-id': a.id, 'data-state': a.state },
    el(
      'div',
      { class: 'card-head' },
      el('span', { class: 'tool', text: a.tool }),
      el('span', { class: `badge mode`, text: a.mode }),
      el('span', { class: `badge state`, text: a.state }),
      el('span', { class: 'id muted', text: a.id }),
    ),
    ...(typeof a.evidence?.effect === 'string'
      ? [field('If approved', el('p', { class: 'effect', text: a.evidence.effect }))]
      : []),
    field('Target', el('span', { text: a.target })),
    field('Requester', el('span', { class: 'identity', text: a.requester })),
    field('Who may approve', el('span', { text: a.approver_rule ?? '' })),
    field('Arguments', el('pre', { class: 'args', text: JSON.stringify(a.args, null, 2) })),
    field(
      'Evidence',
      evidenceSummary(a.evidence) ?? el('span'),
      el('details', {}, el('summary', { text: 'Full evidence snapshot' }), renderValue(a.evidence)),
    ),
    field('Age', times),
  );

  if (a.state !== 'pending') {
    const outcome = outcomeText(a);
    if (outcome) card.append(field('Outcome', el('span', { class: 'outcome', text: outcome })));
    if (a.result !== undefined)
      card.append(field('Result', el('pre', { class: 'args', text: JSON.stringify(a.result, null, 2) })));
    if (a.undo_until) card.append(undoActions(a));
    return { el: card, key: `${a.id}:${a.state}`, refresh: (b) => (times.textContent = timesText(b)) };
  }

  const reasonId = `reason-${a.id}`;
  const reason = el('textarea', {
    id: reasonId,
    rows: '2',
    maxlength: '1000',
    placeholder: 'Reason (required to deny)',
  });
  const approve = el('button', { type: 'button', class: 'approve', text: 'Approve' });
  const deny = el('button', { type: 'button', class: 'deny', text: 'Deny' });
  const note = el('p', { class: 'note' });
  const message = el('p', { class: 'error', role: 'alert' });
  if (a.approve_blocked) {
    approve.disabled = true;
    approve.title = a.approve_blocked;
    approve.textContent = 'Approve (not allowed: you requested it)';
    note.textContent = a.approve_blocked;
  }
  const decide = async (verb) => {
    message.textContent = '';
    const text = reason.value.trim();
    if (verb === 'deny' && !text) {
      message.textContent = 'Give a reason to deny.';
      reason.focus();
      return;
    }
    approve.disabled = deny.disabled = true;
    const res = await api(
      'POST',
      `/console/api/approvals/${encodeURIComponent(a.id)}/${verb}`,
      text ? { reason: text } : {},
    );
    if (res.status === 401) return showSignIn('Your session ended; sign in again.');
    if (!res.ok) {
      message.textContent = res.data?.error?.message ?? `Request failed (${res.status}).`;
      approve.disabled = Boolean(a.approve_blocked);
      deny.disabled = false;
      return;
    }
    showConfirmation(res.data.approval ?? a, verb);
    await refresh();
  };
  approve.addEventListener('click', () => void decide('approve'));
  deny.addEventListener('click', () => void decide('deny'));
  card.append(
    el(
      'div',
      { class: 'actions' },
      el('label', { for: reasonId, text: 'Reason' }),
      reason,
      el('div', { class: 'buttons' }, approve, deny),
      note,
      message,
    ),
  );
  return { el: card, key: `${a.id}:${a.state}`, refresh: (b) => (times.textContent = timesText(b)) };
}

/**
 * Undo of an executed destructive action: requests `undo_action`, which is itself approved by
 * another approver; the confirmation says so.
 */
function undoActions(a) {
  const reasonId = `undo-reason-${a.id}`;
  const reason = el('textarea', {
    id: reasonId,
    rows: '2',
    maxlength: '1000',
    placeholder: 'Why undo it (required)',
  });
  const button = el('button', { type: 'button', class: 'undo', text: 'Undo' });
  const message = el('p', { class: 'error', role: 'alert' });
  button.addEventListener('click', async () => {
    message.textContent = '';
    const text = reason.value.trim();
    if (!text) {
      message.textContent = 'Give a reason to undo.';
      reason.focus();
      return;
    }
    button.disabled = true;
    const res = await api('POST', `/console/api/approvals/${encodeURIComponent(a.id)}/undo`, {
      reason: text,
    });
    button.disabled = false;
    if (res.status === 401) return showSignIn('Your session ended; sign in again.');
    if (!res.ok) {
      message.textContent = res.data?.error?.message ?? `Request failed (${res.status}).`;
      return;
    }
    reason.value = '';
    clearTimeout(state.followTimer);
    $('confirmation-text').textContent =
      res.data.message ?? `Undo of ${a.tool} on ${a.target} done: ${res.data.undo?.compensation ?? ''}`;
    $('confirmation').dataset.outcome = 'undo_requested';
    $('confirmation').hidden = false;
  });
  return el(
    'div',
    { class: 'actions' },
    el('label', { for: reasonId, text: `Undo (until ${stamp(a.undo_until)})` }),
    reason,
    el('div', { class: 'buttons' }, button),
    message,
  );
}

/** Keyed update: keep existing cards (and what is typed in them), add new ones, drop gone ones, keep order. */
function render(list) {
  const container = $('list');
  const seen = new Set();
  list.forEach((a, index) => {
    const key = `${a.id}:${a.state}`;
    let entry = state.cards.get(a.id);
    if (!entry || entry.key !== key) {
      entry?.el.remove();
      entry = buildCard(a);
      state.cards.set(a.id, entry);
    } else {
      entry.refresh(a);
    }
    seen.add(a.id);
    if (container.children[index] !== entry.el)
      container.insertBefore(entry.el, container.children[index] ?? null);
  });
  for (const [id, entry] of state.cards) {
    if (!seen.has(id)) {
      entry.el.remove();
      state.cards.delete(id);
    }
  }
  const empty = $('empty');
  empty.hidden = list.length > 0;
  empty.textContent =
    state.view === 'pending' ? 'No pending approvals.' : 'No decided or expired approvals yet.';
}

// ---------- after a decision ----------

const FOLLOW_MS = 1000;
const FOLLOW_LIMIT = 60;
const SETTLED = new Set(['executed', 'failed', 'denied', 'expired', 'superseded']);

/** What became of a decided approval, in one sentence. */
function outcomeSentence(a) {
  switch (a.state) {
    case 'approved':
    case 'executing':
      return 'fraudgate is running it now…';
    case 'executed':
      return `Done: it ran${a.executed_at ? ` at ${stamp(a.executed_at)}` : ''}.`;
    case 'failed':
      return `It did not complete: ${a.error ? a.error.message : 'unknown error'}`;
    case 'denied':
      return 'Nothing will run; the requester is told the reason.';
    case 'expired':
      return 'It expired before it ran; nothing was done.';
    case 'superseded':
      return 'A newer request for the same action and target replaced it; nothing was done.';
    default:
      return '';
  }
}

/**
 * A confirmation that stays until dismissed: what was decided, and — followed for a minute — what
 * happened next (executed, failed, or replaced because the evidence changed).
 */
function showConfirmation(approval, verb) {
  clearTimeout(state.followTimer);
  const box = $('confirmation');
  const render = (a) => {
    const decided = `${verb === 'approve' ? 'Approved' : 'Denied'} ${a.tool} on ${a.target} (${a.id}).`;
    $('confirmation-text').textContent = `${decided} ${outcomeSentence(a)}`;
    box.dataset.outcome = a.state;
    box.dataset.approvalId = a.id;
  };
  render(approval);
  box.hidden = false;
  let rounds = 0;
  const follow = async () => {
    if (SETTLED.has(box.dataset.outcome) || rounds++ >= FOLLOW_LIMIT || box.hidden) return;
    const res = await api(
      'GET',
      `/console/api/approvals/${encodeURIComponent(approval.id)}`,
      undefined,
      true,
    ).catch(() => undefined);
    if (res?.status === 401) return showSignIn('Your session ended; sign in again.');
    if (res?.ok && box.dataset.approvalId === approval.id) render(res.data.approval);
    state.followTimer = setTimeout(() => void follow(), FOLLOW_MS);
  };
  state.followTimer = setTimeout(() => void follow(), FOLLOW_MS);
}

// ---------- views and polling ----------

function setStatus(text) {
  $('status').textContent = text;
}

/** The loaded pages of a view, as one answer: pending follows the server's cursor page by page. */
async function load(view, poll) {
  const approvals = [];
  let after = '';
  for (let page = 1; ; page += 1) {
    const query = `view=${view}${after ? `&after=${encodeURIComponent(after)}` : ''}`;
    const res = await api('GET', `/console/api/approvals?${query}`, undefined, poll);
    if (!res.ok) return res;
    approvals.push(...res.data.approvals);
    if (!res.data.next || page >= state.pages) return { ...res, data: { ...res.data, approvals } };
    after = res.data.next;
  }
}

/** "Showing N of M", and Show more while the server has another page. */
function showCount(view, shown, total, more) {
  $('more').hidden = !more;
  $('count').textContent =
    shown >= total
      ? ''
      : view === 'pending'
        ? `Showing ${shown} of ${total} pending, oldest first.`
        : `Showing the newest ${shown} of ${total}; older ones: fraudgate approvals list --all.`;
}

/** Says (once, to screen readers) how many pending approvals arrived since the last load. */
function announceNew(view, list) {
  if (view !== 'pending') return;
  const ids = list.map((a) => a.id);
  const fresh = state.known ? ids.filter((id) => !state.known.has(id)).length : 0;
  state.known = new Set(ids);
  if (fresh > 0) $('announce').textContent = `${fresh} new approval${fresh === 1 ? '' : 's'}`;
}

async function refresh(poll = false) {
  clearTimeout(state.timer);
  const view = state.view;
  try {
    const res = await load(view, poll);
    if (res.status === 401) return showSignIn('Your session ended; sign in again.');
    if (!res.ok) {
      $('app-error').textContent = res.data?.error?.message ?? `Could not load approvals (${res.status}).`;
    } else if (view === state.view) {
      $('app-error').textContent = '';
      state.skewMs = Date.parse(res.data.now) - Date.now();
      render(res.data.approvals);
      showCount(view, res.data.approvals.length, res.data.total ?? 0, Boolean(res.data.next));
      announceNew(view, res.data.approvals);
      document.body.dataset.loaded = view;
      setStatus(`Updated ${new Date().toLocaleTimeString()}`);
    }
  } catch {
    $('app-error').textContent = 'Cannot reach fraudgate; retrying.';
  }
  if (state.principal) state.timer = setTimeout(() => void refresh(true), POLL_MS);
}

function switchView(view) {
  state.view = view;
  $('tab-pending').setAttribute('aria-pressed', String(view === 'pending'));
  $('tab-history').setAttribute('aria-pressed', String(view === 'history'));
  for (const entry of state.cards.values()) entry.el.remove();
  state.cards.clear();
  state.pages = 1;
  state.known = undefined;
  $('announce').textContent = '';
  delete document.body.dataset.loaded;
  void refresh();
}

function showSignIn(message = '') {
  clearTimeout(state.timer);
  state.principal = null;
  state.csrf = '';
  $('who').hidden = true;
  $('app').hidden = true;
  $('sign-in').hidden = false;
  $('sign-in-error').textContent = message;
  $('token').focus();
}

function showApp(session) {
  state.principal = session.principal;
  state.csrf = session.csrf_token;
  $('who-name').textContent = `${session.principal.id} (${session.principal.role})`;
  $('who').hidden = false;
  $('sign-in').hidden = true;
  $('app').hidden = false;
  switchView('pending');
}

async function start() {
  $('sign-in-form').addEventListener('submit', async (event) => {
    event.preventDefault();
    const input = $('token');
    const res = await api('POST', '/console/api/session', { token: input.value });
    input.value = '';
    if (!res.ok) return showSignIn(res.data?.error?.message ?? `Sign-in failed (${res.status}).`);
    showApp(res.data);
  });
  $('sign-out').addEventListener('click', async () => {
    await api('DELETE', '/console/api/session');
    showSignIn('Signed out.');
  });
  $('confirmation-dismiss').addEventListener('click', () => {
    clearTimeout(state.followTimer);
    $('confirmation').hidden = true;
  });
  $('tab-pending').addEventListener('click', () => switchView('pending'));
  $('tab-history').addEventListener('click', () => switchView('history'));
  $('more').addEventListener('click', () => {
    state.pages += 1;
    void refresh();
  });

  const res = await api('GET', '/console/api/session');
  if (res.ok) showApp(res.data);
  else showSignIn();
}

if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', () => void start());
else void start();
window.addEventListener('pageshow', (event) => {
  if (event.persisted && state.principal) void refresh();
});
