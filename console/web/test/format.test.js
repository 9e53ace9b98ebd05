import assert from 'node:assert/strict'
import { test } from 'node:test'
import { count, dayStart, milliseconds, percent, range, rfc3339, seconds, utc } from '../src/format.js'

test('counts and shares', () => {
  assert.equal(count(1234567), '1,234,567')
  assert.equal(count(null), '–')
  assert.equal(percent(0.41666), '41.7%')
  assert.equal(percent(1), '100.0%')
  assert.equal(percent(null), '–')
})

test('durations', () => {
  assert.equal(seconds(50), '50.0 s')
  assert.equal(seconds(60), '1 min 0 s')
  assert.equal(seconds(62.5), '1 min 3 s')
  assert.equal(seconds(7260), '2 h 1 min')
  assert.equal(milliseconds(30000), '30.0 s')
  assert.equal(milliseconds(null), '–')
})

test('times are shown in UTC without seconds when they are zero', () => {
  assert.equal(utc('2026-12-06T15:00:00Z'), '2026-12-06 15:00')
  assert.equal(utc('2026-12-06T15:04:05.123Z'), '2026-12-06 15:04:05')
  assert.equal(utc(null), '–')
  assert.equal(rfc3339(new Date(Date.UTC(2026, 11, 6, 15))), '2026-12-06T15:00:00Z')
})

test('a range ends at the next whole hour or day and spans its length', () => {
  const now = new Date(Date.UTC(2026, 11, 6, 15, 20))
  assert.deepEqual(range('24h', now), { from: '2026-12-05T16:00:00Z', to: '2026-12-06T16:00:00Z', interval: 'hour' })
  assert.deepEqual(range('30d', now), { from: '2026-11-07T00:00:00Z', to: '2026-12-07T00:00:00Z', interval: 'day' })
  assert.equal(range('unknown', now).interval, 'hour') // the 7 days
})

test('a date input is a UTC day', () => {
  assert.equal(dayStart('2026-12-06'), '2026-12-06T00:00:00Z')
  assert.equal(dayStart('2026-12-31', 1), '2027-01-01T00:00:00Z')
})
