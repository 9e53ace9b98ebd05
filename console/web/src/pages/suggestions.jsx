// Suggestions: pattern discovery's suggested funnels and, with a goal, its drivers; each saved as a
// funnel in one click.
import { useState } from 'preact/hooks'
import { api, project as projectPath } from '../api.js'
import { count, dayStart, percent } from '../format.js'
import { driverFunnel } from '../funnel.js'
import { DateRange, ErrorNote, lastDays, Table } from '../ui.jsx'

const journey = (steps, kinds) => steps.map((s, i) => (kinds[i] === 'page' ? `page ${s}` : s)).join(' → ')

function SaveButton({ project, funnel, name }) {
  const [state, setState] = useState(null)
  const save = async () => {
    try {
      await api.post(`${projectPath(project)}/funnels`, { ...funnel, name: name.slice(0, 200) })
      setState({ saved: true })
    } catch (failure) {
      setState({ error: failure })
    }
  }
  if (state && state.saved) return <span role="status">Saved</span>
  return (
    <span>
      <button type="button" onClick={save} aria-label={`Save “${name}” as a funnel`}>
        Save as funnel
      </button>
      <ErrorNote error={state && state.error} />
    </span>
  )
}

export function SuggestionsPage({ project }) {
  const [form, setForm] = useState({ unit: 'sessions', goalKind: 'event', goal: '' })
  const [days, setDays] = useState(lastDays(30))
  const [answer, setAnswer] = useState(null)
  const [error, setError] = useState(null)
  const [busy, setBusy] = useState(false)
  const set = (patch) => setForm({ ...form, ...patch })
  const goal = form.goal.trim() ? { kind: form.goalKind, value: form.goal.trim() } : null

  const run = async (event) => {
    event.preventDefault()
    setBusy(true)
    setError(null)
    const body = { from: dayStart(days.from), to: dayStart(days.to, 1), unit: form.unit, top: 10 }
    if (goal) body.goal = goal
    try {
      setAnswer({ ...(await api.post(`${projectPath(project)}/patterns/query`, body)), goal })
    } catch (failure) {
      setError(failure)
      setAnswer(null)
    } finally {
      setBusy(false)
    }
  }

  return (
    <div>
      <form onSubmit={run} aria-label="Pattern discovery">
        <div class="row">
          <div>
            <label for="patterns-unit">Journeys of</label>
            <select id="patterns-unit" value={form.unit} onChange={(e) => set({ unit: e.target.value })}>
              <option value="sessions">sessions</option>
              <option value="people">people</option>
            </select>
          </div>
          <div>
            <label for="patterns-goal-kind">Goal kind</label>
            <select id="patterns-goal-kind" value={form.goalKind} onChange={(e) => set({ goalKind: e.target.value })}>
              <option value="event">event</option>
              <option value="page">page</option>
            </select>
          </div>
          <div>
            <label for="patterns-goal">Goal (optional: finds its drivers)</label>
            <input id="patterns-goal" maxLength={200} value={form.goal} onInput={(e) => set({ goal: e.target.value })} />
          </div>
        </div>
        <DateRange id="patterns-days" value={days} onChange={setDays} />
        <button type="submit" disabled={busy}>
          {busy ? 'Looking…' : 'Find patterns'}
        </button>
      </form>
      <ErrorNote error={error} />
      {answer && (
        <section aria-labelledby="suggested-heading">
          <h2 id="suggested-heading">Suggested funnels</h2>
          <p class="meta">
            From {count(answer.journeys)} {answer.unit}
            {answer.next_step ? `; next-step model top-3 accuracy ${percent(answer.next_step.top3_accuracy)}` : ''}.
          </p>
          <Table
            className="patterns"
            caption="Journeys more frequent than their parts predict, by leverage"
            columns={[
              { label: 'Journey', value: (p) => journey(p.steps, p.kinds) },
              { label: 'Share', value: (p) => percent(p.share), numeric: true },
              { label: 'Lift', value: (p) => p.lift.toFixed(2), numeric: true },
              { label: 'Drop-off', value: (p) => percent(p.drop_off), numeric: true },
              { label: 'Why', value: (p) => p.reason },
              { label: 'Save', value: (p) => <SaveButton project={project} funnel={p.funnel} name={journey(p.steps, p.kinds)} /> },
            ]}
            rows={answer.patterns}
            empty="No pattern stands out in this range."
          />
        </section>
      )}
      {answer && answer.drivers && (
        <section aria-labelledby="drivers-heading">
          <h2 id="drivers-heading">Drivers of {journey([answer.goal.value], [answer.goal.kind])}</h2>
          <p class="meta">{count(answer.converters)} journeys reach it.</p>
          <Table
            className="drivers"
            caption="Patterns before the goal that raise or lower the chance of reaching it"
            columns={[
              { label: 'Pattern', value: (d) => journey(d.steps, d.kinds) },
              { label: 'Effect', value: (d) => d.direction },
              { label: 'Lift', value: (d) => (d.lift === null ? '–' : d.lift.toFixed(2)), numeric: true },
              { label: 'q-value', value: (d) => d.q_value.toPrecision(2), numeric: true },
              { label: 'Why', value: (d) => d.reason },
              {
                label: 'Save',
                value: (d) => (
                  <SaveButton
                    project={project}
                    funnel={driverFunnel(d, answer.goal, answer.unit)}
                    name={`${journey(d.steps, d.kinds)} → ${answer.goal.value}`}
                  />
                ),
              },
            ]}
            rows={answer.drivers}
            empty="No driver found."
          />
        </section>
      )}
    </div>
  )
}
