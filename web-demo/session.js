// One Strait session over WebTransport: the control stream (frames of PROTOCOL.md §2), requests
// and their answers (§7.2), datagrams (§8) and round-trip probes (§8.5).
//
//     const session = new Session({url, certificateHashes});
//     await session.connect();                 // WebTransport ready, control stream open
//     session.onMessage = (name, fields) => …; // events: ParticipantJoined, TrackPublished, …
//     session.onMedia = (media, rtp) => …;     // media datagrams
//     await session.hello(token);              // ClientHello, then Join right after:
//     const joined = await session.request('Join', {room, name});
//
// Requests resolve with the answer's fields (`Joined`, `Published`, `Subscribed`, `Ack`) and
// reject with a RequestError when the gateway answers `Error`. Messages without a request id
// (and events) go to `onMessage`; the end of the session goes to `onClosed` with words for a human.

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

/** The gateway answered a request with `Error`. */
export class RequestError extends Error {
  constructor(request, fields) {
    super(`${request} refused: ${errorCodeName(fields.code)}${fields.reason ? ` — ${fields.reason}` : ''}`);
    this.name = 'RequestError';
    this.code = fields.code;
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

export class Session {
  /**
   * `url`: the WebTransport URL (`https://127.0.0.1:4433/rtc`); `certificateHashes`: what
   * `/v1/cert-hashes` returned (`[{algorithm: 'sha-256', value: <base64>}]`), for a
   * self-signed development certificate; empty for a certificate the browser trusts.
   */
  constructor({ url, certificateHashes = [] }) {
    this.url = url;
    this.certificateHashes = certificateHashes;
    this.transport = null;
    this.nextRequest = 1;
    this.pending = new Map(); // request id → {name, resolve, reject}
    this.serverHello = null;
    this.maxFrameSize = DEFAULT_MAX_FRAME_SIZE;
    this.closed = false;
    this.rttMs = null;
    this.pingSeq = 0;
    this.pings = null;
    this.datagramsDropped = 0;
    this.onMessage = () => {};
    this.onMedia = () => {};
    this.onKeyframeRequest = () => {};
    this.onClosed = () => {};
  }

  /** Opens the WebTransport session and the control stream. Throws with words for a human. */
  async connect() {
    const options = {};
    if (this.certificateHashes.length > 0) {
      options.serverCertificateHashes = this.certificateHashes.map((h) => ({
        algorithm: h.algorithm ?? 'sha-256',
        value: base64ToBytes(h.value),
      }));
    }
    try {
      this.transport = new WebTransport(this.url, options);
      await this.transport.ready;
    } catch (e) {
      const detail = String(e?.message ?? e).replace(/\.$/, '');
      throw new Error(
        `Could not open a WebTransport session to ${this.url} (${detail}). ` +
          'Usual causes: the server certificate does not match the hashes published at ' +
          '/v1/cert-hashes (a wrong or outdated certificate hash), the QUIC port is not reachable ' +
          'over UDP, or the gateway does not allow this page\'s origin.',
      );
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

  /** Sends ClientHello; resolves with ServerHello's fields. */
  hello(token, agent = `strait-web-demo/0.1 ${navigator.userAgent}`.slice(0, 256)) {
    const answer = new Promise((resolve, reject) => {
      this.helloWaiter = { resolve, reject };
    });
    this.send({ ClientHello: { version: PROTOCOL_VERSION, token, resume: null, agent } });
    return answer;
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
        let parsed;
        try {
          parsed = parseDatagram(value);
        } catch {
          this.datagramsDropped += 1;
          continue;
        }
        if (parsed.rtp) this.onMedia(parsed.media, parsed.rtp);
        else if (parsed.control) this.handleControlDatagram(parsed.control);
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
    if (name === 'Error' && fields.request === null) {
      const error = new RequestError('the session', fields);
      this.helloWaiter?.reject(error);
      this.helloWaiter = null;
    }
    if (name === 'Ping') {
      this.send({ Pong: { nonce: fields.nonce } });
      return;
    }
    this.onMessage(name, fields);
  }

  finish(code, reason) {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.pings);
    let why = code === null ? `the connection was lost: ${reason}` : `${errorCodeName(code)}${reason ? ` — ${reason}` : ''}`;
    if (code === null && this.serverHello === null) {
      // Chromium does not show the QUIC close code of a connection the gateway closed: before
      // ServerHello that is almost always the hello being refused.
      why += ' The gateway closed the connection before accepting the session: the access token may have been refused (invalid or expired), or the gateway is full.';
    }
    const error = new Error(`the session ended (${why})`);
    this.helloWaiter?.reject(error);
    for (const waiter of this.pending.values()) waiter.reject(error);
    this.pending.clear();
    this.onClosed({ code, reason, message: why });
  }
}
