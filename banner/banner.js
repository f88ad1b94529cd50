// consentgate banner: consent UI and a small tracker. templates/banner.js.tera wraps this file in
// an IIFE defining CG_CONFIG (banner config) and CG_CSS (banner.css). CSP-friendly: no eval, no
// inline handlers, no innerHTML; config texts only ever become text nodes. The gateway serves
// dist/banner.min.js, built from this file by build.mjs (README.md): comments cost nothing, but
// every feature counts against the 6 KB gzip budget.
// PP and FLAGS are build-time constants (build.mjs): code under `if (PP)` (per-provider choices)
// and `if (FLAGS)` (consentgate.flags()) exists only in the variants that need it.
const C = CG_CONFIG, K = C.categories, B = C.banner, T = C.texts, w = window, d = document, n = navigator, now = Date.now;
const S = d.currentScript, ds = S.dataset;
// https://gw/v1/tenants/{t}: the API lives where the script came from.
const API = S.src.replace(/\/banner\.js.*/, '');
// The gateway sends enabled categories only.
const O = ['functional', 'analytics', 'marketing'], CATS = ['necessary', ...O].filter(k => K[k]);
const ls = (k, v) => { try { return v ? localStorage.setItem(k, v) : localStorage[k] } catch (e) {} };
const uuid = () => crypto.randomUUID?.() || URL.createObjectURL(new Blob).slice(-36);
const ready = f => d.readyState == 'loading' ? d.addEventListener('DOMContentLoaded', f) : f();
const G = x => x ? 'granted' : 'denied';

// Texts: the first of navigator.languages we have texts for, by BCP 47 lookup (RFC 4647 3.4:
// pt-BR, then pt), then the config's default language. Tags compare case-insensitively and L is
// the config's own key, so `lang` and the record name exactly the texts shown.
const LK = Object.keys(T);
const L = [...n.languages, C.default_language].flatMap(l => [l, l.split('-')[0]]).map(l => LK.find(k => k.toLowerCase() == l.toLowerCase())).find(l => l);
const tx = k => T[L][k] || T[C.default_language][k] || '';
// A category's label and description: the language's own, else the category's (the gateway sends
// those as `label` and `description`, and only when some language lacks its own).
const ctx = (k, f) => T[L].categories?.[k]?.[f] || K[k][f] || '';

// Signals. GPC always denies marketing (CCPA regs § 7025); with respect_do_not_track, DNT or GPC
// deny every non-necessary category. The browser's own view is enough: it sends the same
// signals as DNT / Sec-GPC headers, and the gateway enforces them on every event anyway.
const gpc = n.globalPrivacyControl, dnt = n.doNotTrack == 1;
const blocked = k => k != 'necessary' && (C.respect_do_not_track && (dnt || gpc) || gpc && k == 'marketing');
const eff = c => { const o = { necessary: true }; for (const k of O) o[k] = !!c?.[k] && CATS.includes(k) && !blocked(k); return o };

// Google Consent Mode v2: region-aware defaults now, before any tag fires; an update per decision.
const dl = w.dataLayer ||= [];
function gtag() { w.gtag ? w.gtag(...arguments) : dl.push(arguments) }
// security_storage is left to Google's default (granted): it is strictly necessary storage.
const cm = (c, x, m = G(c.marketing), f = G(c.functional)) => ({ wait_for_update: 500, ...x, ad_storage: m, ad_user_data: m, ad_personalization: m,
  analytics_storage: G(c.analytics), functionality_storage: f, personalization_storage: f });
const pre = {}; CATS.forEach(k => pre[k] = K[k].default_accepted);
if (C.geo_targeting_enabled && C.consent_required_regions.length) gtag('consent', 'default', cm({}, { region: C.consent_required_regions }));
gtag('consent', 'default', cm(C.geo_targeting_enabled ? eff(pre) : {}));

