// Magpie web app: a messenger on top of the engine's local API
// (docs/LOCAL_API.md). Vanilla JavaScript, no build step, nothing fetched
// from outside this app, and nothing the Content-Security-Policy forbids:
// no inline script or style, no eval, no innerHTML.
//
// Test hooks (stable ids, classes and attributes for browser tests):
//   #state[data-state]        header connection state: online | connecting |
//                             offline | storage_full | stopped, or
//                             unreachable (this page lost the engine)
//   #me-name                  the signed-in user's name
//   #conversations            the list; items li[data-peer="bob"], the open
//                             one has class .active; .unread is the unread
//                             badge (absent when nothing is unread);
//                             .conv-preview is the last message's line
//   #new-chat, #new-chat-button, #new-chat-error
//                             start a chat by username; the error's message
//   #messages                 the open chat; items .msg[data-seq] with class
//                             .out or .in and [data-state] (the message
//                             state); outgoing ones hold .ticks[data-state];
//                             .msg .text is the text; .msg-note .cancel
//                             cancels a queued message; uploads in flight
//                             are .msg.pending[data-upload]
//   #composer (textarea), #send (button), #file-input (input type=file)
//   #typing                   "bob is typing…" (hidden attribute when not)
//   #search                   search box; results fill #messages, and
//                             #search-bar / #search-summary say how many
//   #identity-banner          shown when the peer's safety number changed
//   #safety-button            opens #safety (dialog): #safety-digits (12
//                             groups of 5, .group), #safety-qr (img),
//                             #safety-status[data-status], #verify-button,
//                             #safety-input + #safety-compare-button,
//                             #safety-message
//   #settings-button          opens #settings: #read-receipts (checkbox)
//   #notify-button[data-state] desktop notifications: unsupported | default
//                             | denied | on | off
//   img.attachment-image[data-src-kind=thumbnail|full],
//   audio.attachment-audio, video.attachment-video, a.download-link,
//   .progress[data-phase] with .progress-label
//   #toasts .toast            error messages (.toast-message, .toast-hint)
//   #fatal                    full-page notice (signed out, not registered)

import { api, ApiError, paths, newMessageID, uploadFile } from './api.js';
import * as fmt from './format.js';
import { icon } from './icons.js';

// ---------------------------------------------------------------- helpers

const $ = (id) => document.getElementById(id);

// h('div', {class: 'x', dataset: {seq: 1}, on: {click: f}}, child, 'text')
function h(tag, props, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(props || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') el.className = v;
    else if (k === 'dataset') Object.assign(el.dataset, v);
    else if (k === 'on') for (const [ev, fn] of Object.entries(v)) el.addEventListener(ev, fn);
    else if (k === 'text') el.textContent = v;
    else if (k in el && typeof v !== 'string') el[k] = v;
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : String(c));
  }
  return el;
}

function fillIcons(root) {
  for (const el of root.querySelectorAll('[data-icon]')) {
    if (!el.querySelector('svg')) el.prepend(icon(el.dataset.icon));
  }
}

// An error's message in bold, then its hint.
function messageParts(message, hint) {
  const out = [h('strong', { text: message })];
  if (hint) out.push(h('span', { class: 'hint', text: ` ${hint}` }));
  return out;
}

function setIcon(el, name) {
  el.dataset.icon = name;
  const old = el.querySelector('svg');
  const n = icon(name);
  if (old) old.replaceWith(n);
  else el.prepend(n);
}

function debounce(fn, ms) {
  let t;
  return (...args) => {
    clearTimeout(t);
    t = setTimeout(() => fn(...args), ms);
  };
}

const visible = () => document.visibilityState === 'visible';
const isTouch = () => window.matchMedia('(pointer: coarse)').matches;
const narrow = () => window.matchMedia('(max-width: 760px)').matches;

// ---------------------------------------------------------------- state

const S = {
  status: null,
  convs: new Map(), // peer → Conversation
  order: [], // peers, most recent first
  open: null, // the open conversation's peer
  view: null, // the open conversation's loaded history (see loadMessages)
  gen: 0, // bumps when the view changes, to drop stale answers
  search: null, // { q, peer, oldest, more } while #search shows results
  searchGen: 0,
  typingIn: new Map(), // peer → timer: they are typing
  typingOut: { peer: null, last: 0, active: false },
  progress: new Map(), // seq → { phase, done, total }
  uploads: new Map(), // local id → upload in flight (see sendFiles)
  uploadSeq: 0,
  uploadQueue: [],
  serial: 0, // counts message and update events (see changedSince)
  changed: new Map(), // seq → S.serial of the last event about it
  uploading: false,
  drafts: new Map(), // peer → unsent text
  lastSend: null, // { peer, text, id }: reuse the id when a send is retried
  es: null,
  linkUp: false,
  everOpened: false,
  retryMs: 1000,
  loaded: false,
  notify: localStorage.getItem('magpie.notify') !== 'off',
  previews: localStorage.getItem('magpie.previews') !== 'off',
};

// ---------------------------------------------------------------- errors

function toast(message, hint, kind = 'error') {
  const box = $('toasts');
  for (const t of box.children) {
    if (t.dataset.message === message) t.remove(); // no pile of the same one
  }
  const t = h('div', { class: `toast ${kind}`, role: kind === 'error' ? 'alert' : 'status', dataset: { message } },
    icon(kind === 'error' ? 'alert' : 'check'),
    h('div', { class: 'toast-body' },
      h('div', { class: 'toast-message', text: message }),
      hint ? h('div', { class: 'toast-hint', text: hint }) : null),
    h('button', { class: 'icon-button toast-close', type: 'button', 'aria-label': 'Dismiss', on: { click: () => t.remove() } }, icon('close')));
  box.append(t);
  setTimeout(() => t.remove(), kind === 'error' ? 10000 : 4000);
}

// showError puts an API error in front of the user: its message and hint.
function showError(e) {
  if (!(e instanceof ApiError)) {
    console.error(e);
    toast('Something went wrong in this page.', String(e && e.message ? e.message : e));
    return;
  }
  if (e.code === 'no_session') {
    signedOut();
    return;
  }
  if (e.code === 'not_initialized' || e.code === 'not_registered') {
    showFatal('Magpie is not set up yet', e.message, e.hint);
    return;
  }
  toast(e.message, e.hint);
}

function showFatal(title, text, hint, retry) {
  $('fatal-title').textContent = title;
  $('fatal-text').textContent = text || '';
  $('fatal-hint').textContent = hint || '';
  $('fatal-retry').onclick = retry || (() => location.reload());
  $('fatal').hidden = false;
}

function signedOut() {
  if (S.es) S.es.close();
  showFatal('Open Magpie with a new link', 'This browser tab is no longer signed in to Magpie.',
    'Run `magpie app` again and open the link it prints. Each link works once.');
}

// ---------------------------------------------------------------- status

async function loadStatus() {
  try {
    setStatus(await api('GET', paths.status));
  } catch (e) {
    showError(e);
  }
}

function setStatus(st) {
  if (!st || typeof st !== 'object') return;
  const wasOnline = S.status && S.status.state === 'online';
  S.status = st;
  $('me-name').textContent = st.user || 'Magpie';
  renderState();
  if (st.registered === false) {
    showFatal('This device is not registered', 'Magpie has no account on the server for this device yet.',
      'Register it with: magpie register');
  }
  if (!wasOnline !== !(st.state === 'online')) refreshNotes();
}

const stateWords = {
  online: 'Online',
  connecting: 'Connecting…',
  offline: 'Offline',
  storage_full: 'Storage full',
  stopped: 'Stopped',
  unreachable: 'Cannot reach Magpie on this computer',
};

function renderState() {
  const el = $('state');
  const st = S.status;
  let state = st ? st.state : 'connecting';
  let text = stateWords[state] || state;
  let title = '';
  if (S.everOpened && !S.linkUp) {
    state = 'unreachable';
    text = stateWords.unreachable;
    title = 'This page lost its link to the Magpie engine and keeps trying. Is `magpie app` still running?';
  } else if (st) {
    if (state === 'offline') {
      text = st.error ? `Offline: ${st.error}` : 'Offline, retrying';
      title = 'Magpie cannot reach the server and keeps retrying. Messages you send wait in the outbox.';
    } else if (state === 'storage_full') {
      text = 'Storage full: free up disk space';
      title = 'The disk is full: nothing new is accepted until space returns. Nothing is lost.';
    } else if (state === 'online' && st.since) {
      title = `Online since ${fmt.full(fmt.parseTime(st.since))}`;
    }
    if (st.outbox > 0 && state !== 'online') text += ` · ${st.outbox} waiting to send`;
  }
  el.dataset.state = state;
  $('state-text').textContent = text;
  el.title = title || text;
}

