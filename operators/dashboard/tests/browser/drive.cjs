// Drives the dashboard page in Debian's headless Chromium with
// playwright-core, step by step with the Rust test (tests/browser.rs),
// which does what happens outside the page (SIGKILL, traffic, checks with
// `switchboard status`). One line per step on stdout; the test answers on
// stdin. Every view is checked with axe-core (no serious or critical
// violation) and photographed at 1440x900 and 390x844.
// Usage: node drive.cjs <playwright-core dir> <axe.min.js> <url> <token>
// <viewer token> <user-data-dir> <screenshot dir>
"use strict";
const readline = require("readline");
const [pwDir, axePath, url, token, viewerToken, userDataDir, shots] = process.argv.slice(2);
const { launch, photograph } = require("./shared.cjs")(pwDir, axePath, shots);

const input = readline.createInterface({ input: process.stdin });
const lines = input[Symbol.asyncIterator]();
async function expect(word) {
  const { value, done } = await lines.next();
  if (done || value.trim() !== word) throw new Error("expected " + word + " from the test, got " + value);
}
const say = s => process.stdout.write(s + "\n");

(async () => {
  const { context, page, errors } = await launch(userDataDir, url);

  // 1. Not logged in: the login form, nothing else. A wrong token says so.
  await page.locator("#loginview").waitFor();
  if (await page.locator("#tabs").isVisible()) throw new Error("views shown before a login");
  await photograph(page, "login");
  await page.fill("#token", "not-the-token");
  await page.click("#loginform button[type=submit]");
  await page.locator("#loginmsg", { hasText: "not the dashboard's token" }).waitFor();

  // 2. The viewer token: every view, no enabled button.
  await page.fill("#token", viewerToken);
  await page.click("#loginform button[type=submit]");
  await page.locator('#ops tr[data-id="pingbot"] [data-state="running"]').waitFor();
  await page.locator("#rolepill", { hasText: "viewer" }).waitFor();
  const enabled = await page.$$eval("#ops button[data-verb]:not([hidden])", bs => bs.filter(b => !b.disabled).map(b => b.textContent));
  if (enabled.length) throw new Error("a viewer sees enabled buttons: " + enabled.join(", "));
  await page.click("#logout");
  await page.locator("#loginview").waitFor();

  // 3. The token, once: the cookie is HttpOnly and SameSite=Strict, and a
  // new tab needs no second login.
  await page.fill("#token", token);
  await page.click("#loginform button[type=submit]");
  const row = id => page.locator(`#ops tr[data-id="${id}"]`);
  await row("pingbot").locator('[data-state="running"]').waitFor();
  await row("dashboard").waitFor();
  const cookies = await context.cookies();
  const session = cookies.find(c => c.name.startsWith("switchboard_dashboard_"));
  if (!session || !session.httpOnly || session.sameSite !== "Strict") throw new Error("session cookie: " + JSON.stringify(session));
  if (session.value.includes(token)) throw new Error("the cookie holds the token");
  if (await page.evaluate(() => document.cookie.includes("switchboard_dashboard_"))) throw new Error("page scripts can read the cookie");
  const tab = await context.newPage();
  await tab.goto(url);
  await tab.locator('#ops tr[data-id="pingbot"]').waitFor();
  if (await tab.locator("#loginview").isVisible()) throw new Error("a second tab asked to log in again");
  await tab.close();
  const before = Number(await row("pingbot").locator(".restarts-cell").textContent());
  say("LISTED " + before);

  // 4. A SIGKILL outside the page: the restart shows within a second.
  await expect("KILLED");
  const t0 = Date.now();
  await page.waitForFunction(n => {
    const c = document.querySelector('#ops tr[data-id="pingbot"] .restarts-cell');
    return c && Number(c.textContent) > n;
  }, before, { timeout: 1000 });
  say("RESTART_SHOWN " + (Date.now() - t0));

  // 5. State-aware buttons: running offers halt, not resume or start.
  await row("pingbot").locator('[data-state="running"]').waitFor();
  const shown = async () => page.$$eval('#ops tr[data-id="pingbot"] button[data-verb]', bs =>
    Object.fromEntries(bs.map(b => [b.dataset.verb, b.hidden ? "hidden" : b.disabled ? "disabled" : "enabled"])));
  let b = await shown();
  if (b.halt !== "enabled" || b.resume !== "hidden" || b.start !== "hidden" || b.restart !== "enabled") throw new Error("running: " + JSON.stringify(b));
  await row("pingbot").locator('button[data-verb="halt"]').click();
  await row("pingbot").locator('[data-state="halted"]').waitFor();
  b = await shown();
  if (b.resume !== "enabled" || b.halt !== "hidden" || b.reload !== "enabled") throw new Error("halted: " + JSON.stringify(b));
  say("HALT_CLICKED");
  await expect("HALT_CHECKED");
  await row("pingbot").locator('button[data-verb="resume"]').click();
  await row("pingbot").locator('[data-state="running"]').waitFor();

  // 6. Stop, then start a stopped operator.
  await row("pingbot").locator('button[data-verb="stop"]').click();
  await row("pingbot").locator('[data-state="exited"]').waitFor();
  b = await shown();
  if (b.start !== "enabled" || b.halt !== "hidden" || b.reload !== "disabled") throw new Error("exited: " + JSON.stringify(b));
  await row("pingbot").locator('button[data-verb="start"]').click();
  await row("pingbot").locator('[data-state="running"]').waitFor();
  // The answer names the operator once.
  await page.locator("#opsmsg.ok", { hasText: /^start pingbot: ok, / }).waitFor();
  say("STARTED");
  await expect("START_CHECKED");

  // 7. Details: the manifest's command and grants; the chart has a time
  // axis and units.
  await row("pingbot").locator(".opid button").click();
  await page.locator("#details", { hasText: "switchboard-pingbot" }).waitFor();
  // Grants as the daemon applies them: `{id}` is the operator's id.
  await page.locator("#details code", { hasText: "chat.*.pingbot.# send.#" }).waitFor();
  await page.locator("#chart .uplot").waitFor();
  await page.locator("#chart canvas").first().waitFor();
  await page.locator("#chart .u-legend", { hasText: "time" }).waitFor();
  await page.locator("#chartcap", { hasText: "messages/s" }).waitFor();
  await page.waitForFunction(() => document.querySelectorAll("#recent tr").length > 0);
  await page.waitForTimeout(1500);
  await photograph(page, "operators", async () => {
    await page.locator('#ops tr[data-id="pingbot"] [data-state="running"]').waitFor();
  });
  say("OPERATORS");

  // 8. Chat: chat as chat (sender, text, room), the bot's reply too; raw.
  await page.click('#tabs a[data-view="chat"]');
  await page.locator('.chip[data-pattern="chat.#"]').waitFor();
  await page.locator('.chip[data-pattern="send.#"]').waitFor();
  await page.waitForTimeout(400);
  say("CHAT_READY");
  await expect("PINGED");
  const ping = page.locator('#tail .chatline', { hasText: "!ping" });
  await ping.locator(".who", { hasText: "alice" }).waitFor();
  await page.locator("#tail .chatline.out", { hasText: "pong" }).waitFor();
  await page.waitForTimeout(300);
  await photograph(page, "chat");
  await page.check("#raw");
  await page.locator("#tail .chatline .raw", { hasText: '"sender":"alice"' }).first().waitFor();
  await page.uncheck("#raw");

  // Several patterns: chat.alpha.# only, then publish alpha and beta.
  await page.fill("#pattern", "chat.alpha.#");
  await page.click("#patternform button[type=submit]");
  for (const p of ["chat.#", "send.#"]) await page.click(`.chip[data-pattern="${p}"] button`);
  await page.waitForFunction(() => [...document.querySelectorAll("#tail .chatline")].every(e => e.dataset.subject.startsWith("chat.alpha.")));
  await page.waitForTimeout(400);
  say("PATTERN_SET");
  await expect("PUBLISHED");
  await page.locator('#tail .chatline[data-subject^="chat.alpha."]').first().waitFor();
  await page.waitForTimeout(300);
  const subjects = await page.$$eval("#tail .chatline", els => els.map(e => e.dataset.subject));
  const wrong = subjects.filter(s => !s.startsWith("chat.alpha."));
  if (wrong.length) throw new Error("the tail shows non-matching subjects: " + wrong.join(", "));
  say("FILTERED " + subjects.length);
  // Back to the defaults for the next views.
  await page.click('.chip[data-pattern="chat.alpha.#"] button');
  for (const p of ["chat.#", "send.#"]) { await page.fill("#pattern", p); await page.click("#patternform button[type=submit]"); }

  // 8b. Replay: what the stream kept, rendered like the chat (the ping
  // and the bot's reply); a pattern and a sequence range narrow it; raw
  // shows the JSON.
  await page.click('#tabs a[data-view="replay"]');
  await page.locator("#replay .chatline", { hasText: "!ping" }).locator(".who", { hasText: "alice" }).waitFor();
  await page.locator("#replay .chatline.out", { hasText: "pong" }).waitFor();
  await page.locator("#replaymsg.ok", { hasText: "the stream SWITCHBOARD holds" }).waitFor();
  await photograph(page, "replay");
  await page.fill("#replaypatterns", "chat.alpha.#");
  await page.click("#replayform button[type=submit]");
  await page.waitForFunction(() => {
    const l = [...document.querySelectorAll("#replay .chatline")];
    return l.length > 0 && l.every(e => e.dataset.subject.startsWith("chat.alpha."));
  });
  const seq = await page.$eval("#replay .chatline", e => e.dataset.seq);
  await page.fill("#replayfrom", seq);
  await page.fill("#replayto", seq);
  await page.click("#replayform button[type=submit]");
  await page.waitForFunction(s => {
    const l = [...document.querySelectorAll("#replay .chatline")];
    return l.length === 1 && l[0].dataset.seq === s;
  }, seq);
  await page.check("#replayraw");
  await page.locator("#replay .chatline .raw", { hasText: '"text":"shown"' }).waitFor();
  await page.uncheck("#replayraw");
  await page.fill("#replayfrom", "soon");
  await page.click("#replayform button[type=submit]");
  await page.locator("#replaymsg.err", { hasText: "RFC 3339" }).waitFor();
  say("REPLAYED");

  // 9. Logs: coloured by level, lifecycle events between the lines.
  await page.click('#tabs a[data-view="operators"]');
  await row("pingbot").locator('button[data-action="logs"]').click();
  await page.locator('#logs [data-level="info"]').first().waitFor();
  await page.locator('#logs .lifecycle', { hasText: "halted" }).first().waitFor();
  await page.locator('#logs .lifecycle', { hasText: "exited" }).first().waitFor();
  await photograph(page, "logs");
  say("LOGS");

  // 10. Events, bus.
  await page.click('#tabs a[data-view="events"]');
  await page.locator('#events tr[data-id="pingbot"]').first().waitFor();
  await photograph(page, "events");
  await page.click('#tabs a[data-view="bus"]');
  await page.locator("#daemonkv", { hasText: "Version" }).waitFor();
  await page.locator('#conns tr', { hasText: "pingbot" }).waitFor();
  await photograph(page, "bus");
  say("VIEWS");

  // 11. The publish box: !ping in the console room, the bot answers.
  await page.click('#tabs a[data-view="publish"]');
  await page.locator("#pubfeed .empty", { hasText: "Nothing said" }).waitFor();
  await page.click('#pubform button[type=submit]');
  await page.locator("#pubmsg.ok", { hasText: "published" }).waitFor();
  await page.locator("#pubfeed .chatline.out", { hasText: "pong" }).waitFor();
  if (await page.locator("#pubfeed .empty").count()) throw new Error("the publish feed still says it is empty");
  await photograph(page, "publish");
  say("PUBLISHED_FROM_PAGE");

  // 12. Restart all (in place), then stop all: every operator but the
  // dashboard itself.
  await page.click('#tabs a[data-view="operators"]');
  await page.click("#restartall");
  await page.locator("#opsmsg.ok", { hasText: "pingbot: ok" }).waitFor();
  await page.click("#stopall");
  await row("pingbot").locator('[data-state="exited"]').waitFor();
  await row("dashboard").locator('[data-state="running"]').waitFor();
  say("ALL_STOPPED");

  // 13. The bus goes down: a banner, gone again once it is back.
  await expect("BUS_DOWN");
  await page.locator("#banner.show", { hasText: "Bus down" }).waitFor();
  say("BANNER_SHOWN");
  await expect("BUS_BACK");
  await page.locator("#banner.show").waitFor({ state: "hidden" });
  say("BANNER_GONE");
  if (errors.length) throw new Error("errors in the page: " + errors.join(" | "));
  await context.close();
  say("DONE");
  // stdin stays open (the test holds it): leave without waiting for it.
  process.exit(0);
})().catch(e => { say("ERROR " + String(e && e.stack || e).replace(/\n/g, " | ")); process.exit(1); });
