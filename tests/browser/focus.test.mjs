// WCAG 2.2 2.4.11 Focus Not Obscured: tabbing through a long page with the banner open never
// leaves the focused element behind the banner, for every position and style, on a phone and on
// a desktop screen; after deciding, the floating "Cookie settings" button hides nothing either.
// Where the first layer covers most of the screen it is modal: the page is inert until the
// visitor decides, so nothing behind it can take focus.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { expectNoAxeViolations, launchBrowser, shot, sitePage, startGateway, startSite, ui, visitor } from './gateway.mjs';

let gw, site, browser;

before(async () => {
  gw = await startGateway();
  site = await startSite();
  browser = await launchBrowser();
});
after(async () => {
  await browser?.close();
  await site?.stop();
  await gw?.stop();
});

const LINKS = 33;
// A long page: a link at the very top, links spread through the text, a link at the very end.
const body = `<nav><a href="#top" id="first">Skip to top</a></nav>` +
  Array.from({ length: LINKS - 2 }, (_, i) => `<p>Paragraph ${i + 1} of a long article, with text that wraps on a phone screen and <a href="#l${i}">link ${i + 1}</a> in it.</p>`).join('') +
  `<footer><a href="#end" id="last">Last link on the page</a></footer>`;

/**
 * Presses Tab until every page link had focus (or `max` presses), and after each press reports
 * what has focus: a banner control, or a page element with its rectangle, and the rectangles of
 * the banner and the settings button.
 */
async function tabThrough(page, max = 80) {
  const steps = [];
  for (let i = 0; i < max; i++) {
    await page.keyboard.press('Tab');
    steps.push(await page.evaluate(() => new Promise((resolve) => requestAnimationFrame(() => {
      let a = document.activeElement;
      const inHost = !!a?.closest?.('#consentgate');
      while (a?.shadowRoot?.activeElement) a = a.shadowRoot.activeElement;
      const root = document.getElementById('consentgate')?.shadowRoot;
      const rect = (e) => e && e.isConnected ? (({ top, bottom, left, right }) => ({ top, bottom, left, right }))(e.getBoundingClientRect()) : null;
      resolve({
        inHost, tag: a?.tagName, text: (a?.textContent || '').trim().slice(0, 40), rect: rect(a),
        cover: [rect(root?.querySelector('.bn')), rect(root?.querySelector('.fab'))].filter(Boolean),
        viewport: { width: innerWidth, height: innerHeight },
      });
    }))));
    const pageLinks = new Set(steps.filter((s) => !s.inHost && s.tag === 'A').map((s) => s.text));
    if (pageLinks.size === LINKS) break;
  }
  return steps;
}

/** Page elements that had focus while hidden (partly) behind the banner or the button, or off screen. */
function obscured(steps) {
  const overlap = (a, b) => a.left < b.right - 1 && b.left < a.right - 1 && a.top < b.bottom - 1 && b.top < a.bottom - 1;
  return steps.filter((s) => !s.inHost && s.rect && s.tag !== 'BODY').filter((s) =>
    s.rect.top < -1 || s.rect.bottom > s.viewport.height + 1 || s.cover.some((c) => overlap(s.rect, c)))
    .map((s) => `${s.text} at ${Math.round(s.rect.top)}–${Math.round(s.rect.bottom)} under ${JSON.stringify(s.cover.map((c) => [Math.round(c.top), Math.round(c.bottom)]))}`);
}

const positions = ['bottom', 'top', 'center', 'bottom-left', 'bottom-right'];
const styles = ['bar', 'box', 'cloud'];
const screens = { phone: { width: 375, height: 667 }, desktop: { width: 1280, height: 800 } };

for (const style of styles) {
  test(`style ${style}: in every position, on a phone and a desktop, no focused element is hidden behind the banner`, async () => {
    for (const position of positions) {
      const t = await gw.createTenant(`focus-${style}-${position}`, { site, config: { banner: { style, position } } });
      const url = site.page(`/focus-${style}-${position}`, sitePage(t, { body }));
      for (const [name, viewport] of Object.entries(screens)) {
        const { page, context } = await visitor(browser, { country: 'SE', viewport });
        await page.goto(url);
        await ui(page).banner.waitFor();
        const modal = await ui(page).banner.evaluate((e) => e.getAttribute('aria-modal') === 'true');
        const steps = await tabThrough(page);
        const label = `${style} ${position} ${name}${modal ? ' (modal)' : ''}`;
        assert.deepEqual(obscured(steps), [], `${label}: focused elements hidden`);
        const reached = new Set(steps.filter((s) => !s.inHost && s.tag === 'A').map((s) => s.text));
        if (modal) {
          // A modal first layer keeps focus in the banner: no page element can take it.
          assert.equal(reached.size, 0, `${label}: page elements took focus behind a modal banner`);
          assert.ok(steps.some((s) => s.inHost), label);
        } else {
          assert.equal(reached.size, LINKS, `${label}: every link on the page is reachable (${reached.size})`);
        }
        if (position === 'center') assert.ok(modal, `${label}: a banner in the middle of the screen is modal`);
        if (style === 'bar' && name === 'desktop' && position !== 'center') assert.ok(!modal, `${label}: a bar leaves the page usable`);
        await context.close();
      }
    }
  });
}

test('a modal first layer: labelled, axe clean, and the page is usable again after the decision', async () => {
  const t = await gw.createTenant('focus-modal', { site, config: { banner: { style: 'box', position: 'center' } } });
  const { page, context } = await visitor(browser, { country: 'SE', viewport: screens.phone });
  await page.goto(site.page('/focus-modal', sitePage(t, { body })));
  const u = ui(page);
  await u.banner.waitFor();
  assert.equal(await u.banner.getAttribute('aria-modal'), 'true');
  assert.equal(await page.locator('main').evaluate((e) => e.inert), true, 'the page is inert behind it');
  await shot(page, 'focus-modal-first-layer');
  await expectNoAxeViolations(page, 'modal first layer');
  await u.reject.click();
  await u.settings.waitFor();
  assert.equal(await page.locator('main').evaluate((e) => e.inert), false, 'the page is usable again');
  await page.locator('#first').focus();
  assert.equal(await page.evaluate(() => document.activeElement.id), 'first');
  await context.close();
});

for (const [name, viewport] of Object.entries(screens)) {
  test(`after deciding (${name}): the "Cookie settings" button hides no focused element, the last one included`, async () => {
    const t = await gw.createTenant(`focus-fab-${name}`, { site });
    const { page, context } = await visitor(browser, { country: 'SE', viewport });
    await page.goto(site.page(`/focus-fab-${name}`, sitePage(t, { body })));
    const u = ui(page);
    await u.reject.click();
    await u.settings.waitFor();
    await page.evaluate(() => document.activeElement.blur());
    const steps = await tabThrough(page);
    assert.deepEqual(obscured(steps), [], 'focused elements hidden behind the settings button');
    const reached = new Set(steps.filter((s) => !s.inHost && s.tag === 'A').map((s) => s.text));
    assert.equal(reached.size, LINKS, `every link reached (${reached.size})`);
    // The last link, scrolled fully down, sits above the button.
    await page.evaluate(() => scrollTo(0, document.documentElement.scrollHeight));
    const [last, fab] = await Promise.all([page.locator('#last').boundingBox(), u.settings.boundingBox()]);
    assert.ok(last.y + last.height <= fab.y, `last link ${JSON.stringify(last)} above the button ${JSON.stringify(fab)}`);
    await shot(page, `focus-fab-${name}-end-of-page`);
    await expectNoAxeViolations(page, `settings button ${name}`);
    await context.close();
  });
}
