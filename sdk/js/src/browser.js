/**
 * The script the edge serves at /sdk/v1/headwater.js: defines `window.headwater` and runs the
 * calls the snippet queued before this file arrived.
 */
import { Headwater } from './client.js'

const w = /** @type {Window & { headwater?: unknown }} */ (window)
const stub = w.headwater
if (!stub || Array.isArray(stub)) {
  const script = document.currentScript
  // The edge that served this file is the default place to send events to.
  const client = new Headwater(script instanceof HTMLScriptElement ? new URL(script.src).origin : '')
  w.headwater = client
  for (const [method, ...args] of /** @type {[string, ...unknown[]][]} */ (stub || [])) {
    /** @type {any} */ (client)[method](...args)
  }
}
