import assert from 'node:assert/strict'
import { afterEach, beforeEach, mock, test } from 'node:test'
import { Headwater } from '../src/client.js'
import { browser, settle } from './env.js'

const KEY = 'hwpk_test'
const HOST = 'https://edge.example'
/** @param {number} status @param {Record<string, string>} [headers] */
const answer = (status, headers) => () => new Response('{}', { status, headers })
const refused = () => Promise.reject(new TypeError('Failed to fetch'))

/** @param {Partial<import('../src/client.js').Options>} [options] */
const start = (options) => {
  const client = new Headwater()
  client.init({ key: KEY, host: HOST, ...options })
  return client
}

beforeEach(() => mock.timers.enable({ apis: ['setTimeout', 'Date'], now: Date.parse('2026-11-28T10:00:00Z') }))
afterEach(() => mock.timers.reset())

test('a page view at init; events wait flushInterval for others, then go as one batch', async () => {
  const env = browser()
  const client = start()
  client.track('Signed Up', { plan: 'pro' })
  await settle()
  assert.equal(env.sent.length, 0)
  mock.timers.tick(2000)
  await settle()
  assert.equal(env.sent.length, 1)
  const [request] = env.sent
  assert.equal(request.url, `${HOST}/v1/batch`)
  assert.equal(request.keepalive, true)
  assert.equal(request.body.writeKey, KEY)
  const [page, track] = request.body.batch
  assert.equal(page.type, 'page')
  assert.deepEqual(page.properties, {
    path: '/home',
    referrer: 'https://search.example/?q=x',
    search: '?x=1',
    title: 'Home',
    url: 'https://app.example/home?x=1',
  })
  assert.equal(track.type, 'track')
  assert.equal(track.event, 'Signed Up')
  assert.deepEqual(track.properties, { plan: 'pro' })
  assert.equal(track.anonymousId, page.anonymousId)
  assert.notEqual(track.messageId, page.messageId)
  assert.equal(track.timestamp, '2026-11-28T10:00:00.000Z')
  assert.equal(track.context.library.name, 'headwater.js')
  assert.deepEqual(track.context.screen, { width: 1280, height: 800 })
  assert.equal(track.context.page.url, 'https://app.example/home?x=1')
  assert.deepEqual(env.storage.getItem(`hw_q_${KEY}`), '[]') // delivered, so no longer queued
})

test('flushAt events go at once', async () => {
  const env = browser()
  const client = start({ flushAt: 3, autoPage: false })
  for (const n of [1, 2, 3]) client.track(`e${n}`)
  await settle()
  assert.deepEqual(
    env.events().map((e) => e.event),
    ['e1', 'e2', 'e3'],
  )
})

test('sentAt is stamped when a request is sent, each retry anew', async () => {
  const env = browser({ answer: answer(503) })
  const client = start({ autoPage: false })
  client.track('Late')
  mock.timers.tick(2000)
  await settle()
  env.answerWith(answer(200))
  mock.timers.tick(5000)
  await settle()
  assert.equal(env.sent.length, 2)
  const [first, second] = env.sent.map((request) => request.body)
  assert.equal(first.batch[0].timestamp, '2026-11-28T10:00:00.000Z')
  assert.equal(first.sentAt, '2026-11-28T10:00:02.000Z')
  assert.ok(second.sentAt > first.sentAt)
  assert.equal(second.batch[0].messageId, first.batch[0].messageId) // the same event, retried
})

test('5xx and network errors are retried with growing delays until delivered', async () => {
  const env = browser({ answer: refused })
  const client = start({ autoPage: false, retryDelay: 1000, maxRetryDelay: 8000 })
  mock.method(Math, 'random', () => 1) // the top of each jitter range
  client.track('Persistent')
  mock.timers.tick(2000)
  await settle()
  const times = [Date.now()]
  for (const wait of [1000, 2000, 4000, 8000, 8000]) {
    mock.timers.tick(wait - 1)
    await settle()
    assert.equal(env.sent.length, times.length, `not before ${wait} ms`)
    mock.timers.tick(1)
    await settle()
    times.push(Date.now())
    if (times.length == 3) env.answerWith(answer(502))
  }
  assert.equal(env.sent.length, 6)
  env.answerWith(answer(200))
  mock.timers.tick(8000)
  await settle()
  assert.equal(env.sent.length, 7)
  mock.timers.tick(60000)
  await settle()
  assert.equal(env.sent.length, 7) // delivered: no more attempts
  assert.equal(env.storage.getItem(`hw_q_${KEY}`), '[]')
})

