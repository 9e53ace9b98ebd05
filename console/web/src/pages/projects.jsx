// Projects: list, create, edit (name, allowed origins, settings) with If-Match, rotate a key (the
// new one shown once), disable. The API's own errors are shown as it words them.
import { useEffect, useState } from 'preact/hooks'
import { call, project as projectPath } from '../api.js'
import { utc } from '../format.js'
import { href } from '../route.js'
import { ErrorNote, Table } from '../ui.jsx'

const lines = (text) =>
  text
    .split('\n')
    .map((line) => line.trim())
    .filter(Boolean)

function CreateProject({ onCreated }) {
  const [form, setForm] = useState({ id: '', name: '', origins: '' })
  const [error, setError] = useState(null)
  const [created, setCreated] = useState(null)
  const submit = async (event) => {
    event.preventDefault()
    setError(null)
    const body = { id: form.id.trim(), allowed_origins: lines(form.origins) }
    if (form.name.trim()) body.name = form.name.trim()
    try {
      const answer = (await call('POST', '/projects', body, { 'Idempotency-Key': crypto.randomUUID() })).body
      setCreated(answer)
      setForm({ id: '', name: '', origins: '' })
      onCreated(answer.project.id)
    } catch (failure) {
      setError(failure)
    }
  }
  return (
    <section aria-labelledby="create-heading" class="card">
      <h2 id="create-heading">Create a project</h2>
      <form onSubmit={submit}>
        <label for="new-id">Id</label>
        <input
          id="new-id"
          required
          maxLength={64}
          value={form.id}
          aria-describedby="new-id-help"
          onInput={(e) => setForm({ ...form, id: e.target.value })}
        />
        <p id="new-id-help" class="help">
          Lowercase letters, digits and <code>_</code>.
        </p>
        <label for="new-name">Name</label>
        <input id="new-name" maxLength={200} value={form.name} onInput={(e) => setForm({ ...form, name: e.target.value })} />
        <label for="new-origins">Allowed origins, one per line</label>
        <textarea id="new-origins" rows={3} value={form.origins} onInput={(e) => setForm({ ...form, origins: e.target.value })} />
        <button type="submit">Create</button>
      </form>
      <ErrorNote error={error} />
      {created && (
        <div class="secret" role="status">
          <p>
            Project <strong>{created.project.id}</strong> created. Its secret key is shown this once:
          </p>
          <p>
            public key <code data-testid="created-public-key">{created.public_key}</code>
          </p>
          <p>
            secret key <code data-testid="created-secret-key">{created.secret_key}</code>
          </p>
        </div>
      )}
    </section>
  )
}

