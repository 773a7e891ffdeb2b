// Media for the web demo: the camera and microphone encoded with WebCodecs and sent as RTP in
// datagrams, and subscriptions decoded back to a canvas and the speakers.
//
//   publish:   getUserMedia → MediaStreamTrackProcessor → VideoEncoder (VP8) / AudioEncoder (Opus)
//              → RTP (rtp.js) sized to the datagram limit → media datagrams
//   subscribe: media datagrams → RTP → VP8 frame reassembly / Opus packets
//              → VideoDecoder → canvas, AudioDecoder → AudioContext

import { encodeMediaDatagram, maxRtpSize } from './protocol.js';
import {
  OPUS_CLOCK_RATE,
  RTP_HEADER,
  ReceptionStats,
  Unwrapper,
  VIDEO_CLOCK_RATE,
  Vp8Assembler,
  buildRtp,
  packetizeVp8,
  parseRtp,
  rtpTimestamp,
} from './rtp.js';

export const OPUS = { name: 'opus', payload_type: 111, clock_rate: 48000, channels: 2, fmtp: 'minptime=10;useinbandfec=1' };
export const VP8 = { name: 'VP8', payload_type: 96, clock_rate: 90000, channels: 0, fmtp: '' };

/** Media ids this client publishes on (its own namespace, §8.2). */
const AUDIO_MEDIA = 1;
const VIDEO_MEDIA = 2;

const AUDIO_BITRATE = 32000;
const VIDEO_BITRATE = 600000;
/** A keyframe at least this often, so late joiners and lossy links recover on their own. */
const KEYFRAME_EVERY_MS = 5000;
/** At most one keyframe request per subscription this often. */
const KEYFRAME_REQUEST_GAP_MS = 500;

function random32() {
  return crypto.getRandomValues(new Uint32Array(1))[0];
}

/** What this browser lacks for publishing or playing, in words; null when all is there. */
export function missingMediaApis() {
  const needed = ['VideoEncoder', 'VideoDecoder', 'AudioEncoder', 'AudioDecoder', 'MediaStreamTrackProcessor'];
  const missing = needed.filter((name) => typeof globalThis[name] !== 'function');
  return missing.length ? `This browser lacks ${missing.join(', ')} (WebCodecs / insertable streams).` : null;
}

/** One outgoing RTP stream: sequence numbers, SSRC, timestamp base. */
class RtpSender {
  constructor(session, media, payloadType) {
    this.session = session;
    this.media = media;
    this.payloadType = payloadType;
    this.ssrc = random32();
    this.sequence = random32() & 0xffff;
    this.timestampBase = random32();
    this.packets = 0;
    this.bytes = 0;
  }

  /** The largest RTP payload that fits one datagram now. */
  maxPayload() {
    return maxRtpSize(this.session.maxDatagramSize(), this.media) - RTP_HEADER;
  }

  send(payload, timestamp, marker) {
    const rtp = buildRtp({
      payloadType: this.payloadType,
      marker,
      sequence: this.sequence,
      timestamp,
      ssrc: this.ssrc,
      payload,
    });
    this.sequence = (this.sequence + 1) & 0xffff;
    this.packets += 1;
    this.bytes += rtp.length;
    this.session.sendDatagram(encodeMediaDatagram(this.media, rtp));
  }
}

/** Reads a MediaStreamTrack frame by frame until it ends or `stopped()` says so. */
async function pump(track, onFrame, stopped) {
  const reader = new MediaStreamTrackProcessor({ track }).readable.getReader();
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done || stopped()) {
        value?.close();
        break;
      }
      onFrame(value);
    }
  } finally {
    reader.cancel().catch(() => {});
  }
}

/**
 * Publishes one camera track (VP8) and one microphone track (Opus) of `stream`: `Publish` first,
 * then media on the published layers' media ids. `stats` is updated in place.
 */
export class Publisher {
  constructor(session, stream, { onError }) {
    this.session = session;
    this.stream = stream;
    this.onError = onError;
    this.stopped = false;
    this.audio = null;
    this.video = null;
    this.stats = { audioPackets: 0, videoPackets: 0, videoFrames: 0, keyframes: 0, keyframeRequests: 0, bytes: 0 };
  }

