// The engine's local API (docs/LOCAL_API.md), from the browser.

export class ApiError extends Error {
  constructor(status, code, message, hint) {
    super(message);
    this.status = status;
    this.code = code;
    this.hint = hint || '';
  }
}

// Words for answers that did not carry the API's JSON error (the guard's own
// refusals, a proxy, a crash): never a bare status code.
function fallback(status, text) {
  switch (status) {
    case 0:
      return new ApiError(0, 'unreachable', 'Cannot reach Magpie on this computer.',
        'Is `magpie app` still running? Start it again and open the new link.');
    case 403:
      return new ApiError(403, 'no_session', 'This browser tab is no longer signed in to Magpie.',
        'Run `magpie app` again for a new link.');
    case 421:
      return new ApiError(421, 'misdirected', 'This address is not the one Magpie gave you.',
        'Open the link that `magpie app` printed.');
    case 413:
      return new ApiError(413, 'too_large', 'That is too large to send.', '');
    default: {
      const line = (text || '').trim().split('\n', 1)[0].slice(0, 200);
      return new ApiError(status, 'http_' + status,
        `Magpie answered with an error (HTTP ${status})${line ? ': ' + line : '.'}`, '');
    }
  }
}

async function errorFrom(resp) {
  const ctype = resp.headers.get('Content-Type') || '';
  let text = '';
  try {
    text = await resp.text();
  } catch {
    // The body is lost; the status still says something.
  }
  if (ctype.includes('json')) {
    try {
      const e = JSON.parse(text).error;
      if (e && e.message) return new ApiError(resp.status, e.code || '', e.message, e.hint || '');
    } catch {
      // Not the API's error shape: fall through.
    }
  }
  return fallback(resp.status, ctype.includes('html') ? '' : text);
}

// api('GET', '/api/v1/status') → parsed JSON, or throws ApiError. A body
// that is a Blob (a File) goes as its bytes, else as JSON.
export async function api(method, path, body, { signal } = {}) {
  const init = { method, credentials: 'same-origin', cache: 'no-store', signal, headers: {} };
  if (body instanceof Blob) {
    // Raw bytes (a group's picture), never application/json: that would
    // mean {"path": …} to the engine.
    init.headers['Content-Type'] = body.type && body.type !== 'application/json' ? body.type : 'application/octet-stream';
    init.body = body;
  } else if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let resp;
  try {
    resp = await fetch(path, init);
  } catch (e) {
    if (e && e.name === 'AbortError') throw e;
    throw fallback(0);
  }
  if (!resp.ok) throw await errorFrom(resp);
  if (resp.status === 204) return {};
  try {
    return await resp.json();
  } catch {
    return {};
  }
}

export const enc = encodeURIComponent;

export const paths = {
  status: '/api/v1/status',
  conversations: '/api/v1/conversations',
  messages: (peer, params) => `/api/v1/conversations/${enc(peer)}/messages${params ? '?' + new URLSearchParams(params) : ''}`,
  read: (peer) => `/api/v1/conversations/${enc(peer)}/read`,
  typing: (peer) => `/api/v1/conversations/${enc(peer)}/typing`,
  send: '/api/v1/messages',
  message: (seq) => `/api/v1/messages/${seq}`,
  upload: (params) => `/api/v1/files?${new URLSearchParams(params)}`,
  file: (seq, download) => `/api/v1/files/${seq}${download ? '?download=1' : ''}`,
  thumbnail: (seq) => `/api/v1/files/${seq}/thumbnail`,
  contact: (name) => `/api/v1/contacts/${enc(name)}`,
  safety: (name) => `/api/v1/contacts/${enc(name)}/safety`,
  safetySVG: (name) => `/api/v1/contacts/${enc(name)}/safety.svg`,
  verify: (name) => `/api/v1/contacts/${enc(name)}/verify`,
  settings: '/api/v1/settings',
  events: '/api/v1/events',
  groups: '/api/v1/groups',
  joinGroup: '/api/v1/groups/join',
  group: (id) => `/api/v1/groups/${enc(id)}`,
  groupMembers: (id) => `/api/v1/groups/${enc(id)}/members`,
  groupMember: (id, user) => `/api/v1/groups/${enc(id)}/members/${enc(user)}`,
  groupLeave: (id) => `/api/v1/groups/${enc(id)}/leave`,
  groupInfo: (id) => `/api/v1/groups/${enc(id)}/info`,
  groupSettings: (id) => `/api/v1/groups/${enc(id)}/settings`,
  groupLink: (id) => `/api/v1/groups/${enc(id)}/link`,
  groupRequest: (id, user) => `/api/v1/groups/${enc(id)}/requests/${enc(user)}`,
  // version (the group's seq) makes a new picture a new URL.
  groupAvatar: (id, version) => `/api/v1/groups/${enc(id)}/avatar${version !== undefined ? '?v=' + enc(version) : ''}`,
};

// A group's conversation is "group:" and the group's id (hex).
export const groupPrefix = 'group:';
export const isGroup = (peer) => typeof peer === 'string' && peer.startsWith(groupPrefix);
export const groupID = (peer) => (isGroup(peer) ? peer.slice(groupPrefix.length) : '');

// A random 16-byte id in hex: the idempotency key of a message, so a retried
// POST never sends it twice.
export function newMessageID() {
  const b = new Uint8Array(16);
  crypto.getRandomValues(b);
  return Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
}

// Uploads a file's bytes with XMLHttpRequest, for its upload progress.
// Returns { promise, abort }. onProgress(done, total) runs as the browser
// hands bytes to the engine.
export function uploadFile(to, file, caption, onProgress) {
  const xhr = new XMLHttpRequest();
  const params = { to, name: file.name || 'file' };
  if (caption) params.caption = caption;
  const promise = new Promise((resolve, reject) => {
    xhr.open('POST', paths.upload(params));
    // Always raw bytes: application/json would mean {"path": …} to the engine.
    xhr.setRequestHeader('Content-Type', 'application/octet-stream');
    xhr.responseType = 'text';
    xhr.upload.onprogress = (e) => onProgress && onProgress(e.loaded, e.lengthComputable ? e.total : file.size);
    xhr.onload = () => {
      if (xhr.status >= 200 && xhr.status < 300) {
        try {
          resolve(JSON.parse(xhr.responseText));
        } catch {
          reject(new ApiError(xhr.status, 'bad_response', 'Magpie accepted the file but its answer was unreadable.', ''));
        }
        return;
      }
      const headers = new Headers({ 'Content-Type': xhr.getResponseHeader('Content-Type') || '' });
      errorFrom(new Response(xhr.responseText, { status: xhr.status, headers })).then(reject);
    };
    xhr.onerror = () => reject(fallback(0));
    xhr.onabort = () => reject(new ApiError(0, 'aborted', 'Upload cancelled.', ''));
    xhr.send(file);
  });
  return { promise, abort: () => xhr.abort() };
}
