// Builds the console with esbuild into one script, one stylesheet and the page that loads them.
//   node build.mjs [OUTDIR]  (default: ../static, the copy shipped in the Python package)
// The output depends only on the sources and the locked versions, so a test rebuilds it and compares
// it with the committed copy. The page names each asset with its content's digest (`?v=`), so the
// control plane can let browsers cache the assets for a year.
import { build } from 'esbuild'
import { createHash } from 'node:crypto'
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'

const here = new URL('.', import.meta.url).pathname
const outdir = process.argv[2] || join(here, '..', 'static')
mkdirSync(outdir, { recursive: true })

const result = await build({
  absWorkingDir: here,
  entryPoints: { console: 'src/main.jsx' },
  bundle: true,
  minify: true,
  write: false,
  outdir,
  format: 'iife',
  target: 'es2020',
  jsx: 'automatic',
  jsxImportSource: 'preact',
  legalComments: 'none',
  banner: { js: '/*! headwater console | Apache-2.0; Preact (MIT), Chart.js (MIT), chartjs-chart-sankey (MIT) */' },
  define: { 'process.env.NODE_ENV': '"production"' },
  logLevel: 'warning',
})

const digests = {}
for (const file of result.outputFiles) {
  const name = file.path.split('/').pop()
  writeFileSync(join(outdir, name), file.contents)
  digests[name] = createHash('sha256').update(file.contents).digest('hex').slice(0, 16)
}
const page = readFileSync(join(here, 'src', 'index.html'), 'utf8')
  .replaceAll('{{console.js}}', `assets/console.js?v=${digests['console.js']}`)
  .replaceAll('{{console.css}}', `assets/console.css?v=${digests['console.css']}`)
writeFileSync(join(outdir, 'index.html'), page)