  async start() {
    const [audioTrack] = this.stream.getAudioTracks();
    const [videoTrack] = this.stream.getVideoTracks();
    const starts = [];
    if (audioTrack) starts.push(this.startAudio(audioTrack));
    if (videoTrack) starts.push(this.startVideo(videoTrack));
    await Promise.all(starts);
  }

  /**
   * Goes on over `session` (the page reconnected). With `republish` (a fresh session: the old one
   * and its tracks are gone) the tracks are announced again, on the same media ids and with
   * their mute state, and get new track ids; otherwise (a resumed session) they are kept.
   */
  async moveTo(session, { republish }) {
    this.session = session;
    const tracks = [this.audio, this.video].filter((t) => t !== null);
    for (const t of tracks) t.sender.session = session;
    if (this.video) this.video.forceKey = true;
    if (!republish) return;
    await Promise.all(
      tracks.map(async (t) => {
        const published = await session.request('Publish', { ...t.announce, muted: t.muted });
        t.track = published.track;
      }),
    );
  }

  async startAudio(track) {
    const announce = {
      kind: 'Audio',
      codec: OPUS,
      source: 'microphone',
      layers: [{ media: AUDIO_MEDIA, max_bitrate: AUDIO_BITRATE, width: 0, height: 0 }],
      muted: false,
    };
    const published = await this.session.request('Publish', announce);
    const sender = new RtpSender(this.session, AUDIO_MEDIA, OPUS.payload_type);
    const audio = { track: published.track, announce, media: AUDIO_MEDIA, sender, muted: false, encoder: null };
    this.audio = audio;
    audio.encoder = new AudioEncoder({
      output: (chunk) => {
        const payload = new Uint8Array(chunk.byteLength);
        chunk.copyTo(payload);
        // RFC 7587: one Opus packet per RTP packet, timestamps at 48 kHz.
        sender.send(payload, rtpTimestamp(sender.timestampBase, chunk.timestamp, OPUS_CLOCK_RATE), false);
        this.stats.audioPackets += 1;
      },
      error: (e) => this.onError(`audio encoder: ${e.message}`),
    });
    pump(
      track,
      (data) => {
        if (audio.encoder.state === 'unconfigured') {
          audio.encoder.configure({
            codec: 'opus',
            sampleRate: data.sampleRate,
            numberOfChannels: data.numberOfChannels,
            bitrate: AUDIO_BITRATE,
          });
        }
        if (!audio.muted && audio.encoder.state === 'configured') audio.encoder.encode(data);
        data.close();
      },
      () => this.stopped,
    ).catch((e) => this.onError(`microphone: ${e.message}`));
  }

  async startVideo(track) {
    const settings = track.getSettings();
    const announce = {
      kind: 'Video',
      codec: VP8,
      source: 'camera',
      layers: [
        { media: VIDEO_MEDIA, max_bitrate: VIDEO_BITRATE, width: settings.width ?? 0, height: settings.height ?? 0 },
      ],
      muted: false,
    };
    const published = await this.session.request('Publish', announce);
    const sender = new RtpSender(this.session, VIDEO_MEDIA, VP8.payload_type);
    const video = {
      track: published.track,
      announce,
      media: VIDEO_MEDIA,
      sender,
      muted: false,
      encoder: null,
      size: null,
      forceKey: true,
      lastKey: 0,
      pictureId: random32() & 0x7fff,
    };
    this.video = video;
    video.encoder = new VideoEncoder({
      output: (chunk) => {
        const frame = new Uint8Array(chunk.byteLength);
        chunk.copyTo(frame);
        const timestamp = rtpTimestamp(sender.timestampBase, chunk.timestamp, VIDEO_CLOCK_RATE);
        const payloads = packetizeVp8(frame, video.pictureId, sender.maxPayload());
        video.pictureId = (video.pictureId + 1) & 0x7fff;
        payloads.forEach((payload, i) => sender.send(payload, timestamp, i === payloads.length - 1));
        this.stats.videoPackets += payloads.length;
        this.stats.videoFrames += 1;
        if (chunk.type === 'key') this.stats.keyframes += 1;
      },
      error: (e) => this.onError(`video encoder: ${e.message}`),
    });
    pump(
      track,
      (frame) => {
        this.encodeVideo(video, frame);
        frame.close();
      },
      () => this.stopped,
    ).catch((e) => this.onError(`camera: ${e.message}`));
  }

