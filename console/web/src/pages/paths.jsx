// Paths: the Sankey of journeys from or to a point (POST paths/query).
import { useState } from 'preact/hooks'
import { api, project as projectPath } from '../api.js'
import { ChartCanvas, PALETTE } from '../charts.jsx'
import { count, dayStart } from '../format.js'
import { stepLabel } from '../funnel.js'
import { DateRange, ErrorNote, lastDays, Table } from '../ui.jsx'

export function PathsPage({ project }) {
  const [form, setForm] = useState({ direction: 'start', kind: 'page', value: '', steps: 4, include: 'both' })
  const [days, setDays] = useState(lastDays(30))
  const [answer, setAnswer] = useState(null)
  const [error, setError] = useState(null)
  const set = (patch) => setForm({ ...form, ...patch })

  const run = async (event) => {
    event.preventDefault()
    setError(null)
    const body = { from: dayStart(days.from), to: dayStart(days.to, 1), steps: Number(form.steps), include: form.include }
    if (form.value.trim()) body[form.direction] = { kind: form.kind, value: form.value.trim() }
    try {
      setAnswer(await api.post(`${projectPath(project)}/paths/query`, body))
    } catch (failure) {
      setError(failure)
      setAnswer(null)
    }
  }

  const labels = answer ? Object.fromEntries(answer.nodes.map((n) => [n.id, `${n.depth}. ${stepLabel(n.step)}`])) : {}
  return (
    <div>
      <form onSubmit={run} aria-label="Paths">
        <div class="row">
          <div>
            <label for="paths-direction">Journeys</label>
            <select id="paths-direction" value={form.direction} onChange={(e) => set({ direction: e.target.value })}>
              <option value="start">from a point</option>
              <option value="end">to a point</option>
            </select>
          </div>
          <div>
            <label for="paths-kind">Point kind</label>
            <select id="paths-kind" value={form.kind} onChange={(e) => set({ kind: e.target.value })}>
              <option value="page">page</option>
              <option value="event">event</option>
            </select>
          </div>
          <div>
            <label for="paths-value">Point (empty: every journey's first step)</label>
            <input id="paths-value" maxLength={200} value={form.value} onInput={(e) => set({ value: e.target.value })} />
          </div>
          <div>
            <label for="paths-steps">Steps</label>
            <input id="paths-steps" type="number" min={2} max={10} value={form.steps} onInput={(e) => set({ steps: e.target.value })} />
          </div>
          <div>
            <label for="paths-include">Include</label>
            <select id="paths-include" value={form.include} onChange={(e) => set({ include: e.target.value })}>
              <option value="both">pages and events</option>
              <option value="pages">pages</option>
              <option value="events">events</option>
            </select>
          </div>
        </div>
        <DateRange id="paths-days" value={days} onChange={setDays} />
        <button type="submit">Show the paths</button>
      </form>
      <ErrorNote error={error} />
      {answer && (
        <section aria-labelledby="sankey-heading">
          <h2 id="sankey-heading">
            {count(answer.people)} {answer.people === 1 ? 'person' : 'people'}
          </h2>
          {answer.edges.length > 0 && (
            <ChartCanvas
              type="sankey"
              height={420}
              label={`Sankey of the journeys of ${answer.people} people; the table below lists its flows`}
              data={{
                datasets: [
                  {
                    label: 'People',
                    data: answer.edges.map((e) => ({ from: e.source, to: e.target, flow: e.people })),
                    labels,
                    colorFrom: () => PALETTE[0],
                    colorTo: () => PALETTE[2],
                    colorMode: 'gradient',
                    borderWidth: 0,
                  },
                ],
              }}
              options={{ plugins: { legend: { display: false } } }}
            />
          )}
          <Table
            className="flows"
            caption="Flows, heaviest first"
            columns={[
              { label: 'From', value: (e) => labels[e.source] },
              { label: 'To', value: (e) => labels[e.target] },
              { label: 'People', value: (e) => count(e.people), numeric: true },
            ]}
            rows={answer.edges}
            empty="No journeys in this range."
          />
        </section>
      )}
    </div>
  )
}
