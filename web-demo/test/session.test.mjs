// `openSession` (session.js) against fake gateways: WebTransport is replaced by a constructor
// that speaks the control protocol with the codec of protocol.js, so the redirects of a cluster
// (PROTOCOL.md §7.11), the retries after UNAVAILABLE and the errors shown in words run under node,
// with no browser and no waiting (the backoff's `delay` is recorded, not slept).
//
//     node --test web-demo/test/

import assert from 'node:assert/strict';
import { test } from 'node:test';

import { ErrorCode, FrameReader, PROTOCOL_VERSION, encodeFrame, toHex } from '../protocol.js';
import {
  ConnectError,
  LostBeforeHelloError,
  MAX_REDIRECTS,
  RedirectError,
  RequestError,
  UNAVAILABLE_RETRIES,
  openSession,
  redirectTarget,
  retryDelayMs,
} from '../session.js';

const A = 'https://127.0.0.2:4433/rtc';
const B = 'https://127.0.0.3:4433/rtc';
const C = 'https://127.0.0.4:4433/rtc';
const HASH_A = 'a1'.repeat(32);
const HASH_A_NEXT = 'a2'.repeat(32);
const HASH_C = 'c3'.repeat(32);
/** What `/v1/cert-hashes` gives: base64 values. */
const B_HASHES = [{ algorithm: 'sha-256', value: Buffer.alloc(32, 0xb0).toString('base64') }];

const LIMITS = { max_frame_size: 65536, max_tracks: 16, max_subscriptions: 256, max_messages_per_second: 50 };

/**
 * A cluster of fake gateways by URL. Each node is a function from the `ClientHello` it gets to
 * what it does: `serve()`, `redirect(url, fields)`, `refuse(code, reason)`; a URL that is not in
 * the cluster does not connect. `connections` lists every WebTransport opened: `{url, options,
 * hello, join, closedByClient}`.
 */
function cluster(nodes) {
  const connections = [];

  class FakeWebTransport {
    constructor(url, options = {}) {
      this.record = { url, options, hello: null, join: null, closedByClient: false };
      connections.push(this.record);
      this.node = nodes[url];
      let closed;
      let lost;
      this.closed = new Promise((resolve, reject) => {
        closed = resolve;
        lost = reject;
      });
      this.resolveClosed = closed;
      this.rejectClosed = lost;
      this.ready = this.node ? Promise.resolve() : Promise.reject(new Error('Opening handshake failed.'));
      this.datagrams = {
        readable: new ReadableStream({ start: (c) => (this.datagramsIn = c) }),
        createWritable: () => new WritableStream(),
      };
    }

    async createBidirectionalStream() {
      const frames = new FrameReader();
      const readable = new ReadableStream({ start: (c) => (this.toClient = c) });
      const writable = new WritableStream({
        write: (chunk) => {
          frames.push(chunk);
          for (let f; (f = frames.next()) !== null; ) this.receive(f.message);
        },
      });
      return { readable, writable };
    }

    receive(message) {
      const [name, fields] = Object.entries(message)[0];
      if (name === 'ClientHello') {
        this.record.hello = fields;
        this.node(this, fields);
      } else if (name === 'Join') {
        this.record.join = fields;
        if (this.serving) {
          this.send({ Joined: { request: fields.request, room: fields.room, me: { participant: this.serving, identity: 'me', name: fields.name } } });
        }
      }
    }

    /** Sends `messages` in one piece, as the gateway writes its last frames. */
    send(...messages) {
      const frames = messages.map((m) => encodeFrame(m));
      const bytes = new Uint8Array(frames.reduce((n, f) => n + f.length, 0));
      let at = 0;
      for (const f of frames) {
        bytes.set(f, at);
        at += f.length;
      }
      this.toClient.enqueue(bytes);
    }

    /** The server ends the session (after its stream's bytes, as the gateway does). */
    end(code, reason) {
      queueMicrotask(() => {
        try {
          this.toClient.close();
          this.datagramsIn.close();
        } catch {
          // closed already
        }
        this.resolveClosed({ closeCode: code, reason });
      });
    }

    close(info = {}) {
      this.record.closedByClient = true;
      this.end(info.closeCode ?? 0, info.reason ?? '');
    }

    /** The connection is lost with nothing read (what Chromium shows of a close it got first). */
    vanish() {
      queueMicrotask(() => {
        try {
          this.toClient.error(new Error('Connection lost.'));
          this.datagramsIn.close();
        } catch {
          // closed already
        }
        this.rejectClosed(new Error('Connection lost.'));
      });
    }
  }

  return { connections, WebTransport: FakeWebTransport };
}

let participants = 0;

