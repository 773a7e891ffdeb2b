// WebSocket signaling for a plain RTCPeerConnection (PROTOCOL.md §1, "WebSocket path"): the
// control protocol in binary WebSocket messages, one frame each, and media over WebRTC.
//
//     const peer = await SignalingPeer.connect(`ws://${location.host}/ws/rtc?token=${token}`);
//     await peer.join('lobby');
//     await peer.negotiate({ send: [cameraTrack], receive: { video: 1 } });
//
// Send tracks go out as sendonly sections, and the gateway fills each new recvonly section with a
// track of the room it does not send yet (a `Subscribed` message per track follows the answer).
// The gateway never offers: to receive tracks published later, add recvonly sections and offer
// again on the same connection — `follow()` does that on every `TrackPublished`.

import { FrameReader, encodeFrame, unwrap, errorCodeName } from './protocol.js';

export class SignalingPeer {
  /** Opens the WebSocket and waits for `ServerHello` (or the `Error` that refuses the token). */
  static async connect(url, { rtcConfig = {} } = {}) {
    const ws = new WebSocket(url);
    ws.binaryType = 'arraybuffer';
    const peer = new SignalingPeer(ws, rtcConfig);
    await peer.hello;
    return peer;
  }

  constructor(ws, rtcConfig) {
    this.ws = ws;
    this.pc = new RTCPeerConnection(rtcConfig);
    this.reader = new FrameReader();
    this.nextRequest = 1;
    /** Every message received, in order, as `[name, fields]`. */
    this.log = [];
    this.waiters = [];
    this.closed = null;
    this.hello = new Promise((resolve, reject) => {
      this.waiters.push({
        match: (n) => n === 'ServerHello' || n === 'Error',
        resolve: ([n, f]) => (n === 'Error' ? reject(new Error(describe(f))) : resolve(f)),
        reject,
      });
    });
    ws.onmessage = (event) => this.receive(new Uint8Array(event.data));
    ws.onclose = (event) => {
      this.closed = { code: event.code, reason: event.reason };
      for (const w of this.waiters.splice(0)) w.reject?.(new Error(`websocket closed: ${event.code} ${event.reason}`));
    };
  }

  receive(bytes) {
    this.reader.push(bytes);
    for (let frame; (frame = this.reader.next()) !== null; ) {
      if (!frame.message) continue;
      const entry = unwrap(frame.message);
      this.log.push(entry);
      const i = this.waiters.findIndex((w) => w.match(entry[0], entry[1]));
      if (i >= 0) this.waiters.splice(i, 1)[0].resolve(entry);
      if (this.following && entry[0] === 'TrackPublished') this.renegotiate();
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

  /** Tracks of the room known so far (from `TrackPublished`, less `TrackUnpublished`). */
  tracks() {
    const live = new Map();
    for (const [n, f] of this.log) {
      if (n === 'TrackPublished') live.set(String(f.track), f);
      if (n === 'TrackUnpublished') live.delete(String(f.track));
    }
    return [...live.values()];
  }

  /**
   * Offers `send` tracks (sendonly, VP8 preferred for video) and `receive` recvonly sections
   * ({audio: n, video: n}); waits for ICE gathering, sends the offer and applies the answer.
   */
  async negotiate({ send = [], receive = {} } = {}) {
    for (const track of send) {
      const transceiver = this.pc.addTransceiver(track, { direction: 'sendonly' });
      if (track.kind === 'video') preferCodec(transceiver, 'video/VP8');
    }
    for (const [kind, count] of Object.entries(receive)) {
      for (let i = 0; i < count; i++) this.pc.addTransceiver(kind, { direction: 'recvonly' });
    }
    await this.offer();
  }

  /**
   * Keeps receiving every track of the room: whenever it has more tracks of a kind than the
   * connection has receiving sections for, adds recvonly sections and offers again.
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
        let added = false;
        for (const [name, kind] of [['Audio', 'audio'], ['Video', 'video']]) {
          const want = this.tracks().filter((t) => t.kind === name).length;
          const have = this.pc
            .getTransceivers()
            .filter((t) => t.direction === 'recvonly' && t.receiver.track.kind === kind).length;
          for (let i = have; i < want; i++) {
            this.pc.addTransceiver(kind, { direction: 'recvonly' });
            added = true;
          }
        }
        if (added) await this.offer();
      } while (this.again);
    } finally {
      this.negotiating = false;
    }
  }

  /** Sends the offer of the connection as it is now and applies the answer. */
  async offer() {
    await this.pc.setLocalDescription(await this.pc.createOffer());
    // The gateway is ICE-lite and takes the candidates from the offer: send it complete.
    if (this.pc.iceGatheringState !== 'complete') {
      await new Promise((resolve) => {
        const check = () => this.pc.iceGatheringState === 'complete' && resolve();
        this.pc.addEventListener('icegatheringstatechange', check);
        setTimeout(resolve, 5000);
      });
    }
    const from = this.log.length;
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
    this.pc.close();
    this.ws.close();
  }
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
