// Accessibility (WCAG 2.2 AA): keyboard-only operation, focus moved into the banner and trapped in
// the preferences dialog, Esc, visible focus, axe-core on every state, small screens, and every
// banner position and style the config allows.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { axeViolations, expectNoAxeViolations, launchBrowser, ran, shot, sitePage, startGateway, startSite, ui, visitor, visitorId } from './gateway.mjs';

let gw, site, browser, tenant, url;

before(async () => {
  gw = await startGateway();
  site = await startSite();
  browser = await launchBrowser();
  tenant = await gw.createTenant('a11y', { site });
  url = site.page('/', sitePage(tenant));
});
after(async () => {
  await browser?.close();
  await site?.stop();
  await gw?.stop();
});

/** What has keyboard focus, looking inside the banner's shadow root. */
const focused = (page) => page.evaluate(() => {
  let a = document.activeElement;
  while (a?.shadowRoot?.activeElement) a = a.shadowRoot.activeElement;
  const s = getComputedStyle(a);
  return {
    text: (a.getAttribute('aria-label') || a.labels?.[0]?.textContent || a.textContent || '').trim(), tag: a.tagName, role: a.getAttribute('role'),
    inDialog: !!a.closest('dialog'), inBanner: !!a.closest('.bn'), outline: `${s.outlineStyle} ${s.outlineWidth}`,
  };
});

test('keyboard only: reach every control, open preferences, trapped focus, Esc, toggle, save', async () => {
  const { page, context } = await visitor(browser, { country: 'SE' });
  await page.goto(url);
  const u = ui(page);
  await u.banner.waitFor();

  // Tab order through the first layer: links, then the three choices.
  const order = [];
  for (let i = 0; i < 5; i++) {
    await page.keyboard.press('Tab');
    const f = await focused(page);
    assert.ok(f.inBanner, `focus stays in the banner (step ${i}: ${JSON.stringify(f)})`);
    assert.notEqual(f.outline.split(' ')[0], 'none', `visible focus on ${f.text}`);
    order.push(f.text);
  }
  assert.deepEqual(order, ['Privacy policy', 'Cookie policy', 'Reject all', 'Accept all', 'Preferences']);
  await shot(page, 'keyboard-focus-preferences-button');

  await page.keyboard.press('Enter');
  await u.dialog.waitFor();
  assert.ok((await focused(page)).inDialog, 'focus moved into the dialog');
  // Trapped: 20 Tabs forward and 20 back never leave the dialog.
  for (const key of ['Tab', 'Shift+Tab']) {
    for (let i = 0; i < 20; i++) {
      await page.keyboard.press(key);
      const f = await focused(page);
      assert.ok(f.inDialog, `${key} #${i} left the dialog: ${JSON.stringify(f)}`);
    }
  }
  // Esc closes the preferences and focus returns to the button that opened them.
  await page.keyboard.press('Escape');
  await u.dialog.waitFor({ state: 'detached' });
  assert.equal((await focused(page)).text, 'Preferences');

  // Open again, switch analytics on with Space, save with Enter.
  await page.keyboard.press('Enter');
  await u.dialog.waitFor();
  for (let i = 0; i < 10 && !/Analytics/.test((await focused(page)).text); i++) await page.keyboard.press('Tab');
  const sw = await focused(page);
  assert.equal(sw.role, 'switch');
  await page.keyboard.press('Space');
  assert.equal(await u.toggle(/Analytics/).isChecked(), true);
  await shot(page, 'keyboard-preferences-analytics-on');
  for (let i = 0; i < 10 && (await focused(page)).text !== 'Save choices'; i++) await page.keyboard.press('Tab');
  await page.keyboard.press('Enter');
  await page.waitForFunction(() => window.__analyticsRan);
  assert.deepEqual(await ran(page), { functional: false, analytics: true, marketing: false });
  await tenant.waitForRecord(await visitorId(page), 'custom');

  // Focus lands on the cookie settings button, which reopens the preferences from the keyboard.
  const after = await focused(page);
  assert.equal(after.text, 'Cookie settings');
  await page.keyboard.press('Enter');
  await u.dialog.waitFor();
  assert.equal(await u.toggle(/Analytics/).isChecked(), true);
  await expectNoAxeViolations(page, 'preferences reopened');
  await context.close();
});

