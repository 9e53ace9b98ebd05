/**
 * What the SDK reads of the page: UTM parameters, and history navigations of single-page apps.
 */

const UTM = ['source', 'medium', 'campaign', 'term', 'content']

/**
 * The `utm_*` parameters of a query string as Segment's `context.campaign` (`utm_campaign` is
 * its `name`); null when there are none.
 * @param {string} search
 * @returns {Record<string, string> | null}
 */
export const campaign = (search) => {
  const params = new URLSearchParams(search)
  /** @type {Record<string, string> | null} */
  let out = null
  for (const key of UTM) {
    const value = params.get('utm_' + key)
    if (value) (out = out || {})[key == 'campaign' ? 'name' : key] = value
  }
  return out
}

/**
 * Calls `changed` after every navigation a single-page app makes without loading a page:
 * `history.pushState` and `replaceState` (wrapped, since they fire no event) and `popstate`.
 * @param {() => void} changed
 */
export const watchHistory = (changed) => {
  for (const name of /** @type {const} */ (['pushState', 'replaceState'])) {
    const original = history[name]
    history[name] = function (...args) {
      const result = original.apply(this, args)
      changed()
      return result
    }
  }
  addEventListener('popstate', changed)
}
