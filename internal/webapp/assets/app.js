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
//
// Groups (a group's conversation is li[data-peer="group:HEX"], with class
// .is-group and .conv-name its name):
//   #new-group-button         opens #new-group: #new-group-name,
//                             #new-group-members, #new-group-create,
//                             #new-group-error
//   #join-group-button        opens #join-group: #join-group-link,
//                             #join-group-submit, #join-group-message
//   #messages .msg.in[data-sender] a member's message, its .sender the name;
//                             .msg.notice .notice-text a line about the group;
//                             .msg.out .receipts-button[data-delivered]
//                             [data-read][data-recipients] "Delivered to N
//                             of M · Read by K" (click: who)
//   #composer-blocked         why this account cannot send here (the
//                             composer is then hidden and disabled)
//   #group-info-button        opens #group-info: #group-members
//                             li[data-user][data-role] with buttons
//                             .make-admin, .make-member, .make-owner,
//                             .remove, .message; #group-add-input +
//                             #group-add-button; #group-name,
//                             #group-description, #group-info-save;
//                             #group-admins-only-send,
//                             #group-admins-only-edit-info,
//                             #group-disappear (select); #group-link-on,
//                             #group-link-off, #group-link-approval,
//                             #group-link (input), #group-link-copy;
//                             #group-requests li[data-user] .approve/.deny;
//                             #group-leave, then #group-leave-yes;
//                             #group-info-message (errors);
//                             #group-picture-actions: #group-picture-input
//                             (input type=file), #group-picture-change,
//                             #group-picture-remove
//   .avatar.group             a group's avatar: img.group-picture[data-url]
//                             when it has a picture, else (or when that
//                             does not load) svg.icon-users
//   #chat-disappear           "Messages disappear after 1 day" in the chat
//                             header (hidden when they do not)
//   .msg .meta .expiry[data-expires] the timer mark of a message that
//                             disappears (title: when)

import { api, ApiError, paths, newMessageID, uploadFile, isGroup, groupID } from './api.js';
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
  typingIn: new Map(), // peer → Map sender → timer: who is typing there
  groups: new Map(), // a group's peer → Group (GET /api/v1/groups/{id})
  pictures: new Map(), // a group picture's URL → { src: object URL, or null when it did not load; wait: promise }
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
    c = { peer, unread: 0, last: null, verified: false, identity_changed: false, group: isGroup(peer) ? groupID(peer) : null, name: '' };
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

// A group's avatar: its picture, or the group icon on the group's colour.
function groupAvatar(peer, cls) {
  const el = h('span', { class: `avatar group${cls ? ' ' + cls : ''}`, 'aria-hidden': 'true' });
  el.style.setProperty('--hue', String(fmt.hue(peer)));
  fillGroupAvatar(el, peer);
  return el;
}

// groupPictureURL is the address of group peer's picture (a new one for
// each version of the group, so a new picture is not an old one from the
// cache), or '' when it has none.
function groupPictureURL(peer) {
  const g = S.groups.get(peer);
  return g && g.has_avatar ? paths.groupAvatar(g.id, g.seq) : '';
}

// picture fetches a group's picture once and keeps it as an object URL:
// the engine serves it with no-cache, and the list, the header and the
// info panel are drawn again often. The engine drops a picture when the
// group's changes; asking again for one the page no longer shows could
// find it gone.
function picture(url) {
  let p = S.pictures.get(url);
  if (!p) {
    p = { src: undefined, wait: null };
    p.wait = fetch(url, { credentials: 'same-origin' })
      .then(async (r) => {
        const b = r.ok ? await r.blob() : null;
        p.src = b && b.type.startsWith('image/') ? URL.createObjectURL(b) : null;
      })
      .catch(() => {
        p.src = null;
      });
    S.pictures.set(url, p);
  }
  return p;
}

// forgetPicture lets go of a picture the page no longer shows.
function forgetPicture(url) {
  const p = S.pictures.get(url);
  if (!p) return;
  S.pictures.delete(url);
  p.wait.then(() => {
    if (p.src) URL.revokeObjectURL(p.src);
  });
}

// fillGroupAvatar shows in el (an .avatar) group peer's picture over the
// group icon, which shows while it loads and instead of it when it does
// not load (it expired on the server, say).
function fillGroupAvatar(el, peer) {
  const url = groupPictureURL(peer);
  if (el.dataset.picture === url && el.dataset.peer === peer && el.querySelector('svg.icon-users')) return;
  // Another group's picture (the header, another chat opened) goes at once.
  if (!el.querySelector('svg.icon-users') || el.dataset.peer !== peer) el.replaceChildren(icon('users'));
  el.classList.toggle('has-picture', !!el.querySelector('img.group-picture'));
  el.dataset.peer = peer;
  el.dataset.picture = url;
  const p = url ? picture(url) : null;
  // A picture on show stays until the next one is ready.
  const show = () => {
    if (el.dataset.picture !== url) return; // another was asked for since
    const old = el.querySelector('img.group-picture');
    if (!p || !p.src) {
      if (old) old.remove();
      el.classList.remove('has-picture');
      return;
    }
    const img = h('img', { class: 'group-picture', alt: '', decoding: 'async', draggable: 'false', dataset: { url } });
    img.addEventListener('error', () => {
      img.remove();
      el.classList.remove('has-picture');
    });
    img.src = p.src;
    if (old) old.replaceWith(img);
    else el.append(img);
    el.classList.add('has-picture');
  };
  if (!p || p.src !== undefined) show();
  else p.wait.then(show);
}

// The name of a conversation: the user, or the group's name.
function convName(peer) {
  if (!isGroup(peer)) return peer;
  const g = S.groups.get(peer);
  const c = S.convs.get(peer);
  return (g && g.name) || (c && c.name) || 'Unnamed group';
}