  encodeVideo(video, frame) {
    if (video.muted) return;
    const size = `${frame.displayWidth}x${frame.displayHeight}`;
    if (video.size !== size) {
      video.encoder.configure({
        codec: 'vp8',
        width: frame.displayWidth,
        height: frame.displayHeight,
        bitrate: VIDEO_BITRATE,
        framerate: 30,
        latencyMode: 'realtime',
      });
      video.size = size;
      video.forceKey = true;
    }
    // Newest wins: a busy encoder skips frames rather than queueing them.
    if (video.encoder.encodeQueueSize > 2) return;
    const now = performance.now();
    const keyFrame = video.forceKey || now - video.lastKey > KEYFRAME_EVERY_MS;
    if (keyFrame) {
      video.forceKey = false;
      video.lastKey = now;
    }
    video.encoder.encode(frame, { keyFrame });
  }

  /** A keyframe request from the gateway, by track (control message) or media id (datagram). */
  keyframeRequested({ track, media }) {
    const video = this.video;
    if (!video) return;
    if ((track !== undefined && track === video.track) || (media !== undefined && media === video.media)) {
      video.forceKey = true;
      this.stats.keyframeRequests += 1;
    }
  }

  /** Mutes or unmutes one kind ('Audio' or 'Video'): stops its media and tells the room. */
  async setMuted(kind, muted) {
    const published = kind === 'Audio' ? this.audio : this.video;
    if (!published) return;
    published.muted = muted;
    if (kind === 'Video' && !muted) published.forceKey = true;
    await this.session.request('SetMute', { track: published.track, muted });
  }

  get bytesSent() {
    return (this.audio?.sender.bytes ?? 0) + (this.video?.sender.bytes ?? 0);
  }

  stop() {
    this.stopped = true;
    for (const t of this.stream.getTracks()) t.stop();
    for (const p of [this.audio, this.video]) {
      if (p?.encoder && p.encoder.state !== 'closed') p.encoder.close();
    }
  }
}

/**
 * Plays decoded audio through one AudioContext: each AudioData becomes a buffer scheduled right
 * after the previous one; a queue longer than MAX_QUEUE_S is dropped (latency beats continuity).
 */
export class AudioPlayer {
  static MAX_QUEUE_S = 0.4;
  static LEAD_S = 0.06;

  constructor() {
    this.context = null;
    this.next = new Map(); // participant → next start time
    this.buffersPlayed = 0;
  }

  ensureContext() {
    if (!this.context) this.context = new AudioContext({ sampleRate: 48000, latencyHint: 'interactive' });
    return this.context;
  }

  get suspended() {
    return this.context?.state === 'suspended';
  }

  resume() {
    return this.ensureContext().resume();
  }

  play(key, data) {
    const context = this.ensureContext();
    if (context.state !== 'running') return;
    const buffer = context.createBuffer(data.numberOfChannels, data.numberOfFrames, data.sampleRate);
    for (let c = 0; c < data.numberOfChannels; c++) {
      data.copyTo(buffer.getChannelData(c), { planeIndex: c, format: 'f32-planar' });
    }
    const now = context.currentTime;
    let at = this.next.get(key) ?? 0;
    if (at < now + AudioPlayer.LEAD_S / 2) at = now + AudioPlayer.LEAD_S;
    if (at > now + AudioPlayer.MAX_QUEUE_S) return;
    const source = context.createBufferSource();
    source.buffer = buffer;
    source.connect(context.destination);
    source.start(at);
    this.buffersPlayed += 1;
    this.next.set(key, at + buffer.duration);
  }
}

/** Statistics of one remote participant's media, read by the page and the browser test. */
export function emptyRemoteStats(name) {
  return {
    name,
    videoFrames: 0,
    audioFrames: 0,
    packets: 0,
    bytes: 0,
    packetsLost: 0,
    keyframeRequests: 0,
    decoderErrors: 0,
    framesDropped: 0,
    bitrateKbps: 0,
    width: 0,
    height: 0,
  };
}