// The choice kept on the site {vid, cfg, rev, choices, act, t, exp, p}: a first-party cookie, so
// the site's server can read it too. A valid one decides without any request. t: when it was
// made — it counts for the config's current expiry_days from then, so shortening that lifetime
// applies to choices already made (as on the gateway; a choice without t is looked up again).
// p: a refusal the gateway has not stored yet (sent again until it is).
let st; try { st = JSON.parse(decodeURIComponent(d.cookie.match(/(^|; )cg_consent=([^;]*)/)?.[2])) } catch (e) {}
// With per-provider choices, a choice made on another offer (the provider configs listed) is
// asked about again: the gateway refuses configs the visitor was not offered until they choose.
const valid = s => (PP ? s?.off == C.offer : 1) && s?.choices && s.rev >= C.reconsent_revision && Math.min(s.exp, s.t + C.expiry_days * 864e5) > now() && s.cfg == C.config_id;
const save = s => d.cookie = `cg_consent=${encodeURIComponent(JSON.stringify(s))}; Path=/; Max-Age=${C.expiry_days * 86400}; SameSite=Lax` + (location.protocol == 'https:' ? '; Secure' : '');
// The consent-lookup id: written only when the visitor decides (ePrivacy Art. 5(3): storing it
// is strictly necessary to remember a choice, and there is none before). Until then it lives in
// this page only, so the events of an undecided visitor carry a new one on every page.
const vid = ls('cg_vid') || st?.vid || uuid();

// Delete a cookie (trailing * = prefix) for the host and each parent domain it may be set on.
const del = name => {
  const p = location.hostname.split('.');
  for (const c of d.cookie.split('; ')) if (RegExp('^' + name.replace(/[.+^$|]/g, '\\$&').replace('*', '.*') + '=').test(c))
    for (const x of ['', ...p.map((_, i) => '; Domain=' + p.slice(i).join('.'))]) d.cookie = c.split('=')[0] + '=; Path=/; Max-Age=0' + x;
};

// pb: the per-provider switches of the open preferences; pw: the ones chosen before the offer
// changed (PP).
let cur, init, ran = {}, host, root, bn, dlg, fab, inert = [], pb = {}, pw;
function apply(s) {
  const ch = eff(s.choices);
  cur = s;
  gtag('consent', 'update', cm(ch));
  ready(() => {
    CATS.forEach(k => ch[k] || K[k].cookie_names?.forEach(del));
    // Withdrawal must stop everything after it (GDPR Art. 7(3)); scripts that already ran on
    // this page cannot be stopped, so load the page again without them.
    if (O.some(k => ran[k] && !ch[k])) return location.reload();
    for (const el of d.querySelectorAll('[data-consent-category]')) {
      const ks = el.dataset.consentCategory.split(/[\s,]+/);
      if (!(el.type == 'text/plain' || el.dataset.src) || !ks.every(k => ch[k])) continue;
      ks.forEach(k => ran[k] = 1);
      if (el.tagName == 'IFRAME') { el.src = el.dataset.src; el.removeAttribute('data-src'); continue }
      const s2 = d.createElement('script');
      for (const a of el.attributes) a.name != 'type' && s2.setAttribute(a.name, a.value);
      s2.nonce = el.nonce; s2.async = el.async; s2.text = el.text;
      el.replaceWith(s2);
    }
    d.dispatchEvent(new CustomEvent('consentgate:change', { bubbles: true, detail: { choices: ch, action: s.act, revision: s.rev } }));
    hide();
  });
}

// DOM builder: properties where the element has them, attributes otherwise (p may be 0: none).
// Children are nodes or strings, and strings become text nodes, never markup.
const h = (t, p, ...c) => { const e = d.createElement(t); for (const k in p) k in e ? e[k] = p[k] : e.setAttribute(k, p[k]); e.append(...c); return e };
// Outside any form (in the shadow root), a button submits nothing: no type needed.
const btn = (k, onclick, className = 'pr') => h('button', { className, onclick }, tx(k));
const act = a => () => decide(a);

function mount() {
  if (host) return;
  // The gateway marks the languages written right to left (texts.{lang}.dir: rtl).
  d.body.append(host = h('div', { id: 'consentgate', lang: L, dir: T[L].dir || 'ltr' }));
  root = host.attachShadow({ mode: 'open' });
  // A <style> element carrying the nonce the site gave us works under a strict style-src CSP.
  // The gateway put the config's colours at its top (--cg-p, --cg-b, --cg-t).
  root.append(h('style', { nonce: ds.nonce || S.nonce }, CG_CSS));
}

