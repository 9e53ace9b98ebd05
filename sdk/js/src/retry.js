/**
 * When to retry a delivery and how long to wait first. Pure functions, unit-tested under Node.
 */

/**
 * What to do with a batch after an answer with this HTTP status: `ok` (delivered), `retry` (a
 * rate limit or a server fault, which pass), or `drop` (any other 4xx: the request itself is
 * wrong, so sending it again can only fail again).
 * @param {number} status
 * @returns {'ok' | 'retry' | 'drop'}
 */
export const verdict = (status) => (status < 300 ? 'ok' : status == 429 || status > 499 ? 'retry' : 'drop')

/**
 * The delay before retry number `attempt` (0 for the first): exponential from `base`, capped at
 * `max`, with "equal jitter" (half fixed, half random) so that the clients an outage failed
 * together do not all come back at the same instant, yet none retries at once.
 * @param {number} attempt
 * @param {number} base milliseconds
 * @param {number} max milliseconds
 * @param {() => number} [random]
 */
export const backoff = (attempt, base, max, random = Math.random) => {
  const ceiling = Math.min(max, base * 2 ** attempt)
  return ceiling / 2 + (random() * ceiling) / 2
}

/**
 * A Retry-After header in milliseconds from `now`: delta-seconds or an HTTP date; 0 when absent
 * or unreadable (a cross-origin answer exposes it only if the server lists it in
 * Access-Control-Expose-Headers).
 * @param {string | null | undefined} value
 * @param {number} [now]
 */
export const retryAfter = (value, now = Date.now()) => {
  if (!value) return 0
  const seconds = Number(value)
  const ms = seconds >= 0 ? seconds * 1000 : Date.parse(value) - now
  return ms > 0 ? ms : 0
}
