// What the browser tests' drivers share (drive.cjs: one host; cluster.cjs:
// a cluster): Chromium started headless with playwright-core, axe-core on
// what the page shows, and a photograph of a view at a wide and a phone
// size. Usage: require("./shared.cjs")(<playwright-core dir>, <axe.min.js>,
// <screenshot dir>).
"use strict";
const fs = require("fs");
const path = require("path");

module.exports = (pwDir, axePath, shots) => {
  const { chromium } = require(pwDir);
  const AXE = fs.readFileSync(axePath, "utf8");
  const WIDE = { width: 1440, height: 900 }, PHONE = { width: 390, height: 844 };

  // axe-core on what the page shows now: serious and critical violations fail.
  async function axe(page, name) {
    await page.evaluate(AXE);
    const result = await page.evaluate(async () => await window.axe.run(document, { resultTypes: ["violations"] }));
    const bad = result.violations.filter(v => v.impact === "serious" || v.impact === "critical");
    if (bad.length) {
      throw new Error("axe-core, " + name + ": " + bad.map(v => v.id + " (" + v.impact + "): " + v.help + " at " +
        v.nodes.slice(0, 3).map(n => n.target.join(" ")).join(", ")).join("; "));
    }
    return result.violations.length;
  }

  // Both sizes: no sideways scrolling on a phone, axe at each, a picture each.
  async function photograph(page, name, ready) {
    for (const [size, tag] of [[WIDE, "wide"], [PHONE, "phone"]]) {
      await page.setViewportSize(size);
      await page.waitForTimeout(250);
      if (ready) await ready();
      const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
      if (overflow > 1) throw new Error(name + " at " + size.width + " px scrolls sideways by " + overflow + " px");
      // Every tab in sight: one cut off at the edge is easily missed.
      const tabs = await page.evaluate(() => { const n = document.getElementById("tabs"); return n.hidden ? 0 : n.scrollWidth - n.clientWidth; });
      if (tabs > 1) throw new Error(name + " at " + size.width + " px: the tabs need " + tabs + " px more");
      await axe(page, name + " (" + tag + ")");
      await page.screenshot({ path: path.join(shots, "dashboard-" + name + "-" + tag + ".png"), fullPage: tag === "phone" ? false : true });
    }
    await page.setViewportSize(WIDE);
  }

  // Chromium on `url`, dialogs accepted, page errors collected.
  async function launch(userDataDir, url) {
    const context = await chromium.launchPersistentContext(userDataDir, {
      executablePath: "/usr/bin/chromium",
      headless: true,
      args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync"],
      viewport: WIDE,
    });
    const page = context.pages()[0] || await context.newPage();
    page.setDefaultTimeout(15000);
    page.on("dialog", d => d.accept());
    const errors = [];
    page.on("pageerror", e => errors.push(String(e)));
    await page.goto(url);
    return { context, page, errors };
  }

  return { launch, photograph, axe };
};
