#!/usr/bin/env node
// Minifies banner.js into dist/banner.min.js, the file the gateway embeds and serves (README.md).
// `node build.mjs --check` fails when dist/ is not what banner.js builds to. dist/SOURCE_SHA256
// records which banner.js the build came from, so size.mjs can spot a stale build without terser.
import { readFileSync, writeFileSync, mkdirSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { minify } from 'terser';

const src = new URL('banner.js', import.meta.url), out = new URL('dist/banner.min.js', import.meta.url);
const source = readFileSync(src, 'utf8');
// module: true = strict code whose top-level names are private (the template wraps it in an
// IIFE); CG_CONFIG and CG_CSS are free variables and keep their names.
const { code } = await minify(source, {
  module: true,
  ecma: 2020,
  compress: { passes: 2 },
  mangle: true,
  format: { comments: false },
});
const built = code + '\n';
if (process.argv.includes('--check')) {
  let current = '';
  try { current = readFileSync(out, 'utf8'); } catch {}
  if (current !== built) {
    console.error('banner/dist/banner.min.js is stale: run `cd banner && npm ci && node build.mjs` and commit it');
    process.exit(1);
  }
  console.log('banner/dist/banner.min.js is up to date');
} else {
  mkdirSync(new URL('dist/', import.meta.url), { recursive: true });
  writeFileSync(out, built);
  writeFileSync(new URL('dist/SOURCE_SHA256', import.meta.url), createHash('sha256').update(source).digest('hex') + '\n');
  console.log(`wrote banner/dist/banner.min.js (${built.length} B)`);
}