/** A node that accepts the session. */
const serve = (transport) => {
  participants += 1;
  transport.serving = participants;
  transport.send({
    ServerHello: {
      version: PROTOCOL_VERSION,
      participant: transport.serving,
      resume_token: 'rt-1',
      resumed: false,
      ice_servers: [],
      limits: LIMITS,
      max_datagram_size: 1200,
    },
  });
};

/** A node that sends the session to `url`, as the gateway does: GoAway, Error, close. */
const redirect =
  (url, { hashes = [HASH_A, HASH_A_NEXT], token = null } = {}) =>
  (transport) => {
    transport.send(
      { GoAway: { code: ErrorCode.REDIRECT, redirect: url, cert_hashes: hashes, token } },
      { Error: { request: null, code: ErrorCode.REDIRECT, reason: 'another node serves this session' } },
    );
    transport.end(ErrorCode.REDIRECT, 'another node serves this session');
  };

/** A node that refuses the session with `code`. */
const refuse = (code, reason) => (transport) => {
  transport.send({ Error: { request: null, code, reason } });
  transport.end(code, reason);
};

/** A node that refuses the first `n` sessions with `code`, then serves. */
const refuseTimes = (n, code) => {
  let left = n;
  return (transport, hello) => (left-- > 0 ? refuse(code, 'the cluster directory is unreachable')(transport, hello) : serve(transport, hello));
};

/** `openSession` with the fake cluster, recording the callbacks of every attempt. */
async function open(fake, entry, options = {}) {
  const seen = { messages: [], closed: [], redirects: [], retries: [], delays: [] };
  const result = openSession(entry, {
    join: { room: 'standup', name: 'Ada' },
    WebTransport: fake.WebTransport,
    delay: async (ms) => seen.delays.push(ms),
    random: () => 0.5,
    prepare: (session) => {
      session.onMessage = (name, fields) => seen.messages.push([name, fields]);
      session.onClosed = (info) => seen.closed.push(info);
    },
    onRedirect: (r) => seen.redirects.push(r.url),
    onRetry: (r) => seen.retries.push(r),
    ...options,
  });
  return { result, seen };
}

const entry = (url = B, certificateHashes = B_HASHES, token = 'token-at-b') => ({ url, certificateHashes, token });

test('a redirect before ServerHello is followed to its node, pinning its certificates, with its token', async () => {
  const fake = cluster({ [B]: redirect(A, { token: 'token-for-a' }), [A]: serve });
  const { result, seen } = await open(fake, entry());
  const { session, joined, redirects } = await result;

  assert.equal(session.url, A);
  assert.deepEqual(redirects, [A]);
  assert.deepEqual(seen.redirects, [A]);
  assert.equal(joined.room, 'standup');
  const [atB, atA] = fake.connections;
  assert.equal(fake.connections.length, 2);
  assert.equal(atB.url, B);
  assert.deepEqual(atB.options.serverCertificateHashes.map((h) => toHex(h.value)), ['b0'.repeat(32)]);
  assert.equal(atB.hello.token, 'token-at-b');
  assert.equal(atB.hello.version, PROTOCOL_VERSION);
  // A's current and next certificates, as bytes, for serverCertificateHashes.
  assert.deepEqual(
    atA.options.serverCertificateHashes.map((h) => [h.algorithm, toHex(h.value)]),
    [
      ['sha-256', HASH_A],
      ['sha-256', HASH_A_NEXT],
    ],
  );
  assert.ok(atA.options.serverCertificateHashes.every((h) => h.value instanceof Uint8Array));
  assert.equal(atA.hello.token, 'token-for-a');
  // Join is sent again to the node that serves the room.
  assert.deepEqual([atB.join?.room, atA.join?.room], ['standup', 'standup']);
  assert.ok(atB.closedByClient, 'the redirected session is closed');
  assert.ok(!atA.closedByClient);
  // The redirected attempt's GoAway, Error and close reach none of the page's callbacks.
  assert.deepEqual(
    seen.messages.map(([name]) => name),
    ['Joined'],
  );
  assert.deepEqual(seen.closed, []);
  session.close();
});

test('a redirect without a token presents the same token again', async () => {
  const fake = cluster({ [B]: redirect(A), [A]: serve });
  const { result } = await open(fake, entry());
  await result;
  assert.deepEqual(
    fake.connections.map((c) => c.hello.token),
    ['token-at-b', 'token-at-b'],
  );
});

