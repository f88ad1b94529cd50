#!/usr/bin/env node
// Minifies banner.js into dist/banner.min.js and its build variants (below), the files the
// gateway embeds and serves (README.md).
// `node build.mjs --check` fails when dist/ is not what banner.js builds to. dist/SOURCE_SHA256
// records which banner.js the build came from, so size.mjs can spot a stale build without terser.
import { readFileSync, writeFileSync, mkdirSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { minify } from 'terser';

const src = new URL('banner.js', import.meta.url);
const source = readFileSync(src, 'utf8');
// Build variants: the same source with optional features compiled in or out (terser
// `global_defs` turns `PP` / `FLAGS` into constants and drops the dead branches), so the default
// banner carries no byte of them. The gateway picks the variant per tenant (src/banner/).
//   PP    — per-provider choices in the preferences (consent config `per_provider_choices`)
//   FLAGS — consentgate.flags(): PostHog feature flags (an active PostHog config with flags on)
export const VARIANTS = {
  'banner.min.js': { PP: false, FLAGS: false },
  'banner.pp.min.js': { PP: true, FLAGS: false },
  'banner.flags.min.js': { PP: false, FLAGS: true },
  'banner.pp.flags.min.js': { PP: true, FLAGS: true },
};
// module: true = strict code whose top-level names are private (the template wraps it in an
// IIFE); CG_CONFIG and CG_CSS are free variables and keep their names.
const build = async (defs) => (await minify(source, {
  module: true,
  ecma: 2020,
  compress: { passes: 2, global_defs: defs },
  mangle: true,
  format: { comments: false },
})).code + '\n';
const out = (name) => new URL('dist/' + name, import.meta.url);
const built = {};
for (const [name, defs] of Object.entries(VARIANTS)) built[name] = await build(defs);
if (process.argv.includes('--check')) {
  for (const [name, code] of Object.entries(built)) {
    let current = '';
    try { current = readFileSync(out(name), 'utf8'); } catch {}
    if (current !== code) {
      console.error(`banner/dist/${name} is stale: run \`cd banner && npm ci && node build.mjs\` and commit it`);
      process.exit(1);
    }
  }
  console.log('banner/dist/ is up to date');
} else {
  mkdirSync(new URL('dist/', import.meta.url), { recursive: true });
  for (const [name, code] of Object.entries(built)) {
    writeFileSync(out(name), code);
    console.log(`wrote banner/dist/${name} (${code.length} B)`);
  }
  writeFileSync(new URL('dist/SOURCE_SHA256', import.meta.url), createHash('sha256').update(source).digest('hex') + '\n');
}