function EditProject({ id, onChanged }) {
  const [loaded, setLoaded] = useState(null) // {project, etag}
  const [form, setForm] = useState(null)
  const [error, setError] = useState(null)
  const [note, setNote] = useState('')
  const [rotation, setRotation] = useState({ kind: 'public', grace: '86400' })
  const [newKey, setNewKey] = useState(null)
  const [confirming, setConfirming] = useState(false)

  const load = async () => {
    try {
      const answer = await call('GET', projectPath(id))
      const p = answer.body.project
      setLoaded({ project: p, etag: answer.etag })
      setForm({
        name: p.name,
        origins: p.allowed_origins.join('\n'),
        allowAny: p.allow_any_origin,
        settings: JSON.stringify(p.settings, null, 2),
      })
    } catch (failure) {
      setError(failure)
    }
  }
  useEffect(() => {
    load()
  }, [id])
  if (!loaded || !form) return <ErrorNote error={error} />
  const p = loaded.project

  const save = async (event) => {
    event.preventDefault()
    setError(null)
    setNote('')
    // Only what changed: a PATCH keeps the fields it does not name.
    const body = {}
    if (form.name !== p.name) body.name = form.name
    const origins = lines(form.origins)
    if (origins.join('\n') !== p.allowed_origins.join('\n')) body.allowed_origins = origins
    if (form.allowAny !== p.allow_any_origin) body.allow_any_origin = form.allowAny
    if (form.settings !== JSON.stringify(p.settings, null, 2)) {
      try {
        body.settings = JSON.parse(form.settings)
      } catch (failure) {
        const message = `the settings are not valid JSON: ${failure.message}`
        setError({ status: 0, code: 'invalid_json', message, field: 'settings' })
        return
      }
    }
    try {
      const answer = await call('PATCH', projectPath(id), body, { 'If-Match': loaded.etag })
      setNote(`Saved (revision ${answer.body.revision}).`)
      await load()
      onChanged()
    } catch (failure) {
      setError(failure)
    }
  }
  const rotate = async (event) => {
    event.preventDefault()
    setError(null)
    setNewKey(null)
    try {
      const grace = rotation.grace === '' ? null : Number(rotation.grace)
      const answer = await call('POST', `${projectPath(id)}/keys/rotate`, { kind: rotation.kind, grace_seconds: grace })
      setNewKey(answer.body)
      await load()
    } catch (failure) {
      setError(failure)
    }
  }
  const disable = async () => {
    setError(null)
    try {
      await call('DELETE', projectPath(id))
      setConfirming(false)
      setNote('Disabled: its keys are refused from now on.')
      await load()
      onChanged()
    } catch (failure) {
      setError(failure)
    }
  }

  return (
    <section aria-labelledby="edit-heading" class="card">
      <h2 id="edit-heading">
        {p.id} {p.enabled ? '' : <span class="badge bad">disabled</span>}
      </h2>
      <p class="meta">
        database <code>{p.database}</code> · created {utc(p.created_at)}
        {p.updated_at ? ` · updated ${utc(p.updated_at)}` : ''} ·{' '}
        <a data-route href={href('live', p.id)}>
          live events
        </a>
      </p>
      <ErrorNote error={error} />
      {note && (
        <p class="ok" role="status">
          {note}
        </p>
      )}
      <form onSubmit={save}>
        <label for="edit-name">Name</label>
        <input id="edit-name" maxLength={200} value={form.name} onInput={(e) => setForm({ ...form, name: e.target.value })} />
        <label for="edit-origins">Allowed origins, one per line</label>
        <textarea
          id="edit-origins"
          rows={4}
          value={form.origins}
          aria-describedby="origins-help"
          onInput={(e) => setForm({ ...form, origins: e.target.value })}
        />
        <p id="origins-help" class="help">
          <code>https://shop.example.com</code>, <code>https://*.example.com</code>, or <code>*</code> with the box
          below ticked.
        </p>
        <div class="check">
          <input
            id="edit-any"
            type="checkbox"
            checked={form.allowAny}
            onChange={(e) => setForm({ ...form, allowAny: e.target.checked })}
          />
          <label for="edit-any">Allow any origin</label>
        </div>
        <details>
          <summary>Settings (JSON)</summary>
          <label for="edit-settings">Settings</label>
          <textarea
            id="edit-settings"
            class="code"
            rows={14}
            value={form.settings}
            onInput={(e) => setForm({ ...form, settings: e.target.value })}
          />
        </details>
        <button type="submit">Save changes</button>
        <button type="button" class="quiet" onClick={() => load().then(() => setError(null))}>
          Read it again
        </button>
      </form>

      <h3>Keys</h3>
      <Table
        caption="Public keys"
        columns={[
          { label: 'Key', value: (k) => <code>{k.key}</code> },
          { label: 'Created', value: (k) => utc(k.created_at) },
          { label: 'Expires', value: (k) => (k.expires_at ? utc(k.expires_at) : 'never') },
        ]}
        rows={p.public_keys}
      />
      <Table
        caption="Secret keys (only their first characters are kept)"
        columns={[
          { label: 'Hint', value: (k) => <code>{k.hint}…</code> },
          { label: 'Created', value: (k) => utc(k.created_at) },
          { label: 'Expires', value: (k) => (k.expires_at ? utc(k.expires_at) : 'never') },
        ]}
        rows={p.secret_keys}
      />
      <form onSubmit={rotate} class="row">
        <div>
          <label for="rotate-kind">Kind</label>
          <select id="rotate-kind" value={rotation.kind} onChange={(e) => setRotation({ ...rotation, kind: e.target.value })}>
            <option value="public">public</option>
            <option value="secret">secret</option>
          </select>
        </div>
        <div>
          <label for="rotate-grace">Old keys valid for (seconds)</label>
          <input
            id="rotate-grace"
            type="number"
            min={0}
            max={2592000}
            value={rotation.grace}
            onInput={(e) => setRotation({ ...rotation, grace: e.target.value })}
          />
        </div>
        <button type="submit">Rotate key</button>
      </form>
      {newKey && (
        <div class="secret" role="status">
          <p>
            New {newKey.kind} key, shown this once: <code data-testid="rotated-key">{newKey.key}</code>
          </p>
          <p>The earlier {newKey.kind} keys stop working at {utc(newKey.previous_keys_expire_at)}.</p>
        </div>
      )}

      {p.enabled && (
        <div class="danger">
          <h3>Disable</h3>
          {confirming ? (
            <p>
              Its keys will be refused at once; its data stays.{' '}
              <button type="button" class="bad" onClick={disable}>
                Disable {p.id}
              </button>{' '}
              <button type="button" class="quiet" onClick={() => setConfirming(false)}>
                Cancel
              </button>
            </p>
          ) : (
            <button type="button" class="bad" onClick={() => setConfirming(true)}>
              Disable…
            </button>
          )}
        </div>
      )}
    </section>
  )
}

export function ProjectsPage({ projects, reloadProjects }) {
  const [selected, setSelected] = useState('')
  return (
    <div class="split">
      <section aria-labelledby="list-heading">
        <h2 id="list-heading">All projects</h2>
        <Table
          caption={`${projects.length} project${projects.length === 1 ? '' : 's'}`}
          columns={[
            {
              label: 'Id',
              value: (p) => (
                <button type="button" class="link" aria-pressed={p.id === selected} onClick={() => setSelected(p.id)}>
                  {p.id}
                </button>
              ),
            },
            { label: 'Name', value: (p) => p.name },
            { label: 'State', value: (p) => (p.enabled ? 'enabled' : 'disabled') },
            { label: 'Allowed origins', value: (p) => (p.allowed_origins.length ? p.allowed_origins.join(', ') : 'none') },
          ]}
          rows={projects}
        />
        <CreateProject
          onCreated={(id) => {
            reloadProjects()
            setSelected(id)
          }}
        />
      </section>
      {selected ? (
        <EditProject key={selected} id={selected} onChanged={reloadProjects} />
      ) : (
        <p class="help">Choose a project to edit its origins, settings and keys, or to disable it.</p>
      )}
    </div>
  )
}
