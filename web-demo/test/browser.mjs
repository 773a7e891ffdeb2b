// Drives the web demo in headless Chromium (playwright-core, the system's Chromium; no browser
// download):
//
// - two pages in one room over WebTransport publish their fake camera and microphone and must
//   see and hear each other; mute and leave reach the other page;
// - a page on WebTransport and a page forced onto the WebRTC fallback (`?transport=webrtc`) in
//   one room must see each other: the WebTransport page decodes the fallback page's VP8 on its
//   canvas, the fallback page's <video> presents frames of the WebTransport page's camera;
// - a page given a wrong certificate hash must say so in words when it is held to WebTransport,
//   and fall back to WebRTC otherwise; a WebTransport that never connects and a browser without
//   WebTransport fall back too.
//
// Run by tests/tests/browser/demo.rs (`cargo test -p strait-tests --test browser`), which starts
// a gateway and passes its HTTP origin:
//
//     STRAIT_DEMO_URL=http://127.0.0.1:8080/ node web-demo/test/browser.mjs
//
// With STRAIT_SCENARIO=no-bridge (a gateway whose WebRTC bridge is off) it checks instead that a
// page forced onto the WebRTC fallback explains why it cannot join; with STRAIT_SCENARIO=turn (a
// gateway with TURN on), that such a page gathers relay candidates with the servers of
// `ServerHello`. Against a node of a cluster (tests/tests/browser/cluster.rs): with
// STRAIT_SCENARIO=redirect, that a page of room STRAIT_ROOM, which another node serves, follows
// the redirect to STRAIT_REDIRECT_TO and sees and decodes the participant STRAIT_PEER there; with
// STRAIT_SCENARIO=unavailable (the cluster's Redis is down), that a page of a new room retries
// and then shows a retryable error; with STRAIT_SCENARIO=node-loss, that a page redirected to
// STRAIT_REDIRECT_TO, which the test kills, goes on at STRAIT_FALLBACK_TO afresh, publishes again
// and decodes STRAIT_PEER there.
//
// Environment: STRAIT_DEMO_URL (required), STRAIT_CHROMIUM (default /usr/bin/chromium),
// STRAIT_ARTIFACTS (screenshots; default target/browser-artifacts), STRAIT_WAIT_MS (bound of each
// wait; default 30000). Exit status 0 when every check passed.

import { mkdirSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { launchChromium } from './chromium.mjs';

const here = dirname(fileURLToPath(import.meta.url));

if (process.env.NODE_TEST_CONTEXT) {
  // `node --test web-demo/test/` picks up every file of a test directory; this one needs a gateway.
  const { test } = await import('node:test');
  test('browser end-to-end', { skip: 'needs a gateway: run `cargo test -p strait-tests --test browser`' }, () => {});
} else {
  await main();
}

async function main() {
  const demoUrl = process.env.STRAIT_DEMO_URL;
  if (!demoUrl) fail('STRAIT_DEMO_URL is not set (the gateway\'s HTTP origin, e.g. http://127.0.0.1:8080/)');
  const artifacts = resolve(process.env.STRAIT_ARTIFACTS ?? join(here, '..', '..', 'target', 'browser-artifacts'));
  const waitMs = Number(process.env.STRAIT_WAIT_MS ?? 30000);
  mkdirSync(artifacts, { recursive: true });

  // A hard stop in case something hangs outside the bounded waits below.
  const watchdog = setTimeout(() => {
    console.error('browser test: overall time limit reached');
    process.exit(2);
  }, waitMs * 8 + 30000);

  let browser;
  let chromiumPath;
  try {
    ({ browser, executablePath: chromiumPath } = await launchChromium());
  } catch (e) {
    fail(e.message);
  }
  console.log(`browser test: ${browser.version()} at ${chromiumPath}, demo at ${demoUrl}`);

  const pages = [];
  const openPage = async (label, url, prepare) => {
    const context = await browser.newContext({ viewport: { width: 1000, height: 720 } });
    const page = await context.newPage();
    const logs = [];
    page.on('console', (m) => logs.push(`[${label}] ${m.type()}: ${m.text()}`));
    page.on('pageerror', (e) => logs.push(`[${label}] page error: ${e.message}`));
    if (prepare) await prepare(page);
    await page.goto(url);
    const entry = { label, page, logs, close: () => context.close() };
    pages.push(entry);
    return entry;
  };

  const room = `browser-${Date.now().toString(36)}`;
  const pageUrl = (name, params = {}) => {
    const u = new URL(demoUrl);
    u.searchParams.set('room', params.room ?? room);
    u.searchParams.set('name', name);
    if (params.transport) u.searchParams.set('transport', params.transport);
    return u.toString();
  };

  let ok = false;
  try {
    const context = { browser, openPage, pageUrl, artifacts, waitMs, room };
    if (process.env.STRAIT_SCENARIO === 'no-bridge') await noBridge(context);
    else if (process.env.STRAIT_SCENARIO === 'turn') await turnServers(context);
    else if (process.env.STRAIT_SCENARIO === 'redirect') await redirected(context);
    else if (process.env.STRAIT_SCENARIO === 'unavailable') await unavailable(context);
    else if (process.env.STRAIT_SCENARIO === 'node-loss') await nodeLoss(context);
    else await rooms(context);
    ok = true;
  } catch (e) {
    console.error(`browser test FAILED: ${e.message}`);
    for (const { label, page, logs } of pages) {
      try {
        const hook = await page.evaluate(() => JSON.stringify(window.strait ?? null));
        console.error(`--- ${label}: window.strait = ${hook}`);
        await page.screenshot({ path: join(artifacts, `failure-${label}.png`) });
      } catch (inner) {
        console.error(`--- ${label}: cannot read the page: ${inner.message}`);
      }
      for (const line of logs.slice(-30)) console.error(line);
    }
  } finally {
    clearTimeout(watchdog);
    await browser.close().catch(() => {});
  }
  process.exit(ok ? 0 : 1);
}

/**
 * The rooms: two WebTransport pages; a WebTransport page with WebRTC fallback pages; a wrong
 * certificate; WebTransport never connecting or missing.
 */
async function rooms({ browser, openPage, pageUrl, artifacts, waitMs, room }) {
  const alice = await openPage('alice', pageUrl('alice'));
  const bob = await openPage('bob', pageUrl('bob'));

  for (const [me, other] of [
    [alice, bob],
    [bob, alice],
  ]) {
    const remote = await waitForRemoteVideo(me, other.label, waitMs);
    console.log(`browser test: ${me.label} decodes ${other.label}'s video (participant ${remote.id}, ${remote.width}x${remote.height})`);
    await waitForMovingPicture(me, remote.id, waitMs);
    console.log(`browser test: ${me.label} sees ${other.label}'s picture change over time`);
    const audio = await waitForStat(me, remote.id, 'audioFrames', 1, waitMs);
    console.log(`browser test: ${me.label} decoded ${audio} audio frames of ${other.label}`);
  }

  await alice.page.screenshot({ path: join(artifacts, 'alice.png') });
  await bob.page.screenshot({ path: join(artifacts, 'bob.png') });
  await sideBySide(browser, artifacts, ['alice.png', 'bob.png'], 'two-pages.png');

  // Mute: alice's microphone button sends SetMute; bob's tile of alice says so (TrackMuted).
  const aliceOnBob = await remoteId(bob, 'alice');
  await alice.page.click('#mute-audio');
  await bob.page.waitForFunction(
    (id) => document.querySelector(`.tile[data-participant="${id}"] .badge`)?.textContent.includes('mic off'),
    aliceOnBob,
    { timeout: waitMs },
  );
  console.log('browser test: alice muted her microphone and bob sees "mic off"');

  // Leave: bob leaves; alice's participant list and grid drop him (ParticipantLeft).
  const bobOnAlice = await remoteId(alice, 'bob');
  await bob.page.click('#leave');
  await bob.page.waitForFunction(() => window.strait.state.phase === 'closed', null, { timeout: waitMs });
  await alice.page.waitForFunction(
    (id) => !document.querySelector(`[data-participant="${id}"]`) && !window.strait.stats.remote[id],
    bobOnAlice,
    { timeout: waitMs },
  );
  const bobError = await bob.page.evaluate(() => window.strait.state.error);
  if (bobError) throw new Error(`leaving showed an error: ${bobError}`);
  console.log('browser test: bob left and alice no longer lists him');

  for (const { label, page } of [alice, bob]) {
    const hook = await page.evaluate(() => JSON.parse(JSON.stringify(window.strait)));
    console.log(`browser test: ${label} sent ${JSON.stringify(hook.stats.sent)}; received ${JSON.stringify(hook.stats.remote)}; audio output ${JSON.stringify(hook.stats.audio)}; rtt ${hook.stats.rttMs?.toFixed(2)} ms`);
  }
  await alice.close();
  await bob.close();

  // One page on WebTransport, one forced onto the WebRTC fallback, in one room.
  const mixed = `mixed-${Date.now().toString(36)}`;
  // rtc is there first: it receives quic's tracks by renegotiating when they are published.
  const rtc = await openPage('rtc', pageUrl('rtc', { room: mixed, transport: 'webrtc' }));
  await expectTransport(rtc, 'webrtc', 'WebRTC fallback', waitMs);
  const quic = await openPage('quic', pageUrl('quic', { room: mixed }));
  await expectTransport(quic, 'webtransport', 'WebTransport', waitMs);
  console.log('browser test: quic is on WebTransport, rtc on the WebRTC fallback, and each page says so');

  const rtcOnQuic = await waitForRemoteVideo(quic, 'rtc', waitMs);
  console.log(`browser test: quic decodes rtc's WebRTC video (participant ${rtcOnQuic.id}, ${rtcOnQuic.width}x${rtcOnQuic.height})`);
  await waitForMovingPicture(quic, rtcOnQuic.id, waitMs);
  console.log("browser test: quic sees rtc's picture change over time");
  const rtcAudio = await waitForStat(quic, rtcOnQuic.id, 'audioFrames', 1, waitMs);
  console.log(`browser test: quic decoded ${rtcAudio} audio frames of rtc`);

  const quicOnRtc = await waitForRemoteVideo(rtc, 'quic', waitMs);
  const presented = await waitForPresentedFrames(rtc, quicOnRtc.id, 10, waitMs);
  console.log(`browser test: rtc's <video> of quic presents frames (${presented.before} → ${presented.after}, ${quicOnRtc.width}x${quicOnRtc.height})`);
  await waitForMovingPicture(rtc, quicOnRtc.id, waitMs);
  console.log("browser test: rtc sees quic's picture change over time");
  const quicAudio = await waitForStat(rtc, quicOnRtc.id, 'audioFrames', 1, waitMs);
  console.log(`browser test: rtc received ${quicAudio} audio packets of quic`);
  for (const [me, other] of [
    [quic, 'rtc'],
    [rtc, 'quic'],
  ]) {
    const listed = await me.page.locator('#participants li').allInnerTexts();
    if (!listed.includes(other)) throw new Error(`${me.label}'s participant list is ${JSON.stringify(listed)}, without ${other}`);
  }
  console.log('browser test: each page lists the other');

  await quic.page.screenshot({ path: join(artifacts, 'mixed-webtransport.png') });
  await rtc.page.screenshot({ path: join(artifacts, 'mixed-webrtc.png') });
  await sideBySide(browser, artifacts, ['mixed-webtransport.png', 'mixed-webrtc.png'], 'mixed-room.png');

  // A second fallback page joins the room as it is: its first offer receives quic's and rtc's
  // tracks along with sending its own.
  const late = await openPage('late', pageUrl('late', { room: mixed, transport: 'webrtc' }));
  await expectTransport(late, 'webrtc', 'WebRTC fallback', waitMs);
  for (const other of ['quic', 'rtc']) {
    const seen = await waitForRemoteVideo(late, other, waitMs);
    const frames = await waitForPresentedFrames(late, seen.id, 10, waitMs);
    console.log(`browser test: late's <video> of ${other} presents frames (${frames.before} → ${frames.after})`);
  }
  await late.close();
  await quic.page.waitForFunction(() => Object.keys(window.strait.stats.remote).length === 1, null, { timeout: waitMs });
  console.log('browser test: late joined with tracks to receive in its first offer, saw both, and left');

  // "Stop camera" on the fallback page: its track sends black frames, which quic decodes.
  await rtc.page.click('#mute-video');
  await waitForDarkPicture(quic, rtcOnQuic.id, waitMs);
  console.log('browser test: rtc stopped its camera and quic shows a black picture of it');

  // Leave on the fallback page: quic drops it.
  await rtc.page.click('#leave');
  await rtc.page.waitForFunction(() => window.strait.state.phase === 'closed', null, { timeout: waitMs });
  await quic.page.waitForFunction(
    (id) => !document.querySelector(`[data-participant="${id}"]`) && !window.strait.stats.remote[id],
    rtcOnQuic.id,
    { timeout: waitMs },
  );
  const rtcError = await rtc.page.evaluate(() => window.strait.state.error);
  if (rtcError) throw new Error(`leaving over WebRTC showed an error: ${rtcError}`);
  console.log('browser test: rtc left and quic no longer lists it');
  for (const { label, page } of [quic, rtc]) {
    const hook = await page.evaluate(() => JSON.parse(JSON.stringify(window.strait)));
    console.log(`browser test: ${label} (${hook.state.transport}) sent ${JSON.stringify(hook.stats.sent)}; rtt ${hook.stats.rttMs?.toFixed(2)} ms; ICE servers ${JSON.stringify(hook.stats.iceServers ?? null)}`);
  }
  await quic.close();
  await rtc.close();

  // A wrong certificate hash (as a stale /v1/cert-hashes would give) must be explained in words
  // when the page is held to WebTransport, and make it fall back to WebRTC otherwise.
  const wrongHash = Buffer.alloc(32, 0xab);
  const wrongHashes = (page) =>
    page.route('**/v1/cert-hashes', (route) =>
      route.fulfill({
        json: { hashes: [{ algorithm: 'sha-256', value: wrongHash.toString('base64'), hex: wrongHash.toString('hex') }] },
      }),
    );
  const mallory = await openPage('wrong-certificate', pageUrl('mallory', { transport: 'webtransport' }), wrongHashes);
  await mallory.page.waitForFunction(() => window.strait?.state.error, null, { timeout: waitMs });
  const shown = await mallory.page.locator('#error').innerText();
  const visible = await mallory.page.locator('#error').isVisible();
  await mallory.page.screenshot({ path: join(artifacts, 'wrong-certificate.png') });
  if (!visible || !/certificate/i.test(shown)) {
    throw new Error(`the wrong-certificate page shows no certificate error (visible: ${visible}): "${shown}"`);
  }
  console.log(`browser test: the wrong-certificate page says: ${shown}`);
  await mallory.close();

  const fallbacks = [
    ['wrong-certificate-fallback', wrongHashes, /certificate/i],
    [
      'webtransport-never-connects',
      (page) =>
        page.addInitScript(() => {
          window.WebTransport = class {
            constructor() {
              this.ready = new Promise(() => {});
              this.closed = new Promise(() => {});
            }
            close() {}
          };
        }),
      /did not connect within/,
    ],
    [
      'no-webtransport',
      (page) =>
        page.addInitScript(() => {
          delete window.WebTransport;
        }),
      /no WebTransport/,
    ],
  ];
  for (const [label, prepare, reason] of fallbacks) {
    const entry = await openPage(label, pageUrl(label, { room: `${label}-${Date.now().toString(36)}` }), prepare);
    const state = await waitForPhase(entry, 'publishing', waitMs);
    if (state.transport !== 'webrtc') throw new Error(`${label}: the page uses ${state.transport}, not the WebRTC fallback`);
    if (!reason.test(state.fallbackReason ?? '')) throw new Error(`${label}: the fallback reason is "${state.fallbackReason}"`);
    const notice = await entry.page.locator('#notice').innerText();
    if (!/joins over WebRTC/.test(notice)) throw new Error(`${label}: the notice says "${notice}"`);
    console.log(`browser test: ${label}: the page falls back to WebRTC and says: ${notice}`);
    if (label === 'wrong-certificate-fallback') await entry.page.screenshot({ path: join(artifacts, 'fallback.png') });
    await entry.close();
  }

  console.log(`browser test: screenshots in ${artifacts}`);
}

/**
 * Against a gateway with its TURN server on: a fallback page takes the STUN/TURN servers of
 * `ServerHello` and gathers relay candidates through them (the credentials work).
 */
async function turnServers({ openPage, pageUrl, waitMs }) {
  const page = await openPage('turn', pageUrl('turn', { transport: 'webrtc' }));
  await waitForPhase(page, 'publishing', waitMs);
  const handle = await page.page.waitForFunction(
    () => {
      const s = window.strait.stats;
      return s.candidates?.relay > 0 ? { servers: s.iceServers, candidates: s.candidates } : false;
    },
    null,
    { timeout: waitMs, polling: 200 },
  );
  const { servers, candidates } = await handle.jsonValue();
  if (!servers.some((u) => u.startsWith('turn:'))) throw new Error(`the page uses ICE servers ${JSON.stringify(servers)}`);
  console.log(`browser test: the fallback page uses ${JSON.stringify(servers)} and gathered ${JSON.stringify(candidates)}`);
}

/**
 * Against the node of a cluster that does not serve room STRAIT_ROOM: the page follows the
 * redirect to the node that does (STRAIT_REDIRECT_TO, its WebTransport URL), joins there, lists
 * the participant STRAIT_PEER of that node and decodes its video (a native client, which
 * publishes back the page's own VP8).
 */
async function redirected({ openPage, pageUrl, artifacts, waitMs }) {
  const room = required('STRAIT_ROOM');
  const target = required('STRAIT_REDIRECT_TO');
  const peer = required('STRAIT_PEER');
  const page = await openPage('redirected', pageUrl('carol', { room }));
  const state = await waitForPhase(page, 'publishing', waitMs);
  if (state.transport !== 'webtransport') throw new Error(`the redirected page uses ${state.transport}`);
  if (JSON.stringify(state.redirects) !== JSON.stringify([target]) || state.url !== target) {
    throw new Error(`the page followed ${JSON.stringify(state.redirects)} to ${state.url}, not one redirect to ${target}`);
  }
  console.log(`browser test: the page of ${new URL(page.page.url()).host} was redirected to ${target} and publishes there`);
  const remote = await waitForRemoteVideo(page, peer, waitMs);
  console.log(`browser test: the redirected page decodes ${peer}'s video (participant ${remote.id}, ${remote.width}x${remote.height})`);
  await waitForMovingPicture(page, remote.id, waitMs);
  const listed = await page.page.locator('#participants li').allInnerTexts();
  if (!listed.includes(peer)) throw new Error(`the redirected page lists ${JSON.stringify(listed)}, without ${peer}`);
  const errors = await page.page.evaluate(() => window.strait.errors);
  if (errors.length > 0) throw new Error(`the redirected page reported ${JSON.stringify(errors)}`);
  await page.page.screenshot({ path: join(artifacts, 'redirected.png') });
  console.log(`browser test: the redirected page lists ${JSON.stringify(listed)} and sees ${peer}'s picture change`);
}

/**
 * The page's room is served by another node (STRAIT_REDIRECT_TO), which the test kills once the
 * page publishes there. The page must notice, find that its session cannot be resumed, start
 * afresh at STRAIT_FALLBACK_TO (a node of `/v1/nodes`), join the room, publish again, and decode
 * STRAIT_PEER (which moved there too) — with no reload.
 */
async function nodeLoss({ openPage, pageUrl, artifacts, waitMs }) {
  const room = required('STRAIT_ROOM');
  const target = required('STRAIT_REDIRECT_TO');
  const fallback = required('STRAIT_FALLBACK_TO');
  const peer = required('STRAIT_PEER');
  const page = await openPage('node-loss', pageUrl('erin', { room }));
  const state = await waitForPhase(page, 'publishing', waitMs);
  if (state.url !== target) throw new Error(`the page publishes at ${state.url}, not at ${target}`);
  console.log(`browser test: the page publishes at ${target}, the node the test kills`);
  const handle = await page.page.waitForFunction(
    () => {
      const s = window.strait;
      if (s.state.error) return { error: s.state.error };
      return s.state.recoveries.length > 0 && s.state.phase === 'publishing' ? JSON.parse(JSON.stringify(s.state)) : false;
    },
    null,
    { timeout: waitMs * 3, polling: 100 },
  );
  const after = await handle.jsonValue();
  if (after.error) throw new Error(`the page shows an error: ${after.error}`);
  const [recovery] = after.recoveries;
  if (recovery.resumed || after.url !== fallback || recovery.url !== fallback) {
    throw new Error(`the page recovered with ${JSON.stringify(after.recoveries)} at ${after.url}, not afresh at ${fallback}`);
  }
  console.log(`browser test: the page lost its node and publishes afresh at ${fallback}, ${recovery.ms} ms after noticing`);
  const remote = await waitForRemoteVideo(page, peer, waitMs * 2);
  await waitForMovingPicture(page, remote.id, waitMs);
  await page.page.screenshot({ path: join(artifacts, 'node-loss.png') });
  console.log(`browser test: after the loss the page decodes ${peer}'s video again at ${fallback}`);
}

/**
 * Against a node whose cluster directory (Redis) is unreachable: a page of a new room is refused
 * with UNAVAILABLE, says it tries again, retries with backoff, then shows an error that says the
 * refusal is temporary.
 */
async function unavailable({ openPage, pageUrl, waitMs }) {
  const page = await openPage('unavailable', pageUrl('dave', { room: `new-${Date.now().toString(36)}`, transport: 'webtransport' }));
  const handle = await page.page.waitForFunction(() => window.strait?.state.notice, null, { timeout: waitMs, polling: 50 });
  const notice = await handle.jsonValue();
  if (!/UNAVAILABLE/.test(notice) || !/trying again/.test(notice)) throw new Error(`the refused page's notice says "${notice}"`);
  console.log(`browser test: the refused page says: ${notice}`);
  await page.page.waitForFunction(() => window.strait.state.error, null, { timeout: waitMs });
  const state = await page.page.evaluate(() => JSON.parse(JSON.stringify(window.strait.state)));
  const shown = await page.page.locator('#error').innerText();
  if (state.retries !== 3 || !/UNAVAILABLE/.test(shown) || !/try again/.test(shown)) {
    throw new Error(`after ${state.retries} retries the refused page says "${shown}"`);
  }
  console.log(`browser test: after ${state.retries} retries the page says: ${shown}`);
}

/** Against a gateway without the WebRTC bridge: a page forced onto WebRTC says why it cannot join. */
async function noBridge({ openPage, pageUrl, artifacts, waitMs }) {
  const page = await openPage('no-bridge', pageUrl('nobridge', { transport: 'webrtc' }));
  await page.page.waitForFunction(() => window.strait?.state.error, null, { timeout: waitMs });
  const shown = await page.page.locator('#error').innerText();
  await page.page.screenshot({ path: join(artifacts, 'no-bridge.png') });
  if (!(await page.page.locator('#error').isVisible()) || !/WebRTC bridge/.test(shown)) {
    throw new Error(`the page without a bridge says: "${shown}"`);
  }
  const transport = await page.page.evaluate(() => window.strait.state.transport);
  if (transport !== 'webrtc') throw new Error(`the page without a bridge uses ${transport}`);
  console.log(`browser test: without the bridge, the fallback page says: ${shown}`);
}

function fail(message) {
  console.error(`browser test: ${message}`);
  process.exit(1);
}

function required(name) {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
}

/** Waits until `me` decodes video frames of the participant named `otherName`; returns it. */
async function waitForRemoteVideo(me, otherName, timeout) {
  const handle = await me.page.waitForFunction(
    (name) => {
      const s = window.strait;
      if (!s) return false;
      if (s.state.error) return { error: s.state.error };
      for (const [id, r] of Object.entries(s.stats.remote)) {
        if (r.name === name && r.videoFrames >= 5) return { id, width: r.width, height: r.height };
      }
      return false;
    },
    otherName,
    { timeout, polling: 100 },
  );
  const found = await handle.jsonValue();
  if (found.error) throw new Error(`${me.label} shows an error: ${found.error}`);
  return found;
}

/** The participant id under which `me` knows the participant named `name`. */
async function remoteId(me, name) {
  const id = await me.page.evaluate(
    (name) => Object.entries(window.strait.stats.remote).find(([, r]) => r.name === name)?.[0] ?? null,
    name,
  );
  if (!id) throw new Error(`${me.label} does not know ${name}`);
  return id;
}

/** Waits until a statistic of one remote participant reaches `min`; returns its value. */
async function waitForStat(me, id, stat, min, timeout) {
  const handle = await me.page.waitForFunction(
    ([id, stat, min]) => {
      const value = window.strait?.stats.remote[id]?.[stat] ?? 0;
      return value >= min ? value : false;
    },
    [id, stat, min],
    { timeout, polling: 100 },
  );
  return handle.jsonValue();
}

/** Waits until the page's `state.phase` is `phase`; returns its state. Fails on a shown error. */
async function waitForPhase(me, phase, timeout) {
  const handle = await me.page.waitForFunction(
    (phase) => {
      const s = window.strait;
      if (!s) return false;
      if (s.state.error) return { error: s.state.error };
      return s.state.phase === phase ? JSON.parse(JSON.stringify(s.state)) : false;
    },
    phase,
    { timeout, polling: 100 },
  );
  const state = await handle.jsonValue();
  if (state.error) throw new Error(`${me.label} shows an error: ${state.error}`);
  return state;
}

/** Waits until the page has joined; checks the transport it uses and its indicator's words. */
async function expectTransport(me, transport, words, timeout) {
  const state = await waitForPhase(me, 'publishing', timeout);
  if (state.transport !== transport) throw new Error(`${me.label} uses ${state.transport}, not ${transport}`);
  const shown = await me.page.locator('#transport').innerText();
  if (shown !== words) throw new Error(`${me.label}'s transport indicator says "${shown}", not "${words}"`);
}

/**
 * Waits until the <video> of participant `id` has presented `count` more frames than now
 * (`getVideoPlaybackQuality().totalVideoFrames`).
 */
async function waitForPresentedFrames(me, id, count, timeout) {
  const presented = (id) =>
    document.querySelector(`video[data-participant="${id}"]`)?.getVideoPlaybackQuality().totalVideoFrames ?? null;
  const before = await me.page.evaluate(presented, id);
  if (before === null) throw new Error(`${me.label} has no <video> for participant ${id}`);
  const handle = await me.page.waitForFunction(
    ([id, least]) => {
      const now = document.querySelector(`video[data-participant="${id}"]`)?.getVideoPlaybackQuality().totalVideoFrames ?? 0;
      return now >= least ? now : false;
    },
    [id, before + count],
    { timeout, polling: 100 },
  );
  return { before, after: await handle.jsonValue() };
}

/**
 * Reads the participant's picture back (getImageData of its canvas, or of its <video> drawn on
 * a canvas) now, then waits until its pixels differ: the fake camera's picture moves, so a live
 * decoder changes it.
 */
async function waitForMovingPicture(me, id, timeout) {
  const signature = (id) => {
    let canvas = document.querySelector(`canvas[data-participant="${id}"]`);
    const video = document.querySelector(`video[data-participant="${id}"]`);
    if (!canvas && video) {
      if (!video.videoWidth) return null;
      canvas = document.createElement('canvas');
      canvas.width = video.videoWidth;
      canvas.height = video.videoHeight;
      canvas.getContext('2d').drawImage(video, 0, 0);
    }
    if (!canvas) return null;
    const { data } = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height);
    let hash = 2166136261;
    let lit = 0;
    for (let i = 0; i < data.length; i += 4) {
      const v = data[i] + data[i + 1] + data[i + 2];
      if (v > 60) lit += 1;
      hash = Math.imul(hash ^ v, 16777619) >>> 0;
    }
    return { hash, lit: lit / (data.length / 4) };
  };
  const first = await me.page.evaluate(signature, id);
  if (!first) throw new Error(`${me.label} has no picture of participant ${id}`);
  if (first.lit < 0.05) throw new Error(`${me.label}'s picture of ${id} is dark (${(first.lit * 100).toFixed(1)}% lit pixels)`);
  await me.page.waitForFunction(
    ([source, id, hash]) => {
      const now = new Function(`return (${source})`)()(id);
      return now && now.hash !== hash;
    },
    [signature.toString(), id, first.hash],
    { timeout, polling: 200 },
  );
}

/** Waits until fewer than 1 % of the pixels of the participant's canvas are lit. */
async function waitForDarkPicture(me, id, timeout) {
  await me.page.waitForFunction(
    (id) => {
      const canvas = document.querySelector(`canvas[data-participant="${id}"]`);
      if (!canvas) return false;
      const { data } = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height);
      let lit = 0;
      for (let i = 0; i < data.length; i += 4) if (data[i] + data[i + 1] + data[i + 2] > 60) lit += 1;
      return lit / (data.length / 4) < 0.01;
    },
    id,
    { timeout, polling: 200 },
  );
}

/** Puts screenshots next to each other in one image. */
async function sideBySide(browser, dir, names, out) {
  const { readFileSync } = await import('node:fs');
  const images = names
    .map((n) => `<img style="width:50%" src="data:image/png;base64,${readFileSync(join(dir, n)).toString('base64')}">`)
    .join('');
  const page = await browser.newPage({ viewport: { width: 2000, height: 720 } });
  await page.setContent(`<body style="margin:0;display:flex;background:#000">${images}</body>`);
  await page.screenshot({ path: join(dir, out) });
  await page.close();
}
