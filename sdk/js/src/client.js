/**
 * The SDK: builds Segment-shaped events, keeps them in the persistent queue, and delivers them in
 * batches to the edge's /v1/batch, retrying what failed for a reason that passes.
 */

import { Identity, uuid } from './ids.js'
import { campaign, watchHistory } from './page.js'
import { Queue } from './queue.js'
import { backoff, retryAfter, verdict } from './retry.js'
import { cookieStore, localStore, memoryStore } from './store.js'
import { VERSION } from './version.js'

/** @typedef {import('./queue.js').HWEvent} HWEvent */
/** @typedef {Record<string, unknown>} Properties */

/**
 * @typedef {object} Options
 * @property {string} key the project's public key (`hwpk_…`)
 * @property {string} [host] the edge's URL; default: where headwater.js was loaded from
 * @property {'localStorage' | 'cookie' | 'none'} [persistence] where the anonymous id and user id
 *   live; `none` stores nothing at all (the queue too stays in memory)
 * @property {string} [cookieDomain] with `cookie`: e.g. `example.com` to share ids with subdomains
 * @property {'ignore' | 'cookieless' | 'optout'} [privacySignals] what a Global Privacy Control
 *   or Do Not Track signal does: nothing, switch to `persistence: 'none'`, or send nothing
 * @property {boolean} [autoPage] a page view at init and after each single-page-app navigation
 * @property {boolean} [sessionId] send a session id in every event's `context.sessionId`
 * @property {number} [sessionTimeout] milliseconds without an event after which the next one starts a
 *   new session (the project's inactivity timeout)
 * @property {number} [flushAt] send as soon as this many events wait
 * @property {number} [flushInterval] milliseconds an event waits at most for others to join it
 * @property {number} [maxQueue] events kept at most while they cannot be delivered (oldest dropped)
 * @property {number} [retryDelay] milliseconds before the first retry; doubled for each next one
 * @property {number} [maxRetryDelay] milliseconds between retries at most
 */
/** @typedef {Required<Omit<Options, 'cookieDomain'>> & Options} Settings options with the defaults */

// Batches stay well under the 64 KiB that browsers allow in flight for keepalive fetches and
// beacons, which is what lets a request outlive its page.
const BATCH_EVENTS = 100
const BATCH_CHARS = 30000
const KEEPALIVE_BYTES = 60000

export class Headwater {
  /** @param {string} [host] the default for `init`'s `host` */
  constructor(host = '') {
    // Internal state (@private keeps it out of the published types; the build shortens the names).
    /** @private */
    this._host = host
    /** @private @type {Settings | undefined} set by init */
    this._o = undefined
    /** @private @type {Identity | undefined} */
    this._ids = undefined
    /** @private @type {Queue | undefined} */
    this._queue = undefined
    /** @private */
    this._url = ''
    /** @private @type {(() => void)[]} calls made before init, run by it */
    this._early = []
    /** @private @type {Set<string>} ids of the events in the request in flight */
    this._sending = new Set()
    /** @private */
    this._busy = false
    /** @private a retry is scheduled */
    this._waiting = false
    /** @private failed attempts in a row */
    this._attempt = 0
    /** @private @type {ReturnType<typeof setTimeout> | undefined} */
    this._timer = undefined
    /** @private a privacy signal said to send nothing */
    this._off = false
    /** @private */
    this._referrer = ''
    /** @private the URL of the last page view */
    this._last = ''
    /** @private @type {Record<string, string> | null} the landing page's UTM parameters */
    this._campaign = null
  }

  /** @param {Options} options */
  init(options) {
    if (this._o) return
    /** @type {Settings} */
    const o = {
      host: this._host,
      persistence: 'localStorage',
      privacySignals: 'ignore',
      autoPage: true,
      sessionId: true,
      sessionTimeout: 1800000,
      flushAt: 20,
      flushInterval: 2000,
      maxQueue: 1000,
      retryDelay: 1000,
      maxRetryDelay: 30000,
      ...options,
    }
    const nav = /** @type {Navigator & { globalPrivacyControl?: boolean }} */ (navigator)
    const signal = o.privacySignals != 'ignore' && (nav.globalPrivacyControl || nav.doNotTrack == '1')
    this._off = !!signal && o.privacySignals == 'optout'
    const mode = signal ? 'none' : o.persistence
    const store = mode == 'none' ? memoryStore() : mode == 'cookie' ? cookieStore(o.cookieDomain) : localStore()
    this._ids = new Identity(store)
    this._queue = new Queue(mode == 'none' ? store : localStore(), 'hw_q_' + o.key, o.maxQueue)
    this._url = o.host.replace(/\/$/, '') + '/v1/batch'
    this._referrer = document.referrer
    this._o = o

    addEventListener('pagehide', () => this._beacon())
    document.addEventListener('visibilitychange', () => document.visibilityState == 'hidden' && this._beacon())
    addEventListener('online', () => {
      clearTimeout(this._timer)
      this._waiting = false
      this._attempt = 0
      this.flush()
    })
    const leftover = this._queue.all().length // what an earlier page could not deliver
    if (o.autoPage) {
      watchHistory(() => location.href != this._last && this.page())
      this.page()
    }
    this._early.forEach((call) => call())
    this._early = []
    if (leftover) this.flush()
  }

  /** @param {string} event @param {Properties} [properties] */
  track(event, properties) {
    this._call(() => this._enqueue('track', { event, properties: { ...properties } }))
  }

  /** @param {string} [name] @param {Properties} [properties] */
  page(name, properties) {
    this._call(() => {
      const url = location.href
      if (url != this._last) {
        if (this._last) this._referrer = this._last // a single-page app's previous page
        this._last = url
      }
      this._enqueue('page', { ...(name && { name }), properties: { ...this._page(), ...properties } })
    })
  }

