// Builds the SDK with esbuild.
//   node build.mjs [OUT]  the minified browser file the edge serves (default: the copy shipped in
//                         the Python package, ../../edge/static/headwater.js)
//   node build.mjs --dist the npm package's files in dist/ (ESM and the same browser file)
// The output depends only on the sources and the locked esbuild version, so a test rebuilds it
// and compares it with the committed copy.
import { build } from 'esbuild'
import { readFileSync } from 'node:fs'

const { version } = JSON.parse(readFileSync(new URL('package.json', import.meta.url), 'utf8'))
/** @type {import('esbuild').BuildOptions} */
const common = {
  absWorkingDir: new URL('.', import.meta.url).pathname,
  bundle: true,
  minify: true,
  // Private members (a leading underscore) get short names: a fifth of the size.
  mangleProps: /^_/,
  target: 'es2020',
  legalComments: 'none',
  banner: { js: `/*! headwater.js ${version} | Apache-2.0 */` },
  logLevel: 'warning',
}
const browser = { ...common, entryPoints: ['src/browser.js'], format: /** @type {const} */ ('iife') }

if (process.argv[2] == '--dist') {
  await build({ ...browser, outfile: 'dist/headwater.js' })
  await build({ ...common, entryPoints: ['src/index.js'], format: 'esm', outfile: 'dist/headwater.mjs' })
} else {
  await build({ ...browser, outfile: process.argv[2] || '../../edge/static/headwater.js' })
}
