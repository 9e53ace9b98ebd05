/**
 * The persistent queue of events not yet delivered: kept in a store (localStorage by default) so
 * that events survive reloads, offline periods and edge outages; bounded, oldest dropped first.
 *
 * Every operation reads and writes the store, never a private copy, because all tabs of an origin
 * share it: one tab must not overwrite what another added. Two tabs may then send the same event;
 * that is harmless, ClickHouse keeps one row per messageId.
 */

/** @typedef {import('./store.js').KV} KV */
/** @typedef {{ messageId: string, [field: string]: unknown }} HWEvent */

import { memoryStore } from './store.js'

export class Queue {
  /**
   * @param {KV} store
   * @param {string} key
   * @param {number} max events kept at most
   */
  constructor(store, key, max) {
    this._store = store
    this._key = key
    this._max = max
  }

  /** @returns {HWEvent[]} oldest first */
  all() {
    try {
      const list = JSON.parse(this._store.getItem(this._key) || '[]')
      return Array.isArray(list) ? list : []
    } catch {
      return [] // written by something else: start afresh
    }
  }

  /** @param {HWEvent[]} list */
  _save(list) {
    const json = JSON.stringify(list)
    try {
      this._store.setItem(this._key, json)
    } catch {
      // Storage full: keep the queue in memory for the rest of this page's life.
      this._store = memoryStore()
      this._store.setItem(this._key, json)
    }
  }

  /** @param {HWEvent} event */
  push(event) {
    const list = this.all()
    list.push(event)
    this._save(list.slice(-this._max))
  }

  /**
   * The oldest events, at most `count` of them and about `chars` characters of JSON (at least
   * one event, whatever its size), leaving out those in `skip`.
   * @param {number} count
   * @param {number} chars
   * @param {Set<string>} [skip] message ids
   */
  take(count, chars, skip) {
    /** @type {HWEvent[]} */
    const out = []
    for (const event of this.all()) {
      if (skip && skip.has(event.messageId)) continue
      chars -= JSON.stringify(event).length + 1
      if (out.length == count || (out.length && chars < 0)) break
      out.push(event)
    }
    return out
  }

  /** @param {Set<string>} ids message ids */
  remove(ids) {
    this._save(this.all().filter((event) => !ids.has(event.messageId)))
  }

  clear() {
    this._store.removeItem(this._key)
  }
}