  /**
   * Who the visitor is; later events carry the user id. A null id sends traits only.
   * @param {string | null} [userId] @param {Properties} [traits]
   */
  identify(userId, traits) {
    this._call(() => {
      if (!this._tracking()) return
      if (userId) this._identity().userId = String(userId)
      this._enqueue('identify', { traits: { ...traits } })
    })
  }

  /** @param {string} groupId @param {Properties} [traits] */
  group(groupId, traits) {
    this._call(() => this._enqueue('group', { groupId, traits: { ...traits } }))
  }

  /**
   * The visitor is now known as `newId` (e.g. after signing up): links it to the current id.
   * @param {string} newId
   */
  alias(newId) {
    this._call(() => {
      if (!this._tracking()) return
      const ids = this._identity()
      const previousId = ids.userId || ids.anonymousId
      ids.userId = newId
      this._enqueue('alias', { previousId })
    })
  }

  /** A new visitor from here on (e.g. after logging out): new anonymous id, no user id. */
  reset() {
    this._call(() => this._identity().reset())
  }

  /** Stop tracking this browser (remembered unless nothing may be stored); drops what waits. */
  optOut() {
    this._call(() => {
      this._identity().optedOut = true
      this._queue?.clear()
    })
  }

  optIn() {
    this._call(() => (this._identity().optedOut = false))
  }

  /** Send what waits now; resolves once it is delivered, dropped, or waiting for a retry. */
  async flush() {
    const queue = this._queue
    if (!queue || this._waiting) return
    clearTimeout(this._timer)
    this._timer = undefined
    if (this._busy) return // the loop running picks up what has arrived meanwhile
    this._busy = true
    try {
      for (let batch; navigator.onLine && (batch = queue.take(BATCH_EVENTS, BATCH_CHARS)).length; ) {
        const ids = (this._sending = new Set(batch.map((event) => event.messageId)))
        const [outcome, wait] = await this._post(batch)
        if (outcome == 'retry') {
          const o = this._options()
          const delay = Math.max(wait, backoff(this._attempt++, o.retryDelay, o.maxRetryDelay))
          this._waiting = true
          this._timer = setTimeout(() => {
            this._waiting = false
            this.flush()
          }, delay)
          return
        }
        this._attempt = 0
        queue.remove(ids)
      }
    } finally {
      this._busy = false
      this._sending = new Set()
    }
  }

  /** @private @param {() => void} call */
  _call(call) {
    if (this._o) call()
    else this._early.push(call)
  }

  /** @private */
  _options() {
    if (!this._o) throw Error('headwater: init first')
    return this._o
  }

  /** @private */
  _identity() {
    if (!this._ids) throw Error('headwater: init first')
    return this._ids
  }

  /** @private */
  _tracking() {
    return !this._off && !this._identity().optedOut
  }

  /** @private */
  _page() {
    return {
      path: location.pathname,
      referrer: this._referrer,
      search: location.search,
      title: document.title,
      url: location.href,
    }
  }

  /** @private @param {string} type @param {Properties} fields */
  _enqueue(type, fields) {
    const queue = this._queue
    if (!queue || !this._tracking()) return
    const ids = this._identity()
    const userId = ids.userId
    const o = this._options()
    const now = new Date()
    this._campaign = campaign(location.search) || this._campaign
    queue.push({
      type,
      messageId: uuid(),
      timestamp: now.toISOString(),
      anonymousId: ids.anonymousId,
      ...(userId && { userId }),
      context: {
        library: { name: 'headwater.js', version: VERSION },
        page: this._page(),
        locale: navigator.language,
        screen: { width: screen.width, height: screen.height },
        timezone: Intl.DateTimeFormat().resolvedOptions().timeZone,
        ...(this._campaign && { campaign: this._campaign }),
        ...(o.sessionId && { sessionId: ids.session(+now, o.sessionTimeout) }),
      },
      ...fields,
    })
    if (queue.all().length >= o.flushAt) this.flush()
    else if (!this._timer) this._timer = setTimeout(() => this.flush(), o.flushInterval)
  }

  /**
   * @private `sentAt` is stamped per request, retries too: the edge corrects clock skew with it.
   * @param {HWEvent[]} batch
   */
  _body(batch) {
    return JSON.stringify({ batch, sentAt: new Date().toISOString(), writeKey: this._options().key })
  }

  /**
   * @private
   * A text/plain body with the key inside is a "simple" CORS request: no preflight round trip.
   * @param {HWEvent[]} batch
   * @returns {Promise<[outcome: 'ok' | 'retry' | 'drop', wait: number]>}
   */
  async _post(batch) {
    const body = this._body(batch)
    try {
      const answer = await fetch(this._url, {
        method: 'POST',
        body,
        credentials: 'omit',
        keepalive: new Blob([body]).size < KEEPALIVE_BYTES,
      })
      return [verdict(answer.status), retryAfter(answer.headers.get('retry-after'))]
    } catch {
      return ['retry', 0] // offline, refused, or a CORS refusal: all look alike from here
    }
  }

  /**
   * @private
   * The page is going away (or hidden, maybe for good): hand what waits to sendBeacon, which
   * delivers after the page is gone. Not while deliveries fail (offline, edge down): a beacon would
   * be lost the same way, so the events stay queued for the next page instead.
   */
  _beacon() {
    const queue = this._queue
    if (!queue || this._attempt || !navigator.onLine) return
    for (let batch; (batch = queue.take(BATCH_EVENTS, BATCH_CHARS, this._sending)).length; ) {
      if (!navigator.sendBeacon(this._url, this._body(batch))) return
      queue.remove(new Set(batch.map((event) => event.messageId)))
    }
  }
}
