// Client-side routes: /console/<page>?project=<id>. Links carry `data-route` and are followed
// without reloading the page (main.jsx).

export function href(page, project) {
  return `/console/${page}${project ? `?project=${encodeURIComponent(project)}` : ''}`
}

export function navigate(page, project) {
  window.history.pushState(null, '', href(page, project))
  window.dispatchEvent(new Event('popstate'))
}
