import assert from 'node:assert/strict'
import { test } from 'node:test'
import { Queue } from '../src/queue.js'
import { memoryStore } from '../src/store.js'
import { FakeStorage } from './env.js'

/** @param {number} n */
const event = (n) => ({ messageId: `m${n}`, type: 'track', event: `e${n}` })
/** @param {{ messageId: string }[]} events */
const ids = (events) => events.map((e) => e.messageId)

test('events survive a reload: a new queue on the same storage sees them', () => {
  const storage = new FakeStorage()
  const first = new Queue(storage, 'q', 100)
  first.push(event(1))
  first.push(event(2))
  assert.deepEqual(ids(new Queue(storage, 'q', 100).all()), ['m1', 'm2'])
})

test('bounded: past the limit the oldest events are dropped', () => {
  const queue = new Queue(memoryStore(), 'q', 3)
  for (let n = 1; n <= 5; n++) queue.push(event(n))
  assert.deepEqual(ids(queue.all()), ['m3', 'm4', 'm5'])
})

test('take: oldest first, by count and by size, at least one, skipping the ones in flight', () => {
  const queue = new Queue(memoryStore(), 'q', 100)
  for (let n = 1; n <= 5; n++) queue.push(event(n))
  assert.deepEqual(ids(queue.take(2, 1e6)), ['m1', 'm2'])
  const size = JSON.stringify(event(1)).length + 1
  assert.deepEqual(ids(queue.take(10, size * 2)), ['m1', 'm2'])
  assert.deepEqual(ids(queue.take(10, 1)), ['m1']) // one event larger than the limit still goes
  assert.deepEqual(ids(queue.take(2, 1e6, new Set(['m1', 'm3']))), ['m2', 'm4'])
  assert.equal(queue.all().length, 5) // taking does not remove
})

test('remove drops delivered events by message id', () => {
  const queue = new Queue(memoryStore(), 'q', 100)
  for (let n = 1; n <= 4; n++) queue.push(event(n))
  queue.remove(new Set(['m1', 'm3']))
  assert.deepEqual(ids(queue.all()), ['m2', 'm4'])
})

test('two tabs on one storage do not overwrite each other', () => {
  const storage = new FakeStorage()
  const tab1 = new Queue(storage, 'q', 100)
  const tab2 = new Queue(storage, 'q', 100)
  tab1.push(event(1))
  tab2.push(event(2))
  tab1.remove(new Set(['m1']))
  assert.deepEqual(ids(tab2.all()), ['m2'])
})

test('unreadable contents start an empty queue', () => {
  const storage = new FakeStorage()
  for (const junk of ['{not json', '{"a":1}', '3']) {
    storage.setItem('q', junk)
    const queue = new Queue(storage, 'q', 100)
    assert.deepEqual(queue.all(), [])
    queue.push(event(1))
    assert.deepEqual(ids(queue.all()), ['m1'])
  }
})

test('a full storage keeps the queue in memory instead of losing events', () => {
  const storage = new FakeStorage()
  const queue = new Queue(storage, 'q', 100)
  queue.push(event(1))
  storage.full = true
  queue.push(event(2))
  queue.push(event(3))
  assert.deepEqual(ids(queue.all()), ['m1', 'm2', 'm3'])
})

test('clear empties it', () => {
  const storage = new FakeStorage()
  const queue = new Queue(storage, 'q', 100)
  queue.push(event(1))
  queue.clear()
  assert.deepEqual(queue.all(), [])
  assert.equal(storage.getItem('q'), null)
})
