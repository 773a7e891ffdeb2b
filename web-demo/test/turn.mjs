// Headless Chromium as a legacy WebRTC publisher that may only use TURN relay candidates: it
// publishes its fake camera with WHIP to a Strait gateway, through the gateway's embedded TURN
// server, and reports the candidate pair its connection selected.
//
// Run by tests/tests/browser/turn.rs (`cargo test -p strait-tests --test browser turn::`), which
// starts the gateway, mints the credentials and watches the media arrive at a native client:
//
//     STRAIT_ORIGIN=http://127.0.0.1:8080 STRAIT_ROOM=r STRAIT_TOKEN=… \
//     STRAIT_ICE='{"urls":["turn:127.0.0.1:3478?transport=udp"],"username":"…","credential":"…"}' \
//     node web-demo/test/turn.mjs
//
// It prints one line `selected {json}` once connected, then keeps publishing until its standard
// input closes (or STRAIT_WAIT_MS × 4 passes), and exits 0. Any failure exits non-zero with the
// reason on standard error.

import { launchChromium } from './chromium.mjs';

if (process.env.NODE_TEST_CONTEXT) {
  // `node --test web-demo/test/` picks up every file of the directory; this one needs a gateway.
  const { test } = await import('node:test');
  test('TURN relay in the browser', { skip: 'needs a gateway: run `cargo test -p strait-tests --test browser turn::`' }, () => {});
} else {
  await main();
}

function fail(message) {
  console.error(`turn test: ${message}`);
  process.exit(1);
}

async function main() {
  const origin = process.env.STRAIT_ORIGIN;
  const room = process.env.STRAIT_ROOM;
  const token = process.env.STRAIT_TOKEN;
  const iceText = process.env.STRAIT_ICE;
  if (!origin || !room || !token || !iceText) fail('STRAIT_ORIGIN, STRAIT_ROOM, STRAIT_TOKEN and STRAIT_ICE are required');
  const ice = JSON.parse(iceText);
  const waitMs = Number(process.env.STRAIT_WAIT_MS ?? 30000);

  const watchdog = setTimeout(() => fail('overall time limit reached'), waitMs * 4);

  let browser;
  try {
    // TURN over TLS: the gateway's development certificate is self-signed.
    ({ browser } = await launchChromium(['--ignore-certificate-errors']));
  } catch (e) {
    fail(e.message);
  }
  const page = await browser.newPage();
  const logs = [];
  page.on('console', (m) => logs.push(`console ${m.type()}: ${m.text()}`));
  page.on('pageerror', (e) => logs.push(`page error: ${e.message}`));
  // Any page of the gateway's origin: WHIP is then a same-origin request, and loopback HTTP is a
  // secure context for getUserMedia.
  await page.goto(new URL('/healthz', origin).toString());

  let selected;
  try {
    selected = await page.evaluate(async ({ room, token, ice, waitMs }) => {
      const within = (what, promise) => Promise.race([
        promise,
        new Promise((_, reject) => setTimeout(() => reject(new Error(`timed out: ${what}`)), waitMs)),
      ]);
      const stream = await navigator.mediaDevices.getUserMedia({ video: { width: 320, height: 240 }, audio: false });
      const pc = new RTCPeerConnection({ iceServers: [ice], iceTransportPolicy: 'relay' });
      window.strait = { pc, stream };
      const transceiver = pc.addTransceiver(stream.getVideoTracks()[0], { direction: 'sendonly' });
      const vp8 = RTCRtpSender.getCapabilities('video').codecs.filter((c) => /vp8/i.test(c.mimeType));
      transceiver.setCodecPreferences(vp8);
      await pc.setLocalDescription(await pc.createOffer());
      await within('ICE gathering', new Promise((resolve) => {
        if (pc.iceGatheringState === 'complete') return resolve();
        pc.addEventListener('icegatheringstatechange', () => {
          if (pc.iceGatheringState === 'complete') resolve();
        });
      }));
      const offer = pc.localDescription.sdp;
      const response = await fetch(`/whip/${encodeURIComponent(room)}`, {
        method: 'POST',
        headers: { 'content-type': 'application/sdp', authorization: `Bearer ${token}` },
        body: offer,
      });
      const answer = await response.text();
      if (response.status !== 201) throw new Error(`WHIP answered ${response.status}: ${answer}`);
      await pc.setRemoteDescription({ type: 'answer', sdp: answer });
      await within('the connection', new Promise((resolve, reject) => {
        const check = () => {
          if (pc.connectionState === 'connected') resolve();
          if (pc.connectionState === 'failed') reject(new Error('the connection failed'));
        };
        check();
        pc.addEventListener('connectionstatechange', check);
      }));
      // The pair in use, from the transport's own report.
      const stats = new Map();
      (await pc.getStats()).forEach((r) => stats.set(r.id, r));
      const transport = [...stats.values()].find((r) => r.type === 'transport' && r.selectedCandidatePairId);
      if (!transport) throw new Error('no transport with a selected candidate pair');
      const pair = stats.get(transport.selectedCandidatePairId);
      const local = stats.get(pair.localCandidateId);
      const remote = stats.get(pair.remoteCandidateId);
      return {
        state: pair.state,
        local: { type: local.candidateType, relayProtocol: local.relayProtocol ?? null, url: local.url ?? null },
        remote: { type: remote.candidateType, address: remote.address, port: remote.port },
        offerHasHostCandidates: /typ host/.test(offer),
      };
    }, { room, token, ice, waitMs });
  } catch (e) {
    console.error(logs.join('\n'));
    await browser.close();
    fail(e.message);
  }
  console.log(`selected ${JSON.stringify(selected)}`);

  // Keep publishing until the test has seen what it needs and closes our standard input.
  await new Promise((resolve) => {
    process.stdin.on('end', resolve);
    process.stdin.on('close', resolve);
    process.stdin.resume();
  });
  await browser.close();
  clearTimeout(watchdog);
}
