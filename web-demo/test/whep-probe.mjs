// Headless Chromium as a plain WHEP player whose link the gateway probes: one recvonly video
// section offered to STRAIT_WHEP_PATH (same origin: the page is a page of the gateway), and
// nothing else. The track it plays is simulcast with a top layer above where a new viewer's
// estimate starts, so the viewer starts below the top and climbs only if the gateway's probes
// (padding-only RTX packets) come back in Chromium's transport-wide feedback. Every 250 ms the
// page reads its stats: the video's `bytesReceived` (media only) and the transport's
// `bytesReceived` (media, padding and RTCP). The check passes when the video, having first
// arrived below STRAIT_BELOW_BPS over a second (the allocation placed the viewer below the top:
// until the first estimate it gets its cap, the top layer), then arrives at STRAIT_TOP_BPS or
// more over a second; it prints what the transport carried beyond the media (the padding,
// about). Run by tests/tests/browser/probe.rs.
//
// Environment: STRAIT_DEMO_URL, STRAIT_WHEP_PATH, STRAIT_TOKEN, STRAIT_BELOW_BPS, STRAIT_TOP_BPS
// (required);
// STRAIT_CHROMIUM (default /usr/bin/chromium); STRAIT_WAIT_MS (bound of the climb; default
// 30000). Prints `whep-probe: …` lines; exit status 0 when the check passed.

import { launchChromium } from './chromium.mjs';

if (process.env.NODE_TEST_CONTEXT) {
  // `node --test web-demo/test/` picks up every file of a test directory; this one needs a gateway.
  const { test } = await import('node:test');
  test('a WHEP player whose link is probed', { skip: 'needs a gateway: run `cargo test -p strait-tests --test browser`' }, () => {});
} else {
  await main();
}

function fail(message) {
  console.error(`whep-probe: FAIL: ${message}`);
  process.exit(1);
}

function required(name) {
  const value = process.env[name];
  if (!value) fail(`${name} is not set`);
  return value;
}

async function main() {
  const demoUrl = new URL(required('STRAIT_DEMO_URL'));
  const whepPath = required('STRAIT_WHEP_PATH');
  const token = required('STRAIT_TOKEN');
  const topBps = Number(required('STRAIT_TOP_BPS'));
  const belowBps = Number(required('STRAIT_BELOW_BPS'));
  const waitMs = Number(process.env.STRAIT_WAIT_MS ?? 30000);
  const watchdog = setTimeout(() => fail('overall time limit reached'), waitMs * 2);

  let browser;
  try {
    ({ browser } = await launchChromium());
  } catch (e) {
    fail(e.message);
  }
  try {
    const page = await (await browser.newContext()).newPage();
    page.on('console', (m) => console.log(`whep-probe: page: ${m.text()}`));
    // A page of the gateway's origin, so that the WHEP request is same-origin.
    await page.goto(new URL('/healthz', demoUrl).href);
    const result = await page.evaluate(async ({ whepPath, token, topBps, belowBps, waitMs }) => {
      const pc = new RTCPeerConnection();
      pc.addTransceiver('video', { direction: 'recvonly' });
      await pc.setLocalDescription(await pc.createOffer());
      await new Promise((resolve) => {
        if (pc.iceGatheringState === 'complete') return resolve();
        pc.addEventListener('icegatheringstatechange', () => {
          if (pc.iceGatheringState === 'complete') resolve();
        });
        setTimeout(resolve, 5000);
      });
      const response = await fetch(whepPath, {
        method: 'POST',
        headers: { 'content-type': 'application/sdp', authorization: `Bearer ${token}` },
        body: pc.localDescription.sdp,
      });
      if (response.status !== 201) {
        return { ok: false, why: `WHEP answered ${response.status}: ${await response.text()}` };
      }
      const answer = await response.text();
      await pc.setRemoteDescription({ type: 'answer', sdp: answer });
      const samples = [];
      const started = performance.now();
      let below = null;
      while (performance.now() - started < waitMs) {
        await new Promise((r) => setTimeout(r, 250));
        let video = 0;
        let transport = 0;
        (await pc.getStats()).forEach((s) => {
          if (s.type === 'inbound-rtp' && s.kind === 'video') video += s.bytesReceived ?? 0;
          if (s.type === 'transport') transport += s.bytesReceived ?? 0;
        });
        const at = performance.now() - started;
        samples.push({ at, video, transport });
        const before = samples.find((s) => s.at >= at - 1000);
        if (before && at - before.at >= 750) {
          const bps = ((video - before.video) * 8 * 1000) / (at - before.at);
          if (samples.length % 4 === 0) console.log(`${(at / 1000).toFixed(1)} s: video ${Math.round(bps / 1000)} kbit/s`);
          if (below === null && bps <= belowBps) {
            below = at / 1000;
            console.log(`below ${belowBps} bit/s from ${below.toFixed(1)} s`);
          }
          if (below !== null && bps >= topBps) {
            pc.close();
            return {
              ok: true,
              below,
              seconds: at / 1000,
              bps,
              videoBytes: video,
              transportBytes: transport,
            };
          }
        }
      }
      pc.close();
      const last = samples[samples.length - 1] ?? { video: 0, transport: 0 };
      const why = below === null
        ? `the video never went below ${belowBps} bit/s`
        : `the video went below ${belowBps} bit/s at ${below.toFixed(1)} s and never reached ${topBps} bit/s after`;
      return { ok: false, why: `${why} (video ${last.video} bytes, transport ${last.transport} bytes)` };
    }, { whepPath, token, topBps, belowBps, waitMs });
    if (!result.ok) fail(result.why);
    console.log(
      `whep-probe: below the top from ${result.below.toFixed(1)} s, the video reached ${Math.round(result.bps / 1000)} kbit/s at ${result.seconds.toFixed(1)} s; ` +
        `the transport carried ${result.transportBytes - result.videoBytes} bytes beyond the video's ${result.videoBytes}`,
    );
    console.log('whep-probe: PASS');
  } catch (e) {
    fail(e.stack ?? String(e));
  } finally {
    clearTimeout(watchdog);
    await browser.close();
  }
}
