// Funnels: build one step by step, see it as bars with conversion and drop-off, list who dropped
// at a step, save it; a saved funnel's daily trend.
import { useEffect, useState } from 'preact/hooks'
import { api, call, project as projectPath } from '../api.js'
import { ChartCanvas, PALETTE } from '../charts.jsx'
import { count, dayStart, milliseconds, percent } from '../format.js'
import { definitionOf, emptyStep, funnelBody, newDefinition, stepLabel } from '../funnel.js'
import { DateRange, ErrorNote, lastDays, Table } from '../ui.jsx'

function StepEditor({ definition, setDefinition }) {
  const steps = definition.steps
  const change = (i, patch) => setDefinition({ ...definition, steps: steps.map((s, j) => (j === i ? { ...s, ...patch } : s)) })
  const remove = (i) => setDefinition({ ...definition, steps: steps.filter((_, j) => j !== i) })
  return (
    <fieldset>
      <legend>Steps</legend>
      <ol class="steps">
        {steps.map((step, i) => (
          <li key={i}>
            <label for={`step-${i}-kind`}>Step {i + 1} kind</label>
            <select id={`step-${i}-kind`} value={step.kind} onChange={(e) => change(i, { kind: e.target.value })}>
              <option value="event">event</option>
              <option value="page">page</option>
            </select>
            <label for={`step-${i}-value`}>Step {i + 1} {step.kind === 'page' ? 'path (* matches any run)' : 'event name'}</label>
            <input
              id={`step-${i}-value`}
              required
              maxLength={200}
              value={step.value}
              onInput={(e) => change(i, { value: e.target.value })}
            />
            <button type="button" class="quiet" onClick={() => remove(i)} disabled={steps.length <= 2} aria-label={`Remove step ${i + 1}`}>
              Remove
            </button>
          </li>
        ))}
      </ol>
      <button
        type="button"
        onClick={() => setDefinition({ ...definition, steps: [...steps, emptyStep()] })}
        disabled={steps.length >= 20}
      >
        Add a step
      </button>
    </fieldset>
  )
}

function Options({ definition, setDefinition }) {
  const set = (patch) => setDefinition({ ...definition, ...patch })
  return (
    <div class="row">
      <div>
        <label for="funnel-window">Window</label>
        <input
          id="funnel-window"
          type="number"
          min={1}
          required
          value={definition.window.value}
          onInput={(e) => set({ window: { ...definition.window, value: e.target.value } })}
        />
      </div>
      <div>
        <label for="funnel-window-unit">Window unit</label>
        <select id="funnel-window-unit" value={definition.window.unit} onChange={(e) => set({ window: { ...definition.window, unit: e.target.value } })}>
          {['second', 'minute', 'hour', 'day'].map((u) => (
            <option key={u} value={u}>
              {u}s
            </option>
          ))}
        </select>
      </div>
      <div>
        <label for="funnel-order">Order</label>
        <select id="funnel-order" value={definition.order} onChange={(e) => set({ order: e.target.value })}>
          <option value="ordered">ordered (others may come between)</option>
          <option value="strict">strict (nothing between)</option>
          <option value="unordered">unordered</option>
        </select>
      </div>
      <div>
        <label for="funnel-unit">Counting</label>
        <select id="funnel-unit" value={definition.unit} onChange={(e) => set({ unit: e.target.value })}>
          <option value="people">people</option>
          <option value="sessions">sessions</option>
        </select>
      </div>
      <div>
        <label for="funnel-breakdown">Breakdown by (optional)</label>
        <input
          id="funnel-breakdown"
          placeholder="country, properties.plan"
          maxLength={200}
          value={definition.breakdown}
          onInput={(e) => set({ breakdown: e.target.value })}
        />
      </div>
    </div>
  )
}

function stepColumns() {
  return [
    { label: 'Step', value: (s, i) => `${i + 1}. ${stepLabel(s.step)}` },
    { label: 'People', value: (s) => count(s.count), numeric: true },
    { label: 'From start', value: (s) => percent(s.conversion_from_start), numeric: true },
    { label: 'From previous', value: (s) => percent(s.conversion_from_previous), numeric: true },
    { label: 'Dropped', value: (s) => count(s.dropped), numeric: true },
    { label: 'Median time', value: (s) => milliseconds(s.median_ms), numeric: true },
  ]
}

