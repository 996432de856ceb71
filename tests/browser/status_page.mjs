// Loads the status page of a running `affect-edge run --http ADDR` in headless Chromium and
// checks what a person would see: no console errors, the plot shows at least two tracks, and
// it advances within 5 s. Keeps a screenshot. Prints one JSON line with what it measured.
//
//   node tests/browser/status_page.mjs http://127.0.0.1:PORT/ screenshot.png
import { chromium } from "playwright-core";

const [url, screenshot] = process.argv.slice(2);
if (!url || !screenshot) {
  console.error("usage: status_page.mjs URL SCREENSHOT.png");
  process.exit(2);
}
const executablePath = process.env.CHROMIUM || "/usr/bin/chromium";
const browser = await chromium.launch({
  executablePath,
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
const problems = [];
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 1000 } });
  page.on("console", m => { if (m.type() === "error") problems.push(`console: ${m.text()}`); });
  page.on("pageerror", e => problems.push(`page error: ${e.message}`));
  page.on("requestfailed", r => problems.push(`request failed: ${r.url()} ${r.failure()?.errorText}`));
  page.on("request", r => {
    if (!r.url().startsWith(new URL(url).origin) && !r.url().startsWith("data:")) {
      problems.push(`request outside the device: ${r.url()}`);
    }
  });
  await page.goto(url, { waitUntil: "load", timeout: 30000 });
  const read = () => page.evaluate(() => ({
    updates: Number(document.body.dataset.updates || 0),
    tracks: Number(document.body.dataset.tracks || 0),
    points: Number(document.body.dataset.points || 0),
    newest: Number(document.body.dataset.newest || 0),
  }));
  // Two tracks on the plot (faces need the detector and a few frames).
  await page.waitForFunction(() => Number(document.body.dataset.tracks || 0) >= 2,
                             null, { timeout: 60000, polling: 100 });
  const first = await read();
  // The plot advances: newer points arrive within 5 s.
  await page.waitForFunction(n => Number(document.body.dataset.newest || 0) > n,
                             first.newest, { timeout: 5000, polling: 100 });
  const second = await read();
  const pixels = await page.evaluate(() => {
    const c = document.getElementById("valence");
    const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
    let coloured = 0;
    for (let i = 0; i < d.length; i += 4) if (d[i + 3] > 0 && Math.abs(d[i] - d[i + 2]) > 60) coloured++;
    return coloured;
  });
  if (pixels < 100) problems.push(`the valence plot has only ${pixels} coloured pixels`);
  await page.screenshot({ path: screenshot, fullPage: true });
  console.log(JSON.stringify({ first, second, plotted_pixels: pixels, problems }));
} catch (e) {
  problems.push(String(e));
  console.log(JSON.stringify({ problems }));
} finally {
  await browser.close();
}
process.exit(problems.length ? 1 : 0);
