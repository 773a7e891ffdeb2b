// Headless Chromium as a legacy WebRTC peer on the gateway's WebSocket signaling (`/ws/rtc`),
// with a plain RTCPeerConnection and `signaling.js`:
//
// - page "camera" joins STRAIT_PUBLISH_ROOM and publishes its fake camera as VP8;
// - page "viewer" joins STRAIT_VIEW_ROOM, waits for a video track to be published there, offers
//   one recvonly video section and must decode frames of it (`framesDecoded` in getStats reaches
//   10); it then follows the room, and when a second video track is published it renegotiates
//   (a new recvonly section on the same connection) and must decode that one too. No packet of
//   either stream may be lost (`packetsLost` 0 on loopback): a packet whose SRTP authentication
//   fails is dropped by Chromium and counted lost.
//
// Run by tests/tests/browser/demo.rs, which starts the gateway, receives the camera's RTP with a
// native client and publishes it again, natively, in the viewer's room. The camera keeps publishing
// until the viewer has decoded frames (or failed). Prints one `ws-rtc: …` line per step; exit
// status 0 when every check passed.
//
// Environment: STRAIT_DEMO_URL, STRAIT_PUBLISH_TOKEN, STRAIT_PUBLISH_ROOM, STRAIT_VIEW_TOKEN,
// STRAIT_VIEW_ROOM, STRAIT_WEBRTC_PORTS (the bridge's UDP ports, one per media worker, comma-separated:
// every candidate of an answer must name one and the same of them) (required); STRAIT_CHROMIUM (default /usr/bin/chromium); STRAIT_WAIT_MS (bound
// of each wait; default 30000).

import { launchChromium } from './chromium.mjs';

if (process.env.NODE_TEST_CONTEXT) {
  // `node --test web-demo/test/` picks up every file of a test directory; this one needs a gateway.
  const { test } = await import('node:test');
  test('websocket signaling in the browser', { skip: 'needs a gateway: run `cargo test -p strait-tests --test browser`' }, () => {});
} else {
  await main();
}

function fail(message) {
  console.error(`ws-rtc: FAIL: ${message}`);
  process.exit(1);
}

function required(name) {
  const value = process.env[name];
  if (!value) fail(`${name} is not set`);
  return value;
}

