// The page's WebRTC fallback: the same room joined through the gateway's WebRTC bridge, for
// browsers without WebTransport (or WebCodecs), networks where QUIC does not get through, or
// when the URL asks for it (`?transport=webrtc`).
//
// Signaling is the control protocol over a WebSocket (`/ws/rtc`, PROTOCOL.md §7.10, through
// signaling.js); media is a plain RTCPeerConnection: the camera (VP8) and the microphone (Opus)
// in sendonly sections, and a recvonly section per track of the others, added as they are
// published. The browser does the RTP, the jitter buffers, the decoding and the playing; the page
// only attaches each receiver's `MediaStreamTrack` to the tile of the participant it belongs to.

import { ErrorCode, errorCodeName } from './protocol.js';
import { SignalingPeer } from './signaling.js';

/** The `ws:`/`wss:` URL of the WebSocket signaling at `origin` (the page's own by default). */
export function signalingUrl(token, origin = location.href) {
  const url = new URL('/ws/rtc', origin);
  url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
  url.searchParams.set('token', token);
  return url.href;
}

export class WebRtcFallback {
  /**
   * `onMessage(name, fields)`: every control message of the gateway (the room's events);
   * `onTrack(info, track)`: a track of another participant (`info` is its `TrackPublished`)
   * now arrives as `track` (a MediaStreamTrack); `onClosed({code, message})`: the session ended;
   * `onFailed(text)`: the WebRTC connection failed; `onProblem(text)`: something that does not
   * end the session went wrong (an offer to receive a new track, say).
   */
  constructor({ onMessage, onTrack, onClosed, onFailed, onProblem }) {
    this.onProblem = onProblem;
    this.onMessage = onMessage;
    this.onTrack = onTrack;
    this.onClosed = onClosed;
    this.onFailed = onFailed;
    this.peer = null;
    this.stream = null;
    this.ended = false;
  }

  /** Opens the signaling WebSocket and joins `room`; resolves with `Joined`. */
  async join(url, room, name) {
    try {
      this.peer = await SignalingPeer.connect(url, {
        onMessage: (n, f) => this.onMessage(n, f),
        onTrack: (info, track) => this.onTrack(info, track),
      });
    } catch (e) {
      throw new Error(
        /websocket closed/.test(e.message)
          ? `Could not open the WebRTC signaling WebSocket (/ws/rtc: ${e.message.trim()}). The gateway may run ` +
              'without its WebRTC bridge (webrtc.enabled), or a proxy in between does not pass WebSockets.'
          : `The gateway refused the WebRTC session: ${e.message}.`,
      );
    }
    this.peer.onClose = (closed) => this.closed(closed);
    this.peer.onRenegotiationFailed = (e) => {
      if (!this.ended) this.onProblem(`receiving a newly published track: ${e.message}`);
    };
    this.peer.pc.addEventListener('connectionstatechange', () => {
      if (this.peer.pc.connectionState === 'failed' && !this.ended) {
        this.onFailed(
          'The WebRTC connection to the gateway failed (no ICE candidate pair works): UDP to the ' +
            "gateway's WebRTC port may be blocked on this network.",
        );
      }
    });
    return this.peer.join(room, name);
  }

  /** The STUN/TURN servers the peer connection uses (from `ServerHello`). */
  get iceServers() {
    return this.peer?.iceServers ?? [];
  }

  /** Publishes the stream's tracks and starts receiving everyone else's. */
  async publish(stream) {
    this.stream = stream;
    this.peer.addSendTracks([...stream.getAudioTracks(), ...stream.getVideoTracks()]);
    await this.peer.follow();
  }

  /** Receives everyone else's tracks, now and as they are published. */
  follow() {
    return this.peer.follow();
  }

  get audio() {
    return (this.stream?.getAudioTracks().length ?? 0) > 0;
  }

  get video() {
    return (this.stream?.getVideoTracks().length ?? 0) > 0;
  }

  /**
   * Mutes (or unmutes) our `kind` ('Audio' or 'Video'): the track goes on sending, silence or
   * black frames. The room is not told (no `SetMute`): on this path the gateway does not name
   * our own tracks to us.
   */
  async setMuted(kind, muted) {
    const tracks = kind === 'Audio' ? this.stream?.getAudioTracks() : this.stream?.getVideoTracks();
    for (const track of tracks ?? []) track.enabled = !muted;
  }

  /**
   * Statistics from the peer connection: `rttMs` (the nominated ICE pair), `sent` (our
   * outbound video and audio), `received` (track id → inbound RTP statistics) and
   * `candidates` (how many local ICE candidates of each type: host, srflx, relay).
   */
  async stats() {
    const out = { rttMs: null, sent: null, received: new Map(), candidates: {} };
    if (!this.peer?.pc || this.peer.pc.connectionState === 'closed') return out;
    const report = [...(await this.peer.pc.getStats()).values()];
    for (const c of report.filter((s) => s.type === 'local-candidate')) {
      out.candidates[c.candidateType] = (out.candidates[c.candidateType] ?? 0) + 1;
    }
    const pair = report.find((s) => s.type === 'candidate-pair' && s.nominated && s.state === 'succeeded');
    if (pair?.currentRoundTripTime !== undefined) out.rttMs = pair.currentRoundTripTime * 1000;
    const video = report.find((s) => s.type === 'outbound-rtp' && s.kind === 'video');
    const audio = report.find((s) => s.type === 'outbound-rtp' && s.kind === 'audio');
    if (video || audio) {
      out.sent = {
        videoFrames: video?.framesEncoded ?? 0,
        keyframes: video?.keyFramesEncoded ?? 0,
        videoCodec: report.find((s) => s.id === video?.codecId)?.mimeType ?? null,
        audioPackets: audio?.packetsSent ?? 0,
        bytes: (video?.bytesSent ?? 0) + (audio?.bytesSent ?? 0),
      };
    }
    for (const [track, { transceiver }] of this.peer.received) {
      const inbound = [...(await transceiver.receiver.getStats()).values()].find((s) => s.type === 'inbound-rtp');
      if (inbound) out.received.set(track, inbound);
    }
    return out;
  }

  /** Leaves the room (`Leave`, then the gateway closes) and stops the camera. */
  async leave() {
    this.ended = true;
    await this.peer?.leave();
    this.stop();
  }

  /** Stops the camera and microphone and closes the connection. */
  stop() {
    this.ended = true;
    for (const track of this.stream?.getTracks() ?? []) track.stop();
    this.peer?.pc?.close();
    if (this.peer && !this.peer.closed) this.peer.ws.close();
  }

  /** The WebSocket closed: tells the page why, in the protocol's codes. */
  closed({ code, reason }) {
    const error = this.peer.log.findLast(([n, f]) => n === 'Error' && f.request === null)?.[1];
    let ended;
    if (error) ended = { code: error.code, message: `${errorCodeName(error.code)}${error.reason ? ` — ${error.reason}` : ''}` };
    else if (code === 1000) ended = { code: ErrorCode.NONE, message: 'closed' };
    else if (code === 1001) ended = { code: ErrorCode.GOING_AWAY, message: 'the gateway is going away' };
    else ended = { code: null, message: `the signaling WebSocket closed (${code}${reason ? ` ${reason}` : ''})` };
    this.stop();
    this.onClosed(ended);
  }
}