function myName() {
  return S.status ? S.status.user : '';
}

// Who is typing in a conversation, by name.
function typers(peer) {
  const m = S.typingIn.get(peer);
  return m ? [...m.keys()] : [];
}

// The line that says who types: "typing…" in a user's conversation, the
// names in a group's.
function typingShort(peer) {
  return isGroup(peer) ? fmt.typingLine(typers(peer)) : 'typing…';
}

function convItem(c) {
  const last = c.last;
  const typing = S.typingIn.has(c.peer);
  const group = isGroup(c.peer);
  const name = convName(c.peer);
  const preview = h('span', { class: `conv-preview${typing ? ' is-typing' : ''}` });
  if (typing) {
    preview.textContent = typingShort(c.peer);
  } else if (last) {
    if (last.notice) {
      preview.classList.add('is-notice');
    } else if (last.outgoing) {
      preview.append(ticks(last, true), 'You: ');
    } else if (group && last.sender) {
      preview.append(`${last.sender}: `);
    }
    preview.append(fmt.preview(last));
  } else {
    preview.textContent = 'No messages yet';
  }
  const badges = [];
  if (c.identity_changed) badges.push(h('span', { class: 'conv-flag changed', title: 'Safety number changed' }, icon('warning')));
  else if (c.verified) badges.push(h('span', { class: 'conv-flag verified', title: 'Verified' }, icon('shieldCheck')));
  const when = last ? fmt.parseTime(last.composed_at) : null;
  const li = h('li', { class: `conv${c.peer === S.open ? ' active' : ''}${c.unread > 0 ? ' has-unread' : ''}${group ? ' is-group' : ''}`, dataset: { peer: c.peer } },
    h('button', { class: 'conv-button', type: 'button', 'aria-current': c.peer === S.open ? 'true' : null, on: { click: () => go(c.peer) } },
      group ? groupAvatar(c.peer) : avatar(c.peer),
      h('span', { class: 'conv-main' },
        h('span', { class: 'conv-top' },
          group ? h('span', { class: 'sr-only', text: 'Group: ' }) : null,
          h('span', { class: 'conv-name', text: name }), ...badges,
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
  renderComposer();
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
  renderComposer();
  $('drop-text').textContent = `Drop files to send to ${convName(peer)}`;
  renderChatHeader();
  renderBanner();
  renderTyping();
  renderList();
  if (isGroup(peer)) loadGroup(peer);
  if (!isTouch() && !ta.disabled) ta.focus();
  await loadMessages(peer, target);
  scheduleMarkRead(true);
}

function renderChatHeader() {
  const peer = S.open;
  if (!peer) return;
  const c = convFor(peer);
  const group = isGroup(peer);
  $('chat-peer').textContent = convName(peer);
  const av = $('chat-avatar');
  if (group) fillGroupAvatar(av, peer);
  else {
    av.textContent = fmt.initial(peer);
    av.classList.remove('has-picture');
  }
  av.classList.toggle('group', group);
  av.style.setProperty('--hue', String(fmt.hue(peer)));
  renderDisappear(group ? S.groups.get(peer) : null);
  const badge = $('chat-badge');
  badge.replaceChildren();
  badge.title = '';
  badge.className = 'badge-icon';
  $('safety-button').hidden = group;
  $('group-info-button').hidden = !group;
  if (group) {
    const sub = $('chat-sub');
    const typing = S.typingIn.has(peer);
    sub.classList.toggle('is-typing', typing);
    sub.textContent = typing ? typingShort(peer) : groupSummary(S.groups.get(peer));
    sub.title = sub.textContent;
    return;
  }
  $('chat-sub').title = '';
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

// renderDisappear says in the chat header how long the group's messages
// stay, when they disappear.
function renderDisappear(g) {
  const chip = $('chat-disappear');
  const secs = g && g.settings ? g.settings.disappear_after_s || 0 : 0;
  chip.hidden = secs <= 0;
  if (secs <= 0) return;
  const label = `Messages disappear after ${fmt.span(secs)}`;
  if (chip.title === label) return;
  chip.title = label;
  chip.replaceChildren(icon('timer'), h('span', { class: 'sr-only', text: 'Messages disappear after ' }), h('span', { text: fmt.span(secs) }));
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
  $('typing-text').textContent = on ? fmt.typingLine(typers(peer)) : '';
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
  const text = isGroup(view.peer)
    ? `This is the start of the group “${convName(view.peer)}”. Messages and files are end-to-end encrypted: only its members can read them.`
    : `This is the start of your conversation with ${view.peer}. Messages and files are end-to-end encrypted.`;
  return h('div', { class: 'history-top start', id: 'history-top' }, icon('lock'), h('span', { text }));
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
    const cont = !!(prev && prev._out === el._out && prev._sender === el._sender && !prev._notice && !el._notice &&
      d && prev._date && d - prev._date < 5 * 60000 && !prev.classList.contains('has-note'));
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
  const el = m.notice
    ? h('div', { class: 'msg notice', dataset: { seq: m.seq } })
    : h('div', { class: `msg ${m.outgoing ? 'out' : 'in'}`, dataset: { seq: m.seq } }, h('div', { class: 'bubble' }));
  fillMsg(el, m);
  return el;
}

// fillNotice shows a line about a group (who joined, left, renamed it), in
// the middle, not as anyone's bubble.
function fillNotice(el, m, highlight) {
  el.classList.add('notice');
  el.classList.remove('in', 'out');
  const d = el._date;
  const text = textEl(m.text || '', highlight);
  text.className = 'notice-text';
  el.replaceChildren(h('div', { class: 'notice-line', title: fmt.full(d) }, text,
    h('time', { class: 'notice-time', datetime: m.composed_at, text: fmt.clock(d) })));
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
  el._notice = !!m.notice;
  el._sender = m.outgoing ? '' : m.sender || m.peer;
  el.dataset.state = m.state;
  if (m.notice) {
    fillNotice(el, m, highlight);
    return;
  }
  const fromMember = isGroup(m.peer) && !m.outgoing && !!m.sender;
  if (fromMember) el.dataset.sender = m.sender;
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
  const expires = fmt.parseTime(m.expires_at);
  const gone = expires ? `Disappears on ${fmt.full(expires)}` : '';
  const meta = h('span', { class: 'meta' },
    expires ? h('span', { class: 'expiry', role: 'img', title: gone, 'aria-label': gone, dataset: { expires: m.expires_at } }, icon('timer')) : null,
    h('time', { datetime: m.composed_at, title: fmt.full(d), text: fmt.clock(d) }),
    m.outgoing ? ticks(m) : null);
  if (el._meta) el._meta.remove();
  // Without a caption, the time sits on the attachment's footer line.
  const footer = !text && el._att ? el._att.querySelector('.att-footer') : null;
  if (footer) footer.append(meta);
  else bubble.append(meta);
  el._meta = meta;
  // In a group, whose message it is: first in the bubble (a run of one
  // sender's bubbles shows it once, see relayout).
  if (el._senderEl) el._senderEl.remove();
  el._senderEl = null;
  if (fromMember) {
    const who = h('div', { class: 'sender', text: m.sender });
    who.style.setProperty('--hue', String(fmt.hue(m.sender)));
    bubble.prepend(who);
    el._senderEl = who;
  }
  fillNote(el, m);
  fillReceipts(el, m);
}

// fillReceipts puts under this account's message to a group how many
// members have it and have read it; a click shows who.
function fillReceipts(el, m) {
  let box = null;
  if (m.outgoing && isGroup(m.peer) && m.recipients > 0 && m.state !== 'failed') {
    const n = m.recipients;
    const delivered = m.delivered_to || [];
    const read = m.read_by || [];
    const summary = `Delivered to ${Math.min(delivered.length, n)} of ${n} · Read by ${Math.min(read.length, n)}`;
    const who = receiptLists(m);
    const title = who.map(([label, names]) => `${label}: ${names.join(', ')}`).join('\n');
    const open = !!el._receiptsOpen;
    const button = h('button', {
      class: 'receipts-button', type: 'button', title, 'aria-expanded': open ? 'true' : 'false',
      dataset: { delivered: delivered.length, read: read.length, recipients: n },
      on: { click: () => {
        el._receiptsOpen = !el._receiptsOpen;
        fillReceipts(el, el._msg);
      } },
    }, read.length >= n ? icon('checks') : null, summary);
    box = h('div', { class: 'msg-receipts' }, button);
    if (open) {
      box.append(h('dl', { class: 'receipts-details' },
        ...who.flatMap(([label, names]) => [h('dt', { text: label }), h('dd', { text: names.join(', ') })])));
    }
  }
  if (el._receipts) el._receipts.remove();
  if (box) el.append(box);
  el._receipts = box;
}

// receiptLists says who has read a message, who has it, and who does not
// yet (of the group's members now): [[label, names]...], the empty ones
// left out.
function receiptLists(m) {
  const read = m.read_by || [];
  const delivered = (m.delivered_to || []).filter((u) => !read.includes(u));
  const g = S.groups.get(m.peer);
  const me = myName();
  const waiting = g ? g.members.map((x) => x.user).filter((u) => u !== me && !read.includes(u) && !delivered.includes(u)) : [];
  const out = [];
  if (read.length) out.push(['Read by', read]);
  if (delivered.length) out.push([read.length ? 'Delivered to (not read yet)' : 'Delivered to', delivered]);
  if (waiting.length && read.length + delivered.length < m.recipients) out.push(['Not delivered yet', waiting]);
  if (out.length === 0) out.push(['Sent', ['not delivered to anyone yet']]);
  return out;
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
    if (!m.notice) setTyping(m.peer, m.sender || m.peer, false);
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

// setTyping records that sender types (or stopped) in the conversation
// with peer: the peer themself, or a member of the group.
function setTyping(peer, sender, on) {
  let who = S.typingIn.get(peer);
  const was = !!who && who.has(sender);
  if (who) clearTimeout(who.get(sender));
  if (on) {
    if (!who) S.typingIn.set(peer, (who = new Map()));
    who.set(sender, setTimeout(() => setTyping(peer, sender, false), 6000));
  } else if (who) {
    who.delete(sender);
    if (who.size === 0) S.typingIn.delete(peer);
  }
  if (was !== on) {
    if (S.convs.has(peer)) refreshConv(peer);
    if (S.open === peer) renderTyping();
  }
}

function onTyping(d) {
  if (!d || !d.peer) return;
  const sender = d.sender || d.peer;
  if (sender === myName()) return; // this account, on another device
  setTyping(d.peer, sender, !!d.typing);
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
  $('send').disabled = !$('composer').value.trim() || !S.open || !!sendBlock(S.open);
}

// sendBlock says why this account cannot send to peer ('' if it can): a
// group it is not a member of, or one where only admins send.
function sendBlock(peer) {
  if (!isGroup(peer)) return '';
  const g = S.groups.get(peer);
  if (!g) return ''; // not known yet: the engine decides
  if (!g.role) return 'You can’t send messages to this group because you’re not a member of it.';
  if (!g.can_send) {
    return g.settings && g.settings.admins_only_send
      ? 'Only admins can send messages to this group.'
      : 'You can’t send messages to this group.';
  }
  return '';
}

// renderComposer shows the composer, or why the open chat has none.
function renderComposer() {
  const why = sendBlock(S.open);
  const ta = $('composer');
  if (why && document.activeElement === ta) ta.blur();
  if (why) stopTyping();
  $('composer-form').hidden = !!why;
  ta.disabled = !!why;
  $('file-input').disabled = !!why;
  $('composer-blocked').hidden = !why;
  $('composer-blocked-text').textContent = why;
  updateSendButton();
}

async function sendText() {
  const peer = S.open;
  const ta = $('composer');
  const text = ta.value.trim();
  if (!peer) return;
  const why = sendBlock(peer);
  if (why) {
    toast(why, '');
    return;
  }
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
    if (e instanceof ApiError && isGroup(peer) && (e.code === 'not_member' || e.code === 'forbidden')) loadGroup(peer);
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
  if (v && v.peer === m.peer && dropMessage(v, m.seq)) relayout();
  toast('Message cancelled: it was not sent.', '', 'info');
  scheduleConvReload();
}

// dropMessage takes message seq off view (the engine no longer has it). It
// reports whether it was there; the caller runs relayout.
function dropMessage(v, seq) {
  const el = v.els.get(seq);
  if (!el) return false;
  el.remove();
  v.els.delete(seq);
  v.msgs.delete(seq);
  if (v.oldest === seq) v.oldest = v.els.size ? Math.min(...v.els.keys()) : null;
  return true;
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
  const why = sendBlock(peer);
  if (why) {
    toast(why, '');
    return;
  }
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

// ---------------------------------------------------------------- groups

// groupSummary is the line under a group's name: its members.
function groupSummary(g) {
  if (!g) return 'Group · end-to-end encrypted';
  if (!g.role) return 'You are not a member of this group';
  const me = myName();
  const others = g.members.map((m) => m.user).filter((u) => u !== me);
  return fmt.nameList(['You', ...others], 6);
}

function roleWord(role) {
  return { owner: 'Owner', admin: 'Admin', member: 'Member' }[role] || '';
}

// loadGroup asks the engine for a group as this device knows it now.
async function loadGroup(peer) {
  try {
    const g = await api('GET', paths.group(groupID(peer)));
    setGroup(g);
    return g;
  } catch (e) {
    if (e instanceof ApiError && e.code === 'no_session') signedOut();
    // Otherwise the page keeps what it knew; the next event tries again.
    return null;
  }
}

// loadGroups asks the engine for every group, for what the list shows of
// them (their pictures).
async function loadGroups() {
  let r;
  try {
    r = await api('GET', paths.groups);
  } catch (e) {
    if (e instanceof ApiError && e.code === 'no_session') signedOut();
    return;
  }
  for (const g of r.groups || []) setGroup(g);
}

const scheduleGroupsReload = debounce(loadGroups, 400);

// setGroup keeps a group the engine answered with and redraws what shows
// it. An answer older than what the page has (a lower seq) is dropped.
function setGroup(g) {
  if (!g || !g.peer) return;
  const old = S.groups.get(g.peer);
  if (old && g.seq < old.seq) return;
  const oldPicture = groupPictureURL(g.peer);
  S.groups.set(g.peer, g);
  const c = S.convs.get(g.peer);
  const newPicture = groupPictureURL(g.peer);
  if (c && (c.name !== g.name || oldPicture !== newPicture)) {
    c.name = g.name;
    refreshConv(g.peer);
  }
  if (S.open === g.peer) {
    renderChatHeader();
    renderComposer();
    $('drop-text').textContent = `Drop files to send to ${convName(g.peer)}`;
  }
  if (infoPeer === g.peer) renderGroupInfo();
  if (oldPicture && oldPicture !== newPicture) forgetPicture(oldPicture);
}

// onGroupEvent: a group changed (members, roles, name, settings, link).
function onGroupEvent(d) {
  if (!d || !d.peer) return;
  scheduleConvReload();
  if (S.open === d.peer || infoPeer === d.peer) loadGroup(d.peer);
  else scheduleGroupsReload();
}

function fieldMessage(el, message, hint, isError) {
  el.replaceChildren(...messageParts(message, hint));
  el.classList.toggle('error', !!isError);
  el.classList.toggle('ok', !isError);
  el.hidden = false;
}

// ------------------------------------------------ new group, join a group

function openNewGroup() {
  $('new-group-error').hidden = true;
  $('new-group-name').value = '';
  $('new-group-members').value = '';
  $('new-group').showModal();
  $('new-group-name').focus();
}

async function createGroup(e) {
  e.preventDefault();
  const err = $('new-group-error');
  const name = $('new-group-name').value.trim();
  if (!name) {
    fieldMessage(err, 'Give the group a name.', '', true);
    $('new-group-name').focus();
    return;
  }
  const { names, error } = fmt.parseUsernames($('new-group-members').value);
  if (error) {
    fieldMessage(err, error, '', true);
    $('new-group-members').focus();
    return;
  }
  err.hidden = true;
  const button = $('new-group-create');
  button.disabled = true;
  try {
    const g = await api('POST', paths.groups, { name, members: names.filter((u) => u !== myName()) });
    setGroup(g);
    const c = convFor(g.peer);
    c.name = g.name;
    moveToTop(g.peer);
    $('new-group').close();
    go(g.peer);
    scheduleConvReload();
  } catch (ex) {
    if (ex instanceof ApiError && ex.code === 'no_session') signedOut();
    fieldMessage(err, ex.message, ex.hint, true);
  } finally {
    button.disabled = false;
  }
}

function openJoinGroup() {
  $('join-group-message').hidden = true;
  $('join-group-link').value = '';
  $('join-group').showModal();
  $('join-group-link').focus();
}

async function joinGroup(e) {
  e.preventDefault();
  const msg = $('join-group-message');
  const link = $('join-group-link').value.trim();
  if (!link) {
    fieldMessage(msg, 'Paste the group’s join link.', '', true);
    return;
  }
  msg.hidden = true;
  const button = $('join-group-submit');
  button.disabled = true;
  try {
    const g = await api('POST', paths.joinGroup, { link });
    setGroup(g);
    scheduleConvReload();
    if (g.role) {
      convFor(g.peer).name = g.name;
      moveToTop(g.peer);
      $('join-group').close();
      go(g.peer);
      toast(`You joined “${g.name}”.`, '', 'info');
    } else {
      fieldMessage(msg, `You asked to join “${g.name}”.`,
        'An admin of the group decides. The group shows up in your conversations once they let you in.', false);
    }
  } catch (ex) {
    if (ex instanceof ApiError && ex.code === 'no_session') signedOut();
    fieldMessage(msg, ex.message, ex.hint, true);
  } finally {
    button.disabled = false;
  }
}

// ------------------------------------------------ the group info panel

let infoPeer = null; // the group #group-info shows
let infoDirty = false; // its name or description were edited, not saved

// What this account may do in group g (the rules of package group; the
// engine checks them again).
function groupRights(g) {
  const me = myName();
  const role = g.role;
  const admin = role === 'owner' || role === 'admin';
  return {
    member: !!role,
    admin,
    owner: role === 'owner',
    editInfo: !!role && (admin || !(g.settings && g.settings.admins_only_edit_info)),
    remove: (m) => m.user !== me && m.role !== 'owner' && (role === 'owner' || (role === 'admin' && m.role === 'member')),
    promote: (m) => admin && m.role === 'member',
    demote: (m) => role === 'owner' && m.role === 'admin',
    crown: (m) => role === 'owner' && m.user !== me,
  };
}

function openGroupInfo(peer) {
  if (!isGroup(peer)) return;
  infoPeer = peer;
  infoDirty = false;
  $('group-info-message').hidden = true;
  $('group-leave-confirm').hidden = true;
  $('group-add-input').value = '';
  renderGroupInfo();
  const d = $('group-info');
  if (!d.open) d.showModal();
  loadGroup(peer);
}

function infoMessage(message, hint, isError) {
  fieldMessage($('group-info-message'), message, hint, isError);
}

// groupChange makes a change to the shown group and shows the group the
// engine answers with (or why it refused).
async function groupChange(method, path, body, busy) {
  const peer = infoPeer;
  if (busy) busy.disabled = true;
  $('group-info-message').hidden = true;
  try {
    const r = await api(method, path, body);
    setGroup(r.group || r);
    return r;
  } catch (e) {
    if (e instanceof ApiError && e.code === 'no_session') signedOut();
    if (infoPeer === peer) infoMessage(e.message, e.hint, true);
    else showError(e);
    loadGroup(peer);
    return null;
  } finally {
    if (busy && busy.isConnected) busy.disabled = false;
  }
}

function renderGroupInfo() {
  const peer = infoPeer;
  if (!peer) return;
  const g = S.groups.get(peer);
  const d = $('group-info');
  $('group-info-title').textContent = g ? g.name || 'Unnamed group' : convName(peer);
  d.classList.toggle('loading', !g);
  $('group-info-loading').hidden = !!g;
  if (!g) return;
  const rights = groupRights(g);
  const refused = $('group-refused');
  refused.hidden = !g.refused;
  refused.textContent = g.refused ? `This device refused a change to the group: ${g.refused}` : '';

  // About.
  const count = g.members.length;
  const you = g.role ? `You are ${g.role === 'owner' ? 'the owner' : g.role === 'admin' ? 'an admin' : 'a member'}` : 'You are not a member';
  const facts = [`${count} member${count === 1 ? '' : 's'}`, you];
  if (g.settings && g.settings.disappear_after_s > 0) facts.push(`messages disappear after ${fmt.span(g.settings.disappear_after_s)}`);
  $('group-about').replaceChildren(
    groupAvatar(peer, 'large'),
    h('div', { class: 'group-about-text' },
      h('div', { class: 'group-about-name', text: g.name || 'Unnamed group' }),
      h('div', { class: 'muted small', text: facts.join(' · ') }),
      g.description ? h('p', { class: 'group-about-description', dir: 'auto', text: g.description }) : null));
  // Its picture: whoever may rename the group may change it.
  $('group-picture-actions').hidden = !rights.editInfo;
  $('group-picture-change').replaceChildren(icon('image'), g.has_avatar ? 'Change picture' : 'Add a picture');
  $('group-picture-remove').hidden = !g.has_avatar;
  const form = $('group-info-form');
  form.hidden = !rights.editInfo;
  $('group-info-locked').hidden = rights.editInfo || !rights.member;
  if (rights.editInfo && !infoDirty && !form.contains(document.activeElement)) {
    $('group-name').value = g.name;
    $('group-description').value = g.description;
  }
  updateInfoSave();

  // Members.
  const ul = $('group-members');
  const focused = document.activeElement && document.activeElement.closest('#group-members li');
  const focusUser = focused ? focused.dataset.user : null;
  const focusClass = focusUser && document.activeElement.classList.contains('button') ? document.activeElement.classList[0] : null;
  // Drawn again only when it changed: a button is not swapped under the
  // pointer, nor the list read out again, for nothing.
  const sig = JSON.stringify([g.id, g.role, g.members]);
  if (ul.dataset.sig !== sig) {
    ul.dataset.sig = sig;
    ul.replaceChildren(...g.members.map((m) => memberItem(g, m, rights)));
  }
  if (focusUser && !ul.contains(document.activeElement)) {
    const li = ul.querySelector(`li[data-user="${CSS.escape(focusUser)}"]`);
    const b = li && (li.querySelector(`button.${focusClass}`) || li.querySelector('button'));
    if (b) b.focus();
  }
  $('group-add-form').hidden = !rights.admin;

  // Requests to join.
  const requests = g.requests || [];
  $('group-requests-section').hidden = requests.length === 0 || !rights.admin;
  const rl = $('group-requests');
  const rsig = JSON.stringify([g.id, requests]);
  if (rl.dataset.sig !== rsig) {
    rl.dataset.sig = rsig;
    rl.replaceChildren(...requests.map((u) => requestItem(g, u)));
  }

  // Settings.
  const st = g.settings || {};
  for (const [id, key] of [['group-admins-only-send', 'admins_only_send'], ['group-admins-only-edit-info', 'admins_only_edit_info']]) {
    const box = $(id);
    box.checked = !!st[key];
    box.disabled = !rights.admin;
  }
  const sel = $('group-disappear');
  const choices = [0, 3600, 8 * 3600, 86400, 7 * 86400, 28 * 86400, 90 * 86400];
  const now = st.disappear_after_s || 0;
  if (!choices.includes(now)) choices.push(now);
  choices.sort((a, b) => a - b);
  sel.replaceChildren(...choices.map((v) => h('option', { value: String(v), text: fmt.span(v), selected: v === now })));
  sel.value = String(now);
  sel.disabled = !rights.admin;
  $('group-settings-locked').hidden = rights.admin || !rights.member;

  // The join link.
  let status;
  if (!g.link_on) status = 'Off: people join only when an admin adds them.';
  else status = g.link_approval ? 'On: an admin approves each person who joins with the link.' : 'On: anyone who has the link joins.';
  if (g.link_on && !g.link && rights.admin) status += ' The link was made on another device; make a new one to see it here (the old one then stops working).';
  $('group-link-status').textContent = status;
  $('group-link-row').hidden = !(g.link_on && g.link);
  if ($('group-link').value !== (g.link || '')) $('group-link').value = g.link || '';
  $('group-link-controls').hidden = !rights.admin;
  if (g.link_on) $('group-link-approval').checked = !!g.link_approval;
  $('group-link-on').replaceChildren(icon('link'), g.link_on ? 'Make a new link' : 'Create link');
  $('group-link-off').hidden = !g.link_on;

  // Leaving.
  const leave = $('group-leave');
  const note = $('group-leave-note');
  const stuck = rights.owner && count > 1;
  leave.hidden = !rights.member || !$('group-leave-confirm').hidden;
  leave.disabled = stuck;
  note.hidden = !stuck && rights.member;
  note.textContent = !rights.member ? 'You are not a member of this group.'
    : stuck ? 'You are the owner: make another member the owner before you leave.' : '';
  if (!rights.member) $('group-leave-confirm').hidden = true;
}

function memberItem(g, m, rights) {
  const me = myName();
  const self = m.user === me;
  const actions = [];
  const id = g.id;
  if (!self) {
    actions.push(h('button', { class: 'message icon-button small', type: 'button', title: `Message ${m.user}`, 'aria-label': `Message ${m.user}`,
      on: { click: () => {
        $('group-info').close();
        go(m.user);
      } } }, icon('chat')));
  }
  if (rights.promote(m)) {
    actions.push(h('button', { class: 'make-admin button small', type: 'button', text: 'Make admin', 'aria-label': `Make ${m.user} an admin`,
      on: { click: (e) => groupChange('PUT', paths.groupMember(id, m.user), { role: 'admin' }, e.currentTarget) } }));
  }
  if (rights.demote(m)) {
    actions.push(h('button', { class: 'make-member button small', type: 'button', text: 'Make member', 'aria-label': `Make ${m.user} a member, not an admin`,
      on: { click: (e) => groupChange('PUT', paths.groupMember(id, m.user), { role: 'member' }, e.currentTarget) } }));
  }
  if (rights.crown(m)) {
    actions.push(confirmButton('make-owner', 'Make owner', `Make ${m.user} the owner (you become an admin)`, 'Confirm: make owner',
      (b) => groupChange('PUT', paths.groupMember(id, m.user), { role: 'owner' }, b)));
  }
  if (rights.remove(m)) {
    actions.push(h('button', { class: 'remove button small danger', type: 'button', text: 'Remove', 'aria-label': `Remove ${m.user} from the group`,
      on: { click: (e) => groupChange('DELETE', paths.groupMember(id, m.user), undefined, e.currentTarget) } }));
  }
  const flags = [];
  if (m.role === 'owner' || m.role === 'admin') flags.push(h('span', { class: `role-badge ${m.role}`, text: roleWord(m.role) }));
  if (m.key_changed) {
    flags.push(h('button', { class: 'link-button key-changed', type: 'button', title: `${m.user}'s safety number changed: check it`,
      on: { click: () => openSafety(m.user) } }, icon('warning'), 'Safety number changed'));
  }
  return h('li', { class: 'member', dataset: { user: m.user, role: m.role } },
    avatar(m.user, 'small'),
    h('span', { class: 'member-main' },
      h('span', { class: 'member-name', text: self ? `${m.user} (you)` : m.user }), ...flags),
    actions.length ? h('span', { class: 'member-actions' }, ...actions) : null);
}

// requestItem is a request to join, with its approve and deny buttons.
function requestItem(g, u) {
  return h('li', { class: 'member', dataset: { user: u } },
    avatar(u, 'small'),
    h('span', { class: 'member-main' }, h('span', { class: 'member-name', text: u })),
    h('span', { class: 'member-actions' },
      h('button', { class: 'approve button small primary', type: 'button', text: 'Approve', 'aria-label': `Let ${u} join`,
        on: { click: (e) => groupChange('POST', paths.groupRequest(g.id, u), { approve: true }, e.currentTarget) } }),
      h('button', { class: 'deny button small ghost', type: 'button', text: 'Deny', 'aria-label': `Turn ${u} down`,
        on: { click: (e) => groupChange('POST', paths.groupRequest(g.id, u), { approve: false }, e.currentTarget) } })));
}

// confirmButton asks for a second click before it acts.
function confirmButton(cls, label, aria, confirmLabel, act) {
  let armed = null;
  const b = h('button', { class: `${cls} button small`, type: 'button', text: label, 'aria-label': aria,
    on: { click: () => {
      if (!armed) {
        b.textContent = confirmLabel;
        b.classList.add('confirming');
        armed = setTimeout(() => {
          armed = null;
          b.textContent = label;
          b.classList.remove('confirming');
        }, 5000);
        return;
      }
      clearTimeout(armed);
      armed = null;
      act(b);
    } } });
  return b;
}

function updateInfoSave() {
  const g = S.groups.get(infoPeer);
  const name = $('group-name').value.trim();
  const desc = $('group-description').value.trim();
  $('group-info-save').disabled = !g || !name || (name === g.name && desc === g.description);
}

async function saveGroupInfo(e) {
  e.preventDefault();
  const g = S.groups.get(infoPeer);
  if (!g) return;
  const name = $('group-name').value.trim();
  const description = $('group-description').value.trim();
  if (!name) {
    infoMessage('A group needs a name.', '', true);
    return;
  }
  const body = {};
  if (name !== g.name) body.name = name;
  if (description !== g.description) body.description = description;
  if (Object.keys(body).length === 0) return;
  const r = await groupChange('PUT', paths.groupInfo(g.id), body, $('group-info-save'));
  if (r) {
    infoDirty = false;
    renderGroupInfo();
    infoMessage('Saved.', '', false);
  }
}

// What a group's picture may be (the engine checks again, by its bytes).
const pictureTypes = ['image/png', 'image/jpeg', 'image/gif', 'image/webp'];
const maxPicture = 512 * 1024;

// shrinkPicture makes a picture too large to be a group's a smaller one
// (at most 512 pixels a side), or null if it cannot.
async function shrinkPicture(file) {
  let bmp;
  try {
    bmp = await createImageBitmap(file);
  } catch {
    return null;
  }
  const scale = Math.min(1, 512 / Math.max(bmp.width, bmp.height));
  const canvas = document.createElement('canvas');
  canvas.width = Math.max(1, Math.round(bmp.width * scale));
  canvas.height = Math.max(1, Math.round(bmp.height * scale));
  canvas.getContext('2d').drawImage(bmp, 0, 0, canvas.width, canvas.height);
  bmp.close();
  // WebP keeps transparency; a browser that cannot write it (it gives PNG
  // instead) writes JPEG.
  for (const type of ['image/webp', 'image/jpeg']) {
    const b = await new Promise((resolve) => canvas.toBlob(resolve, type, 0.85));
    if (b && b.type === type && b.size <= maxPicture) return b;
  }
  return null;
}

async function setGroupPicture(file) {
  const g = S.groups.get(infoPeer);
  if (!g || !file) return;
  if (file.type && !pictureTypes.includes(file.type)) {
    infoMessage('A group’s picture is a PNG, JPEG, GIF or WebP image.', `${file.name || 'That file'} is not one.`, true);
    return;
  }
  let img = file;
  if (img.size > maxPicture) {
    img = await shrinkPicture(file);
    if (!img) {
      infoMessage(`That picture is too large (${fmt.size(file.size)}).`, 'A group’s picture is at most 512 KB: pick a smaller one.', true);
      return;
    }
  }
  const change = groupChange('PUT', paths.groupAvatar(g.id), img, $('group-picture-change'));
  infoMessage('Uploading the picture…', '', false);
  if (await change) infoMessage('Picture changed.', 'Everyone in the group sees it.', false);
}

async function removeGroupPicture() {
  const g = S.groups.get(infoPeer);
  if (!g) return;
  if (await groupChange('DELETE', paths.groupAvatar(g.id), undefined, $('group-picture-remove'))) infoMessage('Picture removed.', '', false);
}

async function addMembers(e) {
  e.preventDefault();
  const g = S.groups.get(infoPeer);
  if (!g) return;
  const input = $('group-add-input');
  const { names, error } = fmt.parseUsernames(input.value);
  if (error) {
    infoMessage(error, '', true);
    return;
  }
  const have = new Set(g.members.map((m) => m.user));
  const users = names.filter((u) => !have.has(u));
  if (users.length === 0) {
    infoMessage(names.length ? `${fmt.nameList(names)} ${names.length === 1 ? 'is' : 'are'} already in the group.` : 'Type the usernames to add.', '', true);
    return;
  }
  const r = await groupChange('POST', paths.groupMembers(g.id), { users }, $('group-add-button'));
  if (r) input.value = '';
}

async function changeSetting(key, value, el) {
  const g = S.groups.get(infoPeer);
  if (!g) return;
  const r = await groupChange('PUT', paths.groupSettings(g.id), { [key]: value }, el);
  if (!r) renderGroupInfo(); // back to what the group has
}

async function setLink(on) {
  const g = S.groups.get(infoPeer);
  if (!g) return;
  const r = await groupChange('POST', paths.groupLink(g.id), { on, approval: $('group-link-approval').checked }, on ? $('group-link-on') : $('group-link-off'));
  if (r && on && r.link) {
    const now = S.groups.get(r.group.peer);
    if (now && !now.link) {
      now.link = r.link;
      renderGroupInfo();
    }
    infoMessage('A new join link is ready: copy it and share it with the people you want in the group.', 'Anyone who has it can join. An earlier link no longer works.', false);
  }
}

async function copyLink() {
  const input = $('group-link');
  const text = input.value;
  if (!text) return;
  let ok = false;
  try {
    await navigator.clipboard.writeText(text);
    ok = true;
  } catch {
    // No clipboard permission: copy the selection the old way.
    input.focus();
    input.select();
    try {
      ok = document.execCommand('copy');
    } catch {
      ok = false;
    }
  }
  if (ok) infoMessage('Link copied.', '', false);
  else infoMessage('This browser did not let the page copy the link.', 'It is selected: press Ctrl+C (⌘C on a Mac) to copy it.', true);
}

async function leaveGroup() {
  const g = S.groups.get(infoPeer);
  if (!g) return;
  const r = await groupChange('POST', paths.groupLeave(g.id), undefined, $('group-leave-yes'));
  if (r) {
    $('group-info').close();
    toast(`You left “${g.name}”.`, 'You no longer get its messages.', 'info');
  }
}

function bindGroups() {
  $('new-group-button').addEventListener('click', openNewGroup);
  $('new-group-form').addEventListener('submit', createGroup);
  $('join-group-button').addEventListener('click', openJoinGroup);
  $('join-group-form').addEventListener('submit', joinGroup);
  $('group-info-button').addEventListener('click', () => openGroupInfo(S.open));
  $('group-info').addEventListener('close', () => {
    infoPeer = null;
  });
  $('group-info-form').addEventListener('submit', saveGroupInfo);
  for (const id of ['group-name', 'group-description']) {
    $(id).addEventListener('input', () => {
      infoDirty = true;
      updateInfoSave();
    });
  }
  $('group-add-form').addEventListener('submit', addMembers);
  $('group-picture-change').addEventListener('click', () => $('group-picture-input').click());
  $('group-picture-input').addEventListener('change', (e) => {
    const file = e.target.files[0];
    e.target.value = '';
    setGroupPicture(file);
  });
  $('group-picture-remove').addEventListener('click', removeGroupPicture);
  $('group-admins-only-send').addEventListener('change', (e) => changeSetting('admins_only_send', e.target.checked, e.target));
  $('group-admins-only-edit-info').addEventListener('change', (e) => changeSetting('admins_only_edit_info', e.target.checked, e.target));
  $('group-disappear').addEventListener('change', (e) => changeSetting('disappear_after_s', Number(e.target.value), e.target));
  $('group-link-on').addEventListener('click', () => setLink(true));
  $('group-link-off').addEventListener('click', () => setLink(false));
  $('group-link-copy').addEventListener('click', copyLink);
  $('group-link').addEventListener('focus', (e) => e.target.select());
  $('group-leave').addEventListener('click', () => {
    const g = S.groups.get(infoPeer);
    $('group-leave-question').textContent = `Leave “${g ? g.name : 'this group'}”? You will no longer get its messages; an admin can add you back.`;
    $('group-leave-confirm').hidden = false;
    $('group-leave').hidden = true;
    $('group-leave-no').focus();
  });
  $('group-leave-no').addEventListener('click', () => {
    $('group-leave-confirm').hidden = true;
    $('group-leave').hidden = false;
    $('group-leave').focus();
  });
  $('group-leave-yes').addEventListener('click', leaveGroup);
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
  if (m.notice) return;
  const group = isGroup(m.peer);
  const line = fmt.preview(m) || 'New message';
  try {
    const n = new Notification(S.previews ? convName(m.peer) : 'Magpie', {
      body: S.previews ? (group && m.sender ? `${m.sender}: ${line}` : line) : 'New message',
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
  on('typing', onTyping);
  on('identity', onIdentity);
  on('read', onRead);
  on('group', onGroupEvent);
  on('resync', reloadAll);
}

// reloadAll reloads what is shown, after missed events.
async function reloadAll() {
  loadStatus();
  loadGroups();
  await loadConversations();
  if (!S.open) return;
  if (S.search) {
    runSearch();
    return;
  }
  const v = S.view;
  if (!v || v.loading) return;
  const since = S.serial;
  const shown = [...v.els.keys()]; // on the page when the request went out
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
  // What the engine no longer has (it disappeared, or was cancelled on
  // another device) goes from the page too. The answer has every message
  // from its oldest on (every one, when there are no more); one older
  // than that has gone if its time to disappear has passed.
  const have = new Set(got.map((m) => m.seq));
  const from = r.more && got.length > 0 ? Math.min(...have) : -Infinity;
  let dropped = false;
  for (const seq of shown) {
    const m = v.msgs.get(seq);
    const gone = seq >= from ? !have.has(seq) : expired(m);
    if (gone && !changedSince(seq, since)) dropped = dropMessage(v, seq) || dropped;
  }
  if (dropped) relayout();
  for (const m of got) upsertMessage(m, false, since);
  scheduleMarkRead();
}

// expired reports whether message m's time to disappear has passed (one
// still waiting to be sent stays until it has gone).
function expired(m) {
  const at = m && fmt.parseTime(m.expires_at);
  return !!at && at.getTime() <= Date.now() && m.state !== 'queued' && m.state !== 'uploading';
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
    if (!hasFiles(e) || !S.open || sendBlock(S.open)) return;
    e.preventDefault();
    depth++;
    overlay.hidden = false;
  });
  view.addEventListener('dragover', (e) => {
    if (!hasFiles(e) || !S.open || sendBlock(S.open)) return;
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
  bindGroups();

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
  await Promise.all([loadStatus(), loadConversations(), loadGroups()]);
  route();
}

boot();
