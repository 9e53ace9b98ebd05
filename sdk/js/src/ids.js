/**
 * Event and visitor identity: random v4 UUIDs, and the anonymous id, user id, session id and
 * opt-out flag kept in a store (so they survive reloads, unless the store is memory).
 */

/** @typedef {import('./store.js').KV} KV */

/**
 * A random (v4) UUID. crypto.randomUUID exists only in secure contexts; getRandomValues
 * everywhere.
 */
export const uuid = () => {
  const bytes = crypto.getRandomValues(new Uint8Array(16))
  bytes[6] = (bytes[6] & 15) | 64
  bytes[8] = (bytes[8] & 63) | 128
  let out = ''
  bytes.forEach((byte, i) => {
    out += (i == 4 || i == 6 || i == 8 || i == 10 ? '-' : '') + (byte + 256).toString(16).slice(1)
  })
  return out
}

const ANONYMOUS = 'hw_aid'
const USER = 'hw_uid'
const OPT_OUT = 'hw_off'
const SESSION = 'hw_sid' // `<session id>.<time of its last event in ms>`

export class Identity {
  /** @param {KV} store */
  constructor(store) {
    this._store = store
    /** @private the session state a full storage refused */
    this._unsaved = ''
  }

  /** Read on every event, so a reset in another tab is seen here too. */
  get anonymousId() {
    let id = this._store.getItem(ANONYMOUS)
    if (!id) this._store.setItem(ANONYMOUS, (id = uuid()))
    return id
  }

  /** @returns {string | null} */
  get userId() {
    return this._store.getItem(USER)
  }

  set userId(id) {
    if (id) this._store.setItem(USER, id)
    else this._store.removeItem(USER)
  }

  /**
   * The session id of an event made at `now`: the current one while events come at most `timeout`
   * ms apart, a new one after a longer gap (the server's inactivity rule). Kept in the store with
   * the time of the last event, so reloads and the site's other tabs continue the session.
   * @param {number} now @param {number} timeout
   */
  session(now, timeout) {
    const [id, last] = (this._unsaved || this._store.getItem(SESSION) || '').split('.')
    const state = (id && now - Number(last) <= timeout ? id : uuid()) + '.' + now
    try {
      this._store.setItem(SESSION, state)
      this._unsaved = ''
    } catch {
      this._unsaved = state // storage full: this page keeps the session by itself
    }
    return state.split('.')[0]
  }

  get optedOut() {
    return this._store.getItem(OPT_OUT) == '1'
  }

  set optedOut(off) {
    if (off) this._store.setItem(OPT_OUT, '1')
    else this._store.removeItem(OPT_OUT)
  }

  /** A new visitor: a fresh anonymous id, no user id, a new session (the opt-out choice stays). */
  reset() {
    this._store.setItem(ANONYMOUS, uuid())
    this._store.removeItem(USER)
    this._store.removeItem(SESSION)
    this._unsaved = ''
  }
}