test('the banner is a labelled dialog and focus moves into it on load', async () => {
  const { page, context } = await visitor(browser, { country: 'SE' });
  await page.goto(url);
  const b = ui(page).banner;
  await b.waitFor();
  const a = await b.evaluate((e) => ({ role: e.getAttribute('role'), label: e.getRootNode().getElementById(e.getAttribute('aria-labelledby'))?.textContent, lang: e.getRootNode().host.lang }));
  assert.deepEqual(a, { role: 'dialog', label: 'We value your privacy', lang: 'en' });
  assert.equal(await page.evaluate(() => document.activeElement.shadowRoot?.activeElement?.classList.contains('bn')), true);
  await context.close();
});

test('375 px wide: choices stacked, same size, everything reachable; axe clean', async () => {
  const { page, context } = await visitor(browser, { country: 'SE', viewport: { width: 375, height: 740 } });
  await page.goto(url);
  const u = ui(page);
  await u.banner.waitFor();
  const [r, a] = [await u.reject.boundingBox(), await u.accept.boundingBox()];
  assert.equal(Math.round(r.width), Math.round(a.width));
  assert.equal(Math.round(r.height), Math.round(a.height));
  const box = await u.banner.boundingBox();
  assert.ok(box.x >= 0 && box.x + box.width <= 375, 'fits the viewport');
  await shot(page, 'mobile-375-banner');
  await expectNoAxeViolations(page, 'mobile banner');
  await u.preferences.click();
  await u.dialog.waitFor();
  await shot(page, 'mobile-375-preferences');
  await expectNoAxeViolations(page, 'mobile preferences');
  await context.close();
});

for (const [style, position] of [['bar', 'bottom'], ['bar', 'top'], ['box', 'bottom-left'], ['box', 'center'], ['cloud', 'bottom'], ['cloud', 'bottom-right']]) {
  test(`style ${style}, position ${position}: on screen, axe clean`, async () => {
    const t = await gw.createTenant(`look-${style}-${position}`, {
      site, config: { banner: { style, position, primary_color: '#0b6e4f', background_color: '#fdfcf7', text_color: '#1b1b1b' } },
    });
    const { page, context } = await visitor(browser, { country: 'SE' });
    await page.goto(site.page(`/${style}-${position}`, sitePage(t)));
    const u = ui(page);
    await u.banner.waitFor();
    const box = await u.banner.boundingBox();
    assert.ok(box.y >= 0 && box.y + box.height <= 800 && box.x >= 0 && box.x + box.width <= 1280, JSON.stringify(box));
    if (position === 'top') assert.ok(box.y < 5);
    if (position === 'bottom') assert.ok(box.y + box.height > 780);
    const bg = await u.accept.evaluate((e) => getComputedStyle(e).backgroundColor);
    assert.equal(bg, 'rgb(11, 110, 79)', 'primary colour from the config');
    await shot(page, `look-${style}-${position}`);
    await expectNoAxeViolations(page, `${style} ${position}`);
    await context.close();
  });
}

test('colour warnings match what the banner renders: white labels on #4a90e2 are warned about, and axe finds them too', async () => {
  // 3.29:1: enough for a button's shape (3:1), too little for its label (4.5:1).
  const t = await gw.createTenant('contrast', { site, config: { banner: { primary_color: '#4a90e2', background_color: '#ffffff' } } });
  const warning = t.warnings.find((w) => w.startsWith('banner.primary_color:'));
  assert.ok(warning, `the API warns: ${JSON.stringify(t.warnings)}`);
  assert.match(warning, /3\.29:1/);
  const { page, context } = await visitor(browser, { country: 'SE' });
  await page.goto(site.page('/contrast', sitePage(t)));
  await ui(page).banner.waitFor();
  const contrast = (await axeViolations(page)).filter((v) => v.id === 'color-contrast');
  assert.ok(contrast.length && contrast[0].targets.some((x) => /\.pr/.test(x)), `axe flags the labels: ${JSON.stringify(contrast)}`);
  // The colours the tests use elsewhere draw no colour warning, and axe finds nothing there.
  assert.deepEqual(tenant.warnings.filter((w) => /color/.test(w)), []);
  await context.close();
});