async function main() {
  const demoUrl = new URL(required('STRAIT_DEMO_URL'));
  const publish = { token: required('STRAIT_PUBLISH_TOKEN'), room: required('STRAIT_PUBLISH_ROOM') };
  const view = { token: required('STRAIT_VIEW_TOKEN'), room: required('STRAIT_VIEW_ROOM') };
  const webrtcPorts = required('STRAIT_WEBRTC_PORTS').split(',');
  const waitMs = Number(process.env.STRAIT_WAIT_MS ?? 30000);

  const watchdog = setTimeout(() => fail('overall time limit reached'), waitMs * 4);

  let browser;
  try {
    ({ browser } = await launchChromium());
  } catch (e) {
    fail(e.message);
  }
  const logs = [];
  const open = async (label) => {
    const context = await browser.newContext();
    const page = await context.newPage();
    page.on('console', (m) => logs.push(`[${label}] ${m.type()}: ${m.text()}`));
    page.on('pageerror', (e) => logs.push(`[${label}] page error: ${e.message}`));
    // Any page of the gateway's origin: a secure context (loopback) that can import its modules.
    await page.goto(new URL('/healthz', demoUrl).href);
    return page;
  };
  const wsUrl = (token) => {
    const url = new URL('/ws/rtc', demoUrl);
    url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
    url.searchParams.set('token', token);
    return url.href;
  };

  let ok = false;
  try {
    const camera = await open('camera');
    const published = await camera.evaluate(
      async ({ url, room, waitMs }) => {
        const { SignalingPeer } = await import('/signaling.js');
        const candidatePorts = (sdp) => [...sdp.matchAll(/^a=candidate:\S+ \d+ \S+ \d+ \S+ (\d+)/gm)].map((m) => m[1]);
        const media = await navigator.mediaDevices.getUserMedia({ video: { width: 320, height: 240 } });
        const peer = await SignalingPeer.connect(url);
        window.peer = peer;
        await peer.join(room, 'camera');
        await peer.negotiate({ send: media.getVideoTracks() });
        const deadline = Date.now() + waitMs;
        while (Date.now() < deadline) {
          const stats = [...(await peer.pc.getStats()).values()];
          const out = stats.find((s) => s.type === 'outbound-rtp' && s.kind === 'video');
          if (out && out.packetsSent > 0) {
            const codec = stats.find((s) => s.id === out.codecId);
            return {
              packetsSent: out.packetsSent,
              codec: codec?.mimeType ?? null,
              state: peer.pc.connectionState,
              ports: candidatePorts(peer.pc.remoteDescription.sdp),
            };
          }
          await new Promise((r) => setTimeout(r, 100));
        }
        return { packetsSent: 0, state: peer.pc.connectionState, log: peer.log.map(([n]) => n) };
      },
      { url: wsUrl(publish.token), room: publish.room, waitMs },
    );
    console.log(`ws-rtc: camera publishes: ${JSON.stringify(published)}`);
    if (!(published.packetsSent > 0)) throw new Error('the camera page sent no RTP');
    const onePort = (ports) => ports.length > 0 && webrtcPorts.includes(ports[0]) && ports.every((p) => p === ports[0]);
    if (!onePort(published.ports)) throw new Error(`the camera's answer names ports ${published.ports}, not one of ${webrtcPorts}`);
    if (published.codec !== 'video/VP8') throw new Error(`the camera page sends ${published.codec}, not VP8`);

    const viewer = await open('viewer');
    const viewed = await viewer.evaluate(
      async ({ url, room, waitMs }) => {
        const { SignalingPeer } = await import('/signaling.js');
        const candidatePorts = (sdp) => [...sdp.matchAll(/^a=candidate:\S+ \d+ \S+ \d+ \S+ (\d+)/gm)].map((m) => m[1]);
        const peer = await SignalingPeer.connect(url);
        await peer.join(room, 'viewer');
        const [, track] = await Promise.race([
          peer.waitFor((n, f) => n === 'TrackPublished' && f.kind === 'Video'),
          new Promise((_, reject) => setTimeout(() => reject(new Error('no video track published in the room')), waitMs)),
        ]);
        const video = document.createElement('video');
        video.muted = true;
        video.autoplay = true;
        document.body.append(video);
        peer.pc.ontrack = (event) => {
          video.srcObject = new MediaStream([event.track]);
          video.play().catch(() => {});
        };
        await peer.negotiate({ receive: { video: 1 } });
        const [, subscribed] = await peer.waitFor((n) => n === 'Subscribed');
        let deadline = Date.now() + waitMs;
        let last = null;
        while (Date.now() < deadline) {
          const stats = [...(await peer.pc.getStats()).values()];
          last = stats.find((s) => s.type === 'inbound-rtp' && s.kind === 'video') ?? null;
          if (last && last.framesDecoded >= 10) break;
          await new Promise((r) => setTimeout(r, 100));
        }
        // Renegotiation: a second video track of the room, on a new section.
        await peer.follow();
        deadline = Date.now() + waitMs;
        let decoding = [];
        while (Date.now() < deadline) {
          const stats = [...(await peer.pc.getStats()).values()];
          decoding = stats.filter((s) => s.type === 'inbound-rtp' && s.kind === 'video' && s.framesDecoded >= 10);
          if (decoding.length >= 2) break;
          await new Promise((r) => setTimeout(r, 100));
        }
        // Every forwarded packet must authenticate: Chromium drops a packet whose SRTP check
        // fails and then counts it lost (its NACK gets the same failing packet again). On
        // loopback nothing else loses packets, so every stream must show none lost.
        const final = [...(await peer.pc.getStats()).values()];
        const inbound = final.filter((s) => s.type === 'inbound-rtp' && s.kind === 'video');
        const transport = final.find((s) => s.type === 'transport') ?? {};
        return {
          lost: inbound.map((s) => s.packetsLost ?? null),
          received: inbound.map((s) => s.packetsReceived ?? 0),
          nacks: inbound.map((s) => s.nackCount ?? 0),
          srtpCipher: transport.srtpCipher ?? null,
          ports: candidatePorts(peer.pc.remoteDescription.sdp),
          subscriptions: peer.log.filter(([n]) => n === 'Subscribed').length,
          answers: peer.log.filter(([n, f]) => n === 'Sdp' && f.kind === 'Answer').length,
          decodingStreams: decoding.length,
          track: String(track.track),
          subscribed: String(subscribed.track),
          ssrc: subscribed.ssrc,
          state: peer.pc.connectionState,
          framesDecoded: last?.framesDecoded ?? 0,
          packetsReceived: last?.packetsReceived ?? 0,
          keyFramesDecoded: last?.keyFramesDecoded ?? 0,
          width: last?.frameWidth ?? 0,
          inboundSsrc: last?.ssrc ?? null,
        };
      },
      { url: wsUrl(view.token), room: view.room, waitMs },
    );
    console.log(`ws-rtc: viewer receives: ${JSON.stringify(viewed)}`);
    if (!onePort(viewed.ports)) throw new Error(`the viewer's answer names ports ${viewed.ports}, not one of ${webrtcPorts}`);
    if (viewed.subscribed !== viewed.track) throw new Error('the viewer was not subscribed to the published track');
    if (viewed.inboundSsrc !== viewed.ssrc) throw new Error('the inbound SSRC is not the one Subscribed announced');
    if (!(viewed.framesDecoded >= 10)) throw new Error(`the viewer decoded ${viewed.framesDecoded} frames, not 10`);
    if (viewed.answers < 2 || viewed.subscriptions < 2) throw new Error('the viewer did not renegotiate for the second track');
    if (viewed.decodingStreams < 2) throw new Error('the viewer does not decode the second track after renegotiating');
    if (!viewed.srtpCipher) throw new Error('the viewer reports no SRTP cipher');
    if (viewed.lost.some((lost) => lost !== 0) || viewed.received.some((n) => n < 10)) {
      throw new Error(`the viewer lost packets (${JSON.stringify(viewed.lost)} lost of ${JSON.stringify(viewed.received)} received): some did not authenticate`);
    }
    ok = true;
  } catch (e) {
    console.error(`ws-rtc: ${e.stack ?? e}`);
  } finally {
    for (const line of logs) console.log(line);
    clearTimeout(watchdog);
    await browser.close();
  }
  if (!ok) fail('see above');
  console.log('ws-rtc: PASS');
}
