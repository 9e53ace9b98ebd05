// Overview: totals, the series and the top lists of a range (POST /overview).
import { useEffect, useState } from 'preact/hooks'
import { api, project as projectPath } from '../api.js'
import { ChartCanvas, PALETTE } from '../charts.jsx'
import { count, percent, RANGES, range, seconds, utc } from '../format.js'
import { ErrorNote, Table } from '../ui.jsx'

const SERIES = [
  ['events', 'Events'],
  ['pageviews', 'Page views'],
  ['visitors', 'Visitors'],
  ['sessions', 'Sessions'],
]
const TOPS = [
  ['pages', 'Pages'],
  ['referrers', 'Referrers'],
  ['channels', 'Channels'],
  ['countries', 'Countries'],
  ['browsers', 'Browsers'],
  ['devices', 'Devices'],
]

export function OverviewPage({ project }) {
  const [chosen, setChosen] = useState('7d')
  const [bots, setBots] = useState(false)
  const [answer, setAnswer] = useState(null)
  const [error, setError] = useState(null)
  const [asked, setAsked] = useState(null)

  useEffect(() => {
    const span = range(chosen)
    const body = { ...span, limit: 10, include_bots: bots }
    setAsked(span)
    api
      .post(`${projectPath(project)}/overview`, body)
      .then((b) => {
        setAnswer(b)
        setError(null)
      })
      .catch(setError)
  }, [project, chosen, bots])

  const t = answer && answer.totals
  return (
    <div>
      <form class="toolbar" onSubmit={(e) => e.preventDefault()}>
        <label for="overview-range">Range</label>
        <select id="overview-range" value={chosen} onChange={(e) => setChosen(e.target.value)}>
          {Object.entries(RANGES).map(([key, r]) => (
            <option key={key} value={key}>
              {r.label}
            </option>
          ))}
        </select>
        <span class="check">
          <input id="overview-bots" type="checkbox" checked={bots} onChange={(e) => setBots(e.target.checked)} />
          <label for="overview-bots">Include bots</label>
        </span>
        {asked && (
          <span class="meta">
            {utc(asked.from)} to {utc(asked.to)} UTC, by {asked.interval}
          </span>
        )}
      </form>
      <ErrorNote error={error} />
      {t && (
        <dl class="totals" aria-label="Totals">
          {[
            ['events', 'Events', count(t.events)],
            ['pageviews', 'Page views', count(t.pageviews)],
            ['visitors', 'Visitors', count(t.visitors)],
            ['sessions', 'Sessions', count(t.sessions)],
            ['bounce_rate', 'Bounce rate', percent(t.bounce_rate)],
            ['avg_session_seconds', 'Average session', seconds(t.avg_session_seconds)],
            ['median_session_seconds', 'Median session', seconds(t.median_session_seconds)],
          ].map(([key, label, value]) => (
            <div key={key} class="total">
              <dt>{label}</dt>
              <dd data-total={key}>{value}</dd>
            </div>
          ))}
        </dl>
      )}
      {answer && (
        <section aria-labelledby="series-heading">
          <h2 id="series-heading">Over time</h2>
          <ChartCanvas
            type="line"
            label={`Events, page views, visitors and sessions per ${asked.interval}, UTC; the table below has the numbers`}
            data={{
              labels: answer.series.map((p) => utc(p.t)),
              datasets: SERIES.map(([key, label], i) => ({
                label,
                data: answer.series.map((p) => p[key]),
                borderColor: PALETTE[i],
                backgroundColor: PALETTE[i],
                pointRadius: answer.series.length > 60 ? 0 : 2,
                tension: 0.2,
              })),
            }}
            options={{
              scales: { x: { ticks: { maxTicksLimit: 14, maxRotation: 0 } }, y: { beginAtZero: true, ticks: { precision: 0 } } },
              interaction: { mode: 'index', intersect: false },
            }}
          />
          <details>
            <summary>The series as a table</summary>
            <Table
              caption="Per interval (UTC)"
              columns={[
                { label: 'From', value: (p) => utc(p.t) },
                ...SERIES.map(([key, label]) => ({ label, value: (p) => count(p[key]), numeric: true })),
              ]}
              rows={answer.series}
            />
          </details>
        </section>
      )}
      {answer && (
        <section aria-labelledby="top-heading">
          <h2 id="top-heading">Top</h2>
          <div class="grid3">
            {TOPS.map(([key, label]) => (
              <Table
                key={key}
                caption={label}
                columns={[
                  { label: label.replace(/s$/, '').replace(/ie$/, 'y'), value: (r) => r.value || '(none)' },
                  { label: key === 'pages' ? 'Views' : 'Sessions', value: (r) => count(r.count), numeric: true },
                ]}
                rows={answer.top[key]}
                empty="None in this range."
              />
            ))}
          </div>
        </section>
      )}
    </div>
  )
}