// ---------------------------------------------------------------- conversations

async function loadConversations() {
  const since = S.serial;
  let r;
  try {
    r = await api('GET', paths.conversations);
  } catch (e) {
    showError(e);
    return;
  }
  const next = new Map();
  const order = [];
  for (const c of r.conversations || []) {
    const old = S.convs.get(c.peer);
    // A message that came while the list was on its way is newer than it.
    if (old && old.last && changedSince(old.last.seq, since) && (!c.last || old.last.seq >= c.last.seq)) {
      c.last = old.last;
      c.unread = old.unread;
    }
    next.set(c.peer, c);
    order.push(c.peer);
  }
  // A chat just started here has no history yet: keep it while it is open.
  if (S.open && !next.has(S.open) && S.convs.has(S.open)) {
    next.set(S.open, S.convs.get(S.open));
    order.unshift(S.open);
  }
  S.convs = next;
  S.order = order;
  S.loaded = true;
  renderList();
  if (S.open) {
    renderChatHeader();
    renderBanner();
  }
}

const scheduleConvReload = debounce(loadConversations, 400);

function convFor(peer) {
  let c = S.convs.get(peer);
  if (!c) {
    c = { peer, unread: 0, last: null, verified: false, identity_changed: false };
    S.convs.set(peer, c);
  }
  return c;
}

// The list keeps the engine's order (most recent first); a new message moves
// its conversation to the top until the next reload.
function sortedConvs() {
  const seen = new Set();
  const out = [];
  for (const p of S.order) {
    const c = S.convs.get(p);
    if (c && !seen.has(p)) {
      seen.add(p);
      out.push(c);
    }
  }
  const rest = [...S.convs.values()].filter((c) => !seen.has(c.peer));
  return [...rest, ...out];
}

function moveToTop(peer) {
  S.order = [peer, ...S.order.filter((p) => p !== peer)];
}

function avatar(name, cls) {
  const el = h('span', { class: `avatar${cls ? ' ' + cls : ''}`, 'aria-hidden': 'true', text: fmt.initial(name) });
  el.style.setProperty('--hue', String(fmt.hue(name)));
  return el;
}

function convItem(c) {
  const last = c.last;
  const typing = S.typingIn.has(c.peer);
  const preview = h('span', { class: `conv-preview${typing ? ' is-typing' : ''}` });
  if (typing) {
    preview.textContent = 'typing…';
  } else if (last) {
    if (last.outgoing) preview.append(ticks(last, true), 'You: ');
    preview.append(fmt.preview(last));
  } else {
    preview.textContent = 'No messages yet';
  }
  const badges = [];
  if (c.identity_changed) badges.push(h('span', { class: 'conv-flag changed', title: 'Safety number changed' }, icon('warning')));
  else if (c.verified) badges.push(h('span', { class: 'conv-flag verified', title: 'Verified' }, icon('shieldCheck')));
  const when = last ? fmt.parseTime(last.composed_at) : null;
  const li = h('li', { class: `conv${c.peer === S.open ? ' active' : ''}${c.unread > 0 ? ' has-unread' : ''}`, dataset: { peer: c.peer } },
    h('button', { class: 'conv-button', type: 'button', 'aria-current': c.peer === S.open ? 'true' : null, on: { click: () => go(c.peer) } },
      avatar(c.peer),
      h('span', { class: 'conv-main' },
        h('span', { class: 'conv-top' },
          h('span', { class: 'conv-name', text: c.peer }), ...badges,
          h('time', { class: 'conv-time', datetime: last ? last.composed_at : null, title: fmt.full(when), text: fmt.listTime(when) })),
        h('span', { class: 'conv-bottom' },
          preview,
          c.unread > 0 ? h('span', { class: 'unread', 'aria-label': `${c.unread} unread`, text: c.unread > 999 ? '999+' : String(c.unread) }) : null))));
  return li;
}

function renderList() {
  const ul = $('conversations');
  const focused = document.activeElement && document.activeElement.closest('#conversations li');
  const focusPeer = focused ? focused.dataset.peer : null;
  const items = sortedConvs().map(convItem);
  ul.replaceChildren(...items);
  $('conversations-empty').hidden = items.length > 0 || !S.loaded;
  if (focusPeer) {
    const b = ul.querySelector(`li[data-peer="${CSS.escape(focusPeer)}"] button`);
    if (b) b.focus();
  }
  updateTitle();
}

// refreshConv redraws one item in place.
function refreshConv(peer) {
  const c = S.convs.get(peer);
  const old = $('conversations').querySelector(`li[data-peer="${CSS.escape(peer)}"]`);
  if (!c || !old) {
    renderList();
    return;
  }
  old.replaceWith(convItem(c));
  updateTitle();
}

function updateTitle() {
  let n = 0;
  for (const c of S.convs.values()) n += c.unread > 0 ? c.unread : 0;
  document.title = n > 0 ? `(${n}) Magpie` : 'Magpie';
}

// ---------------------------------------------------------------- routing

function go(peer) {
  const want = peer ? `#/chat/${encodeURIComponent(peer)}` : '#/';
  if (location.hash !== want) location.hash = want;
  else route();
}

function route() {
  const m = /^#\/chat\/([^/]+)$/.exec(location.hash);
  if (m) {
    let peer;
    try {
      peer = decodeURIComponent(m[1]);
    } catch {
      peer = null;
    }
    if (peer) {
      openConversation(peer);
      return;
    }
  }
  closeConversation();
}

function closeConversation() {
  stopTyping();
  if (S.open) S.drafts.set(S.open, $('composer').value);
  S.open = null;
  S.view = null;
  S.gen++;
  exitSearch(false);
  document.body.classList.remove('chat-open');
  $('chat-view').hidden = true;
  $('chat-empty').hidden = false;
  renderList();
}

// ---------------------------------------------------------------- the chat

async function openConversation(peer, { target } = {}) {
  if (S.open === peer && S.view && !target) return;
  if (S.open && S.open !== peer) {
    stopTyping();
    S.drafts.set(S.open, $('composer').value);
  }
  exitSearch(false);
  S.open = peer;
  convFor(peer);
  document.body.classList.add('chat-open');
  $('chat-empty').hidden = true;
  $('chat-view').hidden = false;
  const ta = $('composer');
  ta.value = S.drafts.get(peer) || '';
  autosize();
  updateSendButton();
  $('drop-text').textContent = `Drop files to send to ${peer}`;
  renderChatHeader();
  renderBanner();
  renderTyping();
  renderList();
  if (!isTouch()) ta.focus();
  await loadMessages(peer, target);
  scheduleMarkRead(true);
}

function renderChatHeader() {
  const peer = S.open;
  if (!peer) return;
  const c = convFor(peer);
  $('chat-peer').textContent = peer;
  const av = $('chat-avatar');
  av.textContent = fmt.initial(peer);
  av.style.setProperty('--hue', String(fmt.hue(peer)));
  const badge = $('chat-badge');
  badge.replaceChildren();
  badge.title = '';
  if (c.identity_changed) {
    badge.append(icon('warning'));
    badge.className = 'badge-icon changed';
    badge.title = 'Safety number changed';
  } else if (c.verified) {
    badge.append(icon('shieldCheck'));
    badge.className = 'badge-icon verified';
    badge.title = 'Verified';
  }
  const sub = $('chat-sub');
  sub.classList.toggle('is-typing', S.typingIn.has(peer));
  if (S.typingIn.has(peer)) sub.textContent = 'typing…';
  else if (c.identity_changed) sub.textContent = 'Safety number changed: check it';
  else sub.textContent = c.verified ? 'Verified · end-to-end encrypted' : 'End-to-end encrypted';
  setIcon($('safety-button'), c.identity_changed ? 'shieldAlert' : c.verified ? 'shieldCheck' : 'shield');
  $('safety-button').classList.toggle('alert', !!c.identity_changed);
}

function renderBanner() {
  const peer = S.open;
  const c = peer && S.convs.get(peer);
  const show = !!(c && c.identity_changed);
  $('identity-banner').hidden = !show;
  if (!show) return;
  $('identity-banner-title').textContent = `${peer}'s safety number changed`;
  $('identity-banner-body').textContent =
    `This happens when ${peer} reinstalls Magpie or changes device, or when someone is intercepting. ` +
    `If you had verified ${peer}, sending is blocked until you verify the new number together.`;
}

function renderTyping() {
  const peer = S.open;
  const on = !!peer && S.typingIn.has(peer);
  $('typing').hidden = !on;
  $('typing-text').textContent = on ? `${peer} is typing…` : '';
  if (peer) renderChatHeader();
}

