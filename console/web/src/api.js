// The control API, called from the page with the admin token. The token lives in this tab's
// sessionStorage only: never in a URL, a cookie or localStorage, so it goes when the tab closes.

const TOKEN_KEY = 'headwater.adminToken'

export function token() {
  return sessionStorage.getItem(TOKEN_KEY)
}

export function setToken(value) {
  if (value) sessionStorage.setItem(TOKEN_KEY, value)
  else sessionStorage.removeItem(TOKEN_KEY)
}

/** An error answer of the API, as it worded it: `{status, code, message, field}`. */
export class ApiError extends Error {
  constructor(body, status) {
    super(body && body.message ? body.message : `HTTP ${status}`)
    this.status = status
    this.code = (body && body.code) || 'error'
    this.field = (body && body.field) || null
  }
}

/** Calls `method path` under /v1 with the admin token; resolves to `{body, etag}`. */
export async function call(method, path, body, headers = {}, adminToken = token()) {
  const init = {
    method,
    headers: { Accept: 'application/json', Authorization: `Bearer ${adminToken || ''}`, ...headers },
    credentials: 'omit',
    cache: 'no-store',
  }
  if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json'
    init.body = JSON.stringify(body)
  }
  const response = await fetch(`/v1${path}`, init)
  const text = await response.text()
  let parsed = null
  try {
    parsed = text ? JSON.parse(text) : null
  } catch {
    parsed = { message: text.slice(0, 300) }
  }
  if (!response.ok) {
    const error = new ApiError(parsed, response.status)
    if (response.status === 401 || (response.status === 403 && error.code === 'invalid_admin_token')) {
      window.dispatchEvent(new CustomEvent('headwater:signed-out', { detail: error }))
    }
    throw error
  }
  return { body: parsed, etag: response.headers.get('ETag') }
}

export const api = {
  get: (path) => call('GET', path).then((r) => r.body),
  post: (path, body) => call('POST', path, body).then((r) => r.body),
}

export const project = (id) => `/projects/${encodeURIComponent(id)}`
