// How long the dashboard takes to show a view in chromium, for the readability check at scale
// (not a test). Usage: node tests/browser/measure.mjs BASE_URL OUT_DIR QUERY...
// Prints, per query, the milliseconds from navigation to every number on the page.
import { chromium } from "playwright-core";

const [base, out, ...queries] = process.argv.slice(2);
const browser = await chromium.launch({ executablePath: process.env.FUNNEL_CHROMIUM || "/usr/bin/chromium", args: ["--no-sandbox", "--disable-gpu"] });
const page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
const timings = [];
for (const [i, query] of queries.entries()) {
  const started = Date.now();
  await page.goto(`${base}/${query}`);
  await page.waitForFunction(() => document.body.dataset.loaded || document.querySelector("#error").textContent, null, { timeout: 120000 });
  const ms = Date.now() - started;
  const error = await page.$eval("#error", (e) => e.textContent);
  const rows = await page.$$eval("#breakdown tr", (r) => r.length - 1);
  await page.screenshot({ path: `${out}/dashboard-scale-${i}.png`, fullPage: true });
  timings.push({ query, ms, rows, error });
}
await browser.close();
console.log(JSON.stringify(timings, null, 1));
