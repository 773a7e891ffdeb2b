// WebSocket signaling for a plain RTCPeerConnection (PROTOCOL.md §1, "WebSocket path"): the
// control protocol in binary WebSocket messages, one frame each, and media over WebRTC.
//
//     const peer = await SignalingPeer.connect(`ws://${location.host}/ws/rtc?token=${token}`);
//     await peer.join('lobby');
//     await peer.negotiate({ send: [cameraTrack], receive: { video: 1 } });
//
// Send tracks go out as sendonly sections (or sendrecv), and the gateway fills each new receiving
// section with a track of the room it does not send yet; a `Subscribed` message per track follows
// the answer. The answer names the SSRC each of its sections sends, which is how a section, and
// the `MediaStreamTrack` of its receiver, is known to carry a given track of the room
// (`onTrack`); without SSRCs in the answer, the order of the offer's new receiving sections of
// each kind is used.
// The gateway never offers: to receive tracks published later, add recvonly sections and offer
// again on the same connection — `follow()` does that on every `TrackPublished`.
//
// The RTCPeerConnection is created once `ServerHello` is in, with the STUN/TURN servers it names
// (unless `rtcConfig.iceServers` is given).

import { ErrorCode, FrameReader, encodeFrame, unwrap, errorCodeName } from './protocol.js';

/** Redirects (`GoAway` with code `REDIRECT`) followed before giving up (PROTOCOL.md §7.11). */
export const MAX_SIGNALING_REDIRECTS = 3;

/** Another node of the cluster serves the room: `goAway` says where, with a token for it. */
export class SignalingRedirect extends Error {
  constructor(goAway) {
    super(`another node serves this room: ${goAway.redirect}`);
    this.goAway = goAway;
  }
}

/**
 * The URL to open after `goAway` redirected `url`: its `redirect` (a `ws://…/ws/rtc` URL), with
 * its token, or the token `url` had when it carries none. `null` when it names no WebSocket URL.
 */
export function signalingRedirectUrl(url, goAway) {
  let next;
  try {
    next = new URL(goAway.redirect ?? '');
  } catch {
    return null;
  }
  if (next.protocol !== 'ws:' && next.protocol !== 'wss:') return null;
  next.searchParams.set('token', goAway.token ?? new URL(url).searchParams.get('token') ?? '');
  return next.href;
}

export class SignalingPeer {
  /**
   * Opens the WebSocket and waits for `ServerHello` (or the `Error` that refuses the token);
   * then creates the peer connection. `onMessage(name, fields)` sees every message received
   * (from `ServerHello` on); `onTrack(info, receiverTrack, subscribed)` is called when a
   * receiving section is bound to a track of the room (`info` is its `TrackPublished`).
   */
  static async connect(url, options = {}) {
    // A cluster's node that does not serve the room sends the session to the one that does.
    for (let hops = 0; ; hops++) {
      try {
        return await SignalingPeer.open(url, options);
      } catch (e) {
        if (!(e instanceof SignalingRedirect)) throw e;
        const next = signalingRedirectUrl(url, e.goAway);
        if (next === null) throw new Error(`redirected to an address this page cannot use: ${e.goAway.redirect}`);
        if (hops >= MAX_SIGNALING_REDIRECTS) {
          throw new Error(`redirected ${hops + 1} times in a row (last to ${e.goAway.redirect}): giving up`);
        }
        url = next;
      }
    }
  }

  /** One attempt of `connect`: a redirect before `ServerHello` rejects with `SignalingRedirect`. */
  static async open(url, { rtcConfig = {}, onMessage = null, onTrack = null } = {}) {
    const ws = new WebSocket(url);
    ws.binaryType = 'arraybuffer';
    const peer = new SignalingPeer(ws);
    peer.onMessage = onMessage;
    peer.onTrack = onTrack;
    const hello = await peer.hello;
    peer.me = hello.participant;
    peer.iceServers = rtcConfig.iceServers ?? hello.ice_servers.map(rtcIceServer);
    peer.pc = new RTCPeerConnection({ ...rtcConfig, iceServers: peer.iceServers });
    return peer;
  }