function FunnelResult({ answer, onDropped }) {
  const steps = answer.steps
  return (
    <section aria-labelledby="result-heading">
      <h2 id="result-heading">Result</h2>
      <ChartCanvas
        type="bar"
        label={`Funnel: ${steps.map((s) => `${stepLabel(s.step)} ${s.count}`).join(', ')}`}
        data={{
          labels: steps.map((s, i) => `${i + 1}. ${stepLabel(s.step)}`),
          datasets: [
            { label: 'Converted', data: steps.map((s) => s.count), backgroundColor: PALETTE[0], stack: 'a' },
            { label: 'Dropped', data: steps.map((s) => s.dropped), backgroundColor: '#cbd5e1', stack: 'a' },
          ],
        }}
        options={{ scales: { x: { stacked: true }, y: { stacked: true, beginAtZero: true, ticks: { precision: 0 } } } }}
      />
      <Table
        className="funnel-steps"
        caption="Per step: people, conversion and drop-off"
        columns={[
          ...stepColumns(),
          {
            label: 'Who dropped',
            value: (s, i) =>
              i === 0 || s.dropped === 0 ? (
                ''
              ) : (
                <button type="button" class="link" onClick={() => onDropped(i + 1)}>
                  List the {count(s.dropped)}
                </button>
              ),
          },
        ]}
        rows={steps}
      />
      {answer.breakdown && (
        <Table
          caption="Breakdown: people per step and value"
          columns={[
            { label: 'Value', value: (b) => (b.value === null ? '(others)' : b.value) },
            ...steps.map((s, i) => ({ label: `${i + 1}. ${stepLabel(s.step)}`, value: (b) => count(b.steps[i].count), numeric: true })),
            { label: 'Converted', value: (b) => percent(b.steps[b.steps.length - 1].conversion_from_start), numeric: true },
          ]}
          rows={answer.breakdown}
        />
      )}
    </section>
  )
}

function Trend({ project, funnel, days }) {
  const [answer, setAnswer] = useState(null)
  const [error, setError] = useState(null)
  useEffect(() => {
    setAnswer(null)
    api
      .post(`${projectPath(project)}/funnels/${funnel.id}/trend`, { from: dayStart(days.from), to: dayStart(days.to, 1) })
      .then(setAnswer)
      .catch(setError)
  }, [funnel.id, days.from, days.to])
  if (error) return <ErrorNote error={error} />
  if (!answer) return <p class="meta">Loading the trend…</p>
  const rate = (d) => d.steps[d.steps.length - 1].conversion_from_start
  return (
    <section aria-labelledby="trend-heading">
      <h2 id="trend-heading">Daily trend of “{funnel.name}”</h2>
      <ChartCanvas
        type="line"
        height={220}
        label={`Daily conversion of ${funnel.name} from its first step to its last; the table below has the numbers`}
        data={{
          labels: answer.days.map((d) => d.date),
          datasets: [
            {
              label: 'Conversion',
              data: answer.days.map((d) => (rate(d) === null ? null : rate(d) * 100)),
              borderColor: PALETTE[2],
              backgroundColor: PALETTE[2],
            },
          ],
        }}
        options={{
          scales: {
            x: { ticks: { maxTicksLimit: 12, maxRotation: 0 } },
            y: { beginAtZero: true, max: 100, title: { display: true, text: '%' } },
          },
        }}
      />
      <Table
        caption="Per day of entry (UTC)"
        columns={[
          { label: 'Day', value: (d) => `${d.date}${d.complete ? '' : ' (still converting)'}` },
          { label: 'Entered', value: (d) => count(d.steps[0].count), numeric: true },
          { label: 'Converted', value: (d) => count(d.steps[d.steps.length - 1].count), numeric: true },
          { label: 'Conversion', value: (d) => percent(rate(d)), numeric: true },
        ]}
        rows={answer.days}
      />
    </section>
  )
}

