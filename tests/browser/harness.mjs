// What the browser tests share: the node's address from the command line, step timings, a
// watchdog, REST calls, and browser contexts whose page errors and dialogs are collected.
// Screenshots go to <repo>/screenshots/ (kept out of git), or $SCREENSHOTS_DIR.

import { mkdirSync } from 'node:fs';
import { basename } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

export const base = process.argv[2];
if (!base) {
  console.error(`usage: node ${basename(process.argv[1])} <base url of a running node>`);
  process.exit(2);
}
export const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
export const SHOTS = process.env.SCREENSHOTS_DIR || fileURLToPath(new URL('../../screenshots/', import.meta.url));
export const PASSWORD = 'correct horse battery';
/// Fresh names, so a script can also run against a node that has seen it before.
export const suffix = Math.random().toString(36).slice(2, 6);
mkdirSync(SHOTS, { recursive: true });

const started = Date.now();

export function step(name) {
  console.log(`[${((Date.now() - started) / 1000).toFixed(1)}s] ${name}`);
}

export function assert(cond, message) {
  if (!cond) throw new Error(`assertion failed: ${message}`);
}

/// Fails the run if it takes longer than `seconds`: a hang fails loudly instead of stalling CI.
export function watchdog(seconds) {
  return setTimeout(() => {
    console.error(`FAIL: browser test took over ${seconds} s`);
    process.exit(1);
  }, seconds * 1000);
}

/// REST from the test itself, retrying rate-limited requests as the spec says.
export async function rest(token, method, path, body) {
  for (;;) {
    const headers = body ? { 'Content-Type': 'application/json' } : {};
    if (token) headers.Authorization = `Bearer ${token}`;
    const res = await fetch(`${base}/api/v1${path}`, {
      method,
      headers,
      body: body ? JSON.stringify(body) : undefined,
    });
    if (res.status === 429) {
      const { retry_after: wait } = await res.json();
      await new Promise((r) => setTimeout(r, Math.ceil(wait * 1000)));
      continue;
    }
    if (!res.ok) throw new Error(`${method} ${path}: ${res.status} ${await res.text()}`);
    return res.status === 204 ? null : res.json();
  }
}

/// Debian's Chromium, headless, with `extra` flags.
export function launch(extra = []) {
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', ...extra],
  });
}

/// Page errors, console errors and dialogs seen in any context; a run should end with none.
export const problems = [];
export const dialogs = [];

/// A browser context for one user, with `options` for `browser.newContext`.
export async function openUser(browser, name, options = {}) {
  const context = await browser.newContext({ viewport: { width: 1366, height: 820 }, ...options });
  const page = await context.newPage();
  page.setDefaultTimeout(10_000);
  page.on('pageerror', (e) => problems.push(`${name}: page error: ${e.message}`));
  page.on('console', (m) => {
    // Chromium logs every non-2xx response; those are expected API answers, not client bugs.
    if (m.type() === 'error' && !m.text().startsWith('Failed to load resource')) problems.push(`${name}: console: ${m.text()}`);
  });
  page.on('dialog', (d) => {
    dialogs.push(`${name}: ${d.type()} ${d.message()}`);
    d.dismiss();
  });
  return { name, context, page };
}

/// Reports a failed run: a screenshot of each user's page as it was (named `prefix-<user>`),
/// the error, and the page problems seen; the script then exits non-zero.
export async function fail(err, users, prefix) {
  for (const user of users) {
    await user.page.screenshot({ path: `${SHOTS}/${prefix}-${user.name.slice(0, 3)}.png` }).catch(() => {});
  }
  console.error(`FAIL: ${err.stack || err}`);
  if (problems.length) console.error(`page problems:\n${problems.join('\n')}`);
  process.exitCode = 1;
}