  constructor(ws) {
    this.ws = ws;
    /** Created by `connect` once `ServerHello` is in. */
    this.pc = null;
    /** Our participant id (from `ServerHello`). */
    this.me = null;
    this.iceServers = [];
    this.onMessage = null;
    this.onTrack = null;
    /** Called with `{code, reason}` when the WebSocket closes. */
    this.onClose = null;
    /** Called with the error when an offer made by `follow()` on a `TrackPublished` fails. */
    this.onRenegotiationFailed = null;
    /** Tracks of the room this connection receives: track id → {info, transceiver, ssrc}. */
    this.received = new Map();
    /** Tracks for which a receiving section was offered: track id (string). */
    this.requested = new Set();
    /** Receiving sections of the offer in flight, by kind, in SDP order. */
    this.offering = null;
    /** Receiving sections of the last answered offer not bound to a track yet, by kind. */
    this.unbound = { Audio: [], Video: [] };
    /** SSRC → mid of the section that sends it, from the last answer. */
    this.answerSsrcs = new Map();
    this.reader = new FrameReader();
    this.nextRequest = 1;
    /** Every message received, in order, as `[name, fields]`. */
    this.log = [];
    this.waiters = [];
    this.closed = null;
    this.hello = new Promise((resolve, reject) => {
      this.waiters.push({
        match: (n, f) => n === 'ServerHello' || n === 'Error' || (n === 'GoAway' && f.code === ErrorCode.REDIRECT),
        resolve: ([n, f]) => {
          if (n === 'ServerHello') resolve(f);
          else if (n === 'GoAway') {
            reject(new SignalingRedirect(f));
            this.ws.close();
          } else reject(new Error(describe(f)));
        },
        reject,
      });
    });
    ws.onmessage = (event) => this.receive(new Uint8Array(event.data));
    ws.onclose = (event) => {
      this.closed = { code: event.code, reason: event.reason };
      for (const w of this.waiters.splice(0)) w.reject?.(new Error(`websocket closed: ${event.code} ${event.reason}`));
      this.onClose?.(this.closed);
    };
  }

  receive(bytes) {
    this.reader.push(bytes);
    for (let frame; (frame = this.reader.next()) !== null; ) {
      if (!frame.message) continue;
      const entry = unwrap(frame.message);
      this.log.push(entry);
      const [name, fields] = entry;
      if (name === 'Sdp' && fields.kind === 'Answer') {
        // The `Subscribed` messages that follow belong to this answer's new sections.
        this.unbound = this.offering ?? { Audio: [], Video: [] };
        this.offering = null;
        this.answerSsrcs = ssrcMids(fields.sdp);
      }
      if (name === 'Subscribed') this.bind(fields);
      const i = this.waiters.findIndex((w) => w.match(name, fields));
      if (i >= 0) this.waiters.splice(i, 1)[0].resolve(entry);
      try {
        this.onMessage?.(name, fields);
      } catch (e) {
        console.error('signaling: onMessage failed', e);
      }
      if (this.following && name === 'TrackPublished') {
        this.renegotiate().catch((e) => this.onRenegotiationFailed?.(e));
      }
    }
  }

  /** Binds a `Subscribed` track to the next unbound receiving section of its kind. */
  bind(subscribed) {
    const key = String(subscribed.track);
    const info = this.log.find(([n, f]) => n === 'TrackPublished' && String(f.track) === key)?.[1];
    if (!info) return;
    const unbound = this.unbound[info.kind] ?? [];
    const mid = this.answerSsrcs.get(subscribed.ssrc >>> 0);
    let transceiver = mid === undefined ? undefined : this.pc.getTransceivers().find((t) => t.mid === mid);
    if (transceiver) {
      const i = unbound.indexOf(transceiver);
      if (i >= 0) unbound.splice(i, 1);
    } else {
      transceiver = unbound.shift();
    }
    if (!transceiver) return;
    this.received.set(key, { info, transceiver, ssrc: subscribed.ssrc });
    try {
      this.onTrack?.(info, transceiver.receiver.track, subscribed);
    } catch (e) {
      console.error('signaling: onTrack failed', e);
    }
  }

  send(message) {
    this.ws.send(encodeFrame(message));
  }

  /**
   * The first message (already received or not, from the `from`th message of the log on) for
   * which `match(name, fields)` holds.
   */
  waitFor(match, from = 0) {
    const seen = this.log.slice(from).find(([n, f]) => match(n, f));
    if (seen) return Promise.resolve(seen);
    return new Promise((resolve, reject) => this.waiters.push({ match, resolve, reject }));
  }

  /** Joins `room`; resolves with `Joined`, rejects with the `Error` that refuses it. */
  async join(room, name = '') {
    const request = this.nextRequest++;
    this.send({ Join: { request, room, name } });
    const [kind, fields] = await this.waitFor((n, f) => (n === 'Joined' || n === 'Error') && f.request === request);
    if (kind === 'Error') throw new Error(describe(fields));
    return fields;
  }

  /**
   * Tracks of the other participants known so far (from `TrackPublished`, less
   * `TrackUnpublished`); our own tracks are left out.
   */
  tracks() {
    const live = new Map();
    for (const [n, f] of this.log) {
      if (n === 'TrackPublished' && f.participant !== this.me) live.set(String(f.track), f);
      if (n === 'TrackUnpublished') live.delete(String(f.track));
    }
    return [...live.values()];
  }

  /**
   * Adds `tracks` as sendonly (or `direction`) sections, VP8 preferred for video, to go out with
   * the next offer. A sendrecv section also receives a track of the room.
   */
  addSendTracks(tracks, direction = 'sendonly') {
    for (const track of tracks) {
      const transceiver = this.pc.addTransceiver(track, { direction });
      if (track.kind === 'video') preferCodec(transceiver, 'video/VP8');
    }
  }

