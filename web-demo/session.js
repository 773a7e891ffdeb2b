// One Strait session over WebTransport: the control stream (frames of PROTOCOL.md §2), requests
// and their answers (§7.2), datagrams (§8) and round-trip probes (§8.5); and `openSession`, which
// opens one, says hello and joins, following the cluster's redirects (§7.11) and retrying a
// cluster that cannot take the room now (`UNAVAILABLE`).
//
//     const {session} = await openSession({url, certificateHashes, token}, {
//       join: {room, name},
//       prepare: (session) => {                  // each attempt, before it connects
//         session.onMessage = (name, fields) => …; // events: ParticipantJoined, TrackPublished, …
//         session.onMedia = (media, rtp) => …;     // media datagrams
//       },
//     });
//
// or, one connection and no redirect:
//
//     const session = new Session({url, certificateHashes});
//     await session.connect();                 // WebTransport ready, control stream open
//     await session.hello(token);              // ClientHello, then Join right after:
//     const joined = await session.request('Join', {room, name});
//
// Requests resolve with the answer's fields (`Joined`, `Published`, `Subscribed`, `Ack`) and
// reject with a RequestError when the gateway answers `Error`. Before `ServerHello`, the answer to
// the hello is `ServerHello` or nothing else: a `GoAway` with code `REDIRECT` rejects it with a
// RedirectError, a session-level `Error` with a RequestError, and neither reaches `onMessage`.
// Messages without a request id (and events) go to `onMessage`; the end of the session goes to
// `onClosed` with words for a human.
//
// Nothing here needs a browser beyond the WebTransport constructor, which can be passed in
// (test/session.test.mjs drives `openSession` with a fake one under node).

import {
  DEFAULT_MAX_FRAME_SIZE,
  ErrorCode,
  FrameReader,
  PROTOCOL_VERSION,
  ProtocolError,
  encodeControlDatagram,
  encodeFrame,
  errorCodeName,
  parseDatagram,
} from './protocol.js';

/**
 * The gateway answered a request with `Error`; `request` null: it refused the session itself
 * (a session-level `Error` before `ServerHello`).
 */
export class RequestError extends Error {
  constructor(request, fields) {
    const why = `${errorCodeName(fields.code)}${fields.reason ? ` — ${fields.reason}` : ''}`;
    super(request === null ? `The gateway refused the session: ${why}` : `${request} refused: ${why}`);
    this.name = 'RequestError';
    this.code = fields.code;
    this.reason = fields.reason ?? '';
    /** Worth trying again later, unchanged (PROTOCOL.md §9). */
    this.retryable = fields.code === ErrorCode.UNAVAILABLE;
  }
}

/** The WebTransport session could not be opened (or not within the time given). */
export class ConnectError extends Error {
  constructor(message, url) {
    super(message);
    this.name = 'ConnectError';
    this.url = url;
    /** How many redirects led to `url` (0: the address the page started with). */
    this.hop = 0;
  }
}

/**
 * The connection ended before `ServerHello` without a word from the gateway (no `GoAway`, no
 * `Error` read): a refusal whose explanation was lost with the connection, or a node going away.
 * Retried like `UNAVAILABLE` (`retryable`); `code` is null.
 */
export class LostBeforeHelloError extends Error {
  constructor(message) {
    super(message);
    this.name = 'LostBeforeHelloError';
    this.code = null;
    this.reason = '';
    this.retryable = true;
  }
}

/**
 * Another node of the cluster serves the session (`GoAway` with code `REDIRECT` before
 * `ServerHello`), or `openSession` could not follow such redirects: `goAway` is the last one.
 */
export class RedirectError extends Error {
  constructor(message, goAway) {
    super(message);
    this.name = 'RedirectError';
    this.goAway = goAway;
  }
}

/** Answers of requests, by message name. */
const ANSWERS = new Set(['Joined', 'Published', 'Subscribed', 'Ack']);

/** Until ServerHello says otherwise, about what QUIC carries before path-MTU discovery. */
const DEFAULT_DATAGRAM_SIZE = 1160;

