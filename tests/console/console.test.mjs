// Drives the web console in headless Debian Chromium (playwright-core, no browser download):
// the login form (when the agent requires authentication), every page renders, a topic created
// in the UI shows up, produced records move the throughput chart, and each page is saved as a
// screenshot under docs/screenshots/.
//
// Needs CONSOLE_URL (an agent's HTTP base URL); with CONSOLE_USER and CONSOLE_PASSWORD the agent
// is taken to require that login (a super user). scripts/console-test.sh starts one.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";
import { chromium } from "playwright-core";

const BASE = process.env.CONSOLE_URL;
const SHOTS = process.env.SCREENSHOT_DIR || "../../docs/screenshots";
const TOPIC = "console-demo";
const GROUP = "console-readers";
const USER = process.env.CONSOLE_USER;
const PASSWORD = process.env.CONSOLE_PASSWORD;
const AUTH = USER ? { authorization: "Basic " + Buffer.from(`${USER}:${PASSWORD}`).toString("base64") } : {};

let browser;
let page;

async function api(method, path, body) {
  const res = await fetch(BASE + "/api/v1" + path, {
    method,
    headers: Object.assign({ "content-type": "application/json" }, AUTH),
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  assert.ok(res.ok, `${method} ${path}: ${res.status} ${text}`);
  return text ? JSON.parse(text) : null;
}

async function produce(count) {
  const records = Array.from({ length: count }, (_, i) => ({
    key: "user-" + (i % 7),
    value: JSON.stringify({ event: "click", n: i }),
  }));
  await api("POST", `/topics/${TOPIC}/records`, { records });
}

async function shot(name) {
  await page.screenshot({ path: `${SHOTS}/${name}.png` });
}

before(async () => {
  assert.ok(BASE, "CONSOLE_URL must be set");
  mkdirSync(SHOTS, { recursive: true });
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    args: [
      "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync",
    ],
  });
  page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
  const external = [];
  page.on("request", r => { if (!r.url().startsWith(BASE)) external.push(r.url()); });
  page.on("pageerror", e => { throw e; });
  page.external = external;
  // The agent's Content-Security-Policy refuses inline scripts and styles: a console that
  // relied on one would break quietly, with only this message in the browser console.
  page.cspViolations = [];
  page.on("console", m => { if (/Content.Security.Policy/i.test(m.text())) page.cspViolations.push(m.text()); });
});

after(async () => {
  await browser?.close();
});

test("login: anonymous gets the form, a wrong password is refused, the right one works", { skip: !USER }, async () => {
  const anonymous = await fetch(BASE + "/api/v1/topics");
  assert.equal(anonymous.status, 401);
  assert.match(anonymous.headers.get("www-authenticate"), /^Basic /);
  await page.goto(BASE + "/ui/topics");
  await page.locator("#login").waitFor();
  await shot("login");
  await page.fill("#login input[name=username]", USER);
  await page.fill("#login input[name=password]", "wrong");
  await page.click("#login button");
  await page.locator("#status", { hasText: "Wrong user name or password" }).waitFor();
  await page.fill("#login input[name=username]", USER);
  await page.fill("#login input[name=password]", PASSWORD);
  await page.click("#login button");
  await page.locator("#create-topic").waitFor();
  assert.equal(await page.isVisible("#logout"), true);
  // Logging out forgets the credentials; logging in again restores the views.
  await page.click("#logout");
  await page.locator("#login").waitFor();
  await page.fill("#login input[name=username]", USER);
  await page.fill("#login input[name=password]", PASSWORD);
  await page.click("#login button");
  await page.locator("#create-topic").waitFor();
});

test("topics page: create a topic through the form", async () => {
  await page.goto(BASE + "/ui/topics");
  await page.fill("#create-topic input[name=name]", TOPIC);
  await page.fill("#create-topic input[name=partitions]", "3");
  await page.click("#create-topic button");
  const link = page.locator(`#view a[href="/ui/topics/${TOPIC}"]`);
  await link.waitFor();
  assert.equal(await link.textContent(), TOPIC);
  const topics = await api("GET", "/topics");
  assert.ok(topics.some(t => t.name === TOPIC && t.partitions === 3));
});

test("throughput chart moves when records are produced", async () => {
  const canvas = page.locator("#chart");
  // Wait for a first sample, then note where the chart is.
  await page.waitForFunction(() => Number(document.getElementById("chart").dataset.samples) >= 1);
  const before = Number(await canvas.getAttribute("data-records-total"));
  for (let i = 0; i < 5; i++) {
    await produce(40);
    await new Promise(r => setTimeout(r, 300));
  }
  await page.waitForFunction(
    min => Number(document.getElementById("chart").dataset.recordsTotal) >= min,
    before + 200,
    { timeout: 10000 },
  );
  await page.waitForFunction(() => Number(document.getElementById("chart").dataset.recordsRate) > 0);
  const rate = Number(await canvas.getAttribute("data-records-rate"));
  assert.ok(rate > 0, `records rate ${rate}`);
  assert.notEqual(await page.textContent("#rate-records"), "0");
  await shot("topics");
});

test("topic page: partitions, records and produce form", async () => {
  await page.goto(`${BASE}/ui/topics/${TOPIC}`);
  await page.locator("#view h1").waitFor();
  assert.match(await page.textContent("#view h1"), new RegExp(TOPIC));
  await page.fill("#produce input[placeholder='key (optional)']", "from-ui");
  await page.fill("#produce input[placeholder=value]", "hello from the console");
  await page.click("#produce button");
  await page.locator("td", { hasText: "hello from the console" }).waitFor();
  const rows = await page.locator("#view table").first().locator("tbody tr").count();
  assert.equal(rows, 3, "one row per partition");
  // Let the chart gather a few points for the screenshot.
  await page.waitForFunction(() => Number(document.getElementById("chart").dataset.samples) >= 3);
  await shot("topic");
});

test("groups page shows a group and its lag", async () => {
  await api("POST", `/groups/${GROUP}/offsets`, {
    offsets: [0, 1, 2].map(partition => ({ topic: TOPIC, partition, offset: 0 })),
  });
  await page.goto(BASE + "/ui/groups");
  const link = page.locator(`#view a[href="/ui/groups/${GROUP}"]`);
  await link.waitFor();
  const lagCell = await page.locator("#view tbody tr", { hasText: GROUP }).locator("td").last();
  assert.ok(Number(await lagCell.textContent()) > 0, "group has lag");
  await shot("groups");
  await link.click();
  await page.locator("#view h1", { hasText: GROUP }).waitFor();
  assert.equal(await page.locator("#view table").first().locator("tbody tr").count(), 3);
  await shot("group");
});

test("agents page shows this agent and its leases", async () => {
  await page.goto(BASE + "/ui/agents");
  await page.locator("td", { hasText: "(this agent)" }).waitFor();
  const leases = await page.locator("#view table").nth(1).locator("tbody tr").count();
  assert.ok(leases >= 3, `leases listed: ${leases}`);
  await shot("agents");
});

test("the console loads nothing from outside the agent and breaks no CSP rule", () => {
  assert.deepEqual(page.external, []);
  assert.deepEqual(page.cspViolations, []);
});
