// The dashboard of a cluster in headless Chromium (tests/cluster.rs starts
// three daemons and says what their status shows): the hosts card lists
// every host with its state, labels, lease and operator count; the
// operators table has a HOST column naming the host that runs each
// operator, and the operator no host may run says so; events name their
// host. The view passes
// axe-core and is photographed at both sizes (dashboard-cluster-*.png).
// Usage: node cluster.cjs <playwright-core dir> <axe.min.js> <url> <token>
// <user-data-dir> <screenshot dir> <expected JSON: {hosts, drained, placed, nowhere}>
"use strict";
const [pwDir, axePath, url, token, userDataDir, shots, expectedJson] = process.argv.slice(2);
const { launch, photograph } = require("./shared.cjs")(pwDir, axePath, shots);
const expected = JSON.parse(expectedJson);
const say = s => process.stdout.write(s + "\n");

(async () => {
  const { context, page, errors } = await launch(userDataDir, url);
  await page.locator("#loginview").waitFor();
  await page.fill("#token", token);
  await page.click("#loginform button[type=submit]");

  // The hosts: one row each, the drained one said so, a lease for each.
  await page.locator("#hostscard").waitFor();
  await page.waitForFunction(n => document.querySelectorAll("#hosts tr").length === n, expected.hosts.length);
  for (const h of expected.hosts) {
    const want = h === expected.drained ? "drained" : "alive";
    const row = page.locator(`#hosts tr[data-host="${h}"]`);
    await row.locator(`[data-state="${want}"]`).waitFor();
    await row.locator(".lease .bar").waitFor();
    const runs = Object.values(expected.placed).filter(x => x === h).length;
    await page.waitForFunction(([h, n]) => {
      const c = document.querySelector(`#hosts tr[data-host="${h}"] td[data-count]`);
      return c && Number(c.dataset.count) === n;
    }, [h, runs]);
  }
  if (!/revision \d+/.test(await page.locator("#hostsmeta").textContent())) throw new Error("no desired state revision in the hosts card");

  // The HOST column: every operator of the cluster on the host running it.
  if (!await page.locator("#hostcol").isVisible()) throw new Error("no HOST column");
  for (const [id, host] of Object.entries(expected.placed)) {
    const row = page.locator(`#ops tr[data-id="${id}"]`);
    await row.locator('[data-state="running"]').waitFor();
    await page.waitForFunction(([id, host]) => {
      const c = document.querySelector(`#ops tr[data-id="${id}"] .host-cell`);
      return c && c.textContent === host;
    }, [id, host]);
  }
  const nowhere = page.locator(`#ops tr[data-id="${expected.nowhere}"]`);
  await nowhere.locator('[data-state="unplaced"]', { hasText: "no eligible host" }).waitFor();
  const shown = await nowhere.locator("button[data-verb]:not([hidden])").count();
  if (shown) throw new Error("an operator no host runs offers " + shown + " control(s)");
  // Lifecycle events name the host whose daemon reported them.
  await page.locator("#recent td", { hasText: /^ping-[ab] on (alpha|beta|gamma)$/ }).first().waitFor();
  say("LISTED");

  await photograph(page, "cluster", async () => { await page.locator("#hostscard").waitFor(); });
  if (errors.length) throw new Error("errors in the page: " + errors.join(" | "));
  await context.close();
  say("DONE");
  process.exit(0);
})().catch(e => { say("ERROR " + String(e && e.stack || e).replace(/\n/g, " | ")); process.exit(1); });