function base64ToBytes(text) {
  const raw = atob(text);
  const out = new Uint8Array(raw.length);
  for (let i = 0; i < raw.length; i++) out[i] = raw.charCodeAt(i);
  return out;
}

/**
 * `serverCertificateHashes` for WebTransport from `[{algorithm, value}]`, `value` being base64
 * (as `/v1/cert-hashes` gives it) or bytes.
 */
function certificateOptions(hashes) {
  return hashes.map((h) => ({
    algorithm: h.algorithm ?? 'sha-256',
    value: typeof h.value === 'string' ? base64ToBytes(h.value) : h.value,
  }));
}

/**
 * The hashes of a `GoAway` (lowercase hex SHA-256, PROTOCOL.md §6.3) as `[{algorithm, value}]`;
 * null when one is not 64 hex digits.
 */
export function hashesFromHex(list) {
  const out = [];
  for (const hex of list) {
    if (!/^[0-9a-fA-F]{64}$/.test(hex)) return null;
    const value = new Uint8Array(32);
    for (let i = 0; i < 32; i++) value[i] = Number.parseInt(hex.slice(2 * i, 2 * i + 2), 16);
    out.push({ algorithm: 'sha-256', value });
  }
  return out;
}

export class Session {
  /**
   * `url`: the WebTransport URL (`https://127.0.0.1:4433/rtc`); `certificateHashes`: what
   * `/v1/cert-hashes` returned (`[{algorithm: 'sha-256', value: <base64>}]`, or bytes as
   * `value`), for a self-signed development certificate; empty for a certificate the browser
   * trusts. `WebTransport`: the constructor to use (the browser's by default).
   */
  constructor({ url, certificateHashes = [], WebTransport = globalThis.WebTransport }) {
    this.url = url;
    this.certificateHashes = certificateHashes;
    this.WebTransport = WebTransport;
    this.transport = null;
    this.nextRequest = 1;
    this.pending = new Map(); // request id → {name, resolve, reject}
    this.serverHello = null;
    /** A `GoAway` received before `ServerHello` (it answers the hello). */
    this.goAway = null;
    this.maxFrameSize = DEFAULT_MAX_FRAME_SIZE;
    this.closed = false;
    this.rttMs = null;
    /** When the gateway was last heard from (`performance.now()`): a frame or a datagram. */
    this.lastHeard = globalThis.performance?.now() ?? 0;
    this.pingSeq = 0;
    this.pings = null;
    /** Unusable datagrams (malformed, unknown kind), dropped. */
    this.datagramsDropped = 0;
    /** Padding datagrams (the gateway probing the link, PROTOCOL.md §8.6), dropped: not unusable. */
    this.paddingReceived = 0;
    this.onMessage = () => {};
    this.onMedia = () => {};
    this.onKeyframeRequest = () => {};
    this.onClosed = () => {};
  }

