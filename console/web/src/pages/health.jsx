// Health: the installation at a glance (GET /v1/health), refreshed every 5 s.
import { useState } from 'preact/hooks'
import { api } from '../api.js'
import { count, percent, utc } from '../format.js'
import { ErrorNote, Table, usePoll } from '../ui.jsx'

const REFRESH_MS = 5000

const bytes = (n) => {
  if (n === null || n === undefined || n < 0) return '–'
  const units = ['B', 'KB', 'MB', 'GB', 'TB']
  let i = 0
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024
    i += 1
  }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`
}

// A role's details in a line: its plain values, and an edge's spool (how much waits to reach
// JetStream, and whether the spool can be written and drained).
function details(all) {
  const parts = Object.entries(all || {})
    .filter(([, v]) => v !== null && typeof v !== 'object') // null: nothing to report (no retry, no error)
    .map(([k, v]) => `${k} ${v}`)
  const spool = all && all.spool
  if (spool && typeof spool === 'object') {
    parts.unshift(
      `spool ${count(spool.entries)} waiting (${bytes(spool.bytes)} of ${bytes(spool.max_bytes)}` +
        `${spool.writable ? '' : ', not writable'})`,
    )
  }
  return parts.join(', ')
}

function Checks({ checks }) {
  return (
    <ul class="checks">
      {Object.entries(checks || {}).map(([name, ok]) => (
        <li key={name} class={ok ? 'good' : 'bad'}>
          {ok ? '✓' : '✗'} {name}
        </li>
      ))}
    </ul>
  )
}

export function HealthPage() {
  const [answer, setAnswer] = useState(null)
  const [error, setError] = useState(null)
  const answered = (body) => {
    setAnswer(body)
    setError(null)
  }
  usePoll(() => api.get('/health'), REFRESH_MS, answered, setError, [])
  if (!answer) return <ErrorNote error={error} />
  return (
    <div>
      <p class="meta" role="status">
        As of {utc(answer.generated_at)} UTC; refreshed every 5 s.
      </p>
      <ErrorNote error={error} />
      <section aria-labelledby="nodes-heading">
        <h2 id="nodes-heading">Nodes</h2>
        <Table
          className="nodes"
          caption="Every running role, as it reported itself"
          columns={[
            { label: 'Role', value: (n) => n.role },
            { label: 'Node', value: (n) => n.node },
            { label: 'Ready', value: (n) => <span class={`badge ${n.ready ? 'good' : 'bad'}`}>{n.ready ? 'ready' : 'not ready'}</span> },
            { label: 'Checks', value: (n) => <Checks checks={n.checks} /> },
            { label: 'Details', value: (n) => details(n.details) },
            { label: 'Reported', value: (n) => `${Math.round(n.age_seconds)} s ago`, numeric: true },
          ]}
          rows={answer.nodes}
          empty="No node has reported."
        />
      </section>
      <div class="split">
        <section aria-labelledby="consumers-heading">
          <h2 id="consumers-heading">Consumers</h2>
          <Table
            caption="Lag of the durable consumers"
            columns={[
              { label: 'Stream', value: (c) => c.stream },
              { label: 'Consumer', value: (c) => c.name },
              { label: 'Pending', value: (c) => count(c.pending), numeric: true },
              { label: 'Unacknowledged', value: (c) => count(c.ack_pending), numeric: true },
              { label: 'Redelivered', value: (c) => count(c.redelivered), numeric: true },
            ]}
            rows={answer.consumers}
          />
        </section>
        <section aria-labelledby="streams-heading">
          <h2 id="streams-heading">Streams</h2>
          <Table
            caption="JetStream streams and how full they are"
            columns={[
              { label: 'Stream', value: (s) => s.name },
              { label: 'Messages', value: (s) => count(s.messages), numeric: true },
              { label: 'Size', value: (s) => bytes(s.bytes), numeric: true },
              { label: 'Limit', value: (s) => (s.max_bytes > 0 ? bytes(s.max_bytes) : 'none'), numeric: true },
              { label: 'Usage', value: (s) => (s.usage === null ? '–' : percent(s.usage)), numeric: true },
            ]}
            rows={answer.streams}
          />
        </section>
      </div>
      <div class="split">
        <section aria-labelledby="dlq-heading">
          <h2 id="dlq-heading">Dead letters</h2>
          <p>
            <strong data-testid="dead-letters">{count(answer.dead_letters.messages)}</strong> messages ({bytes(answer.dead_letters.bytes)});{' '}
            <code>headwater dlq list</code> shows them.
          </p>
        </section>
        <section aria-labelledby="orphans-heading">
          <h2 id="orphans-heading">Refused before a project was known</h2>
          <Table
            caption="By reason, from the edges"
            columns={[
              { label: 'Reason', value: (r) => <code>{r.reason}</code> },
              { label: 'Count', value: (r) => count(r.count), numeric: true },
            ]}
            rows={answer.refusals_without_project}
            empty="None."
          />
        </section>
      </div>
    </div>
  )
}
