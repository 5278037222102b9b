// Browser tests of the cadbroker portal: Debian's headless Chromium driven by playwright-core.
// A real broker (the binary cargo built) runs with the local desktop backend on 127.0.0.1
// ports; a drafter signs in, requests a workstation, waits for Ready, opens the desktop
// through the gateway and sees noVNC draw LibreCAD, then ends the session; an admin changes a
// pool's capacity and ends someone else's session. Screenshots go to ./screenshots/.
//
// Needs: chromium, and the desktop programs (apt-get install chromium xvfb openbox librecad
// x11vnc novnc websockify). Without them the tests are skipped locally and fail in CI (CI=true).
import { execFileSync, spawn } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { chromium } from "playwright-core";

const HERE = new URL(".", import.meta.url).pathname;
const SHOTS = join(HERE, "screenshots");
const CHROMIUM = process.env.CHROMIUM ?? "/usr/bin/chromium";
const DESKTOP_PROGRAMS = ["Xvfb", "openbox", "librecad", "x11vnc", "websockify"];
const STEP = 120_000;

function onPath(program) {
  return (process.env.PATH ?? "").split(":").some((dir) => existsSync(join(dir, program)));
}

function missing() {
  const absent = DESKTOP_PROGRAMS.filter((p) => !onPath(p));
  if (!existsSync(CHROMIUM)) absent.push(CHROMIUM);
  if (!existsSync("/usr/share/novnc/vnc.html")) absent.push("novnc");
  return absent;
}

function brokerBinary() {
  if (process.env.CADBROKER_BIN) return process.env.CADBROKER_BIN;
  const meta = JSON.parse(execFileSync("cargo", ["metadata", "--format-version", "1", "--no-deps"], { cwd: join(HERE, "../..") }));
  return join(meta.target_directory, "debug", "cadbroker");
}

function freePort() {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
    server.on("error", reject);
  });
}

async function until(what, check, timeout = STEP) {
  const started = Date.now();
  for (;;) {
    const value = await check().catch(() => undefined);
    if (value) return value;
    if (Date.now() - started > timeout) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 250));
  }
}

/** Direct children of `pid` with their start times (from /proc), to prove they are gone later. */
function childrenOf(pid) {
  const found = [];
  for (const entry of execFileSync("ls", ["/proc"]).toString().split("\n")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, "utf8");
      const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      if (Number(fields[1]) === pid) found.push({ pid: Number(entry), start: fields[19], name: stat.slice(stat.indexOf("(") + 1, stat.lastIndexOf(")")) });
    } catch { /* gone meanwhile */ }
  }
  return found;
}

function stillRunning(proc) {
  try {
    const stat = readFileSync(`/proc/${proc.pid}/stat`, "utf8");
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return fields[19] === proc.start && fields[0] !== "Z";
  } catch {
    return false;
  }
}

const absent = missing();
const skip = absent.length > 0 && process.env.CI !== "true" ? `not installed: ${absent.join(", ")}` : false;
if (absent.length > 0 && process.env.CI === "true") {
  throw new Error(`browser tests need: ${absent.join(", ")} (apt-get install chromium xvfb openbox librecad x11vnc novnc websockify)`);
}

