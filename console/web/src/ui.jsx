// Small pieces every page uses: the API's errors as it worded them, tables, a date range.
import { useEffect } from 'preact/hooks'
import { daysBefore, today } from './format.js'

export function ErrorNote({ error }) {
  if (!error) return null
  return (
    <p class="error" role="alert">
      <strong>{error.status ? `${error.status} ${error.code}` : 'Error'}</strong>
      {': '}
      {error.message}
      {error.field ? <span class="field"> (field: {error.field})</span> : null}
    </p>
  )
}

export function Table({ caption, columns, rows, empty = 'Nothing yet.', className = '' }) {
  return (
    <table class={className}>
      <caption>{caption}</caption>
      <thead>
        <tr>
          {columns.map((c) => (
            <th scope="col" key={c.label} class={c.numeric ? 'num' : ''}>
              {c.label}
            </th>
          ))}
        </tr>
      </thead>
      <tbody>
        {rows.length === 0 ? (
          <tr>
            <td colSpan={columns.length} class="empty">
              {empty}
            </td>
          </tr>
        ) : (
          rows.map((row, i) => (
            <tr key={i}>
              {columns.map((c) => (
                <td key={c.label} class={c.numeric ? 'num' : ''}>
                  {c.value(row, i)}
                </td>
              ))}
            </tr>
          ))
        )}
      </tbody>
    </table>
  )
}

/** Two `<input type="date">` (UTC days, `to` included); `onChange({from, to})`. */
export function DateRange({ id, value, onChange }) {
  return (
    <fieldset class="inline">
      <legend>Days (UTC)</legend>
      <label for={`${id}-from`}>From</label>
      <input
        id={`${id}-from`}
        type="date"
        value={value.from}
        max={value.to}
        required
        onInput={(e) => onChange({ ...value, from: e.target.value })}
      />
      <label for={`${id}-to`}>to</label>
      <input
        id={`${id}-to`}
        type="date"
        value={value.to}
        min={value.from}
        required
        onInput={(e) => onChange({ ...value, to: e.target.value })}
      />
    </fieldset>
  )
}

export function lastDays(days) {
  return { from: daysBefore(days - 1), to: today() }
}

/** Calls `load` now and `ms` after each answer while the page is open and `active`; `onAnswer`
 * gets each answer, `onError` each failure (the polling goes on). */
export function usePoll(load, ms, onAnswer, onError, deps, active = true) {
  useEffect(() => {
    if (!active) return undefined
    let stopped = false
    let timer = null
    const poll = async () => {
      try {
        const answer = await load()
        if (!stopped) onAnswer(answer)
      } catch (failure) {
        if (!stopped) onError(failure)
      }
      if (!stopped) timer = setTimeout(poll, ms)
    }
    poll()
    return () => {
      stopped = true
      clearTimeout(timer)
    }
  }, [...deps, active])
}