  /**
   * Opens the WebTransport session and the control stream; with `timeoutMs`, gives up (and
   * closes the attempt) when the session is not ready by then. Throws a ConnectError with words
   * for a human.
   */
  async connect({ timeoutMs = null } = {}) {
    const options = {};
    if (this.certificateHashes.length > 0) {
      options.serverCertificateHashes = certificateOptions(this.certificateHashes);
    }
    let timer;
    try {
      this.transport = new this.WebTransport(this.url, options);
      const late =
        timeoutMs === null
          ? new Promise(() => {})
          : new Promise((_, reject) => {
              timer = setTimeout(
                () => reject(new ConnectError(`WebTransport did not connect within ${timeoutMs / 1000} s`, this.url)),
                timeoutMs,
              );
            });
      await Promise.race([this.transport.ready, late]);
    } catch (e) {
      // The attempt must not end anything later, when it fails or closes after all.
      this.closed = true;
      this.transport?.ready?.catch(() => {});
      this.transport?.closed?.catch(() => {});
      try {
        this.transport?.close({ closeCode: ErrorCode.NONE, reason: 'gave up connecting' });
      } catch {
        // not open, or closing already
      }
      if (e instanceof ConnectError) throw e;
      const detail = String(e?.message ?? e).replace(/\.$/, '');
      throw new ConnectError(
        `Could not open a WebTransport session to ${this.url} (${detail}). ` +
          'Usual causes: the server certificate does not match the hashes published at ' +
          '/v1/cert-hashes (a wrong or outdated certificate hash), the QUIC port is not reachable ' +
          'over UDP, or the gateway does not allow this page\'s origin.',
        this.url,
      );
    } finally {
      clearTimeout(timer);
    }
    this.transport.closed.then(
      (info) => this.finish(info?.closeCode ?? 0, info?.reason ?? ''),
      (e) => this.finish(null, e?.message ?? String(e)),
    );
    const stream = await this.transport.createBidirectionalStream();
    this.writer = stream.writable.getWriter();
    const datagrams = this.transport.datagrams;
    const writable = typeof datagrams.createWritable === 'function' ? datagrams.createWritable() : datagrams.writable;
    this.datagramWriter = writable.getWriter();
    this.readControl(stream.readable);
    this.readDatagrams(datagrams.readable);
  }

  /**
   * Sends ClientHello (with `resume`, a resume token from an earlier ServerHello, to take that
   * session back: PROTOCOL.md §7.8); resolves with ServerHello's fields.
   */
  hello(token, agent = `strait-web-demo/0.1 ${globalThis.navigator?.userAgent ?? ''}`.trim().slice(0, 256), resume = null) {
    const answer = new Promise((resolve, reject) => {
      this.helloWaiter = { resolve, reject };
    });
    this.send({ ClientHello: { version: PROTOCOL_VERSION, token, resume, agent } });
    return answer;
  }

  /**
   * Gives the connection up as lost (nothing heard from the gateway for too long): it is closed,
   * and `onClosed` hears of it as of a lost connection (`code` null), so that the page resumes.
   */
  lose(reason) {
    if (this.closed) return;
    this.finish(null, reason);
    this.close(ErrorCode.NONE, 'no answer');
  }

  /** Sends a request (`Join`, `Publish`, …) with a fresh request id; resolves with its answer. */
  request(name, fields) {
    const request = this.nextRequest++;
    const answer = new Promise((resolve, reject) => {
      this.pending.set(request, { name, resolve, reject });
    });
    this.send({ [name]: { request, ...fields } });
    return answer;
  }

  /** Queues one control message on the control stream. */
  send(message) {
    if (this.closed || !this.writer) return;
    const frame = encodeFrame(message, this.maxFrameSize);
    this.writer.write(frame).catch(() => {});
  }

  /** The largest datagram that both the browser and the gateway take now (§8.3). */
  maxDatagramSize() {
    const browser = this.transport?.datagrams?.maxDatagramSize;
    const server = this.serverHello?.max_datagram_size ?? DEFAULT_DATAGRAM_SIZE;
    return typeof browser === 'number' && browser > 0 ? Math.min(browser, server) : server;
  }

  /** Sends one datagram; dropped silently when the session is closed (datagrams are lossy). */
  sendDatagram(bytes) {
    if (this.closed || !this.datagramWriter) return;
    this.datagramWriter.write(bytes).catch(() => {});
  }

  /** Asks for a keyframe on a subscription's media id (control datagram, §8.5). */
  requestKeyframe(media) {
    this.sendDatagram(encodeControlDatagram({ KeyframeRequest: { media } }));
  }

  /** Starts datagram Ping probes, one a second; `rttMs` follows the answers. */
  startPings() {
    const ping = () => {
      this.pingSeq = (this.pingSeq + 1) >>> 0;
      const timestamp_us = Math.round(performance.now() * 1000);
      this.sendDatagram(encodeControlDatagram({ Ping: { seq: this.pingSeq, timestamp_us } }));
    };
    ping();
    this.pings = setInterval(ping, 1000);
  }

