// @jitsu/js in server-to-server mode, as a Node service uses it: node s2s.cjs <host> <writeKey>.
const { jitsuAnalytics } = require("@jitsu/js");

const [host, writeKey] = process.argv.slice(2);
const jitsu = jitsuAnalytics({ host, writeKey, s2s: true, errorPolicy: "rethrow" });
(async () => {
  await jitsu.identify("srv-1", { plan: "pro" });
  await jitsu.track("Invoice Paid", { amount: 12 });
})().catch((error) => {
  console.error(error);
  process.exit(1);
});