test('a page that pins nothing pins nothing after a redirect; an empty hash list means a CA certificate', async () => {
  // The entry has a CA certificate: no hashes, even though the redirect names some.
  let fake = cluster({ [B]: redirect(A), [A]: serve });
  await (await open(fake, entry(B, []))).result;
  assert.deepEqual(
    fake.connections.map((c) => c.options.serverCertificateHashes),
    [undefined, undefined],
  );
  // The entry pins, the target has a CA certificate (empty list): no hashes for the target.
  fake = cluster({ [B]: redirect(A, { hashes: [] }), [A]: serve });
  await (await open(fake, entry())).result;
  assert.equal(fake.connections[0].options.serverCertificateHashes.length, 1);
  assert.equal(fake.connections[1].options.serverCertificateHashes, undefined);
});

test('redirects are followed through several nodes, each hop with the hashes of its target', async () => {
  const fake = cluster({ [B]: redirect(C, { hashes: [HASH_C] }), [C]: redirect(A), [A]: serve });
  const { result } = await open(fake, entry());
  const { session, redirects } = await result;
  assert.equal(session.url, A);
  assert.deepEqual(redirects, [C, A]);
  assert.deepEqual(
    fake.connections.map((c) => c.options.serverCertificateHashes.map((h) => toHex(h.value))),
    [['b0'.repeat(32)], [HASH_C], [HASH_A, HASH_A_NEXT]],
  );
});

test(`at most ${MAX_REDIRECTS} redirects are followed, then an error says where they went`, async () => {
  const fake = cluster({ [B]: redirect(A), [A]: redirect(B) });
  const { result, seen } = await open(fake, entry());
  const error = await result.then(
    () => assert.fail('a redirect loop must fail'),
    (e) => e,
  );
  assert.ok(error instanceof RedirectError, error);
  assert.equal(fake.connections.length, MAX_REDIRECTS + 1);
  assert.deepEqual(seen.redirects, [A, B, A]);
  assert.match(error.message, /redirected this page 3 times/);
  assert.ok(error.message.includes(`${B} → ${A} → ${B} → ${A} → ${B}`), error.message);
  assert.ok(fake.connections.every((c) => c.closedByClient));
  assert.deepEqual(seen.closed, []);
});

test('a redirect that is not a WebTransport URL, or names a malformed hash, is an error in words', async () => {
  let fake = cluster({ [B]: redirect('127.0.0.2:4433') });
  let error = await (await open(fake, entry())).result.catch((e) => e);
  assert.ok(error instanceof RedirectError);
  assert.match(error.message, /not a WebTransport URL/);

  fake = cluster({ [B]: redirect(A, { hashes: ['not-hex'] }) });
  error = await (await open(fake, entry())).result.catch((e) => e);
  assert.ok(error instanceof RedirectError);
  assert.match(error.message, /not SHA-256 in hex/);
  assert.equal(fake.connections.length, 1);
});

test('a redirect without an address goes back to the same one after a backoff', async () => {
  const fake = cluster({ [B]: refuseOnce(redirect(null, { hashes: [] })) });
  const { result, seen } = await open(fake, entry());
  const { session } = await result;
  assert.equal(session.url, B);
  assert.deepEqual(seen.delays, [retryDelayMs(1, () => 0.5)]);
  // Still pinned to B's certificate.
  assert.deepEqual(
    fake.connections.map((c) => c.options.serverCertificateHashes.length),
    [1, 1],
  );
});

/** `first` for the first session, then serves. */
function refuseOnce(first) {
  let done = false;
  return (transport, hello) => {
    if (done) return serve(transport, hello);
    done = true;
    return first(transport, hello);
  };
}

test('UNAVAILABLE is retried with a growing backoff, from the address the page started with', async () => {
  // B redirects to A; A cannot take the room twice, then can.
  const fake = cluster({ [B]: redirect(A, { token: 'token-for-a' }), [A]: refuseTimes(2, ErrorCode.UNAVAILABLE) });
  const { result, seen } = await open(fake, entry());
  const { session, redirects } = await result;
  assert.equal(session.url, A);
  assert.deepEqual(redirects, [A]);
  assert.deepEqual(
    fake.connections.map((c) => [c.url, c.hello.token]),
    [
      [B, 'token-at-b'],
      [A, 'token-for-a'],
      [B, 'token-at-b'],
      [A, 'token-for-a'],
      [B, 'token-at-b'],
      [A, 'token-for-a'],
    ],
  );
  assert.deepEqual(
    seen.retries.map((r) => [r.attempt, r.retries, r.error.code, r.delayMs]),
    [
      [1, UNAVAILABLE_RETRIES, ErrorCode.UNAVAILABLE, 375],
      [2, UNAVAILABLE_RETRIES, ErrorCode.UNAVAILABLE, 750],
    ],
  );
  assert.deepEqual(seen.delays, [375, 750]);
  // The refusals reached none of the page's callbacks: only the final session's Joined did.
  assert.deepEqual(
    seen.messages.map(([name]) => name),
    ['Joined'],
  );
  assert.deepEqual(seen.closed, []);
});