// WCAG 2.2 2.4.11 Focus Not Obscured: while the banner or the settings button sits over the page,
// the root gets padding and scroll-padding on that side, so the page can scroll every element
// clear of it and the browser scrolls a focused element clear of it. A modal first layer needs
// none (the page is inert). Runs whenever either appears or goes, and on resize.
const R = d.documentElement.style;
function pad() {
  const e = bn?.isConnected ? bn : fab, r = e?.getBoundingClientRect(), t = r?.top < innerHeight / 2;
  R.scrollPadding = R.padding = r && !e.ariaModal ? t ? r.bottom + 8 + 'px 0 0' : `0 0 ${innerHeight - r.top + 8}px` : '';
}
addEventListener('resize', pad);

// First layer. Reject all looks exactly like Accept all (EDPB cookie banner taskforce 2023).
function show(required) {
  ready(() => {
    mount();
    root.append(bn = h('div', { className: `bn s-${B.style} p-${B.position}`, role: 'dialog', 'aria-labelledby': 't', 'aria-describedby': 'd', tabIndex: -1 },
      h('div', { className: 'tx' }, h('h2', { id: 't' }, tx('title')), h('p', { id: 'd' }, tx('body')),
        ...['privacy', 'cookie'].map(k => C[k + '_policy_url'] ? h('a', { href: C[k + '_policy_url'], target: '_blank' }, tx(k + '_policy')) : '')),
      // Where consent is required, refusing is always one click away, whatever the setting.
      h('div', { className: 'bt' }, B.show_reject_all != 0 || required ? btn('reject_all', act('reject_all')) : '', btn('accept_all', act('accept_all')),
        B.show_preferences != 0 ? btn('preferences', () => prefs(init), 'sc') : '')));
    // Where the first layer covers the middle or most of the screen, the page could only scroll
    // focused elements behind it: it is modal there, and the page inert until the visitor decides.
    if (B.position == 'center' || bn.offsetHeight > innerHeight / 2) {
      bn.ariaModal = 'true';
      inert = [...d.body.children].filter(e => e != host && !e.inert && (e.inert = true));
    }
    pad();
    d.activeElement == d.body && bn.focus();
  });
}

function hide() {
  mount(); bn?.remove();
  inert = inert.filter(e => e.inert = false);
  'noSettingsButton' in ds || fab || root.append(fab = btn('settings', () => api.showPreferences(), 'fab'));
  pad();
}

// Preferences: a modal <dialog> (Esc closes it) with one switch per category and a focus trap.
function prefs(c) {
  mount(); dlg?.open && dlg.close();
  if (PP) pb = {};
  const back = root.activeElement || d.activeElement, box = {}, D = dlg = h('dialog', { className: 'pf', 'aria-labelledby': 'pt' },
    h('div', { className: 'hd' }, h('h2', { id: 'pt' }, tx('preferences')), h('button', { className: 'x', 'aria-label': tx('close'), onclick: () => D.close() }, '×')),
    ...CATS.map(k => {
      // A locked switch says why: always on (necessary), or off by the browser's privacy signal.
      const lock = k == 'necessary', off = blocked(k), why = lock ? tx('always_on') : off ? tx('signal_denied') : '';
      const row = h('div', { className: 'ct' },
        h('label', 0, box[k] = h('input', { type: 'checkbox', role: 'switch', checked: lock || c?.[k] && !off, disabled: lock || off, 'aria-describedby': k }),
          h('span', 0, ctx(k, 'label'))),
        h('p', { id: k }, h('em', 0, why), ctx(k, 'description')));
      if (PP) {
        // Under the category, each provider config that needs it: its name, what it receives, its
        // privacy policy, and its own switch — as last chosen (one not chosen on before is off:
        // nothing pre-ticked), else as the category. The category's switch sets them all;
        // switching one on switches the category on.
        const ps = C.providers.filter(p => p.category == k), was = cur ? cur.pc : pw;
        for (const p of ps) row.append(h('div', { className: 'pv' },
          h('label', 0, pb[p.id] = h('input', { type: 'checkbox', role: 'switch', checked: (was ? !!was[p.id] : c?.[k]) && !off, disabled: off, 'aria-describedby': 'p' + p.id,
            onchange: e => e.target.checked && (box[k].checked = true) }), h('span', 0, p.name)),
          h('p', { id: 'p' + p.id }, p.receives + ' ', p.privacy_policy_url ? h('a', { href: p.privacy_policy_url, target: '_blank' }, tx('privacy_policy')) : '')));
        box[k].onchange = () => ps.forEach(p => pb[p.id].checked = box[k].checked);
      }
      return row;
    }),
    h('div', { className: 'bt' }, btn('reject_all', act('reject_all')), btn('accept_all', act('accept_all')),
      btn('save', () => decide('custom', Object.fromEntries(O.map(k => [k, box[k]?.checked]))), 'sc')));
  // Tab from the last control goes to the first, Shift+Tab from the first to the last.
  D.onkeydown = e => {
    const f = D.querySelectorAll('button,input:enabled'), l = f.length - 1, s = e.shiftKey;
    e.key == 'Tab' && root.activeElement == f[s ? 0 : l] && (e.preventDefault(), f[s ? l : 0].focus());
  };
  D.onclose = () => { D.remove(); dlg.open || back?.isConnected && back.focus() };
  root.append(D); D.showModal();
}

