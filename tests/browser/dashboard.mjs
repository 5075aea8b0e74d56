// Opens funnel-ledger's dashboard in Debian's chromium (playwright-core, no downloaded
// browser), reads every number the page shows (elements with data-testid), and keeps
// screenshots. Usage: node dashboard.mjs BASE_URL OUT_DIR LEAD_ID AT_SEQ
import { chromium } from "playwright-core";

const [base, out, lead, atSeq] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.FUNNEL_CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu"],
});
const page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
const errors = [];
page.on("pageerror", (e) => errors.push(String(e)));
// Busy answers the page retries show up as failed loads: those are not script errors.
page.on("console", (m) => { if (m.type() === "error" && !m.text().startsWith("Failed to load resource")) errors.push(m.text()); });

async function numbers() {
  return page.$$eval("[data-testid]", (els) => Object.fromEntries(els.map((e) => [e.dataset.testid, e.textContent.trim()])));
}
async function load(query) {
  await page.goto(base + "/" + query);
  await page.waitForFunction(() => document.body.dataset.loaded || document.querySelector("#error").textContent, null, { timeout: 30000 });
  const failed = await page.$eval("#error", (e) => e.textContent);
  if (failed) throw new Error(`the page says: ${failed} (script errors: ${errors.join("; ")})`);
}

const views = {};
// 1. The live view, broken down by channel.
await load("?by=channel");
views.live = await numbers();
await page.screenshot({ path: `${out}/dashboard-live.png`, fullPage: true });

// Live updates: say so on stdout, and wait (up to 30 s) for the test to publish an event and
// the page to show the new head without a reload.
const before = views.live["head-seq"];
console.log("ready");
await page.waitForFunction((seq) => document.querySelector("[data-testid=head-seq]").textContent !== seq, before, { timeout: 30000 });
views.live = await numbers();
views.live_update = { before, after: views.live["head-seq"] };

// 2. An overdue handoff links to its lead.
const overdue = await page.$("[data-testid=overdue-lead]");
if (overdue) {
  await overdue.click();
  await page.waitForSelector("[data-testid=lead-stage]", { timeout: 30000 });
  views.overdue_click = await numbers();
  views.overdue_url = page.url();
}

// 3. Verify the chain from the page.
await page.click("#verify");
await page.waitForFunction(() => /chain ok|DAMAGED/.test(document.querySelector("#verify-result").textContent), null, { timeout: 30000 });
views.verified = await numbers();

// 4. Time travel from the URL alone: a fixed log position, another breakdown.
await load(`?at_seq=${atSeq}&by=campaign&model=linear`);
views.at_seq = await numbers();
views.at_seq_controls = await page.$eval("#controls", (f) => ({ at_seq: f.at_seq.value, by: f.by.value, model: f.model.value }));
await page.screenshot({ path: `${out}/dashboard-at-seq.png`, fullPage: true });

// 5. A lead's timeline and its deal, from the search box.
await load("?by=channel");
await page.fill("#lead-form input[name=lead]", lead);
await page.click("#lead-form button");
await page.waitForSelector("[data-testid=lead-stage]", { timeout: 30000 });
views.lead = await numbers();
views.lead_url = page.url();
await page.screenshot({ path: `${out}/dashboard-lead.png`, fullPage: true });

await browser.close();
console.log(JSON.stringify({ views, errors }));
