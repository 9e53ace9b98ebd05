// Funnel definitions as the API takes them, from the builder's form state: pure (test/funnel.test.js).

export function emptyStep(kind = 'event') {
  return { kind, value: '' }
}

export function newDefinition() {
  return {
    steps: [emptyStep('page'), emptyStep('event'), emptyStep('event')],
    window: { value: 1, unit: 'day' },
    order: 'ordered',
    unit: 'people',
    breakdown: '',
  }
}

/** The body of `funnels/query` (with `from`/`to`) or of a saved funnel (with `name`). */
export function funnelBody(definition, extra = {}) {
  const body = {
    steps: definition.steps.map((step) => ({ kind: step.kind, value: step.value.trim() })),
    window: { value: Number(definition.window.value), unit: definition.window.unit },
    order: definition.order,
    unit: definition.unit,
    ...extra,
  }
  if (definition.breakdown && definition.breakdown.trim()) {
    body.breakdown = { column: definition.breakdown.trim() }
  }
  return body
}

/** A saved funnel (or a suggested one) back into the builder's form state. */
export function definitionOf(funnel) {
  return {
    steps: funnel.steps.map((step) => ({ kind: step.kind, value: step.value })),
    window: { value: funnel.window.value, unit: funnel.window.unit },
    order: funnel.order || 'ordered',
    unit: funnel.unit || 'people',
    breakdown: (funnel.breakdown && funnel.breakdown.column) || '',
  }
}

/** A driver of a goal as a funnel: its steps, then the goal. */
export function driverFunnel(driver, goal, unit) {
  return {
    steps: [...driver.steps.map((value, i) => ({ kind: driver.kinds[i], value })), { ...goal }],
    window: { value: 1, unit: 'day' },
    order: 'ordered',
    unit,
  }
}

export function stepLabel(step) {
  return step.kind === 'page' ? `page ${step.value}` : step.value
}