// The loaded history of the open chat:
//   { peer, msgs: Map seq→Message, els: Map seq→Element, oldest, more, loading }
async function loadMessages(peer, target) {
  const gen = ++S.gen;
  // early: what events said about the chat while its first page was on
  // its way; it is newer than the page, so it goes in after it.
  const view = { peer, msgs: new Map(), els: new Map(), oldest: null, more: false, loading: true, stick: true, early: [] };
  S.view = view;
  const box = $('messages');
  box.replaceChildren(h('div', { class: 'history-top loading', id: 'history-top' }, h('span', { class: 'spinner' }), 'Loading messages…'));
  let r;
  try {
    r = await api('GET', paths.messages(peer, { limit: 50 }));
  } catch (e) {
    if (gen !== S.gen) return;
    if (e instanceof ApiError && e.code === 'not_found') {
      r = { messages: [], more: false }; // a chat with no history yet
    } else {
      box.replaceChildren(h('div', { class: 'history-error' },
        h('p', { text: e.message || 'Could not load the messages.' }),
        e.hint ? h('p', { class: 'muted', text: e.hint }) : null,
        h('button', { class: 'button', type: 'button', text: 'Try again', on: { click: () => loadMessages(peer) } })));
      if (e instanceof ApiError && e.code === 'no_session') signedOut();
      return;
    }
  }
  if (gen !== S.gen) return;
  const early = view.early;
  view.early = null;
  view.loading = false;
  view.more = !!r.more;
  const els = [];
  for (const m of r.messages || []) {
    const el = msgEl(m);
    view.msgs.set(m.seq, m);
    view.els.set(m.seq, el);
    if (view.oldest === null || m.seq < view.oldest) view.oldest = m.seq;
    els.push(el);
  }
  box.replaceChildren(historyTop(view), ...els, ...pendingEls(peer));
  for (const [m, isNew] of early) showMessage(m, isNew);
  relayout();
  scrollToBottom(false);
  // Fill the screen, then find the target, then stay at the bottom.
  while (view.more && S.view === view && box.scrollHeight <= box.clientHeight + 50) {
    if (!(await loadOlder())) break;
    scrollToBottom(false);
  }
  if (target) {
    for (let i = 0; i < 20 && S.view === view && !view.els.has(target) && view.more; i++) {
      if (!(await loadOlder(200))) break;
    }
    const el = view.els.get(target);
    if (el) {
      el.scrollIntoView({ block: 'center' });
      el.classList.add('flash');
      setTimeout(() => el.classList.remove('flash'), 2000);
    }
  }
}

function historyTop(view) {
  if (view.more || view.loading) {
    return h('div', { class: 'history-top', id: 'history-top' }, h('span', { class: 'spinner' }), 'Loading older messages…');
  }
  return h('div', { class: 'history-top start', id: 'history-top' },
    icon('lock'),
    h('span', { text: `This is the start of your conversation with ${view.peer}. Messages and files are end-to-end encrypted.` }));
}

// loadOlder prepends the page before the oldest loaded message, keeping what
// is on screen where it is. It reports whether it loaded anything.
async function loadOlder(limit = 50) {
  const view = S.view;
  if (!view || view.loading || !view.more || S.search) return false;
  view.loading = true;
  try {
    const r = await api('GET', paths.messages(view.peer, { before: view.oldest, limit }));
    if (S.view !== view) return false;
    const box = $('messages');
    const fromBottom = box.scrollHeight - box.scrollTop;
    const frag = document.createDocumentFragment();
    for (const m of r.messages || []) {
      if (view.els.has(m.seq)) continue;
      const el = msgEl(m);
      view.msgs.set(m.seq, m);
      view.els.set(m.seq, el);
      if (m.seq < view.oldest) view.oldest = m.seq;
      frag.append(el);
    }
    view.more = !!r.more;
    view.loading = false;
    const top = $('history-top');
    top.after(frag);
    top.replaceWith(historyTop(view));
    relayout();
    box.scrollTop = box.scrollHeight - fromBottom;
    return (r.messages || []).length > 0;
  } catch (e) {
    showError(e);
    return false;
  } finally {
    view.loading = false;
  }
}

// relayout puts in the day separators and groups runs of bubbles.
function relayout() {
  const box = $('messages');
  for (const d of box.querySelectorAll(':scope > .day')) d.remove();
  let prevDay = null;
  let prev = null;
  for (const el of box.querySelectorAll(':scope > .msg')) {
    const d = el._date;
    if (d) {
      const day = fmt.startOfDay(d).getTime();
      if (day !== prevDay) {
        box.insertBefore(h('div', { class: 'day', role: 'separator' }, h('span', { text: fmt.dayLabel(d) })), el);
        prevDay = day;
        prev = null;
      }
    }
    const cont = !!(prev && prev._out === el._out && d && prev._date && d - prev._date < 5 * 60000 &&
      !prev.classList.contains('has-note'));
    el.classList.toggle('cont', cont);
    if (prev) prev.classList.toggle('last-of-run', !cont);
    prev = el;
  }
  if (prev) prev.classList.add('last-of-run');
}

function atBottom() {
  const box = $('messages');
  return box.scrollHeight - box.scrollTop - box.clientHeight < 80;
}

function scrollToBottom(smooth) {
  const box = $('messages');
  box.scrollTo({ top: box.scrollHeight, behavior: smooth ? 'smooth' : 'auto' });
  $('jump').hidden = true;
  $('jump').classList.remove('has-new');
}

// ---------------------------------------------------------------- a message

const stateTitles = {
  queued: 'Waiting to send',
  uploading: 'Uploading',
  sent: 'Sent',
  delivered: 'Delivered',
  read: 'Read',
  failed: 'Not sent',
};

function ticks(m, small) {
  let title = stateTitles[m.state] || m.state;
  if (m.state === 'sent' && m.server_time) title += ` ${fmt.full(fmt.parseTime(m.server_time))}`;
  if (m.state === 'delivered' && m.delivered_at) title += ` ${fmt.full(fmt.parseTime(m.delivered_at))}`;
  if (m.state === 'read' && m.read_at) title += ` ${fmt.full(fmt.parseTime(m.read_at))}`;
  if (m.state === 'failed' && m.error) title += `: ${m.error}`;
  const name = { queued: 'clock', uploading: 'clock', sent: 'check', delivered: 'checks', read: 'checks', failed: 'alert' }[m.state] || 'clock';
  return h('span', { class: `ticks${small ? ' small' : ''}`, dataset: { state: m.state }, role: 'img', title, 'aria-label': title }, icon(name));
}

function msgEl(m) {
  const el = h('div', { class: `msg ${m.outgoing ? 'out' : 'in'}`, dataset: { seq: m.seq } },
    h('div', { class: 'bubble' }));
  fillMsg(el, m);
  return el;
}

// A signature of what the attachment block shows, so that a progress tick
// or a receipt does not rebuild (and restart) a playing voice note.
function attSig(m) {
  const a = m.attachment;
  return a ? [a.kind, a.state, a.thumbnail, a.error, m.outgoing, m.seq].join('|') : '';
}

function fillMsg(el, m, highlight) {
  el._msg = m;
  el._date = fmt.parseTime(m.composed_at);
  el._out = !!m.outgoing;
  el.dataset.state = m.state;
  el.classList.toggle('unreadable', m.state === 'unreadable');
  el.classList.toggle('failed', m.state === 'failed');
  el.classList.toggle('with-attachment', !!m.attachment);
  const bubble = el.querySelector('.bubble');
  const sig = attSig(m);
  if (el._attSig !== sig) {
    const n = m.attachment ? attachmentEl(m) : null;
    if (el._att) el._att.remove();
    if (n) bubble.prepend(n);
    el._att = n;
    el._attSig = sig;
  } else if (el._att) {
    updateProgress(el, m);
  }
  let text = null;
  if (m.state === 'unreadable') {
    text = h('div', { class: 'text unreadable-text' }, icon('lock'), ' This message could not be decrypted or read.');
  } else if (m.text) {
    text = textEl(m.text, highlight);
  }
  if (el._text) el._text.remove();
  if (text) bubble.append(text);
  el._text = text;
  const d = el._date;
  const meta = h('span', { class: 'meta' },
    h('time', { datetime: m.composed_at, title: fmt.full(d), text: fmt.clock(d) }),
    m.outgoing ? ticks(m) : null);
  if (el._meta) el._meta.remove();
  // Without a caption, the time sits on the attachment's footer line.
  const footer = !text && el._att ? el._att.querySelector('.att-footer') : null;
  if (footer) footer.append(meta);
  else bubble.append(meta);
  el._meta = meta;
  fillNote(el, m);
}