export function FunnelsPage({ project }) {
  const [definition, setDefinition] = useState(newDefinition())
  const [days, setDays] = useState(lastDays(30))
  const [answer, setAnswer] = useState(null)
  const [error, setError] = useState(null)
  const [busy, setBusy] = useState(false)
  const [dropped, setDropped] = useState(null) // {step, people, next_after}
  const [saved, setSaved] = useState([])
  const [chosen, setChosen] = useState(null)
  const [name, setName] = useState('')
  const [note, setNote] = useState('')

  const base = projectPath(project)
  const range = () => ({ from: dayStart(days.from), to: dayStart(days.to, 1) })
  const loadSaved = () => api.get(`${base}/funnels`).then((b) => setSaved(b.funnels)).catch(setError)
  useEffect(() => {
    loadSaved()
  }, [project])

  const run = async (event) => {
    event.preventDefault()
    setBusy(true)
    setError(null)
    setDropped(null)
    try {
      setAnswer(await api.post(`${base}/funnels/query`, funnelBody(definition, range())))
    } catch (failure) {
      setError(failure)
      setAnswer(null)
    } finally {
      setBusy(false)
    }
  }
  const listDropped = async (step, after = null) => {
    try {
      const people = { step, status: 'dropped', limit: 100, ...(after ? { after } : {}) }
      const body = funnelBody(definition, { ...range(), people })
      delete body.breakdown
      const result = (await api.post(`${base}/funnels/query`, body)).people
      setDropped((previous) => ({
        ...result,
        people: after && previous ? [...previous.people, ...result.people] : result.people,
      }))
    } catch (failure) {
      setError(failure)
    }
  }
  const save = async (event) => {
    event.preventDefault()
    setError(null)
    setNote('')
    try {
      const created = (await call('POST', `${base}/funnels`, funnelBody(definition, { name }))).body
      setNote(`Saved as “${created.name}”.`)
      await loadSaved()
      setChosen(created)
    } catch (failure) {
      setError(failure)
    }
  }
  const open = (funnel) => {
    setChosen(funnel)
    setDefinition(definitionOf(funnel))
    setName(funnel.name)
    setAnswer(null)
  }

  return (
    <div class="split wide">
      <div>
        <form onSubmit={run} aria-label="Funnel definition">
          <StepEditor definition={definition} setDefinition={setDefinition} />
          <Options definition={definition} setDefinition={setDefinition} />
          <DateRange id="funnel-days" value={days} onChange={setDays} />
          <button type="submit" disabled={busy}>
            Show the funnel
          </button>
        </form>
        <ErrorNote error={error} />
        {answer && <FunnelResult answer={answer} onDropped={(step) => listDropped(step)} />}
        {dropped && (
          <section aria-labelledby="dropped-heading">
            <h2 id="dropped-heading">Dropped at step {dropped.step}</h2>
            <ul class="people" data-testid="dropped-people">
              {dropped.people.map((person) => (
                <li key={person}>
                  <code>{person}</code>
                </li>
              ))}
            </ul>
            {dropped.next_after && (
              <button type="button" onClick={() => listDropped(dropped.step, dropped.next_after)}>
                More
              </button>
            )}
          </section>
        )}
        {chosen && <Trend project={project} funnel={chosen} days={days} />}
      </div>
      <aside aria-labelledby="saved-heading">
        <h2 id="saved-heading">Saved funnels</h2>
        <form onSubmit={save}>
          <label for="funnel-name">Name</label>
          <input id="funnel-name" required maxLength={200} value={name} onInput={(e) => setName(e.target.value)} />
          <button type="submit">Save this funnel</button>
        </form>
        {note && (
          <p class="ok" role="status">
            {note}
          </p>
        )}
        <ul class="saved">
          {saved.map((f) => (
            <li key={f.id}>
              <button type="button" class="link" aria-pressed={chosen && chosen.id === f.id} onClick={() => open(f)}>
                {f.name}
              </button>
              <span class="meta"> {f.steps.length} steps</span>
            </li>
          ))}
          {saved.length === 0 && <li class="meta">None yet.</li>}
        </ul>
      </aside>
    </div>
  )
}
