/**
 * A small fake of the browser globals the SDK touches, fresh for each test: location and history,
 * document (cookies, title, visibility), navigator (onLine, sendBeacon, privacy signals), window
 * events, localStorage, and fetch answering from a script.
 */

/**
 * @typedef {object} Sent
 * @property {string} url
 * @property {any} body the parsed JSON body
 * @property {boolean} [keepalive]
 * @property {boolean} [beacon]
 */

/** A localStorage stand-in; `full` makes every write throw like an exceeded quota. */
export class FakeStorage {
  constructor() {
    /** @type {Map<string, string>} */
    this.map = new Map()
    this.full = false
  }
  /** @param {string} key */
  getItem(key) {
    return this.map.get(key) ?? null
  }
  /** @param {string} key @param {string} value */
  setItem(key, value) {
    if (this.full) throw new DOMException('quota', 'QuotaExceededError')
    this.map.set(key, String(value))
  }
  /** @param {string} key */
  removeItem(key) {
    this.map.delete(key)
  }
}

/**
 * @param {object} [options]
 * @param {string} [options.url] the page's URL
 * @param {FakeStorage} [options.storage] pass the previous one to simulate a reload
 * @param {string} [options.cookie] the cookie jar's contents, likewise
 * @param {Partial<{ globalPrivacyControl: boolean, doNotTrack: string }>} [options.signals]
 * @param {(sent: Sent) => Response | Promise<Response>} [options.answer] the edge; default: 200
 */
export function browser(options = {}) {
  const events = new EventTarget()
  const documentEvents = new EventTarget()
  let url = new URL(options.url || 'https://app.example/home?x=1')
  /** @type {Sent[]} */
  const sent = []
  /** @type {Map<string, string>} */
  const jar = new Map(
    (options.cookie || '')
      .split('; ')
      .filter(Boolean)
      .map((pair) => /** @type {[string, string]} */ (pair.split('=', 2))),
  )
  let answer = options.answer || (() => new Response('{}', { status: 200 }))
  const env = {
    sent,
    storage: options.storage || new FakeStorage(),
    navigator: {
      onLine: true,
      language: 'en-GB',
      doNotTrack: options.signals?.doNotTrack ?? null,
      globalPrivacyControl: options.signals?.globalPrivacyControl,
      /** @param {string} to @param {string} body */
      sendBeacon(to, body) {
        sent.push({ url: to, body: JSON.parse(body), beacon: true })
        return true
      },
    },
    document: {
      title: 'Home',
      referrer: 'https://search.example/?q=x',
      visibilityState: 'visible',
      currentScript: null,
      get cookie() {
        return [...jar].map(([k, v]) => `${k}=${v}`).join('; ')
      },
      set cookie(line) {
        const [pair, ...attributes] = line.split(';')
        const at = pair.indexOf('=')
        if (attributes.includes('max-age=0')) jar.delete(pair.slice(0, at))
        else jar.set(pair.slice(0, at), pair.slice(at + 1))
      },
      addEventListener: documentEvents.addEventListener.bind(documentEvents),
    },
    /** @param {string} to */
    navigate(to) {
      url = new URL(to, url)
    },
    /** @param {(sent: Sent) => Response | Promise<Response>} next */
    answerWith(next) {
      answer = next
    },
    /** @param {string} type */
    fire(type) {
      events.dispatchEvent(new Event(type))
    },
    hide() {
      env.document.visibilityState = 'hidden'
      documentEvents.dispatchEvent(new Event('visibilitychange'))
    },
    /** The events of every request so far, in order. */
    events() {
      return sent.flatMap((request) => request.body.batch)
    },
  }
  const location = {
    get href() {
      return url.href
    },
    get pathname() {
      return url.pathname
    },
    get search() {
      return url.search
    },
    get protocol() {
      return url.protocol
    },
  }
  const history = {
    /** @param {unknown} _state @param {string} _title @param {string} [to] */
    pushState(_state, _title, to) {
      if (to) env.navigate(to)
    },
    /** @param {unknown} _state @param {string} _title @param {string} [to] */
    replaceState(_state, _title, to) {
      if (to) env.navigate(to)
    },
  }
  /** @param {string | URL | Request} to @param {RequestInit} [init] */
  const fetch = async (to, init = {}) => {
    const request = { url: String(to), body: JSON.parse(String(init.body)), keepalive: init.keepalive }
    sent.push(request)
    return answer(request)
  }
  const globals = {
    window: globalThis,
    location,
    history,
    fetch,
    document: env.document,
    navigator: env.navigator,
    localStorage: env.storage,
    screen: { width: 1280, height: 800 },
    HTMLScriptElement: class {},
    addEventListener: events.addEventListener.bind(events),
    removeEventListener: events.removeEventListener.bind(events),
  }
  for (const [name, value] of Object.entries(globals)) {
    Object.defineProperty(globalThis, name, { value, configurable: true, writable: true })
  }
  return env
}

/** Lets pending promise callbacks (a delivery's await chain) run. */
export const settle = async () => {
  for (let i = 0; i < 10; i++) await new Promise((resolve) => setImmediate(resolve))
}