  /**
   * Gives the session up (a redirect or a refusal answered its hello): nothing more reaches the
   * callbacks, waiting requests are rejected with `error`, and the connection is closed.
   */
  abandon(error) {
    this.onMessage = () => {};
    this.onMedia = () => {};
    this.onKeyframeRequest = () => {};
    this.onClosed = () => {};
    this.close(ErrorCode.NONE, 'gave up');
    this.finish(ErrorCode.NONE, 'gave up', error);
  }

  /** Closes the session with `code` (NONE by default). */
  close(code = ErrorCode.NONE, reason = '') {
    if (this.transport && !this.closed) {
      try {
        this.transport.close({ closeCode: code, reason });
      } catch {
        // already closing
      }
    }
  }

  async readControl(readable) {
    const reader = readable.getReader();
    const frames = new FrameReader();
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        this.lastHeard = performance.now();
        frames.push(value);
        for (let f; (f = frames.next()) !== null; ) {
          if (f.message) this.handle(f.message);
        }
      }
    } catch (e) {
      if (e instanceof ProtocolError) {
        this.close(e.code, e.message.slice(0, 200));
        this.finish(e.code, `the gateway sent a malformed frame: ${e.message}`);
      }
      // Otherwise the stream ended with the session; `transport.closed` tells why.
    }
  }

  async readDatagrams(readable) {
    const reader = readable.getReader();
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        this.lastHeard = performance.now();
        let parsed;
        try {
          parsed = parseDatagram(value);
        } catch {
          this.datagramsDropped += 1;
          continue;
        }
        if (parsed.rtp) this.onMedia(parsed.media, parsed.rtp);
        else if (parsed.control) this.handleControlDatagram(parsed.control);
        else if (parsed.padding !== undefined) this.paddingReceived += 1;
      }
    } catch {
      // The session ended.
    }
  }

  handleControlDatagram(control) {
    if (control.Pong) {
      if (control.Pong.seq === this.pingSeq) {
        this.rttMs = performance.now() - Number(control.Pong.timestamp_us) / 1000;
      }
    } else if (control.Ping) {
      this.sendDatagram(encodeControlDatagram({ Pong: control.Ping }));
    } else if (control.KeyframeRequest) {
      this.onKeyframeRequest({ media: control.KeyframeRequest.media });
    }
  }

  handle(message) {
    const [name, fields] = Object.entries(message)[0];
    if (this.serverHello === null && name === 'GoAway') {
      // Before ServerHello, a GoAway answers the hello. REDIRECT: another node of the cluster
      // serves this session (PROTOCOL.md §7.11); the Error and the close that follow add nothing.
      this.goAway = fields;
      if (fields.code === ErrorCode.REDIRECT) {
        this.helloWaiter?.reject(new RedirectError('another node of the cluster serves this session', fields));
        this.helloWaiter = null;
      }
      return;
    }
    if (this.serverHello === null && name === 'Error' && fields.request === null) {
      // The session is refused (or was redirected, which rejected the hello already): the
      // hello's caller says so, in its own words.
      this.helloWaiter?.reject(new RequestError(null, fields));
      this.helloWaiter = null;
      return;
    }
    if (name === 'ServerHello') {
      this.serverHello = fields;
      this.maxFrameSize = Math.min(DEFAULT_MAX_FRAME_SIZE, fields.limits.max_frame_size);
      this.helloWaiter?.resolve(fields);
      this.helloWaiter = null;
      return;
    }
    if (name === 'NewResumeToken') {
      // Only the latest resume token is worth keeping (PROTOCOL.md section 7.8).
      if (this.serverHello) this.serverHello.resume_token = fields.resume_token;
      return;
    }
    if (ANSWERS.has(name) && fields.request !== 0 && this.pending.has(fields.request)) {
      const waiter = this.pending.get(fields.request);
      this.pending.delete(fields.request);
      waiter.resolve(fields);
      // Joined also feeds the room state (the snapshot of others follows it).
      if (name !== 'Joined') return;
    }
    if (name === 'Error' && fields.request !== null && this.pending.has(fields.request)) {
      const waiter = this.pending.get(fields.request);
      this.pending.delete(fields.request);
      waiter.reject(new RequestError(waiter.name, fields));
      return;
    }
    if (name === 'Ping') {
      this.send({ Pong: { nonce: fields.nonce } });
      return;
    }
    this.onMessage(name, fields);
  }

  finish(code, reason, error = null) {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.pings);
    let why = code === null ? `the connection was lost: ${reason}` : `${errorCodeName(code)}${reason ? ` — ${reason}` : ''}`;
    if (code === null && this.serverHello === null) {
      // Chromium does not show the QUIC close code of a connection the gateway closed: before
      // ServerHello that is almost always the hello being refused.
      why += ' The gateway closed the connection before accepting the session: the access token may have been refused (invalid or expired), or the gateway is full.';
      error ??= new LostBeforeHelloError(`the session ended (${why})`);
    }
    error ??= new Error(`the session ended (${why})`);
    this.helloWaiter?.reject(error);
    this.helloWaiter = null;
    for (const waiter of this.pending.values()) waiter.reject(error);
    this.pending.clear();
    this.onClosed({ code, reason, message: why });
  }
}