// The line under a bubble: why it failed, or that it waits, with actions.
function fillNote(el, m) {
  let note = null;
  if (m.outgoing && m.state === 'failed') {
    note = h('div', { class: 'msg-note error' }, icon('alert'),
      h('span', { text: m.error ? `Not sent: ${m.error}` : 'Not sent.' }));
    if (m.text && !m.attachment) {
      note.append(h('button', { class: 'link-button resend', type: 'button', text: 'Send again', on: { click: () => resend(m) } }));
    }
  } else if (m.outgoing && (m.state === 'queued' || m.state === 'uploading')) {
    const age = Date.now() - (el._date ? el._date.getTime() : 0);
    const online = S.status && S.status.state === 'online' && S.linkUp;
    if (age > 4000 || !online) {
      note = h('div', { class: 'msg-note' }, icon('clock'),
        h('span', { text: m.state === 'uploading' ? 'Uploading, will send when done' : online ? 'Sending…' : 'Waiting to send, kept safe in the outbox' }),
        h('button', { class: 'link-button cancel', type: 'button', text: 'Cancel', on: { click: () => cancelMessage(m) } }));
    }
  }
  if (el._note) el._note.remove();
  if (note) el.append(note);
  el._note = note;
  el.classList.toggle('has-note', !!note);
}

// refreshNotes redraws the notes of waiting messages (their text depends on
// time and on the connection).
function refreshNotes() {
  if (!S.view) return;
  for (const el of S.view.els.values()) {
    const m = el._msg;
    if (m && m.outgoing && (m.state === 'queued' || m.state === 'uploading' || el._note)) fillNote(el, m);
  }
}

const urlPattern = /\bhttps?:\/\/[^\s<>"]*[^\s<>".,;:!?)\]'"]/gi;

function textEl(text, highlight) {
  const div = h('div', { class: 'text', dir: 'auto' });
  if (!highlight && fmt.isEmojiOnly(text)) div.classList.add('emoji-only');
  if (highlight) {
    const lower = text.toLowerCase();
    const q = highlight.toLowerCase();
    let i = 0;
    for (;;) {
      const j = q ? lower.indexOf(q, i) : -1;
      if (j < 0) break;
      div.append(text.slice(i, j), h('mark', { text: text.slice(j, j + q.length) }));
      i = j + q.length;
    }
    div.append(text.slice(i));
    return div;
  }
  let last = 0;
  for (const m of text.matchAll(urlPattern)) {
    div.append(text.slice(last, m.index), h('a', { href: m[0], target: '_blank', rel: 'noopener noreferrer', text: m[0] }));
    last = m.index + m[0].length;
  }
  div.append(text.slice(last));
  return div;
}

// ---------------------------------------------------------------- attachments

function attachmentAvailable(m) {
  return !!m.attachment && (m.outgoing || m.attachment.state === 'saved');
}

function transferActive(m) {
  const s = m.attachment.state;
  return s === 'staged' || s === 'uploading' || s === 'waiting' || s === 'downloading';
}

// sizeBox fits width×height in 320×360 (CSS shrinks it further on a phone).
function sizeBox(el, a) {
  if (a.width > 0 && a.height > 0) {
    const w = Math.min(320, a.width, (360 * a.width) / a.height);
    el.style.width = `${Math.max(120, Math.round(w))}px`;
    el.style.aspectRatio = `${a.width} / ${a.height}`;
    el.classList.add('sized');
  }
}

function attachmentEl(m) {
  const a = m.attachment;
  const seq = m.seq;
  const available = attachmentAvailable(m);
  const wrap = h('div', { class: `attachment att-${a.kind}`, dataset: { state: a.state } });
  const full = paths.file(seq);
  switch (a.kind) {
    case 'image': {
      const box = h('button', { class: 'image-box', type: 'button', title: a.name || 'Photo', 'aria-label': `Open ${a.name || 'photo'}` });
      sizeBox(box, a);
      if (a.thumbnail || available) {
        const img = h('img', { class: 'attachment-image', alt: a.name || 'Photo', decoding: 'async' });
        if (available) {
          if (a.thumbnail) box.style.backgroundImage = `url("${paths.thumbnail(seq)}")`;
          img.dataset.srcKind = 'full';
          img.classList.add('loading');
          img.addEventListener('load', () => {
            img.classList.remove('loading');
            stickAfterLoad();
          });
          img.addEventListener('error', () => {
            // Not there (yet): fall back to the thumbnail.
            if (a.thumbnail && img.dataset.srcKind === 'full') {
              img.dataset.srcKind = 'thumbnail';
              img.src = paths.thumbnail(seq);
            } else {
              img.replaceWith(h('span', { class: 'image-placeholder' }, icon('image')));
            }
          });
          img.src = full;
        } else {
          img.dataset.srcKind = 'thumbnail';
          img.src = paths.thumbnail(seq);
        }
        box.append(img);
      } else {
        box.append(h('span', { class: 'image-placeholder' }, icon('image')));
      }
      if (available) box.addEventListener('click', () => openLightbox(seq, a.name));
      else box.disabled = true;
      wrap.append(box);
      break;
    }
    case 'voice': {
      if (available) {
        wrap.append(h('div', { class: 'voice' }, h('span', { class: 'voice-icon' }, icon('mic')),
          h('audio', { class: 'attachment-audio', controls: true, preload: 'metadata', src: full })));
      } else {
        wrap.append(h('div', { class: 'voice pending' }, h('span', { class: 'voice-icon' }, icon('mic')),
          h('span', { text: `Voice note ${fmt.duration(a.duration_ms)}` })));
      }
      break;
    }
    case 'video': {
      const box = h('div', { class: 'video-box' });
      sizeBox(box, a);
      if (available) {
        const v = h('video', { class: 'attachment-video', controls: true, preload: 'metadata', playsInline: true, src: full });
        if (a.thumbnail) v.poster = paths.thumbnail(seq);
        v.addEventListener('loadedmetadata', stickAfterLoad);
        box.append(v);
      } else if (a.thumbnail) {
        box.append(h('img', { class: 'video-poster', alt: a.name || 'Video', src: paths.thumbnail(seq) }),
          h('span', { class: 'video-badge' }, icon('video'), a.duration_ms ? fmt.duration(a.duration_ms) : ''));
      } else {
        box.append(h('span', { class: 'image-placeholder' }, icon('video')));
      }
      wrap.append(box);
      break;
    }
    default: {
      const ext = (a.name || '').includes('.') ? a.name.split('.').pop().toUpperCase().slice(0, 5) : '';
      const card = h(available ? 'a' : 'div', { class: 'doc-card', title: a.name || 'File' },
        h('span', { class: 'doc-icon' }, icon('file'), ext ? h('span', { class: 'doc-ext', text: ext }) : null),
        h('span', { class: 'doc-text' },
          h('span', { class: 'doc-name', text: a.name || 'File' }),
          h('span', { class: 'doc-size', text: [fmt.size(a.size), a.mime].filter(Boolean).join(' · ') })));
      if (available) {
        card.href = paths.file(seq, true);
        card.setAttribute('download', a.name || '');
        card.classList.add('download-link');
      }
      wrap.append(card);
      break;
    }
  }
  // The transfer, the error, the download link.
  if (a.state === 'failed') {
    wrap.append(h('div', { class: 'att-error' }, icon('alert'), h('span', { text: a.error || 'The file could not be transferred.' })));
  } else if (transferActive(m)) {
    const phase = m.outgoing ? 'upload' : 'download';
    wrap.append(h('div', { class: 'progress', dataset: { phase } }, h('span', { class: 'progress-bar' }, h('span')),
      h('span', { class: 'progress-label' })));
  }
  if (available && a.kind !== 'document') {
    wrap.append(h('div', { class: 'att-footer' },
      h('span', { class: 'att-name', text: a.name || '' }),
      h('span', { class: 'att-size', text: a.kind === 'voice' ? fmt.duration(a.duration_ms) + ' · ' + fmt.size(a.size) : fmt.size(a.size) }),
      h('a', { class: 'download-link', href: paths.file(seq, true), download: a.name || '', title: `Download ${a.name || ''}`, 'aria-label': `Download ${a.name || 'the file'}` }, icon('download'))));
  } else if (!available && a.kind !== 'document') {
    wrap.append(h('div', { class: 'att-footer' },
      h('span', { class: 'att-name', text: a.name || '' }),
      h('span', { class: 'att-size', text: fmt.size(a.size) })));
  }
  updateProgress(wrap, m);
  return wrap;
}