test('UNAVAILABLE after every retry is a retryable error that says to try again', async () => {
  const fake = cluster({ [B]: refuse(ErrorCode.UNAVAILABLE, 'the cluster directory is unreachable') });
  const { result, seen } = await open(fake, entry());
  const error = await result.catch((e) => e);
  assert.ok(error instanceof RequestError, error);
  assert.equal(error.code, ErrorCode.UNAVAILABLE);
  assert.ok(error.retryable);
  assert.equal(fake.connections.length, UNAVAILABLE_RETRIES + 1);
  assert.equal(seen.delays.length, UNAVAILABLE_RETRIES);
  assert.match(error.message, /UNAVAILABLE \(0x12\) — the cluster directory is unreachable/);
  assert.match(error.message, /after 4 attempts/);
  assert.match(error.message, /try again/);
});

test('a connection lost before ServerHello without a word is tried again, then its words are shown', async () => {
  let lost = 0;
  const vanishOnce = (transport, hello) => {
    if (lost === 1) return serve(transport, hello);
    lost += 1;
    transport.vanish();
  };
  const fake = cluster({ [B]: vanishOnce });
  const { result, seen } = await open(fake, entry());
  const { session } = await result;
  assert.equal(session.url, B);
  assert.equal(fake.connections.length, 2);
  assert.deepEqual(
    seen.retries.map((r) => [r.attempt, r.error.code, r.error instanceof LostBeforeHelloError]),
    [[1, null, true]],
  );

  const always = cluster({ [B]: (transport) => transport.vanish() });
  const opened = await open(always, entry());
  const error = await opened.result.catch((e) => e);
  assert.ok(error instanceof LostBeforeHelloError, error);
  assert.equal(always.connections.length, UNAVAILABLE_RETRIES + 1);
  assert.match(error.message, /closed the connection before accepting the session/);
});

test('other refusals are not retried and keep their words', async () => {
  const fake = cluster({ [B]: refuse(ErrorCode.UNAUTHORIZED, 'access token refused: expired') });
  const { result, seen } = await open(fake, entry());
  const error = await result.catch((e) => e);
  assert.ok(error instanceof RequestError);
  assert.ok(!error.retryable);
  assert.equal(fake.connections.length, 1);
  assert.equal(error.message, 'The gateway refused the session: UNAUTHORIZED (0x04) — access token refused: expired');
  assert.deepEqual(seen.delays, []);
});

test('a connection that cannot be opened says which hop it was', async () => {
  // The entry itself: hop 0 (the page may fall back to WebRTC).
  let fake = cluster({});
  let error = await (await open(fake, entry())).result.catch((e) => e);
  assert.ok(error instanceof ConnectError);
  assert.equal(error.hop, 0);
  assert.equal(error.url, B);
  assert.match(error.message, /Could not open a WebTransport session to https:\/\/127\.0\.0\.3:4433\/rtc/);

  // A node a redirect led to: hop 1 (the page must not fall back at its own gateway).
  fake = cluster({ [B]: redirect(A) });
  error = await (await open(fake, entry())).result.catch((e) => e);
  assert.ok(error instanceof ConnectError);
  assert.equal(error.hop, 1);
  assert.equal(error.url, A);
});

test('a connection that is not ready in time is given up', async () => {
  const fake = cluster({});
  class NeverReady {
    constructor(url) {
      this.url = url;
      this.ready = new Promise(() => {});
      this.closed = new Promise(() => {});
      fake.connections.push(this);
    }

    close() {
      this.closedByClient = true;
    }
  }
  const { result } = await open(fake, entry(), { WebTransport: NeverReady, connectTimeoutMs: 20 });
  const error = await result.catch((e) => e);
  assert.ok(error instanceof ConnectError);
  assert.equal(error.hop, 0);
  assert.match(error.message, /did not connect within 0.02 s/);
  assert.ok(fake.connections[0].closedByClient);
});

test('redirectTarget and retryDelayMs', () => {
  const goAway = { code: ErrorCode.REDIRECT, redirect: A, cert_hashes: [HASH_A.toUpperCase()], token: null };
  const next = redirectTarget(entry(), goAway);
  assert.equal(next.url, A);
  assert.equal(next.token, 'token-at-b');
  assert.equal(toHex(next.certificateHashes[0].value), HASH_A);
  assert.deepEqual(
    [1, 2, 3, 4, 5, 6].map((n) => retryDelayMs(n, () => 0)),
    [250, 500, 1000, 2000, 4000, 4000],
  );
  assert.deepEqual(
    [1, 2, 3].map((n) => retryDelayMs(n, () => 1)),
    [500, 1000, 2000],
  );
});