/** A subscribed video track: reassembly, decoding, rendering on `canvas`. */
export class VideoReceiver {
  constructor({ session, media, canvas, stats }) {
    this.session = session;
    this.media = media;
    this.canvas = canvas;
    this.context2d = canvas.getContext('2d');
    this.stats = stats;
    this.reception = new ReceptionStats();
    this.assembler = new Vp8Assembler();
    this.timestamps = new Unwrapper(32);
    this.waitingForKey = true;
    this.lastRequest = -Infinity;
    this.lostCounted = 0;
    this.decoder = this.makeDecoder();
  }

  makeDecoder() {
    const decoder = new VideoDecoder({
      output: (frame) => {
        if (this.canvas.width !== frame.displayWidth || this.canvas.height !== frame.displayHeight) {
          this.canvas.width = frame.displayWidth;
          this.canvas.height = frame.displayHeight;
        }
        this.context2d.drawImage(frame, 0, 0);
        this.stats.width = frame.displayWidth;
        this.stats.height = frame.displayHeight;
        this.stats.videoFrames += 1;
        frame.close();
      },
      error: () => {
        // The decoder is closed now; a fresh one starts at the next keyframe.
        this.stats.decoderErrors += 1;
        this.waitingForKey = true;
        this.decoder = this.makeDecoder();
        this.requestKeyframe();
      },
    });
    decoder.configure({ codec: 'vp8', optimizeForLatency: true });
    return decoder;
  }

  requestKeyframe() {
    const now = performance.now();
    if (now - this.lastRequest < KEYFRAME_REQUEST_GAP_MS) return;
    this.lastRequest = now;
    this.stats.keyframeRequests += 1;
    this.session.requestKeyframe(this.media);
  }

  push(packet) {
    const rtp = parseRtp(packet);
    if (!rtp) return;
    this.reception.record(rtp.sequence, packet.length);
    this.stats.packets += 1;
    this.stats.bytes += packet.length;
    this.stats.packetsLost += this.reception.lost - this.lostCounted;
    this.lostCounted = this.reception.lost;
    for (const frame of this.assembler.push(rtp)) this.decode(frame);
  }

  decode(frame) {
    if (frame.afterGap) this.waitingForKey = true;
    if (this.waitingForKey && !frame.key) {
      // VP8 delta frames reference what came before: without it they cannot be shown.
      this.stats.framesDropped += 1;
      this.requestKeyframe();
      return;
    }
    if (this.decoder.state !== 'configured') return;
    this.waitingForKey = false;
    const timestamp = Math.round((this.timestamps.unwrap(frame.timestamp) * 1e6) / VIDEO_CLOCK_RATE);
    this.decoder.decode(new EncodedVideoChunk({ type: frame.key ? 'key' : 'delta', timestamp, data: frame.data }));
  }

  close() {
    if (this.decoder.state !== 'closed') this.decoder.close();
  }
}

/** A subscribed audio track: Opus packets decoded and played. */
export class AudioReceiver {
  constructor({ media, player, key, stats }) {
    this.media = media;
    this.player = player;
    this.key = key;
    this.stats = stats;
    this.reception = new ReceptionStats();
    this.timestamps = new Unwrapper(32);
    this.lostCounted = 0;
    this.decoder = this.makeDecoder();
  }

  makeDecoder() {
    const decoder = new AudioDecoder({
      output: (data) => {
        this.stats.audioFrames += 1;
        try {
          this.player.play(this.key, data);
        } finally {
          data.close();
        }
      },
      error: () => {
        this.stats.decoderErrors += 1;
        this.decoder = this.makeDecoder();
      },
    });
    decoder.configure({ codec: 'opus', sampleRate: 48000, numberOfChannels: 1 });
    return decoder;
  }

  push(packet) {
    const rtp = parseRtp(packet);
    if (!rtp || rtp.payload.length === 0) return;
    this.reception.record(rtp.sequence, packet.length);
    this.stats.packets += 1;
    this.stats.bytes += packet.length;
    this.stats.packetsLost += this.reception.lost - this.lostCounted;
    this.lostCounted = this.reception.lost;
    if (this.decoder.state !== 'configured') return;
    const timestamp = Math.round((this.timestamps.unwrap(rtp.timestamp) * 1e6) / OPUS_CLOCK_RATE);
    this.decoder.decode(new EncodedAudioChunk({ type: 'key', timestamp, data: rtp.payload }));
  }

  close() {
    if (this.decoder.state !== 'closed') this.decoder.close();
  }
}
