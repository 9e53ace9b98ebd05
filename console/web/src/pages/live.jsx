// Live: the last events stored for the project and why events were refused lately, polled every
// 2 s while the page is open (and not paused).
import { useState } from 'preact/hooks'
import { api, project as projectPath } from '../api.js'
import { count, utc } from '../format.js'
import { ErrorNote, Table, usePoll } from '../ui.jsx'

export const POLL_MS = 2000

export function LivePage({ project }) {
  const [answer, setAnswer] = useState(null)
  const [error, setError] = useState(null)
  const [paused, setPaused] = useState(false)
  const [updated, setUpdated] = useState(null)

  usePoll(
    () => api.get(`${projectPath(project)}/live?limit=50`),
    POLL_MS,
    (body) => {
      setAnswer(body)
      setError(null)
      setUpdated(new Date())
    },
    setError,
    [project],
    !paused,
  )

  const events = answer ? answer.events : []
  const refusals = answer ? answer.refusals : { window_seconds: 3600, counts: [], recent: [] }
  return (
    <div>
      <p class="toolbar">
        <button type="button" onClick={() => setPaused(!paused)} aria-pressed={paused}>
          {paused ? 'Resume' : 'Pause'}
        </button>
        <span role="status" aria-live="polite" class="meta">
          {paused ? 'Paused.' : updated ? `Updated ${updated.toISOString().slice(11, 19)} UTC, every 2 s.` : 'Loading…'}
        </span>
      </p>
      <ErrorNote error={error} />
      <section aria-labelledby="refusals-heading">
        <h2 id="refusals-heading">Refused in the last {Math.round(refusals.window_seconds / 60)} minutes</h2>
        <div class="split">
          <Table
            caption="By reason"
            columns={[
              { label: 'Reason', value: (r) => <code>{r.reason}</code> },
              { label: 'Events', value: (r) => count(r.count), numeric: true },
            ]}
            rows={refusals.counts}
            empty="No refusals."
          />
          <Table
            caption="Latest refusals"
            columns={[
              { label: 'At (UTC)', value: (r) => utc(r.at) },
              { label: 'Reason', value: (r) => <code>{r.reason}</code> },
              { label: 'Field', value: (r) => r.field || '' },
              { label: 'Message', value: (r) => r.message },
              { label: 'Edge', value: (r) => r.node },
            ]}
            rows={refusals.recent}
            empty="No refusals."
          />
        </div>
      </section>
      <section aria-labelledby="events-heading">
        <h2 id="events-heading">Latest events</h2>
        <Table
          className="events"
          caption={`The last ${events.length} events stored, newest first`}
          columns={[
            { label: 'Received (UTC)', value: (e) => utc(e.received_at) },
            { label: 'Type', value: (e) => e.type },
            { label: 'Event', value: (e) => e.event || '' },
            { label: 'Path', value: (e) => e.path || '' },
            { label: 'Person', value: (e) => e.user_id || e.anonymous_id },
            { label: 'Country', value: (e) => e.country || '' },
            { label: 'Browser', value: (e) => e.browser || '' },
            { label: 'Bot', value: (e) => (e.is_bot ? 'yes' : '') },
          ]}
          rows={events}
          empty="No events stored yet."
        />
      </section>
    </div>
  )
}