test('429 waits at least its Retry-After', async () => {
  const env = browser({ answer: answer(429, { 'Retry-After': '20' }) })
  const client = start({ autoPage: false })
  client.track('Limited')
  mock.timers.tick(2000)
  await settle()
  assert.equal(env.sent.length, 1)
  mock.timers.tick(19999)
  await settle()
  assert.equal(env.sent.length, 1)
  mock.timers.tick(1)
  await settle()
  assert.equal(env.sent.length, 2)
})

test('other 4xx answers are never retried: the batch is dropped', async () => {
  const env = browser({ answer: answer(400) })
  const client = start({ autoPage: false })
  client.track('Broken')
  mock.timers.tick(2000)
  await settle()
  mock.timers.tick(120000)
  await settle()
  assert.equal(env.sent.length, 1)
  assert.equal(env.storage.getItem(`hw_q_${KEY}`), '[]')
})

test('offline: nothing is attempted until the browser is online again', async () => {
  const env = browser()
  env.navigator.onLine = false
  const client = start({ autoPage: false })
  client.track('Offline 1')
  client.track('Offline 2')
  mock.timers.tick(60000)
  await settle()
  assert.equal(env.sent.length, 0)
  env.navigator.onLine = true
  env.fire('online')
  await settle()
  assert.deepEqual(
    env.events().map((e) => e.event),
    ['Offline 1', 'Offline 2'],
  )
})

test('going online cuts a retry wait short', async () => {
  const env = browser({ answer: refused })
  const client = start({ autoPage: false, retryDelay: 60000, maxRetryDelay: 60000 })
  client.track('Waiting')
  mock.timers.tick(2000)
  await settle()
  env.answerWith(answer(200))
  env.fire('online')
  await settle()
  assert.equal(env.sent.length, 2)
})

test('undelivered events survive a reload and are sent by the next page', async () => {
  const env = browser({ answer: answer(503) })
  const client = start({ autoPage: false })
  client.track('Before reload')
  mock.timers.tick(2000)
  await settle()
  assert.equal(env.sent.length, 1)

  const next = browser({ storage: env.storage })
  start({ autoPage: false })
  await settle()
  assert.deepEqual(
    next.events().map((e) => e.event),
    ['Before reload'],
  )
  assert.equal(next.storage.getItem(`hw_q_${KEY}`), '[]')
})

test('the queue is bounded: the oldest events go first', async () => {
  const env = browser({ answer: refused })
  const client = start({ autoPage: false, maxQueue: 3, flushAt: 1000 })
  for (let n = 1; n <= 5; n++) client.track(`e${n}`)
  assert.deepEqual(
    JSON.parse(env.storage.getItem(`hw_q_${KEY}`) || '').map((/** @type {any} */ e) => e.event),
    ['e3', 'e4', 'e5'],
  )
})

test('identify: later events carry the user id, across reloads; reset forgets it', async () => {
  const env = browser()
  const client = start({ autoPage: false, flushAt: 1 })
  client.identify('user-42', { plan: 'pro' })
  client.track('After identify')
  await settle()
  const [identify, track] = env.events()
  assert.equal(identify.type, 'identify')
  assert.equal(identify.userId, 'user-42')
  assert.deepEqual(identify.traits, { plan: 'pro' })
  assert.equal(track.userId, 'user-42')

  const reloaded = browser({ storage: env.storage })
  const again = start({ autoPage: false, flushAt: 1 })
  again.track('Next visit')
  again.reset()
  again.track('After reset')
  await settle()
  const [visit, afterReset] = reloaded.events()
  assert.equal(visit.userId, 'user-42')
  assert.equal(visit.anonymousId, track.anonymousId)
  assert.equal(afterReset.userId, undefined)
  assert.notEqual(afterReset.anonymousId, track.anonymousId)
})