// updateProgress shows a transfer's progress (under root) from the message
// or from the latest progress event.
function updateProgress(root, m) {
  const bar = root.querySelector('.progress');
  if (!bar) return;
  const a = m.attachment;
  const p = S.progress.get(m.seq);
  const done = p ? p.done : a.done;
  const total = p ? p.total : a.total || a.size;
  const pct = fmt.percent(done, total);
  bar.querySelector('.progress-bar span').style.width = `${pct}%`;
  let label;
  if (a.state === 'waiting') label = `Waiting to download · ${fmt.size(a.size)}`;
  else if (a.state === 'staged') label = 'Waiting to upload';
  else label = `${bar.dataset.phase === 'upload' ? 'Uploading' : 'Downloading'} ${pct}% · ${fmt.size(done)} of ${fmt.size(total)}`;
  bar.querySelector('.progress-label').textContent = label;
  bar.classList.toggle('indeterminate', a.state === 'waiting' || a.state === 'staged');
}

function stickAfterLoad() {
  if (S.view && S.view.stick) scrollToBottom(false);
}

function openLightbox(seq, name) {
  const d = $('lightbox');
  $('lightbox-image').src = paths.file(seq);
  $('lightbox-image').alt = name || 'Photo';
  const dl = $('lightbox-download');
  dl.href = paths.file(seq, true);
  dl.setAttribute('download', name || '');
  d.showModal();
}

// ---------------------------------------------------------------- new and changed messages

// noteEvent records that an event told what m is now.
function noteEvent(m) {
  if (!m || typeof m.seq !== 'number') return;
  S.serial++;
  S.changed.delete(m.seq); // re-inserted last: the map stays in event order
  S.changed.set(m.seq, S.serial);
  if (S.changed.size > 5000) S.changed.delete(S.changed.keys().next().value);
}

// changedSince reports whether an event about message seq came after
// S.serial was since. The engine publishes its events before it answers a
// request, and the page may get them first: an answer to a request made
// at since is older than such an event and must not undo it (a message
// shown "delivered" going back to "queued").
function changedSince(seq, since) {
  return (S.changed.get(seq) || 0) > since;
}

// upsertMessage puts m in the list and, if its chat is open, on screen.
// since is given for an answer to a request: S.serial when it was made
// (see changedSince).
function upsertMessage(m, isNew, since) {
  if (!m || typeof m.seq !== 'number' || !m.peer) return;
  if (since !== undefined && changedSince(m.seq, since)) return;
  const c = convFor(m.peer);
  if (!c.last || m.seq >= c.last.seq) c.last = m;
  if (isNew) moveToTop(m.peer);
  if (isNew && !m.outgoing && m.unread !== false && !(S.open === m.peer && visible())) c.unread = (c.unread || 0) + 1;
  refreshOrRender(m.peer);
  showMessage(m, isNew);
}

// showMessage puts m on screen if its chat is open.
function showMessage(m, isNew) {
  const v = S.view;
  if (!v || v.peer !== m.peer || S.search) return;
  if (v.early) {
    v.early.push([m, isNew]);
    return;
  }
  const el = v.els.get(m.seq);
  if (el) {
    v.msgs.set(m.seq, m);
    const wasBottom = atBottom();
    fillMsg(el, m);
    relayout();
    if (wasBottom) scrollToBottom(false);
    return;
  }
  if (isNew && m.outgoing && m.attachment) settleUpload(m);
  if (v.loading && !isNew) return;
  if (v.oldest !== null && m.seq < v.oldest && v.more) return; // not loaded yet: it comes with its page
  const wasBottom = atBottom();
  const nel = msgEl(m);
  v.msgs.set(m.seq, m);
  v.els.set(m.seq, nel);
  if (v.oldest === null || m.seq < v.oldest) v.oldest = m.seq;
  const box = $('messages');
  let before = null;
  for (const other of box.querySelectorAll(':scope > .msg[data-seq]')) {
    if (Number(other.dataset.seq) > m.seq) {
      before = other;
      break;
    }
  }
  if (!before) before = box.querySelector(':scope > .msg.pending');
  box.insertBefore(nel, before);
  relayout();
  if (wasBottom || m.outgoing) scrollToBottom(true);
  else {
    $('jump').hidden = false;
    $('jump').classList.add('has-new');
  }
}

// The list is sorted by the last message: move the item if it must move.
function refreshOrRender(peer) {
  const ul = $('conversations');
  const first = ul.firstElementChild;
  if (first && first.dataset.peer === peer) refreshConv(peer);
  else renderList();
}

function onNewMessage(m) {
  noteEvent(m);
  upsertMessage(m, true);
  if (!m.outgoing) {
    setTyping(m.peer, false);
    notify(m);
    if (S.open === m.peer) scheduleMarkRead(true);
  }
  scheduleConvReload();
}

function onUpdate(m) {
  if (m && m.attachment && (m.attachment.state === 'saved' || m.attachment.state === 'uploaded' || m.attachment.state === 'failed')) {
    S.progress.delete(m.seq);
  }
  noteEvent(m);
  upsertMessage(m, false);
}

function onProgress(p) {
  if (!p || typeof p.seq !== 'number') return;
  S.progress.set(p.seq, p);
  const el = S.view && S.view.els.get(p.seq);
  if (el && el._msg && el._msg.attachment) updateProgress(el, el._msg);
}

function setTyping(peer, on) {
  clearTimeout(S.typingIn.get(peer));
  const was = S.typingIn.has(peer);
  if (on) S.typingIn.set(peer, setTimeout(() => setTyping(peer, false), 6000));
  else S.typingIn.delete(peer);
  if (was !== on) {
    if (S.convs.has(peer)) refreshConv(peer);
    if (S.open === peer) renderTyping();
  }
}

function onIdentity(d) {
  if (!d || !d.peer) return;
  const c = convFor(d.peer);
  c.identity_changed = true;
  refreshConv(d.peer);
  if (S.open === d.peer) {
    renderChatHeader();
    renderBanner();
  }
  scheduleConvReload();
}

function onRead(d) {
  if (!d || !d.peer) return;
  const c = S.convs.get(d.peer);
  if (c) {
    c.unread = 0;
    refreshConv(d.peer);
  }
  if (S.view && S.view.peer === d.peer) for (const m of S.view.msgs.values()) m.unread = false;
}

// ---------------------------------------------------------------- marking read

let readTimer = null;
let readForce = false;

function scheduleMarkRead(force) {
  readForce = readForce || !!force;
  clearTimeout(readTimer);
  readTimer = setTimeout(markRead, 250);
}

async function markRead() {
  const force = readForce;
  readForce = false;
  const peer = S.open;
  if (!peer || !visible()) return;
  const c = S.convs.get(peer);
  const unread = (c && c.unread > 0) || (S.view && [...S.view.msgs.values()].some((m) => m.unread));
  if (!unread && !force) return;
  try {
    await api('POST', paths.read(peer));
    if (c) {
      c.unread = 0;
      refreshConv(peer);
    }
    if (S.view && S.view.peer === peer) for (const m of S.view.msgs.values()) m.unread = false;
  } catch (e) {
    if (e instanceof ApiError && e.code === 'no_session') signedOut();
    // Otherwise it is tried again with the next message or visit.
  }
}

// ---------------------------------------------------------------- sending

function autosize() {
  const ta = $('composer');
  ta.style.height = 'auto';
  ta.style.height = `${Math.min(ta.scrollHeight, 180)}px`;
}

function updateSendButton() {
  $('send').disabled = !$('composer').value.trim() || !S.open;
}

async function sendText() {
  const peer = S.open;
  const ta = $('composer');
  const text = ta.value.trim();
  if (!peer) return;
  if (!text) {
    ta.value = '';
    updateSendButton();
    ta.classList.add('shake');
    setTimeout(() => ta.classList.remove('shake'), 400);
    return;
  }
  // The same text retried after a failed POST keeps its id: never twice.
  const id = S.lastSend && S.lastSend.peer === peer && S.lastSend.text === text ? S.lastSend.id : newMessageID();
  S.lastSend = { peer, text, id };
  ta.value = '';
  S.drafts.delete(peer);
  autosize();
  updateSendButton();
  stopTyping();
  if (S.view) S.view.stick = true;
  const since = S.serial;
  try {
    const m = await api('POST', paths.send, { to: peer, text, id });
    S.lastSend = null;
    upsertMessage(m, true, since);
    if (S.open === peer) scrollToBottom(true);
  } catch (e) {
    if (S.open === peer && !ta.value) {
      ta.value = text;
      autosize();
      updateSendButton();
    } else {
      S.drafts.set(peer, text);
    }
    if (e instanceof ApiError && e.code === 'identity_changed') {
      convFor(peer).identity_changed = true;
      refreshConv(peer);
      if (S.open === peer) {
        renderBanner();
        renderChatHeader();
      }
    }
    showError(e);
  }
}

