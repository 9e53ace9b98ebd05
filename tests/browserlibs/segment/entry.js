// Segment's analytics.js 2.0 as a site installs it from npm, exposed for the test page.
import { AnalyticsBrowser } from '@segment/analytics-next'

window.AnalyticsBrowser = AnalyticsBrowser
