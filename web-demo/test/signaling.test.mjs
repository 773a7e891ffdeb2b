// The WebSocket signaling path (`/ws/rtc`) against fake gateways: a node that does not serve the
// room redirects (PROTOCOL.md §7.11) and `SignalingPeer.connect` follows, with the token the
// redirect carries; no browser (WebSocket and RTCPeerConnection are replaced).
//
//     node --test web-demo/test/

import assert from 'node:assert/strict';
import { test } from 'node:test';

import { ErrorCode, PROTOCOL_VERSION, encodeFrame } from '../protocol.js';
import { MAX_SIGNALING_REDIRECTS, SignalingPeer, signalingRedirectUrl } from '../signaling.js';

const LIMITS = { max_frame_size: 65536, max_tracks: 16, max_subscriptions: 256, max_messages_per_second: 50 };

function serverHello() {
  return {
    ServerHello: {
      version: PROTOCOL_VERSION,
      participant: 7n,
      resume_token: '',
      resumed: false,
      ice_servers: [],
      limits: LIMITS,
      max_datagram_size: 0,
    },
  };
}

function redirect(to, token) {
  return [
    { GoAway: { code: ErrorCode.REDIRECT, redirect: to, cert_hashes: [], token } },
    { Error: { request: null, code: ErrorCode.REDIRECT, reason: 'another node serves this session' } },
  ];
}

/** Installs fake WebSocket and RTCPeerConnection; `nodes` maps a URL's host to its messages. */
function fakes(nodes) {
  const opened = [];
  globalThis.RTCPeerConnection = class {};
  globalThis.WebSocket = class {
    constructor(url) {
      this.url = url;
      opened.push(url);
      const messages = nodes[new URL(url).host] ?? [];
      queueMicrotask(() => {
        for (const m of messages) this.onmessage?.({ data: encodeFrame(m).buffer });
      });
    }
    send() {}
    close() {
      queueMicrotask(() => this.onclose?.({ code: 1001, reason: 'closed' }));
    }
  };
  return opened;
}

test('a redirect is followed with the token it carries', async () => {
  const opened = fakes({
    '127.0.0.3:8080': redirect('ws://127.0.0.2:8080/ws/rtc', 'token-for-a'),
    '127.0.0.2:8080': [serverHello()],
  });
  const peer = await SignalingPeer.connect('ws://127.0.0.3:8080/ws/rtc?token=mine');
  assert.equal(peer.me, 7);
  assert.deepEqual(opened, ['ws://127.0.0.3:8080/ws/rtc?token=mine', 'ws://127.0.0.2:8080/ws/rtc?token=token-for-a']);
});

test('a redirect without a token keeps the page token, and a loop ends', async () => {
  assert.equal(
    signalingRedirectUrl('ws://127.0.0.3:8080/ws/rtc?token=mine', { redirect: 'ws://127.0.0.2:8080/ws/rtc', token: null }),
    'ws://127.0.0.2:8080/ws/rtc?token=mine',
  );
  assert.equal(signalingRedirectUrl('ws://h:1/ws/rtc?token=t', { redirect: 'https://h:1/rtc', token: null }), null);
  const opened = fakes({ '127.0.0.3:8080': redirect('ws://127.0.0.3:8080/ws/rtc', null) });
  await assert.rejects(SignalingPeer.connect('ws://127.0.0.3:8080/ws/rtc?token=mine'), /giving up/);
  assert.equal(opened.length, MAX_SIGNALING_REDIRECTS + 1);
});
