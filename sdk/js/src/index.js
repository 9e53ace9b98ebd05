/** The npm entry: `import { headwater } from '@headwater/sdk'; headwater.init({ key, host })`. */
import { Headwater } from './client.js'

export { Headwater }
/** @typedef {import('./client.js').Options} Options */

export const headwater = new Headwater()