test('every event carries the session id; a gap longer than sessionTimeout starts a new one', async () => {
  const env = browser()
  const client = start({ flushAt: 1, sessionTimeout: 60_000 })
  client.track('a')
  mock.timers.tick(60_000) // exactly the timeout: the same session
  client.track('b')
  mock.timers.tick(60_001)
  client.track('c')
  await settle()
  const [page, a, b, c] = env.events().map((e) => e.context.sessionId)
  assert.match(page, /^[0-9a-f-]{36}$/)
  assert.deepEqual([a, b], [page, page])
  assert.notEqual(c, page)
  assert.equal(env.storage.getItem('hw_sid'), `${c}.${Date.now()}`)
})

test('the session continues across a reload within the timeout; reset starts a new one', async () => {
  const env = browser()
  start({ flushAt: 1 })
  await settle()
  const [first] = env.events()
  mock.timers.tick(29 * 60_000) // the default timeout is 30 minutes

  const reloaded = browser({ storage: env.storage })
  const again = start({ flushAt: 1 })
  again.reset()
  again.track('After reset')
  await settle()
  const [view, afterReset] = reloaded.events()
  assert.equal(view.context.sessionId, first.context.sessionId)
  assert.notEqual(afterReset.context.sessionId, first.context.sessionId)
})

test('sessionId: false sends and stores no session id', async () => {
  const env = browser()
  start({ flushAt: 1, sessionId: false })
  await settle()
  const [page] = env.events()
  assert.equal(page.context.sessionId, undefined)
  assert.equal(env.storage.getItem('hw_sid'), null)
})

test('group and alias', async () => {
  const env = browser()
  const client = start({ autoPage: false, flushAt: 1 })
  client.group('acme', { seats: 3 })
  client.alias('user-7')
  await settle()
  const [group, alias] = env.events()
  assert.deepEqual([group.type, group.groupId, group.traits], ['group', 'acme', { seats: 3 }])
  assert.equal(alias.type, 'alias')
  assert.equal(alias.previousId, group.anonymousId)
  assert.equal(alias.userId, 'user-7')
})

test('single-page apps: pushState, replaceState and popstate are page views', async () => {
  const env = browser()
  start({ flushAt: 1 })
  history.pushState({}, '', '/pricing')
  history.replaceState({}, '', '/pricing') // same URL: not a navigation
  history.replaceState({}, '', '/pricing?tab=teams')
  env.navigate('/home?x=1')
  env.fire('popstate')
  await settle()
  const pages = env.events().map((e) => [e.properties.path + e.properties.search, e.properties.referrer])
  assert.deepEqual(pages, [
    ['/home?x=1', 'https://search.example/?q=x'],
    ['/pricing', 'https://app.example/home?x=1'],
    ['/pricing?tab=teams', 'https://app.example/pricing'],
    ['/home?x=1', 'https://app.example/pricing?tab=teams'],
  ])
})

test('UTM parameters of the landing page stay in context.campaign after navigating', async () => {
  const env = browser({ url: 'https://app.example/?utm_source=news&utm_campaign=spring&utm_medium=email' })
  const client = start({ flushAt: 1 })
  history.pushState({}, '', '/next')
  client.track('Clicked')
  await settle()
  const campaigns = env.events().map((e) => e.context.campaign)
  assert.equal(campaigns.length, 3)
  for (const campaign of campaigns) assert.deepEqual(campaign, { source: 'news', name: 'spring', medium: 'email' })
})

test('pagehide hands waiting events to sendBeacon and forgets them', async () => {
  const env = browser()
  const client = start()
  client.track('Closing')
  env.fire('pagehide')
  assert.equal(env.sent.length, 1)
  assert.equal(env.sent[0].beacon, true)
  assert.equal(env.sent[0].url, `${HOST}/v1/batch`)
  assert.deepEqual(
    env.events().map((e) => e.type + ':' + (e.event ?? '')),
    ['page:', 'track:Closing'],
  )
  assert.equal(env.storage.getItem(`hw_q_${KEY}`), '[]')
  env.hide() // visibilitychange as well: nothing left to send twice
  mock.timers.tick(5000)
  await settle()
  assert.equal(env.sent.length, 1)
})

test('a hidden tab beacons too; a refused beacon keeps the events queued', async () => {
  const env = browser()
  const client = start({ autoPage: false })
  client.track('Hidden')
  env.navigator.sendBeacon = () => false
  env.hide()
  assert.equal(JSON.parse(env.storage.getItem(`hw_q_${KEY}`) || '').length, 1)
})

