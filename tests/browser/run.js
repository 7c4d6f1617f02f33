// Opens page.html in headless Chromium (the system's, through puppeteer-core) against a broker's
// WebSocket listener and prints, one line each as they happen: `pid <n>`, the page's status once
// subscribed (`subscribed <granted qos>`), `message <topic> <payload>` for each of <count>
// messages, then `done`. Exits 0 then, 1 on any failure. Every wait is bounded.
//
// Usage: node run.js <ws-url> <topic-filter> <count>
// CHROMIUM names the browser binary (default /usr/bin/chromium).

"use strict";

const path = require("node:path");
const { pathToFileURL } = require("node:url");
const puppeteer = require("puppeteer-core");

const WAIT_MS = 20000;

async function main() {
  const [url, topic, count] = process.argv.slice(2);
  if (!url || !topic || !count) throw new Error("usage: node run.js <ws-url> <topic-filter> <count>");
  // The test kills this process group if it gives up, so no browser outlives it.
  console.log(`pid ${process.pid}`);
  const args = ["--disable-gpu", "--disable-dev-shm-usage"];
  // Chromium's sandbox does not run as root (CI, containers).
  if (process.getuid && process.getuid() === 0) args.push("--no-sandbox");
  const browser = await puppeteer.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    headless: true,
    // Over a pipe, the browser also exits when this process dies.
    pipe: true,
    args,
    timeout: 60000,
  });
  try {
    const page = await browser.newPage();
    page.on("console", (message) => console.error(`page console: ${message.text()}`));
    page.on("pageerror", (error) => console.error(`page error: ${error.message}`));
    const file = pathToFileURL(path.join(__dirname, "page.html"));
    file.search = new URLSearchParams({ url, topic }).toString();
    await page.goto(file.href);
    await page.waitForFunction(
      () => /^(subscribed|error)/.test(document.getElementById("status").textContent),
      { timeout: WAIT_MS },
    );
    const status = await page.$eval("#status", (element) => element.textContent);
    console.log(status);
    if (!status.startsWith("subscribed")) throw new Error(`page status: ${status}`);
    let seen = 0;
    while (seen < Number(count)) {
      await page.waitForFunction((n) => document.querySelectorAll("#messages li").length > n, { timeout: WAIT_MS }, seen);
      const items = await page.$$eval("#messages li", (lis) => lis.map((li) => li.textContent));
      for (; seen < items.length && seen < Number(count); seen++) console.log(`message ${items[seen]}`);
    }
    console.log("done");
  } finally {
    await browser.close();
  }
}

main().catch((error) => {
  console.error(error && error.stack ? error.stack : String(error));
  process.exitCode = 1;
});