// ---------------------------------------------------------------------------------------------
// Opening a session in a cluster: redirects and retries.

/** Redirects `openSession` follows before it gives up, as many as the Rust client follows. */
export const MAX_REDIRECTS = 3;

/** Attempts `openSession` makes again after an `UNAVAILABLE` refusal before it gives up. */
export const UNAVAILABLE_RETRIES = 3;

/**
 * The wait before retry `attempt` (1, 2, …): 0.5 s, 1 s, 2 s, … (at most 8 s), its upper half
 * scaled by `random()` so that pages refused together do not all come back together.
 */
export function retryDelayMs(attempt, random = Math.random) {
  const full = Math.min(8000, 500 * 2 ** (attempt - 1));
  return Math.round(full / 2 + (full / 2) * random());
}

/**
 * Where a redirect (`goAway`, code `REDIRECT`) leads from `target` (`{url, certificateHashes,
 * token}`): its URL (absent: the same one); its certificate hashes when `target` pins hashes,
 * and none when its list is empty (the node has a certificate from a CA); a target that pins
 * nothing pins nothing after; its token (absent: the same one). Throws a RedirectError when the
 * URL is not a WebTransport URL or a hash is not SHA-256 in hex.
 */
export function redirectTarget(target, goAway) {
  const url = goAway.redirect ?? target.url;
  let parsed = null;
  try {
    parsed = new URL(url);
  } catch {
    // not a URL: said below
  }
  if (parsed === null || parsed.protocol !== 'https:') {
    throw new RedirectError(
      `The gateway redirected this page to “${url}”, which is not a WebTransport URL (https://host:port/path).`,
      goAway,
    );
  }
  let certificateHashes = [];
  if (target.certificateHashes.length > 0) {
    if (goAway.redirect === null && goAway.cert_hashes.length === 0) {
      // The same address again: the same certificate.
      certificateHashes = target.certificateHashes;
    } else {
      certificateHashes = hashesFromHex(goAway.cert_hashes);
      if (certificateHashes === null) {
        throw new RedirectError(`The redirect to ${url} names a certificate hash that is not SHA-256 in hex.`, goAway);
      }
    }
  }
  return { url, certificateHashes, token: goAway.token ?? target.token };
}

