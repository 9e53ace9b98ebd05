// The console: a single page under /console/ whose pages are client-side routes
// (/console/<page>?project=<id>); the control plane answers index.html for each of them.
import { render } from 'preact'
import { useEffect, useState } from 'preact/hooks'
import { api, setToken, token } from './api.js'
import { ErrorNote } from './ui.jsx'
import { href, navigate } from './route.js'
import { FunnelsPage } from './pages/funnels.jsx'
import { HealthPage } from './pages/health.jsx'
import { LivePage } from './pages/live.jsx'
import { OverviewPage } from './pages/overview.jsx'
import { PathsPage } from './pages/paths.jsx'
import { ProjectsPage } from './pages/projects.jsx'
import { SignIn } from './pages/signin.jsx'
import { SuggestionsPage } from './pages/suggestions.jsx'
import './styles.css'

const PAGES = [
  { path: 'projects', title: 'Projects', view: ProjectsPage, project: false },
  { path: 'live', title: 'Live', view: LivePage, project: true },
  { path: 'overview', title: 'Overview', view: OverviewPage, project: true },
  { path: 'funnels', title: 'Funnels', view: FunnelsPage, project: true },
  { path: 'paths', title: 'Paths', view: PathsPage, project: true },
  { path: 'suggestions', title: 'Suggestions', view: SuggestionsPage, project: true },
  { path: 'health', title: 'Health', view: HealthPage, project: false },
]

function location() {
  const name = window.location.pathname.replace(/^\/console\/?/, '').split('/')[0]
  const project = new URLSearchParams(window.location.search).get('project') || ''
  return { name: PAGES.some((p) => p.path === name) ? name : 'projects', project }
}

function App() {
  const [signedIn, setSignedIn] = useState(Boolean(token()))
  const [where, setWhere] = useState(location())
  const [projects, setProjects] = useState([])
  const [error, setError] = useState(null)
  const [signedOutBy, setSignedOutBy] = useState(null)

  useEffect(() => {
    const moved = () => setWhere(location())
    // The API refused the kept token (revoked, or the control plane restarted with other tokens).
    const signedOut = (event) => {
      setToken(null)
      setSignedOutBy(event.detail)
      setSignedIn(false)
    }
    window.addEventListener('popstate', moved)
    window.addEventListener('headwater:signed-out', signedOut)
    return () => {
      window.removeEventListener('popstate', moved)
      window.removeEventListener('headwater:signed-out', signedOut)
    }
  }, [])

  const reloadProjects = () =>
    api
      .get('/projects?limit=500')
      .then((body) => {
        setProjects(body.projects)
        setError(null)
      })
      .catch(setError)
  useEffect(() => {
    if (signedIn) reloadProjects()
  }, [signedIn])

  const page = PAGES.find((p) => p.path === where.name)
  useEffect(() => {
    document.title = `${signedIn ? page.title : 'Sign in'} · headwater console`
  }, [signedIn, page])

  if (!signedIn) {
    const signedInAgain = () => {
      setSignedOutBy(null)
      setSignedIn(true)
    }
    return <SignIn reason={signedOutBy} onSignedIn={signedInAgain} />
  }

  const project = where.project || (projects[0] && projects[0].id) || ''
  const View = page.view
  const follow = (event) => {
    const link = event.target.closest('a[data-route]')
    if (!link || event.ctrlKey || event.metaKey || event.shiftKey) return
    event.preventDefault()
    window.history.pushState(null, '', link.getAttribute('href'))
    window.dispatchEvent(new Event('popstate'))
  }
  return (
    <div class="shell" onClick={follow}>
      <a class="skip" href="#main">Skip to content</a>
      <header class="top">
        <span class="brand">headwater console</span>
        <nav aria-label="Pages">
          <ul>
            {PAGES.map((p) => (
              <li key={p.path}>
                <a
                  data-route
                  href={href(p.path, p.project ? project : where.project)}
                  aria-current={p.path === page.path ? 'page' : undefined}
                >
                  {p.title}
                </a>
              </li>
            ))}
          </ul>
        </nav>
        <div class="who">
          <label for="project-picker">Project</label>
          <select
            id="project-picker"
            value={project}
            onChange={(e) => navigate(page.project ? page.path : 'overview', e.target.value)}
          >
            {projects.map((p) => (
              <option key={p.id} value={p.id}>
                {p.id}
                {p.enabled ? '' : ' (disabled)'}
              </option>
            ))}
          </select>
          <button
            type="button"
            class="quiet"
            onClick={() => {
              setToken(null)
              setSignedIn(false)
            }}
          >
            Sign out
          </button>
        </div>
      </header>
      <main id="main" tabIndex={-1}>
        <h1>{page.title}</h1>
        <ErrorNote error={error} />
        {page.project && !project ? (
          <p>
            No project yet: <a data-route href={href('projects')}>create one</a>.
          </p>
        ) : (
          // A page that follows a project starts afresh when the project changes; one that does not
          // (Projects, Health) keeps its state, so a form being filled survives the list's arrival.
          <View
            key={page.project ? `${page.path}:${project}` : page.path}
            project={project}
            projects={projects}
            reloadProjects={reloadProjects}
          />
        )}
      </main>
    </div>
  )
}

render(<App />, document.getElementById('app'))