describe("cadbroker portal in Chromium", { skip }, () => {
  let broker, base, admin, dir, browser, bin, children = [];

  before(async () => {
    mkdirSync(SHOTS, { recursive: true });
    bin = brokerBinary();
    dir = mkdtempSync(join(tmpdir(), "cadbroker-browser-"));
    const [port, adminPort] = [await freePort(), await freePort()];
    base = `http://127.0.0.1:${port}`;
    admin = `http://127.0.0.1:${adminPort}`;
    broker = spawn(bin, ["serve", "--backend", "desktop"], {
      cwd: dir, // no config/ here: the built-in default, with its dev key under dir/.cadbroker
      env: { ...process.env, CADBROKER_LISTEN: `127.0.0.1:${port}`, CADBROKER_ADMIN_LISTEN: `127.0.0.1:${adminPort}`, RUST_LOG: "info" },
      stdio: ["ignore", "inherit", "inherit"],
    });
    await until("the broker", async () => (await fetch(`${admin}/readyz`)).ok, 60_000);
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      headless: true,
      args: process.getuid?.() === 0 ? ["--no-sandbox"] : [],
    });
  });

  after(async () => {
    await browser?.close();
    if (broker && broker.exitCode === null) {
      children = childrenOf(broker.pid);
      broker.kill("SIGTERM");
      await until("the broker to stop", async () => broker.exitCode !== null || broker.signalCode !== null, 30_000);
    }
    // Every process the broker started (Xvfb, openbox, LibreCAD, x11vnc, websockify) is gone.
    const left = children.filter(stillRunning);
    if (dir) rmSync(dir, { recursive: true, force: true });
    assert.deepEqual(left, [], "processes left after the broker stopped");
  });

  function token(user, ...args) {
    return execFileSync(bin, ["token", "--user", user, ...args], { cwd: dir }).toString().trim();
  }

  async function api(method, path, bearer, body) {
    const res = await fetch(`${base}${path}`, {
      method,
      headers: { authorization: `Bearer ${bearer}`, "content-type": "application/json" },
      body: body ? JSON.stringify(body) : undefined,
    });
    return { status: res.status, body: await res.json().catch(() => null) };
  }

  async function signIn(page, user, { groups = "drafters", admin = false } = {}) {
    await page.goto(`${base}/`);
    assert.equal(new URL(page.url()).pathname, "/portal/");
    // Keyboard only: type into the labelled fields and submit with Enter.
    await page.getByLabel("User name").fill(user);
    await page.getByLabel("Groups (comma separated)").fill(groups);
    if (admin) await page.getByLabel("Sign in as broker admin").check();
    await page.getByLabel("User name").press("Enter");
    await page.getByText(`Signed in as ${user}`).waitFor();
  }

  test("a drafter requests a workstation, opens the desktop and ends the session", { timeout: 5 * STEP }, async () => {
    const context = await browser.newContext({ viewport: { width: 1366, height: 768 }, locale: "en-GB" });
    const page = await context.newPage();
    await signIn(page, "alice");
    const cookies = await context.cookies();
    const portal = cookies.find((c) => c.name === "cadbroker_portal");
    assert.ok(portal?.httpOnly && portal.secure, "the portal cookie is HttpOnly and Secure");
    assert.equal(await page.evaluate(() => document.cookie), "", "scripts see no cookie");

    await page.locator("#request-drafting-2d").click();
    const card = page.locator("#sessions li[data-session]").first();
    await card.locator('[data-phase="Ready"]').waitFor({ timeout: STEP });
    const id = await card.getAttribute("data-session");
    await page.screenshot({ path: join(SHOTS, "portal-drafter.png") });

    const [desktop] = await Promise.all([context.waitForEvent("page"), card.getByRole("button", { name: "Open desktop" }).click()]);
    await desktop.waitForURL(/\/connect\/.+\/vnc\.html\?/, { timeout: STEP });
    assert.ok(desktop.url().startsWith(`${base}/connect/${id}/`), desktop.url());
    const connect = (await context.cookies()).find((c) => c.name === "cadbroker_connect");
    assert.ok(connect?.secure && connect.httpOnly, "the gateway's Secure cookie was kept on http://127.0.0.1");
    assert.equal(connect.path, `/connect/${id}/`);

    // noVNC draws the remote screen into a canvas: wait until it shows more than one colour.
    const colours = await until("the noVNC canvas to draw the desktop", () => desktop.evaluate(() => {
      const canvas = document.querySelector("#noVNC_container canvas, canvas");
      if (!canvas || canvas.width < 100) return 0;
      const data = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
      const seen = new Set();
      for (let i = 0; i < data.length; i += 4 * 97) seen.add((data[i] << 16) | (data[i + 1] << 8) | data[i + 2]);
      return seen.size > 8 ? seen.size : 0;
    }));
    assert.ok(colours > 8, `canvas colours: ${colours}`);
    await desktop.waitForTimeout(3000); // LibreCAD finishes painting; noVNC's status line fades
    await desktop.screenshot({ path: join(SHOTS, "desktop.png") });
    await desktop.close();

    await page.bringToFront();
    await card.getByRole("button", { name: "End session" }).click();
    await page.locator(`#sessions li[data-session="${id}"] [data-phase="Ended"]`).waitFor({ timeout: STEP });

    // The language switch and Accept-Language both give Dutch.
    await page.getByLabel("Language").selectOption("nl");
    await page.getByRole("heading", { name: "Mijn sessies" }).waitFor();
    await page.getByLabel("Taal").selectOption("en");
    await context.close();
    const dutch = await browser.newContext({ locale: "nl-NL" });
    const nlPage = await dutch.newPage();
    await nlPage.goto(`${base}/portal/`);
    await nlPage.getByRole("heading", { name: "Inloggen" }).first().waitFor();
    await dutch.close();
  });

  test("a queued request moves up live, and an idle warning is lifted by keeping working", { timeout: 4 * STEP }, async () => {
    // A one-workstation pool whose sessions are warned after 5 s without activity.
    const rootToken = token("pool-admin", "--admin");
    const quick = await api("PUT", "/api/v1/pools/quick", rootToken, {
      displayName: "Quick check", gpusPerWorkstation: 1, capacity: { min: 0, max: 1, warm: 0 },
      access: { allAuthenticated: true },
      limits: { idleTimeout: "30s", maxLifetime: "1h", warnBefore: "25s", reconnectGrace: "2m" },
    });
    assert.equal(quick.status, 201, JSON.stringify(quick.body));

    const carolContext = await browser.newContext({ viewport: { width: 1366, height: 768 }, locale: "en-GB" });
    const carol = await carolContext.newPage();
    await signIn(carol, "carol", { groups: "" });
    await carol.locator("#request-quick").click();
    const carolCard = carol.locator("#sessions li[data-session]").first();
    await carolCard.locator('[data-phase="Ready"]').waitFor({ timeout: STEP });

    // The pool is full: dave waits in the queue and sees his position.
    const daveContext = await browser.newContext({ viewport: { width: 1366, height: 768 }, locale: "en-GB" });
    const dave = await daveContext.newPage();
    await signIn(dave, "dave", { groups: "" });
    await dave.locator("#request-quick").click();
    const daveCard = dave.locator("#sessions li[data-session]").first();
    await daveCard.locator('[data-phase="Queued"]').waitFor({ timeout: STEP });
    await daveCard.getByText("Position 1 in the queue").waitFor();

    // Idle: carol is warned live, and "Keep working" lifts the warning.
    const warning = carolCard.getByRole("alert");
    await warning.waitFor({ timeout: STEP });
    assert.match(await warning.textContent(), /idle/);
    await carolCard.getByRole("button", { name: "Keep working" }).click();
    await warning.waitFor({ state: "detached", timeout: 3000 });

    // Carol ends; dave's request moves on to Starting and Ready without a reload.
    await carolCard.getByRole("button", { name: "End session" }).click();
    await daveCard.locator('[data-phase="Ready"]').waitFor({ timeout: STEP });
    await daveCard.getByRole("button", { name: "End session" }).click();
    await daveCard.locator('[data-phase="Ended"]').waitFor({ timeout: STEP });
    await carolContext.close();
    await daveContext.close();
  });

  test("an admin changes a pool's capacity and ends another user's session", { timeout: 3 * STEP }, async () => {
    const bob = token("bob", "--group", "drafters");
    const created = await api("POST", "/api/v1/sessions", bob, { pool: "drafting-2d" });
    assert.ok([201, 202].includes(created.status), JSON.stringify(created));

    const context = await browser.newContext({ viewport: { width: 1366, height: 768 }, locale: "en-GB" });
    const page = await context.newPage();
    await signIn(page, "root", { groups: "", admin: true });
    const block = page.locator('[data-admin-pool="drafting-2d"]');
    await block.waitFor();
    await block.getByLabel("Maximum").fill("6");
    await block.getByLabel("Warm buffer").fill("1");
    await block.getByRole("button", { name: "Save capacity" }).click();
    await page.getByText("Capacity of drafting-2d saved.").waitFor();
    const rootToken = token("checker", "--admin");
    const pools = await api("GET", "/api/v1/pools", rootToken);
    const pool = pools.body.find((p) => p.name === "drafting-2d");
    assert.deepEqual(pool.capacity, { min: 0, max: 6, warm: 1 });
    await block.getByText("0–6 (warm 1)").waitFor();

    const end = page.getByRole("button", { name: `End ${created.body.id}` });
    await end.waitFor({ timeout: STEP });
    await page.screenshot({ path: join(SHOTS, "portal-admin.png"), fullPage: true });
    await end.click();
    await until("bob's session to end", async () => {
      const s = await api("GET", `/api/v1/sessions/${created.body.id}`, bob);
      return ["Ending", "Ended"].includes(s.body.phase) && s.body.endReason === "AdminEnded";
    });
    await context.close();
  });
});
