import { useState } from 'preact/hooks'
import { call, setToken } from '../api.js'
import { ErrorNote } from '../ui.jsx'

/** The admin token is checked against the API before it is kept (in sessionStorage only). */
export function SignIn({ reason, onSignedIn }) {
  const [value, setValue] = useState('')
  const [error, setError] = useState(reason)
  const [busy, setBusy] = useState(false)
  const submit = async (event) => {
    event.preventDefault()
    setBusy(true)
    setError(null)
    try {
      await call('GET', '/projects?limit=1', undefined, {}, value.trim())
      setToken(value.trim())
      onSignedIn()
    } catch (failure) {
      setError(failure)
    } finally {
      setBusy(false)
    }
  }
  return (
    <main id="main" class="signin">
      <h1>headwater console</h1>
      <form onSubmit={submit} aria-describedby="signin-help">
        <label for="admin-token">Admin token</label>
        <input
          id="admin-token"
          type="password"
          autocomplete="off"
          spellcheck={false}
          required
          maxLength={512}
          value={value}
          onInput={(e) => setValue(e.target.value)}
        />
        <p id="signin-help" class="help">
          One of the control plane's admin tokens (<code>headwater up</code> prints where it keeps
          its own). It stays in this tab only, and goes when the tab closes.
        </p>
        <button type="submit" disabled={busy}>
          Sign in
        </button>
        <ErrorNote error={error} />
      </form>
    </main>
  )
}
