/**
 * Key-value stores for the ids and the queue: localStorage, a first-party cookie, or memory (the
 * cookieless mode, and the fallback wherever storage is blocked).
 */

/** @typedef {{ getItem(key: string): string | null, setItem(key: string, value: string): void, removeItem(key: string): void }} KV */

/** @returns {KV} */
export const memoryStore = () => {
  /** @type {Map<string, string>} */
  const map = new Map()
  return {
    getItem: (key) => map.get(key) ?? null,
    setItem: (key, value) => void map.set(key, value),
    removeItem: (key) => void map.delete(key),
  }
}

/**
 * localStorage when it works: it throws in some privacy modes and sandboxed frames.
 * @returns {KV}
 */
export const localStore = () => {
  try {
    const store = localStorage
    store.setItem('hw_t', '1')
    store.removeItem('hw_t')
    return store
  } catch {
    return memoryStore()
  }
}

/**
 * First-party cookies for a year; `domain` (e.g. `example.com`) shares them with subdomains.
 * @param {string} [domain]
 * @returns {KV}
 */
export const cookieStore = (domain) => {
  /** @param {string} key @param {string} value @param {number} age */
  const write = (key, value, age) => {
    document.cookie =
      `${key}=${encodeURIComponent(value)};path=/;max-age=${age};samesite=lax` +
      (domain ? `;domain=${domain}` : '') +
      (location.protocol == 'https:' ? ';secure' : '')
  }
  return {
    getItem: (key) => {
      for (const pair of document.cookie.split('; ')) {
        const at = pair.indexOf('=')
        if (pair.slice(0, at) == key) return decodeURIComponent(pair.slice(at + 1))
      }
      return null
    },
    setItem: (key, value) => write(key, value, 31536000),
    removeItem: (key) => write(key, '', 0),
  }
}
