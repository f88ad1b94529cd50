// Reference implementation of what the gateway does to serve GET /v1/tenants/{t}/banner.js.
// The Rust side (src/banner/) must produce the same bytes; size.mjs and the development stub use
// this module. See README.md for the contract.
import { readFileSync } from 'node:fs';

const here = new URL('.', import.meta.url);
const read = (p) => readFileSync(new URL(p, here), 'utf8');

/** JSON for a script context: `<`, `>`, `&`, U+2028 and U+2029 become \uXXXX escapes. */
export const scriptJson = (value) =>
  JSON.stringify(value).replace(/[<>&\u2028\u2029]/g, (c) => '\\u' + c.charCodeAt(0).toString(16).padStart(4, '0'));

/** Writing direction of a language tag, as `direction` in src/banner/mod.rs. */
export const direction = (lang) => {
  const [primary, ...rest] = lang.toLowerCase().split('-');
  const script = rest.find((p) => /^[a-z]{4}$/.test(p));
  if (script) return ['arab', 'hebr', 'thaa', 'syrc', 'nkoo'].includes(script) ? 'rtl' : 'ltr';
  return ['ar', 'dv', 'fa', 'he', 'ps', 'sd', 'ug', 'ur', 'yi', 'ckb', 'iw'].includes(primary) ? 'rtl' : 'ltr';
};

/** The built-in English a config may leave out (`BUILTIN_ENGLISH` in src/consent/config/guidance.rs). */
export const BUILTIN_ENGLISH = {
  privacy_policy: 'Privacy policy', cookie_policy: 'Cookie policy', close: 'Close', always_on: 'Always on',
  signal_denied: "Off: your browser's privacy signal",
};

/** The banner config the gateway builds from a tenant's active cookie-consent config
 * (`browser_config` in src/banner/mod.rs): only what the browser reads. */
export function bannerConfig(config, { id = '01936f7c-2a4e-7b1d-9c3f-5e6a7b8c9d0e', revision = 1, reconsentRevision = 1 } = {}) {
  const langs = Object.values(config.texts);
  const categories = {};
  for (const [k, c] of Object.entries(config.categories)) {
    if (c.enabled === false) continue;
    const v = {};
    if (k !== 'necessary' && c.default_accepted) v.default_accepted = true;
    if (k !== 'necessary' && c.cookie_names?.length) v.cookie_names = c.cookie_names;
    if (!langs.every((t) => t.categories?.[k]?.label !== undefined && t.categories[k].description !== undefined)) {
      Object.assign(v, { label: c.display_name, description: c.description || '' });
    }
    categories[k] = v;
  }
  const banner = { ...config.banner };
  for (const k of ['show_reject_all', 'show_preferences']) if (banner[k] !== false) delete banner[k];
  // Only a right-to-left language says so; the default language carries the built-in English of
  // the texts it leaves out (BUILTIN_ENGLISH).
  const texts = Object.fromEntries(Object.entries(config.texts).map(([l, t]) => [l, direction(l) === 'rtl' ? { ...t, dir: 'rtl' } : t]));
  texts[config.default_language] = { ...BUILTIN_ENGLISH, ...texts[config.default_language] };
  return {
    config_id: id, revision, reconsent_revision: reconsentRevision,
    expiry_days: config.consent_expiry_days, respect_do_not_track: config.respect_do_not_track,
    geo_targeting_enabled: config.geo_targeting_enabled, consent_required_regions: config.consent_required_regions,
    banner, categories, texts, default_language: config.default_language,
    privacy_policy_url: config.privacy_policy_url, cookie_policy_url: config.cookie_policy_url,
  };
}

/** What the gateway adds for a config with `per_provider_choices` (`add_providers` in
 * src/banner/mod.rs): the offer's fingerprint and the provider configs on offer. */
export function addProviders(bannerCfg, providers, offer = '3f2a9c1e7b4d6a08') {
  return { ...bannerCfg, offer, providers };
}

/** The build variant's file (build.mjs): per-provider choices (pp) and/or feature flags. */
export const variantFile = ({ pp = false, flags = false } = {}) => `dist/banner${pp ? '.pp' : ''}${flags ? '.flags' : ''}.min.js`;

/** Render templates/banner.js.tera the way the gateway does (autoescape off, three variables),
 * with the default build or a variant ({pp, flags}). */
export function renderBanner(bannerCfg, variant = {}) {
  // The colours become custom properties at the top of the stylesheet and leave the config.
  const { primary_color: p, background_color: b, text_color: t, ...banner } = bannerCfg.banner || {};
  const colours = Object.entries({ p, b, t }).filter(([, c]) => /^#[0-9a-f]{6}$/.test(c)).map(([k, c]) => `--cg-${k}:${c};`).join('');
  const cfg = bannerCfg.banner ? { ...bannerCfg, banner } : bannerCfg;
  const vars = {
    config_json: scriptJson(cfg),
    // One rule a line in the source; no line breaks served.
    css: scriptJson(`:host{all:initial;${colours}}` + (read('banner.css') + (variant.pp ? read('banner-pp.css') : '')).replace(/\n/g, '')),
    script: read(variantFile(variant)),
  };
  return read('../templates/banner.js.tera').replace(/\{\{\s*(\w+)\s*\|\s*safe\s*\}\}/g, (_, k) => vars[k]);
}

export const sampleConfig = () => JSON.parse(read('sample-config.json'));