// A decision: POST it, keep it on the site, apply it. Choices are sent explicitly, with what a
// privacy signal blocks set to false, so the record says what the visitor saw and chose.
function decide(action, c) {
  const focused = root?.activeElement, { necessary, ...choices } = eff(action == 'custom' ? c : action == 'accept_all' && K /* every category */);
  dlg?.open && dlg.close();
  hide(); focused && fab?.focus(); ls('cg_vid', vid);
  // PP: every provider shown, with its switch (the gateway derives them for the other actions).
  const providers = PP && Object.fromEntries(C.providers.map(p => [p.id, action == 'custom' ? !!pb[p.id]?.checked : action == 'accept_all']));
  fetch(API + '/consent', { method: 'POST', keepalive: true,
    body: JSON.stringify({ visitor_id: vid, action, choices, revision: C.revision, config_id: C.config_id, language: L, ...PP && { providers } }) })
    .then(r => r.ok && r.json()).catch(() => 0).then(r => {
      const s = { vid, cfg: C.config_id, rev: r?.revision || C.revision, choices: r?.choices || choices, act: action, t: now(), exp: Date.parse(r?.expires_at) || now() + C.expiry_days * 864e5, p: !r };
      // The offer chosen on and the per-provider choices, as recorded.
      if (PP) s.off = r?.provider_choices?.offer ?? C.offer, s.pc = r?.provider_choices?.providers || providers;
      // Without a record on the gateway there is no proof of consent (GDPR Art. 7(1)): nothing
      // is granted beyond the choice it already holds (cur) until a decision is stored. What
      // narrows that choice, or refuses, is kept — marked unsent (p) and made again on every
      // later page until the gateway stores it: a "no" it never heard of would let the old "yes"
      // or its defaults apply.
      const keep = r || cur || !O.some(k => choices[k]);
      r || O.forEach(k => choices[k] &&= cur?.choices[k]);
      keep && save(s);
      apply(s);
    });
}

const api = w.consentgate = {
  track,
  showPreferences: () => prefs(cur ? eff(cur.choices) : init),
  getConsent: () => cur ? { choices: eff(cur.choices), revision: cur.rev, action: cur.act, ...PP && { providers: cur.pc } } : null,
  withdraw: act('withdraw'),
};
// PostHog feature flags through the gateway (a tenant with an active PostHog config with flags
// on): the consent-lookup id always, the analytics id only while analytics is granted. Any
// failure resolves to {}.
if (FLAGS) api.flags = () => fetch(API + '/analytics/posthog/flags?key=' + encodeURIComponent(ds.key), { method: 'POST',
  body: JSON.stringify({ visitor_id: vid, ...eff(cur?.choices).analytics && { anonymous_id: vid } }) })
  .then(r => r.json()).then(r => r.flags?.constructor == Object ? r.flags : {}, () => ({}));

