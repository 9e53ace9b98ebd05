/**
 * Event and visitor identity: random v4 UUIDs, and the anonymous id, user id and opt-out flag kept
 * in a store (so they survive reloads, unless the store is memory).
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

export class Identity {
  /** @param {KV} store */
  constructor(store) {
    this._store = store
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

  get optedOut() {
    return this._store.getItem(OPT_OUT) == '1'
  }

  set optedOut(off) {
    if (off) this._store.setItem(OPT_OUT, '1')
    else this._store.removeItem(OPT_OUT)
  }

  /** A new visitor: a fresh anonymous id and no user id (the opt-out choice stays). */
  reset() {
    this._store.setItem(ANONYMOUS, uuid())
    this._store.removeItem(USER)
  }
}
