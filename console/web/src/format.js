// Formatting and time ranges: pure functions (test/format.test.js).

const integer = new Intl.NumberFormat('en', { maximumFractionDigits: 0 })

export function count(value) {
  return value === null || value === undefined ? '–' : integer.format(value)
}

export function percent(share, digits = 1) {
  return share === null || share === undefined ? '–' : `${(share * 100).toFixed(digits)}%`
}

export function seconds(value) {
  if (value === null || value === undefined) return '–'
  if (value < 60) return `${value.toFixed(1)} s`
  const minutes = Math.floor(value / 60)
  if (minutes < 60) return `${minutes} min ${Math.round(value - minutes * 60)} s`
  return `${Math.floor(minutes / 60)} h ${minutes % 60} min`
}

export function milliseconds(value) {
  return value === null || value === undefined ? '–' : seconds(value / 1000)
}

/** `2026-12-06T15:00:00Z` → `2026-12-06 15:00` (UTC, as the API's buckets are). */
export function utc(iso) {
  if (!iso) return '–'
  return String(iso).replace('T', ' ').replace(/(:\d\d)(\.\d+)?(Z|\+00:00)$/, '$1').replace(/:00$/, '')
}

/** RFC 3339 without milliseconds. */
export function rfc3339(date) {
  return date.toISOString().replace(/\.\d{3}Z$/, 'Z')
}

const HOUR = 3600 * 1000
const DAY = 24 * HOUR

/** The ranges of the range picker: [from, to) ending at the next whole hour (or day) after `now`. */
export const RANGES = {
  '24h': { label: 'Last 24 hours', span: DAY, interval: 'hour' },
  '7d': { label: 'Last 7 days', span: 7 * DAY, interval: 'hour' },
  '30d': { label: 'Last 30 days', span: 30 * DAY, interval: 'day' },
  '90d': { label: 'Last 90 days', span: 90 * DAY, interval: 'day' },
}

export function range(name, now = new Date()) {
  const chosen = RANGES[name] || RANGES['7d']
  const unit = chosen.interval === 'hour' ? HOUR : DAY
  const end = Math.floor(now.getTime() / unit) * unit + unit
  return {
    from: rfc3339(new Date(end - chosen.span)),
    to: rfc3339(new Date(end)),
    interval: chosen.interval,
  }
}

/** A `<input type="date">` value (a UTC day) to RFC 3339 midnight; `plusDays` moves it. */
export function dayStart(value, plusDays = 0) {
  const [y, m, d] = value.split('-').map(Number)
  return rfc3339(new Date(Date.UTC(y, m - 1, d + plusDays)))
}

export function today(now = new Date()) {
  return now.toISOString().slice(0, 10)
}

export function daysBefore(days, now = new Date()) {
  return new Date(now.getTime() - days * DAY).toISOString().slice(0, 10)
}
