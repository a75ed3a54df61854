// Builds the dashboard into dist/, which is committed and embedded in the server
// binary at compile time:
//
//   dist/index.html              references the two hashed bundles below
//   dist/assets/app-<hash>.js    src/main.js and its imports (socket.io-client too)
//   dist/assets/app-<hash>.css   src/style.css
//   dist/favicon.svg
//
// The output depends only on the sources and the locked package versions, so a
// rebuild without changes leaves dist/ identical. `node build.mjs --watch`
// rebuilds on every change (then run `cargo build` to embed it).
// `node build.mjs --out <dir>` writes the same files into <dir> instead (the
// freshness test in the crate's tests/web_dist.rs compares them with dist/).

import * as esbuild from 'esbuild';
import { copyFileSync, mkdirSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const src = path.join(here, 'src');
const out = process.argv.indexOf('--out');
const dist = out > 0 ? path.resolve(process.argv[out + 1]) : path.join(here, 'dist');
const assets = path.join(dist, 'assets');
const watch = process.argv.includes('--watch');

const options = {
  absWorkingDir: here,
  entryPoints: { app: 'src/main.js' },
  bundle: true,
  minify: true,
  format: 'iife',
  target: ['es2020', 'chrome100', 'firefox100', 'safari15'],
  outdir: assets,
  entryNames: '[name]-[hash]',
  assetNames: '[name]-[hash]',
  charset: 'utf8',
  legalComments: 'eof',
  metafile: true,
  logLevel: 'warning',
  define: { 'process.env.NODE_ENV': '"production"' },
};

function writeIndex(metafile) {
  const outputs = Object.keys(metafile.outputs).map((p) => path.basename(p));
  const js = outputs.find((f) => /^app-[A-Z0-9]+\.js$/.test(f));
  const css = outputs.find((f) => /^app-[A-Z0-9]+\.css$/.test(f));
  if (!js || !css) throw new Error(`unexpected build outputs: ${outputs.join(', ')}`);
  // Remove bundles of earlier builds.
  for (const f of readdirSync(assets)) {
    if (f !== js && f !== css) rmSync(path.join(assets, f));
  }
  const html = readFileSync(path.join(src, 'index.html'), 'utf8').replace('%JS%', js).replace('%CSS%', css);
  writeFileSync(path.join(dist, 'index.html'), html);
  copyFileSync(path.join(src, 'favicon.svg'), path.join(dist, 'favicon.svg'));
  const size = (f) => (readFileSync(path.join(assets, f)).length / 1024).toFixed(1);
  console.log(`dist/index.html -> assets/${js} (${size(js)} KiB), assets/${css} (${size(css)} KiB)`);
}

mkdirSync(assets, { recursive: true });
if (watch) {
  const ctx = await esbuild.context({
    ...options,
    plugins: [
      {
        name: 'index-html',
        setup(build) {
          build.onEnd((result) => {
            if (!result.errors.length) writeIndex(result.metafile);
          });
        },
      },
    ],
  });
  await ctx.watch();
  console.log('watching src/ for changes…');
} else {
  const result = await esbuild.build(options);
  writeIndex(result.metafile);
}
