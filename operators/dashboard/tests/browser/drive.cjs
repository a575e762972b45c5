// Drives the dashboard page in Debian's headless Chromium with
// playwright-core, step by step with the Rust test (tests/browser.rs),
// which does what happens outside the page (SIGKILL, traffic, checks with
// `switchboard status`). One line per step on stdout; the test answers on
// stdin. Usage: node drive.cjs <playwright-core dir> <url> <token>
// <user-data-dir> <screenshot path>
"use strict";
const readline = require("readline");
const [pwDir, url, token, userDataDir, shot] = process.argv.slice(2);
const { chromium } = require(pwDir);

const input = readline.createInterface({ input: process.stdin });
const lines = input[Symbol.asyncIterator]();
async function expect(word) {
  const { value, done } = await lines.next();
  if (done || value.trim() !== word) throw new Error("expected " + word + " from the test, got " + value);
}
const say = s => process.stdout.write(s + "\n");

(async () => {
  const context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: "/usr/bin/chromium",
    headless: true,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync"],
    viewport: { width: 1280, height: 900 },
  });
  const page = context.pages()[0] || await context.newPage();
  page.setDefaultTimeout(15000);
  await page.goto(url);

  // 1. The page lists the operators.
  const row = id => page.locator(`tr[data-id="${id}"]`);
  await row("pingbot").locator('[data-state="running"]').waitFor();
  await row("dashboard").waitFor();
  const before = Number(await row("pingbot").locator(".restarts").textContent());
  say("LISTED " + before);

  // 2. A SIGKILL outside the page: the restart shows within a second.
  await expect("KILLED");
  const t0 = Date.now();
  await page.waitForFunction(n => {
    const c = document.querySelector('tr[data-id="pingbot"] .restarts');
    return c && Number(c.textContent) > n;
  }, before, { timeout: 1000 });
  say("RESTART_SHOWN " + (Date.now() - t0));

  // 3. Halt by clicking, with the token typed into the page.
  await row("pingbot").locator('[data-state="running"]').waitFor();
  await page.fill("#token", token);
  await page.dispatchEvent("#token", "change");
  await row("pingbot").locator('button[data-verb="halt"]').click();
  await row("pingbot").locator('[data-state="halted"]').waitFor();
  say("HALT_CLICKED");
  await expect("HALT_CHECKED");

  // 4. The tail box filters.
  await page.fill("#pattern", "chat.alpha.#");
  // The debounced reconnect has happened when the old entries are gone.
  await page.waitForFunction(() => [...document.querySelectorAll("#tail .seen")].every(e => e.dataset.subject.startsWith("chat.alpha.")));
  await page.waitForTimeout(400);
  say("PATTERN_SET");
  await expect("PUBLISHED");
  await page.locator('#tail .seen[data-subject^="chat.alpha."]').first().waitFor();
  await page.waitForTimeout(300);
  const subjects = await page.$$eval("#tail .seen", els => els.map(e => e.dataset.subject));
  const wrong = subjects.filter(s => !s.startsWith("chat.alpha."));
  if (wrong.length) throw new Error("the tail shows non-matching subjects: " + wrong.join(", "));
  say("FILTERED " + subjects.length);

  // Follow one operator's log, then keep a picture of it all.
  await row("pingbot").locator('button[data-action="logs"]').click();
  await page.locator("#logs div").first().waitFor();
  await page.waitForTimeout(1200);
  await page.screenshot({ path: shot, fullPage: true });
  say("SCREENSHOT");

  // 5. The bus goes down: a banner, gone again once it is back.
  await expect("BUS_DOWN");
  await page.locator("#banner.show", { hasText: "Bus down" }).waitFor();
  say("BANNER_SHOWN");
  await expect("BUS_BACK");
  await page.locator("#banner.show").waitFor({ state: "hidden" });
  say("BANNER_GONE");
  await context.close();
  say("DONE");
  // stdin stays open (the test holds it): leave without waiting for it.
  process.exit(0);
})().catch(e => { say("ERROR " + String(e && e.stack || e).replace(/\n/g, " | ")); process.exit(1); });
