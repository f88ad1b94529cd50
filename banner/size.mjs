#!/usr/bin/env node
// Prints the raw / gzip / brotli size of banner.js as the gateway serves it for the typical
// config in sample-config.json, in each build variant (build.mjs), and exits 1 when a variant's
// gzip is over its budget. CI runs it.
//
// Budgets (gzip, level 6):
//   default        6144 B — what every tenant gets (issue 10: unchanged by optional features)
//   pp             7168 B — per-provider choices (`per_provider_choices`), with 3 providers listed
//   flags          6400 B — consentgate.flags() (an active PostHog config with feature flags)
//   pp + flags     7424 B
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { gzipSync, brotliCompressSync, constants } from 'node:zlib';
import { addProviders, bannerConfig, renderBanner, sampleConfig } from './render.mjs';

const VARIANTS = [
  { name: 'default', variant: {}, budget: 6144 },
  { name: 'pp', variant: { pp: true }, budget: 7168 },
  { name: 'flags', variant: { flags: true }, budget: 6400 },
  { name: 'pp + flags', variant: { pp: true, flags: true }, budget: 7424 },
];
const read = (p) => readFileSync(new URL(p, import.meta.url), 'utf8');
if (createHash('sha256').update(read('banner.js')).digest('hex') !== read('dist/SOURCE_SHA256').trim()) {
  console.error('banner/dist/ was not built from the current banner.js: run `cd banner && npm ci && node build.mjs`, then commit dist/');
  process.exit(1);
}
// A real-looking id: random hex does not compress, zeros would flatter the result.
const config = bannerConfig(sampleConfig(), { id: '0193a6f0-7c1e-7b3a-9f00-2a4c5e6f7a8b', revision: 3, reconsentRevision: 2 });
// A typical offer: Plausible (cookie-free, listed under analytics), GA4 and a marketing pixel.
const providers = [
  { id: '0193a6f1-0b2c-7d4e-8f10-3a5b6c7d8e9f', category: 'analytics', name: 'Plausible', receives: 'Page views and events, without cookies. Your IP address and browser only to count visitors.', privacy_policy_url: 'https://plausible.io/privacy' },
  { id: '0193a6f1-4e5f-7a6b-9c1d-2e3f4a5b6c7d', category: 'analytics', name: 'Google Analytics 4', receives: 'Page views and events with an identifier (Google Analytics).', privacy_policy_url: 'https://policies.google.com/privacy' },
  { id: '0193a6f1-8a9b-7c0d-a1e2-f3a4b5c6d7e8', category: 'marketing', name: 'PostHog', receives: 'Page views and events; an identifier only with your consent, else without cookies.' },
];
let over = false;
for (const { name, variant, budget } of VARIANTS) {
  const cfg = variant.pp ? addProviders(config, providers) : config;
  const body = Buffer.from(renderBanner(cfg, variant));
  // Level 6 is what an HTTP compression layer uses by default; 9 is the best case.
  const gzip = gzipSync(body, { level: 6 }).length;
  const gzip9 = gzipSync(body, { level: 9 }).length;
  const br = brotliCompressSync(body, { params: { [constants.BROTLI_PARAM_QUALITY]: 11 } }).length;
  console.log(`banner.js served (${name}): raw ${body.length} B, gzip ${gzip} B (level 9: ${gzip9} B), brotli ${br} B; budget ${budget} B gzip`);
  if (gzip > budget) {
    console.error(`banner.js (${name}) is over budget: ${gzip} B gzip > ${budget} B`);
    over = true;
  }
}
if (over) process.exit(1);
