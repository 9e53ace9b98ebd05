import assert from 'node:assert/strict'
import { test } from 'node:test'
import { backoff, retryAfter, verdict } from '../src/retry.js'

test('2xx delivers; 429 and 5xx are retried; every other 4xx is dropped', () => {
  for (const status of [200, 202, 204]) assert.equal(verdict(status), 'ok')
  for (const status of [429, 500, 502, 503, 504]) assert.equal(verdict(status), 'retry')
  for (const status of [400, 401, 403, 404, 405, 408, 413, 415]) assert.equal(verdict(status), 'drop')
})

test('backoff doubles per attempt up to the cap, with jitter in its upper half', () => {
  const low = () => 0
  const high = () => 1
  assert.deepEqual(
    [0, 1, 2, 3, 4, 5, 6].map((attempt) => backoff(attempt, 1000, 30000, high)),
    [1000, 2000, 4000, 8000, 16000, 30000, 30000],
  )
  assert.deepEqual(
    [0, 1, 2].map((attempt) => backoff(attempt, 1000, 30000, low)),
    [500, 1000, 2000],
  )
  assert.equal(backoff(5000, 1000, 30000, high), 30000) // 2 ** 5000 is Infinity: still capped
  for (let i = 0; i < 200; i++) {
    const delay = backoff(3, 1000, 30000)
    assert.ok(delay >= 4000 && delay <= 8000, String(delay))
  }
})

test('jitter spreads clients that failed together', () => {
  const delays = new Set(Array.from({ length: 50 }, () => backoff(2, 1000, 30000)))
  assert.ok(delays.size > 40)
})

test('Retry-After in seconds or as an HTTP date; anything else is 0', () => {
  const now = Date.parse('2026-11-28T10:00:00Z')
  assert.equal(retryAfter('7', now), 7000)
  assert.equal(retryAfter('0', now), 0)
  assert.equal(retryAfter('Sat, 28 Nov 2026 10:00:30 GMT', now), 30000)
  assert.equal(retryAfter('Sat, 28 Nov 2026 09:00:00 GMT', now), 0) // in the past
  for (const junk of [null, undefined, '', 'soon', '-5']) assert.equal(retryAfter(junk, now), 0)
})
