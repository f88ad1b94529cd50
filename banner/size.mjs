#!/usr/bin/env node
// Prints the raw / gzip / brotli size of banner.js as the gateway serves it for the typical
// config in sample-config.json, and exits 1 when gzip is over the 6 KB budget. CI runs it.
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { gzipSync, brotliCompressSync, constants } from 'node:zlib';
import { bannerConfig, renderBanner, sampleConfig } from './render.mjs';

const BUDGET = 6144;
const read = (p) => readFileSync(new URL(p, import.meta.url), 'utf8');
if (createHash('sha256').update(read('banner.js')).digest('hex') !== read('dist/SOURCE_SHA256').trim()) {
  console.error('banner/dist/banner.min.js was not built from the current banner.js: run `cd banner && npm ci && node build.mjs`, then commit dist/');
  process.exit(1);
}
// A real-looking id: random hex does not compress, zeros would flatter the result.
const config = sampleConfig();
const body = Buffer.from(renderBanner(bannerConfig(config, { id: '0193a6f0-7c1e-7b3a-9f00-2a4c5e6f7a8b', revision: 3, reconsentRevision: 2 })));
// Level 6 is what an HTTP compression layer uses by default; 9 is the best case.
const gzip = gzipSync(body, { level: 6 }).length;
const gzip9 = gzipSync(body, { level: 9 }).length;
const br = brotliCompressSync(body, { params: { [constants.BROTLI_PARAM_QUALITY]: 11 } }).length;
console.log(`banner.js served: raw ${body.length} B, gzip ${gzip} B (level 9: ${gzip9} B), brotli ${br} B; budget ${BUDGET} B gzip`);
if (gzip > BUDGET) {
  console.error(`banner.js is over budget: ${gzip} B gzip > ${BUDGET} B`);
  process.exit(1);
}
