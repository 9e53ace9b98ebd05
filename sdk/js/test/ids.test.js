import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { test } from 'node:test'
import { Identity, uuid } from '../src/ids.js'
import { cookieStore, localStore, memoryStore } from '../src/store.js'
import { VERSION } from '../src/version.js'
import { FakeStorage, browser } from './env.js'

const V4 = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/

test('uuid: random v4 UUIDs, never the same twice', () => {
  const seen = new Set()
  for (let i = 0; i < 2000; i++) {
    const id = uuid()
    assert.match(id, V4)
    seen.add(id)
  }
  assert.equal(seen.size, 2000)
})

test('the anonymous id is made once and kept across reloads', () => {
  const storage = new FakeStorage()
  const id = new Identity(storage).anonymousId
  assert.match(id, V4)
  assert.equal(new Identity(storage).anonymousId, id)
  assert.equal(storage.getItem('hw_aid'), id)
})

test('user id and opt-out are kept; reset makes a new visitor but keeps the opt-out', () => {
  const storage = new FakeStorage()
  const identity = new Identity(storage)
  const before = identity.anonymousId
  identity.userId = 'u-1'
  identity.optedOut = true
  const reloaded = new Identity(storage)
  assert.equal(reloaded.userId, 'u-1')
  assert.equal(reloaded.optedOut, true)
  reloaded.reset()
  assert.notEqual(reloaded.anonymousId, before)
  assert.equal(reloaded.userId, null)
  assert.equal(reloaded.optedOut, true)
  reloaded.optedOut = false
  assert.equal(new Identity(storage).optedOut, false)
})

test('the session id is kept while events come at most the timeout apart, with reloads', () => {
  const storage = new FakeStorage()
  const identity = new Identity(storage)
  const first = identity.session(1000, 500)
  assert.match(first, V4)
  assert.equal(identity.session(1500, 500), first)
  assert.equal(new Identity(storage).session(2000, 500), first) // a reload (or another tab)
  const second = identity.session(2501, 500)
  assert.notEqual(second, first)
  assert.equal(storage.getItem('hw_sid'), `${second}.2501`)
  identity.reset()
  assert.notEqual(identity.session(2600, 500), second)
})

test('a full storage keeps the session in the page', () => {
  const storage = new FakeStorage()
  const identity = new Identity(storage)
  const first = identity.session(1000, 500)
  storage.full = true
  assert.equal(identity.session(1400, 500), first)
  assert.equal(identity.session(1800, 500), first) // 800 ms after the stored event, 400 after the last
  assert.notEqual(identity.session(2400, 500), first)
})

test('the cookie store writes first-party cookies for a year, readable after a reload', () => {
  const env = browser({ url: 'https://app.example/' })
  const identity = new Identity(cookieStore('example'))
  const id = identity.anonymousId
  assert.match(env.document.cookie, new RegExp(`hw_aid=${id}`))
  browser({ cookie: env.document.cookie })
  assert.equal(new Identity(cookieStore('example')).anonymousId, id)
  /** @type {string[]} */
  const written = []
  Object.defineProperty(globalThis.document, 'cookie', { set: (line) => written.push(line), get: () => '' })
  cookieStore('example.com').setItem('hw_aid', 'x')
  assert.deepEqual(written, ['hw_aid=x;path=/;max-age=31536000;samesite=lax;domain=example.com;secure'])
})

test('localStorage that throws (privacy modes, sandboxed frames) falls back to memory', () => {
  browser()
  Object.defineProperty(globalThis, 'localStorage', {
    get() {
      throw new DOMException('denied', 'SecurityError')
    },
    configurable: true,
  })
  const store = localStore()
  store.setItem('k', 'v')
  assert.equal(store.getItem('k'), 'v')
})

test('a memory store keeps nothing beyond itself', () => {
  const identity = new Identity(memoryStore())
  assert.equal(identity.anonymousId, identity.anonymousId)
  assert.notEqual(new Identity(memoryStore()).anonymousId, identity.anonymousId)
})

test('the version matches package.json', () => {
  const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8'))
  assert.equal(VERSION, pkg.version)
})
