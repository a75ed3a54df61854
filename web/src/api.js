// REST calls, with the token (if any) as `Authorization: Bearer`.

const TOKEN_KEY = 'buildcast.token';

export function getToken() {
  try {
    return sessionStorage.getItem(TOKEN_KEY) ?? '';
  } catch {
    return '';
  }
}

export function setToken(token) {
  try {
    if (token) sessionStorage.setItem(TOKEN_KEY, token);
    else sessionStorage.removeItem(TOKEN_KEY);
  } catch {
    // storage disabled: the token lasts as long as the page
  }
}

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

const authListeners = new Set();
/** Called with the message whenever the server answers 401. */
export function onAuthFailure(fn) {
  authListeners.add(fn);
  return () => authListeners.delete(fn);
}

function headers(extra = {}) {
  const h = { accept: 'application/json', ...extra };
  const token = getToken();
  if (token) h.authorization = `Bearer ${token}`;
  return h;
}

export async function api(path, { method = 'GET', body, signal } = {}) {
  const init = { method, signal, headers: headers(body === undefined ? {} : { 'content-type': 'application/json' }) };
  if (body !== undefined) init.body = JSON.stringify(body);
  let res;
  try {
    res = await fetch(path, init);
  } catch (e) {
    if (e.name === 'AbortError') throw e;
    throw new ApiError(0, `Cannot reach the server (${e.message})`);
  }
  const text = await res.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  if (!res.ok) {
    const message = res.status === 401 ? 'Authentication error' : (data?.error ?? `${res.status} ${res.statusText}`);
    if (res.status === 401) for (const fn of authListeners) fn(message);
    throw new ApiError(res.status, message);
  }
  return data;
}

/**
 * Downloads a file that may need the token: a plain link when there is none,
 * otherwise fetched with the Authorization header and saved from a blob.
 */
export async function download(href, filename) {
  const token = getToken();
  if (!token) {
    const a = document.createElement('a');
    a.href = href;
    a.download = filename;
    document.body.append(a);
    a.click();
    a.remove();
    return;
  }
  const res = await fetch(href, { headers: headers({ accept: '*/*' }) });
  if (!res.ok) {
    if (res.status === 401) for (const fn of authListeners) fn('Authentication error');
    throw new ApiError(res.status, res.status === 401 ? 'Authentication error' : `${res.status} ${res.statusText}`);
  }
  const url = URL.createObjectURL(await res.blob());
  const a = document.createElement('a');
  a.href = url;
  a.download = filename;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}