async function resend(m) {
  const since = S.serial;
  try {
    const n = await api('POST', paths.send, { to: m.peer, text: m.text, id: newMessageID() });
    upsertMessage(n, true, since);
  } catch (e) {
    showError(e);
  }
}

async function cancelMessage(m) {
  try {
    await api('DELETE', paths.message(m.seq));
  } catch (e) {
    showError(e);
    return;
  }
  const v = S.view;
  if (v && v.peer === m.peer) {
    const el = v.els.get(m.seq);
    if (el) el.remove();
    v.els.delete(m.seq);
    v.msgs.delete(m.seq);
    relayout();
  }
  toast('Message cancelled: it was not sent.', '', 'info');
  scheduleConvReload();
}

function onComposerInput() {
  const ta = $('composer');
  autosize();
  updateSendButton();
  const peer = S.open;
  if (!peer) return;
  S.drafts.set(peer, ta.value);
  if (!ta.value.trim()) {
    stopTyping();
    return;
  }
  const t = S.typingOut;
  if (t.peer !== peer || Date.now() - t.last >= 3000) {
    S.typingOut = { peer, last: Date.now(), active: true };
    api('POST', paths.typing(peer), { typing: true }).catch(() => {});
  }
}

function stopTyping() {
  const t = S.typingOut;
  if (t.active && t.peer) api('POST', paths.typing(t.peer), { typing: false }).catch(() => {});
  S.typingOut = { peer: null, last: 0, active: false };
}

// ---------------------------------------------------------------- files

// sendFiles queues files for the open chat. With one file, the composer's
// text becomes its caption.
function sendFiles(files) {
  const peer = S.open;
  if (!peer || !files || files.length === 0) return;
  let caption = '';
  const ta = $('composer');
  if (files.length === 1 && ta.value.trim()) {
    caption = ta.value.trim();
    ta.value = '';
    S.drafts.delete(peer);
    autosize();
    updateSendButton();
    stopTyping();
  }
  for (const [i, file] of [...files].entries()) {
    const u = { id: String(++S.uploadSeq), peer, file, caption: i === 0 ? caption : '', done: 0, total: file.size, error: null, abort: null, el: null };
    S.uploads.set(u.id, u);
    S.uploadQueue.push(u);
    if (S.open === peer) {
      const box = $('messages');
      u.el = pendingEl(u);
      box.append(u.el);
      scrollToBottom(true);
    }
  }
  pumpUploads();
}

async function pumpUploads() {
  if (S.uploading) return;
  S.uploading = true;
  try {
    while (S.uploadQueue.length > 0) {
      const u = S.uploadQueue.shift();
      if (!S.uploads.has(u.id)) continue; // cancelled while waiting
      await runUpload(u);
    }
  } finally {
    S.uploading = false;
  }
}

async function runUpload(u) {
  const { promise, abort } = uploadFile(u.peer, u.file, u.caption, (done, total) => {
    u.done = done;
    u.total = total;
    updatePending(u);
  });
  u.abort = abort;
  u.started = true;
  updatePending(u);
  const since = S.serial;
  try {
    const m = await promise;
    S.uploads.delete(u.id);
    if (u.el) u.el.remove();
    upsertMessage(m, true, since);
  } catch (e) {
    if (e instanceof ApiError && e.code === 'aborted') {
      S.uploads.delete(u.id);
      if (u.el) u.el.remove();
      return;
    }
    u.error = e;
    updatePending(u);
    if (e instanceof ApiError && e.code === 'identity_changed') onIdentity({ peer: u.peer });
    if (e instanceof ApiError && e.code === 'no_session') signedOut();
  }
}

// settleUpload hides the pending bubble of an upload whose message has
// arrived as an event before the upload's own answer.
function settleUpload(m) {
  for (const u of S.uploads.values()) {
    if (!u.settled && !u.error && u.peer === m.peer && u.file.name === m.attachment.name && u.done >= u.total) {
      u.settled = true;
      if (u.el) u.el.remove();
      return;
    }
  }
}

function pendingEls(peer) {
  const out = [];
  for (const u of S.uploads.values()) {
    if (u.peer !== peer || u.settled) continue;
    u.el = pendingEl(u);
    out.push(u.el);
  }
  return out;
}

function pendingEl(u) {
  const el = h('div', { class: 'msg out pending', dataset: { upload: u.id, state: 'uploading' } },
    h('div', { class: 'bubble' },
      h('div', { class: 'attachment att-document' },
        h('div', { class: 'doc-card' },
          h('span', { class: 'doc-icon' }, icon('upload')),
          h('span', { class: 'doc-text' },
            h('span', { class: 'doc-name', text: u.file.name || 'File' }),
            h('span', { class: 'doc-size', text: fmt.size(u.file.size) }))),
        h('div', { class: 'progress', dataset: { phase: 'upload' } }, h('span', { class: 'progress-bar' }, h('span')),
          h('span', { class: 'progress-label' }))),
      u.caption ? h('div', { class: 'text', text: u.caption }) : null));
  el._out = true;
  el._pendingUpload = u;
  fillPending(el, u);
  return el;
}

function updatePending(u) {
  if (u.el && u.el.isConnected) fillPending(u.el, u);
}

function fillPending(el, u) {
  const pct = fmt.percent(u.done, u.total);
  el.querySelector('.progress-bar span').style.width = `${u.error ? 0 : pct}%`;
  el.querySelector('.progress-label').textContent = u.error
    ? 'Not sent'
    : u.started ? `Handing to Magpie ${pct}% · ${fmt.size(u.done)} of ${fmt.size(u.total)}` : 'Waiting…';
  el.classList.toggle('failed', !!u.error);
  if (el._note) el._note.remove();
  const dismiss = () => {
    if (u.abort && !u.error) u.abort();
    S.uploads.delete(u.id);
    el.remove();
  };
  el._note = u.error
    ? h('div', { class: 'msg-note error' }, icon('alert'), h('span', { text: u.error.message + (u.error.hint ? ` ${u.error.hint}` : '') }),
      h('button', { class: 'link-button', type: 'button', text: 'Dismiss', on: { click: dismiss } }))
    : h('div', { class: 'msg-note' }, h('button', { class: 'link-button cancel-upload', type: 'button', text: 'Cancel', on: { click: dismiss } }));
  el.append(el._note);
}

// ---------------------------------------------------------------- search

const runSearchSoon = debounce(runSearch, 300);

async function runSearch(older) {
  const peer = S.open;
  const q = $('search').value.trim();
  if (!peer) return;
  if (!q) {
    if (S.search) exitSearch(true);
    return;
  }
  const gen = ++S.searchGen;
  const cont = older && S.search && S.search.q === q && S.search.peer === peer;
  if (!cont) S.search = { q, peer, oldest: null, more: false, count: 0 };
  const s = S.search;
  S.view = null; // events do not go into the results
  S.gen++;
  $('search-bar').hidden = false;
  $('search-summary').textContent = `Searching for “${q}”…`;
  const params = { q, limit: 100 };
  if (cont && s.oldest !== null) params.before = s.oldest;
  let r;
  try {
    r = await api('GET', paths.messages(peer, params));
  } catch (e) {
    if (gen !== S.searchGen) return;
    $('search-summary').textContent = e.message;
    showError(e);
    return;
  }
  if (gen !== S.searchGen || S.search !== s) return;
  const box = $('messages');
  const els = (r.messages || []).map((m) => {
    const el = h('div', { class: `msg ${m.outgoing ? 'out' : 'in'} result`, dataset: { seq: m.seq },
      title: 'Show in the conversation', tabindex: '0' }, h('div', { class: 'bubble' }));
    fillMsg(el, m, q);
    const open = () => jumpTo(peer, m.seq);
    el.addEventListener('click', (e) => {
      if (!e.target.closest('a, audio, video, button')) open();
    });
    el.addEventListener('keydown', (e) => {
      if (e.key === 'Enter') open();
    });
    if (s.oldest === null || m.seq < s.oldest) s.oldest = m.seq;
    return el;
  });
  s.more = !!r.more;
  s.count += els.length;
  const more = s.more ? h('div', { class: 'history-top', id: 'history-top' },
    h('button', { class: 'button small', type: 'button', text: 'Show older matches', on: { click: () => runSearch(true) } })) : null;
  if (cont) {
    const top = $('history-top');
    if (top) top.remove();
    box.prepend(...[more, ...els].filter(Boolean));
  } else {
    box.replaceChildren(...[more, ...els].filter(Boolean));
    if (els.length === 0) box.append(h('div', { class: 'search-empty', text: `No messages with “${q}” in this conversation.` }));
  }
  relayout();
  if (!cont) scrollToBottom(false);
  $('search-summary').textContent = s.count === 0 ? `No matches for “${q}”`
    : `${s.count}${s.more ? '+' : ''} message${s.count === 1 && !s.more ? '' : 's'} with “${q}”`;
  $('search-summary').title = 'Newest at the bottom. Click a message to see it in the conversation.';
}