  /**
   * Offers `send` tracks (sendonly, VP8 preferred for video) and `receive` recvonly sections
   * ({audio: n, video: n}); waits for ICE gathering, sends the offer and applies the answer.
   */
  async negotiate({ send = [], receive = {} } = {}) {
    this.addSendTracks(send);
    for (const [kind, count] of Object.entries(receive)) {
      for (let i = 0; i < count; i++) this.pc.addTransceiver(kind, { direction: 'recvonly' });
    }
    await this.offer();
  }

  /**
   * Keeps receiving every track of the others: whenever the room has a track for which no
   * receiving section was offered yet, adds one (recvonly) and offers again. Sections of the
   * tracks unpublished since stay inactive: the gateway binds tracks to new sections only.
   * Sections added with `addSendTracks` go out with the first offer.
   */
  follow() {
    this.following = true;
    return this.renegotiate();
  }

  async renegotiate() {
    if (this.negotiating) {
      this.again = true;
      return;
    }
    this.negotiating = true;
    try {
      do {
        this.again = false;
        for (const track of this.tracks()) {
          const key = String(track.track);
          if (this.received.has(key) || this.requested.has(key)) continue;
          this.requested.add(key);
          this.pc.addTransceiver(track.kind === 'Audio' ? 'audio' : 'video', { direction: 'recvonly' });
        }
        // A section never offered has no mid yet.
        if (this.pc.getTransceivers().some((t) => t.mid === null)) await this.offer();
      } while (this.again);
    } finally {
      this.negotiating = false;
    }
  }

  /** Sends the offer of the connection as it is now and applies the answer. */
  async offer() {
    const fresh = this.pc.getTransceivers().filter((t) => t.mid === null);
    await this.pc.setLocalDescription(await this.pc.createOffer());
    // The receiving sections this offer adds, by kind, in SDP order (transceiver order).
    const offering = { Audio: [], Video: [] };
    for (const t of fresh) {
      if (t.direction === 'recvonly' || t.direction === 'sendrecv') {
        offering[t.receiver.track.kind === 'audio' ? 'Audio' : 'Video'].push(t);
      }
    }
    // The gateway is ICE-lite and takes the candidates from the offer: send it complete.
    if (this.pc.iceGatheringState !== 'complete') {
      await new Promise((resolve) => {
        const check = () => this.pc.iceGatheringState === 'complete' && resolve();
        this.pc.addEventListener('icegatheringstatechange', check);
        setTimeout(resolve, 5000);
      });
    }
    const from = this.log.length;
    this.offering = offering;
    this.send({ Sdp: { kind: 'Offer', sdp: this.pc.localDescription.sdp } });
    const [kind, fields] = await this.waitFor(
      (n, f) => (n === 'Sdp' && f.kind === 'Answer') || (n === 'Error' && f.request === null),
      from,
    );
    if (kind === 'Error') throw new Error(describe(fields));
    await this.pc.setRemoteDescription({ type: 'answer', sdp: fields.sdp });
  }

  /** Sends `Leave` and closes. */
  close() {
    try {
      this.send({ Leave: { request: this.nextRequest++ } });
    } catch {}
    this.pc?.close();
    this.ws.close();
  }

  /**
   * Sends `Leave`, waits (at most `waitMs`) for the gateway to close the WebSocket after its
   * `Ack`, then closes the peer connection.
   */
  async leave(waitMs = 3000) {
    if (!this.closed) {
      const closed = new Promise((resolve) => {
        this.ws.addEventListener('close', resolve, { once: true });
        setTimeout(resolve, waitMs);
      });
      try {
        this.send({ Leave: { request: this.nextRequest++ } });
      } catch {}
      await closed;
    }
    this.pc?.close();
    this.ws.close();
  }
}

/** `IceServer` (PROTOCOL.md §6.3) as an `RTCIceServer` dictionary. */
function rtcIceServer(server) {
  const out = { urls: server.urls };
  if (server.username !== null && server.username !== undefined) out.username = server.username;
  if (server.credential !== null && server.credential !== undefined) out.credential = server.credential;
  return out;
}

/** SSRC → mid for every `a=ssrc` line of `sdp`. */
function ssrcMids(sdp) {
  const out = new Map();
  for (const section of sdp.split(/\r?\n(?=m=)/).slice(1)) {
    const mid = /^a=mid:(\S+)/m.exec(section)?.[1];
    if (mid === undefined) continue;
    for (const m of section.matchAll(/^a=ssrc:(\d+) /gm)) out.set(Number(m[1]) >>> 0, mid);
  }
  return out;
}

function preferCodec(transceiver, mimeType) {
  const caps = RTCRtpSender.getCapabilities?.('video');
  if (!caps || !transceiver.setCodecPreferences) return;
  const wanted = caps.codecs.filter((c) => c.mimeType.toLowerCase() === mimeType.toLowerCase());
  const rest = caps.codecs.filter((c) => /rtx|red|ulpfec/i.test(c.mimeType));
  if (wanted.length) transceiver.setCodecPreferences([...wanted, ...rest]);
}

function describe(error) {
  return `${errorCodeName(error.code)}: ${error.reason}`;
}