/**
 * Opens a session at `entry` (`{url, certificateHashes, token}`), says hello and, with `join`
 * (`{room, name}`), joins right after (one round trip, PROTOCOL.md §7.1). Resolves with
 * `{session, serverHello, joined, redirects}` (`redirects`: the URLs followed).
 *
 * - A redirect (`GoAway` REDIRECT before `ServerHello`, §7.11) is followed: a new WebTransport
 *   session to its URL, pinning its certificate hashes when `entry` pins hashes, presenting its
 *   token if it has one. More than `maxRedirects` of them reject with a RedirectError.
 * - A refusal with `UNAVAILABLE` (no node can take the room now) is retried from `entry` after
 *   `retryDelayMs`, `retries` times; then it rejects with that RequestError (`retryable`). So is
 *   a connection that ends before `ServerHello` without a word (LostBeforeHelloError: the
 *   gateway's explanation can be lost when its close overtakes the stream's last bytes).
 * - A session that cannot be opened rejects with a ConnectError, whose `hop` says how many
 *   redirects led to it (0: `entry` itself); other refusals reject with a RequestError.
 *
 * With `resume` (a resume token), the hello asks to take that session back (PROTOCOL.md §7.8;
 * `serverHello.resumed` says whether it was) and `join` must be null: a session taken back is in
 * its room already, and one refused joins after.
 *
 * Options: `prepare(session)` is called for each attempt before it connects (install the
 * callbacks there: events follow `Joined` at once); a failed attempt is abandoned, so its end
 * never reaches them. `connectTimeoutMs` bounds each connect (none by default).
 * `onRedirect({url, hop, goAway})` and `onRetry({error, attempt, retries, delayMs})` say what
 * happens. `delay(ms)`, `random()` and `WebTransport` can be replaced (tests).
 */
export async function openSession(entry, options = {}) {
  const {
    join = null,
    resume = null,
    prepare = () => {},
    connectTimeoutMs = null,
    maxRedirects = MAX_REDIRECTS,
    retries = UNAVAILABLE_RETRIES,
    onRedirect = () => {},
    onRetry = () => {},
    delay = (ms) => new Promise((resolve) => setTimeout(resolve, ms)),
    random = Math.random,
    WebTransport = globalThis.WebTransport,
  } = options;
  let target = entry;
  let redirects = [];
  let retried = 0;
  for (;;) {
    const session = new Session({ url: target.url, certificateHashes: target.certificateHashes, WebTransport });
    prepare(session);
    try {
      await session.connect({ timeoutMs: connectTimeoutMs });
    } catch (e) {
      e.hop = redirects.length;
      throw e;
    }
    const hello = resume === null ? session.hello(target.token) : session.hello(target.token, undefined, resume);
    const joining = join ? session.request('Join', join) : null;
    // Rejected along with the hello when the session is refused or redirected.
    joining?.catch(() => {});
    try {
      const serverHello = await hello;
      const joined = joining ? await joining : null;
      return { session, serverHello, joined, redirects };
    } catch (e) {
      session.abandon(e);
      if (e instanceof RedirectError) {
        if (redirects.length >= maxRedirects) {
          throw new RedirectError(
            `The gateway redirected this page ${redirects.length} times without reaching the node ` +
              `that serves the room (${[entry.url, ...redirects].join(' → ')} → ${e.goAway.redirect ?? 'the same address'}): ` +
              "the cluster's nodes disagree about where the room is. Reload the page to try again.",
            e.goAway,
          );
        }
        const next = redirectTarget(target, e.goAway);
        // Without an address, the same one after a backoff (PROTOCOL.md §6.3, GoAway).
        if (e.goAway.redirect === null) await delay(retryDelayMs(redirects.length + 1, random));
        redirects = [...redirects, next.url];
        onRedirect({ url: next.url, hop: redirects.length, goAway: e.goAway });
        target = next;
        continue;
      }
      if ((e instanceof RequestError || e instanceof LostBeforeHelloError) && e.retryable && retried < retries) {
        retried += 1;
        const delayMs = retryDelayMs(retried, random);
        onRetry({ error: e, attempt: retried, retries, delayMs });
        await delay(delayMs);
        // Placement is decided afresh where the page started: the refusal may come from a node
        // a redirect led to, and a redirect's token lives only briefly.
        target = entry;
        redirects = [];
        continue;
      }
      if (e instanceof RequestError && e.retryable) {
        e.message =
          `No node of the cluster can take this session now (${errorCodeName(e.code)}` +
          `${e.reason ? ` — ${e.reason}` : ''}), after ${retried + 1} attempts. ` +
          'This is temporary: reload the page to try again in a moment.';
      }
      throw e;
    }
  }
}