test('no beacon while deliveries fail: the events wait for the next page', async () => {
  const env = browser({ answer: refused })
  const client = start({ autoPage: false })
  client.track('Edge down')
  mock.timers.tick(2000)
  await settle()
  env.fire('pagehide')
  assert.equal(env.sent.filter((request) => request.beacon).length, 0)
  assert.equal(JSON.parse(env.storage.getItem(`hw_q_${KEY}`) || '').length, 1)
})

test('optOut sends nothing, clears the queue and is remembered; optIn resumes', async () => {
  const env = browser()
  const client = start({ autoPage: false })
  client.track('Queued')
  client.optOut()
  client.track('Ignored')
  client.identify('u-1')
  mock.timers.tick(5000)
  await settle()
  assert.equal(env.sent.length, 0)
  assert.equal(env.storage.getItem('hw_uid'), null)

  const reloaded = browser({ storage: env.storage })
  const again = start({ flushAt: 1 })
  again.track('Still ignored')
  again.optIn()
  again.track('Counted')
  await settle()
  assert.deepEqual(
    reloaded.events().map((e) => e.event),
    ['Counted'],
  )
})

test('privacy signals: ignored by default, cookieless or opt-out when configured', async () => {
  for (const signals of [{ globalPrivacyControl: true }, { doNotTrack: '1' }]) {
    let env = browser({ signals })
    start({ flushAt: 1 })
    await settle()
    assert.equal(env.sent.length, 1)
    assert.ok(env.storage.getItem('hw_aid'))

    env = browser({ signals })
    start({ flushAt: 1, privacySignals: 'optout' })
    await settle()
    assert.equal(env.sent.length, 0)
    assert.equal(env.storage.map.size, 0)

    env = browser({ signals })
    start({ flushAt: 1, privacySignals: 'cookieless' })
    await settle()
    assert.equal(env.sent.length, 1)
    assert.equal(env.storage.map.size, 0)
    assert.equal(env.document.cookie, '')
  }
})

test("persistence 'none' stores nothing; 'cookie' keeps the ids in a cookie", async () => {
  let env = browser()
  start({ flushAt: 1, persistence: 'none' })
  await settle()
  assert.equal(env.sent.length, 1)
  assert.equal(env.storage.map.size, 0)
  assert.equal(env.document.cookie, '')

  env = browser()
  start({ flushAt: 1, persistence: 'cookie' })
  await settle()
  const [page] = env.events()
  assert.equal(env.document.cookie, `hw_aid=${page.anonymousId}; hw_sid=${page.context.sessionId}.${Date.now()}`)
  assert.equal(env.storage.getItem('hw_aid'), null)
})

test('calls made before init run after it, in order', async () => {
  const env = browser()
  const client = new Headwater()
  client.identify('early-user')
  client.track('Early')
  client.init({ key: KEY, host: HOST, flushAt: 1 })
  await settle()
  assert.deepEqual(
    env.events().map((e) => [e.type, e.userId]),
    [
      ['page', undefined],
      ['identify', 'early-user'],
      ['track', 'early-user'],
    ],
  )
})

test('the browser build runs the calls the snippet queued, sending to the edge it came from', async () => {
  const env = browser()
  const script = new globalThis.HTMLScriptElement()
  Object.assign(script, { src: 'https://edge.example/sdk/v1/headwater.js' })
  Object.assign(env.document, { currentScript: script })
  Object.assign(globalThis.window, {
    headwater: [
      ['init', { key: KEY, flushAt: 2 }],
      ['track', 'From snippet', { a: 1 }],
    ],
  })
  await import('../src/browser.js')
  await settle()
  const hw = /** @type {any} */ (globalThis.window).headwater
  assert.ok(hw instanceof Headwater)
  assert.equal(env.sent[0].url, 'https://edge.example/v1/batch')
  assert.deepEqual(
    env.events().map((e) => e.event ?? e.type),
    ['page', 'From snippet'],
  )
})

test('a batch too large for keepalive is sent without it', async () => {
  const env = browser()
  const client = start({ autoPage: false, flushAt: 1 })
  client.track('Small')
  client.track('Large', { blob: 'x'.repeat(70000) })
  await settle()
  assert.deepEqual(
    env.sent.map((request) => [request.body.batch[0].event, request.keepalive]),
    [
      ['Small', true],
      ['Large', false],
    ],
  )
})
