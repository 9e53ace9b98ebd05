// The real @jitsu/js, exposed to the test page as window.jitsuAnalytics.
import { jitsuAnalytics } from "@jitsu/js";

window.jitsuAnalytics = jitsuAnalytics;