if (valid(st)) apply(st), st.p && ready(() => decide(st.act, st.choices));
else fetch(`${API}/consent/${vid}`).then(r => r.json()).catch(() => ({})).then(r => {
  const s = { vid, cfg: C.config_id, rev: r.revision, choices: r.choices, t: Date.parse(r.decided_at), exp: Date.parse(r.expires_at) };
  // The gateway asks again (decision_needed) when the offer changed, so a valid answer is on this one.
  if (PP) s.off = C.offer, s.pc = r.provider_choices?.providers;
  if (r.decision_needed == 0 && valid(s)) save(s), apply(s);
  // Unknown region (or no answer) counts as consent required. The preferences start from what
  // the gateway grants meanwhile: nothing where consent is required (no pre-ticked boxes, CJEU
  // C-673/17 Planet49), the defaults elsewhere — but a refusal stands while the banner asks
  // again, so with a record Consent Mode is told what stands (its default granted the defaults).
  else {
    show(r.consent_required != 0);
    init = eff(r.granted);
    r.decided_at && gtag('consent', 'update', cm(init));
    // Asked again because the offer changed: the per-provider switches start from the choice.
    if (PP && r.reason == 'offer_changed') pw = r.provider_choices?.providers;
  }
});

// Tracker: page views (also SPA navigations), outbound link clicks, custom events. At most 50
// queued, posted in batches, retried with exponential backoff and jitter; each event has its own
// idempotency key so a retry never counts twice. What is left goes by sendBeacon on page hide.
const EV = API + '/events?key=' + encodeURIComponent(ds.key), Q = [];
const red = u => u.replace(/([?&#][^=&#]*(token|secret|passw|pwd|auth|key|sig)[^=&#]*=)[^&#]*/gi, '$1REDACTED');
let ref = d.referrer, last, timer, tries = 0;
function track(event_name, event_properties = {}) {
  if (!ds.key) return;
  Q.push({ event_name, event_properties, visitor_id: vid, ...eff(cur?.choices).analytics && { anonymous_id: vid }, page_url: red(location.href), referrer: red(ref), title: d.title,
    occurred_at: new Date, idempotency_key: uuid() });
  Q.splice(0, Q.length - 50);
  timer ||= setTimeout(flush, 200);
}
function flush() {
  timer = 0;
  const b = Q.splice(0, 50);
  if (!b.length) return;
  fetch(EV, { method: 'POST', keepalive: true, body: JSON.stringify({ batch: b }) })
    // 408, 429 and 5xx are worth another try; any other answer is final.
    .then(r => [408, 429].includes(r.status) || r.status > 499 ? Promise.reject() : tries = 0).catch(() => (Q.unshift(...b), tries++))
    .then(() => { Q.splice(0, Q.length - 50); if (Q.length) timer = setTimeout(flush, tries && Math.min(6e4, 1e3 * 2 ** tries) * (.5 + Math.random() / 2)) });
}
d.addEventListener('visibilitychange', () => d.hidden && Q.length && n.sendBeacon(EV, JSON.stringify({ batch: Q })) && (Q.length = 0));
// The gateway reads the campaign (utm_*) from page_url itself.
const pv = () => {
  const u = location.href.split('#')[0];
  if (u == last) return;
  ref = last || ref; last = u;
  track('pageview');
};
if (!('noPageview' in ds)) {
  for (const m of ['pushState', 'replaceState']) { const o = history[m]; history[m] = function () { o.apply(this, arguments); pv() } }
  addEventListener('popstate', pv);
  pv();
}
// Clicks: any element with data-consentgate-settings opens the preferences (the site's own
// "Cookie settings" link); outbound links are tracked.
d.addEventListener('click', e => {
  const c = s => e.target.closest?.(s), a = c('a[href]');
  if (c('[data-consentgate-settings]')) e.preventDefault(), api.showPreferences();
  else if (a && /^http/.test(a.protocol) && a.host != location.host) track('outbound-link-click', { url: red(a.href) });
}, true);