function exitSearch(reload) {
  const was = !!S.search;
  S.search = null;
  S.searchGen++;
  $('search').value = '';
  $('search-bar').hidden = true;
  if (was && reload && S.open) loadMessages(S.open);
}

function jumpTo(peer, seq) {
  exitSearch(false);
  S.view = null;
  openConversation(peer, { target: seq });
}

// ---------------------------------------------------------------- safety numbers

let safetyPeer = null;

async function openSafety(peer) {
  if (!peer) return;
  safetyPeer = peer;
  const d = $('safety');
  $('safety-title').textContent = `Safety number with ${peer}`;
  $('safety-digits').replaceChildren(h('span', { class: 'spinner' }));
  $('safety-status').textContent = '';
  $('safety-status').dataset.status = 'loading';
  $('safety-explain').textContent = '';
  $('safety-message').hidden = true;
  $('safety-input').value = '';
  $('verify-button').disabled = true;
  $('safety-qr').removeAttribute('src');
  if (!d.open) d.showModal();
  try {
    const s = await api('GET', paths.safety(peer));
    if (safetyPeer !== peer) return;
    renderSafety(peer, s);
    $('safety-qr').src = `${paths.safetySVG(peer)}?t=${Date.now()}`;
  } catch (e) {
    if (safetyPeer !== peer) return;
    $('safety-digits').replaceChildren();
    safetyMessage(e.message, e.hint, true);
  }
}

function renderSafety(peer, s) {
  const digits = String(s.digits || '').replace(/\D/g, '');
  const groups = [];
  for (let i = 0; i < digits.length; i += 5) groups.push(h('span', { class: 'group', text: digits.slice(i, i + 5) }));
  $('safety-digits').replaceChildren(...groups);
  $('safety-digits').setAttribute('aria-label', `Safety number: ${digits.replace(/(\d{5})/g, '$1 ').trim()}`);
  setSafetyStatus(peer, s.status);
}

function setSafetyStatus(peer, status) {
  const el = $('safety-status');
  el.dataset.status = status;
  el.replaceChildren();
  const explain = $('safety-explain');
  const btn = $('verify-button');
  if (status === 'verified') {
    el.append(icon('shieldCheck'), `Verified`);
    explain.textContent = `You have verified ${peer}. If this number ever changes, Magpie will tell you and hold messages until you verify again.`;
    btn.disabled = true;
    btn.textContent = 'Verified';
  } else if (status === 'changed') {
    el.append(icon('warning'), 'CHANGED');
    explain.textContent = `${peer}'s safety number changed since you last saw it. Compare the new number with ${peer} in person or on a call you trust before you mark it verified.`;
    btn.disabled = false;
    btn.textContent = 'Mark as verified';
  } else {
    el.append(icon('shield'), 'Not verified');
    explain.textContent = `To make sure nobody is in the middle, compare these numbers with ${peer}: in person (scan the code), or read them out on a call you trust. If they match, mark ${peer} as verified.`;
    btn.disabled = false;
    btn.textContent = 'Mark as verified';
  }
}

function safetyMessage(text, hint, isError) {
  const el = $('safety-message');
  el.replaceChildren(...messageParts(text, hint));
  el.classList.toggle('error', !!isError);
  el.classList.toggle('ok', !isError);
  el.hidden = false;
}

async function verify(body) {
  const peer = safetyPeer;
  if (!peer) return;
  try {
    const r = await api('POST', paths.verify(peer), body);
    setSafetyStatus(peer, r.status || 'verified');
    safetyMessage(`${peer} is verified.`, '', false);
    $('toasts').replaceChildren(); // old "safety number changed" errors no longer apply
    const c = convFor(peer);
    c.verified = true;
    c.identity_changed = false;
    refreshConv(peer);
    if (S.open === peer) {
      renderChatHeader();
      renderBanner();
    }
    scheduleConvReload();
  } catch (e) {
    if (e instanceof ApiError && e.code === 'no_session') signedOut();
    safetyMessage(e.message, e.hint, true);
  }
}

function compareDigits(e) {
  e.preventDefault();
  const typed = $('safety-input').value.replace(/\s/g, '');
  if (!typed) {
    safetyMessage('Type the 60 digits the other person reads to you.', '', true);
    return;
  }
  if (!/^\d+$/.test(typed)) {
    safetyMessage('A safety number has only digits.', '', true);
    return;
  }
  if (typed.length !== 60) {
    safetyMessage(`That is ${typed.length} digits; a safety number has 60.`, '', true);
    return;
  }
  verify({ digits: typed });
}

// ---------------------------------------------------------------- settings

async function openSettings() {
  const d = $('settings');
  $('settings-message').hidden = true;
  $('notify-previews').checked = S.previews;
  renderAbout();
  if (!d.open) d.showModal();
  try {
    const s = await api('GET', paths.settings);
    $('read-receipts').checked = !!s.read_receipts;
  } catch (e) {
    settingsMessage(e);
  }
}

function renderAbout() {
  const st = S.status || {};
  const rows = [
    ['Signed in as', st.user ? `${st.user} (device ${st.device})` : '…'],
    ['Connection', stateWords[st.state] || st.state || '…'],
    ['Waiting to send', String(st.outbox ?? 0)],
    ['Server key', st.server_fingerprint || '…'],
    ['Version', st.version || '…'],
  ];
  $('about').replaceChildren(...rows.flatMap(([k, v]) => [h('dt', { text: k }), h('dd', { text: v })]));
}

function settingsMessage(e) {
  const el = $('settings-message');
  el.replaceChildren(...messageParts(e.message, e.hint));
  el.classList.add('error');
  el.hidden = false;
}

async function setReadReceipts() {
  const box = $('read-receipts');
  const want = box.checked;
  box.disabled = true;
  try {
    const s = await api('PUT', paths.settings, { read_receipts: want });
    box.checked = s && typeof s.read_receipts === 'boolean' ? s.read_receipts : want;
    $('settings-message').hidden = true;
    if (S.status) S.status.read_receipts = box.checked;
  } catch (e) {
    box.checked = !want;
    settingsMessage(e);
  } finally {
    box.disabled = false;
  }
}

// ---------------------------------------------------------------- notifications

function renderBell() {
  const b = $('notify-button');
  let state;
  if (!('Notification' in window)) state = 'unsupported';
  else if (Notification.permission === 'granted') state = S.notify ? 'on' : 'off';
  else state = Notification.permission; // default | denied
  b.dataset.state = state;
  b.hidden = state === 'unsupported';
  setIcon(b, state === 'on' ? 'bell' : 'bellOff');
  const title = {
    on: 'Desktop notifications are on. Click to turn them off.',
    off: 'Desktop notifications are off. Click to turn them on.',
    default: 'Turn on desktop notifications',
    denied: 'Notifications are blocked for this page in the browser’s site settings',
  }[state] || '';
  b.title = title;
  b.setAttribute('aria-label', title);
  b.setAttribute('aria-pressed', state === 'on' ? 'true' : 'false');
}

async function bellClicked() {
  if (!('Notification' in window)) return;
  if (Notification.permission === 'default') {
    const p = await Notification.requestPermission();
    if (p === 'granted') {
      S.notify = true;
      localStorage.setItem('magpie.notify', 'on');
      toast('Desktop notifications are on.', 'You will be told of new messages while this tab is in the background.', 'info');
    }
  } else if (Notification.permission === 'granted') {
    S.notify = !S.notify;
    localStorage.setItem('magpie.notify', S.notify ? 'on' : 'off');
  } else {
    toast('Notifications are blocked for this page.', 'Allow them in the browser’s site settings (the icon left of the address).');
  }
  renderBell();
}

function notify(m) {
  if (!('Notification' in window) || Notification.permission !== 'granted' || !S.notify) return;
  if (visible() && S.open === m.peer) return;
  try {
    const n = new Notification(S.previews ? m.peer : 'Magpie', {
      body: S.previews ? fmt.preview(m) || 'New message' : 'New message',
      tag: `magpie-${m.peer}`,
      icon: 'icon.svg',
    });
    n.onclick = () => {
      window.focus();
      go(m.peer);
      n.close();
    };
  } catch {
    // Some browsers allow notifications only from a service worker.
  }
}

