import assert from 'node:assert/strict'
import { test } from 'node:test'
import { definitionOf, driverFunnel, funnelBody, newDefinition, stepLabel } from '../src/funnel.js'

const form = {
  steps: [
    { kind: 'page', value: ' /pricing ' },
    { kind: 'event', value: 'Signed Up' },
  ],
  window: { value: '2', unit: 'hour' },
  order: 'strict',
  unit: 'sessions',
  breakdown: '',
}

test('the builder has three steps to fill', () => {
  assert.equal(newDefinition().steps.length, 3)
})

test('a query body: trimmed steps, a numeric window, no empty breakdown', () => {
  assert.deepEqual(funnelBody(form, { from: 'A', to: 'B' }), {
    steps: [
      { kind: 'page', value: '/pricing' },
      { kind: 'event', value: 'Signed Up' },
    ],
    window: { value: 2, unit: 'hour' },
    order: 'strict',
    unit: 'sessions',
    from: 'A',
    to: 'B',
  })
  assert.deepEqual(funnelBody({ ...form, breakdown: ' country ' }).breakdown, { column: 'country' })
})

test('a saved funnel opens in the builder as it was saved', () => {
  const saved = { ...funnelBody({ ...form, breakdown: 'country' }), name: 'x', id: 'k3qv7xzab2mf' }
  assert.deepEqual(funnelBody(definitionOf(saved)), funnelBody({ ...form, breakdown: 'country' }))
})

test('a driver becomes its steps followed by the goal', () => {
  const driver = { steps: ['/a', 'Clicked'], kinds: ['page', 'event'] }
  assert.deepEqual(driverFunnel(driver, { kind: 'event', value: 'Purchased' }, 'people'), {
    steps: [
      { kind: 'page', value: '/a' },
      { kind: 'event', value: 'Clicked' },
      { kind: 'event', value: 'Purchased' },
    ],
    window: { value: 1, unit: 'day' },
    order: 'ordered',
    unit: 'people',
  })
  assert.equal(stepLabel({ kind: 'page', value: '/a' }), 'page /a')
})