// ---------------------------------------------------------------- events

function connectEvents() {
  if (S.es) S.es.close();
  const es = new EventSource(paths.events);
  S.es = es;
  const on = (name, fn) => es.addEventListener(name, (e) => {
    let d;
    try {
      d = JSON.parse(e.data);
    } catch {
      return;
    }
    fn(d);
  });
  es.onopen = () => {
    const again = S.everOpened;
    S.everOpened = true;
    S.linkUp = true;
    S.retryMs = 1000;
    renderState();
    refreshNotes();
    if (again && S.loaded) reloadAll();
  };
  es.onerror = () => {
    S.linkUp = false;
    S.everOpened = true;
    renderState();
    refreshNotes();
    if (es.readyState !== EventSource.CLOSED) return; // the browser retries
    // Refused for good (403, not an event stream): find out why.
    es.close();
    setTimeout(async () => {
      if (S.es !== es) return;
      try {
        await api('GET', paths.status);
      } catch (e) {
        if (e instanceof ApiError && e.code === 'no_session') {
          signedOut();
          return;
        }
      }
      S.retryMs = Math.min(S.retryMs * 2, 30000);
      connectEvents();
    }, S.retryMs);
  };
  on('state', setStatus);
  on('message', onNewMessage);
  on('update', onUpdate);
  on('progress', onProgress);
  on('typing', (d) => d && d.peer && setTyping(d.peer, !!d.typing));
  on('identity', onIdentity);
  on('read', onRead);
  on('resync', reloadAll);
}

// reloadAll reloads what is shown, after missed events.
async function reloadAll() {
  loadStatus();
  await loadConversations();
  if (!S.open) return;
  if (S.search) {
    runSearch();
    return;
  }
  const v = S.view;
  if (!v || v.loading) return;
  const since = S.serial;
  let r;
  try {
    r = await api('GET', paths.messages(v.peer, { limit: 50 }));
  } catch (e) {
    showError(e);
    return;
  }
  if (S.view !== v) return;
  const got = r.messages || [];
  let newest = -Infinity;
  for (const seq of v.els.keys()) newest = Math.max(newest, seq);
  if (got.length > 0 && got[0].seq > newest && r.more) {
    loadMessages(v.peer); // a gap: start over
    return;
  }
  for (const m of got) upsertMessage(m, false, since);
  scheduleMarkRead();
}

// ---------------------------------------------------------------- wiring

function bind() {
  fillIcons(document);

  $('new-chat-form').addEventListener('submit', async (e) => {
    e.preventDefault();
    const input = $('new-chat');
    const err = $('new-chat-error');
    const { name, error } = fmt.checkUsername(input.value);
    if (error) {
      err.textContent = error;
      err.hidden = false;
      return;
    }
    err.hidden = true;
    if (S.convs.has(name) && S.convs.get(name).last) {
      input.value = '';
      go(name);
      return;
    }
    $('new-chat-button').disabled = true;
    try {
      await api('GET', paths.contact(name));
      input.value = '';
      convFor(name);
      moveToTop(name);
      go(name);
    } catch (ex) {
      err.replaceChildren(...messageParts(ex.message, ex.hint));
      err.hidden = false;
      if (ex instanceof ApiError && ex.code === 'no_session') signedOut();
    } finally {
      $('new-chat-button').disabled = false;
    }
  });
  $('new-chat').addEventListener('input', () => {
    $('new-chat-error').hidden = true;
  });

  $('back').addEventListener('click', () => go(null));

  const ta = $('composer');
  ta.addEventListener('input', onComposerInput);
  ta.addEventListener('blur', stopTyping);
  ta.addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && !e.shiftKey && !e.isComposing && e.keyCode !== 229) {
      // On a phone, Enter is a newline and the button sends.
      if (isTouch() && narrow()) return;
      e.preventDefault();
      sendText();
    }
  });
  ta.addEventListener('paste', (e) => {
    const files = e.clipboardData && e.clipboardData.files;
    if (files && files.length > 0) {
      e.preventDefault();
      sendFiles([...files]);
    }
  });
  $('composer-form').addEventListener('submit', (e) => {
    e.preventDefault();
    sendText();
    if (!isTouch()) ta.focus();
  });
  $('file-input').addEventListener('change', (e) => {
    const files = [...e.target.files];
    e.target.value = '';
    sendFiles(files);
  });

  // Drag and drop onto the chat.
  const view = $('chat-view');
  const overlay = $('drop-overlay');
  let depth = 0;
  const hasFiles = (e) => e.dataTransfer && [...e.dataTransfer.types].includes('Files');
  view.addEventListener('dragenter', (e) => {
    if (!hasFiles(e) || !S.open) return;
    e.preventDefault();
    depth++;
    overlay.hidden = false;
  });
  view.addEventListener('dragover', (e) => {
    if (!hasFiles(e) || !S.open) return;
    e.preventDefault();
    e.dataTransfer.dropEffect = 'copy';
  });
  view.addEventListener('dragleave', (e) => {
    if (!hasFiles(e)) return;
    depth = Math.max(0, depth - 1);
    if (depth === 0) overlay.hidden = true;
  });
  view.addEventListener('drop', (e) => {
    if (!hasFiles(e)) return;
    e.preventDefault();
    depth = 0;
    overlay.hidden = true;
    sendFiles([...e.dataTransfer.files]);
  });
  // A file dropped anywhere else must not navigate away from the app.
  window.addEventListener('dragover', (e) => {
    if (hasFiles(e)) e.preventDefault();
  });
  window.addEventListener('drop', (e) => {
    if (hasFiles(e)) e.preventDefault();
  });

  const box = $('messages');
  box.addEventListener('scroll', () => {
    if (S.view) S.view.stick = atBottom();
    if (atBottom()) {
      $('jump').hidden = true;
      $('jump').classList.remove('has-new');
    } else if (!S.search) {
      $('jump').hidden = false;
    }
    if (box.scrollTop < 400 && S.view && S.view.more && !S.view.loading && !S.search) loadOlder();
  }, { passive: true });
  $('jump').addEventListener('click', () => scrollToBottom(true));
  // A banner, the typing line, a taller composer or a phone's keyboard
  // shrink the chat: stay at the bottom if that is where the reader was.
  new ResizeObserver(() => {
    if (S.view && S.view.stick && !S.search) scrollToBottom(false);
  }).observe(box);

  $('search').addEventListener('input', () => runSearchSoon());
  $('search').addEventListener('keydown', (e) => {
    if (e.key === 'Escape') exitSearch(true);
    if (e.key === 'Enter') runSearch();
  });
  $('search-clear').addEventListener('click', () => exitSearch(true));

  $('safety-button').addEventListener('click', () => openSafety(S.open));
  $('identity-banner-button').addEventListener('click', () => openSafety(S.open));
  $('verify-button').addEventListener('click', () => verify({}));
  $('safety-compare').addEventListener('submit', compareDigits);

  $('settings-button').addEventListener('click', openSettings);
  $('read-receipts').addEventListener('change', setReadReceipts);
  $('notify-previews').addEventListener('change', (e) => {
    S.previews = e.target.checked;
    localStorage.setItem('magpie.previews', S.previews ? 'on' : 'off');
  });
  $('notify-button').addEventListener('click', bellClicked);

  for (const d of document.querySelectorAll('dialog')) {
    for (const b of d.querySelectorAll('.sheet-close')) b.addEventListener('click', () => d.close());
    // A click on the backdrop closes.
    d.addEventListener('click', (e) => {
      if (e.target !== d) return;
      const r = d.getBoundingClientRect();
      const inside = e.clientX >= r.left && e.clientX <= r.right && e.clientY >= r.top && e.clientY <= r.bottom;
      if (!inside) d.close();
    });
  }
  $('safety').addEventListener('close', () => {
    safetyPeer = null;
  });
  $('lightbox').addEventListener('close', () => $('lightbox-image').removeAttribute('src'));
  $('lightbox-image').addEventListener('click', () => $('lightbox').close());

  document.addEventListener('visibilitychange', () => {
    if (visible()) scheduleMarkRead();
    else stopTyping();
  });
  window.addEventListener('focus', () => scheduleMarkRead());
  window.addEventListener('hashchange', route);
  window.addEventListener('pagehide', stopTyping);

  // Waiting notes depend on time; list times change at midnight.
  setInterval(() => {
    refreshNotes();
  }, 5000);
  setInterval(renderList, 60000);
}

async function boot() {
  bind();
  renderBell();
  renderState();
  connectEvents();
  await Promise.all([loadStatus(), loadConversations()]);
  route();
}

boot();
