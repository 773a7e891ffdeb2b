// RTP (RFC 3550) for the web demo: packets, sequence unwrapping and loss counting, VP8
// packetization (RFC 7741) and Opus packetization (RFC 7587).
//
// Nothing here touches the browser: the functions are driven with bytes and tested by
// test/rtp.test.mjs under node.

/** RTP fixed header size (no CSRC, no extension). */
export const RTP_HEADER = 12;

/** Builds an RTP packet: version 2, no padding, no extension, no CSRC. */
export function buildRtp({ payloadType, marker, sequence, timestamp, ssrc, payload }) {
  const packet = new Uint8Array(RTP_HEADER + payload.length);
  const view = new DataView(packet.buffer);
  packet[0] = 0x80;
  packet[1] = (marker ? 0x80 : 0) | (payloadType & 0x7f);
  view.setUint16(2, sequence & 0xffff);
  view.setUint32(4, timestamp >>> 0);
  view.setUint32(8, ssrc >>> 0);
  packet.set(payload, RTP_HEADER);
  return packet;
}

/**
 * Parses an RTP packet; returns null when it is not one. CSRCs and the header extension are
 * skipped and padding (RFC 3550 §5.1: "the last octet of the padding contains a count of how many
 * padding octets should be ignored, including itself") is removed from the payload.
 */
export function parseRtp(packet) {
  if (packet.length < RTP_HEADER || packet[0] >> 6 !== 2) return null;
  const view = new DataView(packet.buffer, packet.byteOffset, packet.byteLength);
  let header = RTP_HEADER + 4 * (packet[0] & 0x0f);
  if (packet[0] & 0x10) {
    if (header + 4 > packet.length) return null;
    header += 4 + 4 * view.getUint16(header + 2);
  }
  let end = packet.length;
  if (packet[0] & 0x20) {
    const padding = packet[end - 1];
    if (padding === 0 || header + padding > end) return null;
    end -= padding;
  }
  if (header > end) return null;
  return {
    marker: (packet[1] & 0x80) !== 0,
    payloadType: packet[1] & 0x7f,
    sequence: view.getUint16(2),
    timestamp: view.getUint32(4),
    ssrc: view.getUint32(8),
    payload: packet.subarray(header, end),
  };
}

/**
 * Extends wrapping counters (16-bit sequence numbers, 32-bit timestamps) to a monotonic number
 * line, relative to the highest value seen so far.
 */
export class Unwrapper {
  constructor(bits) {
    this.modulus = 2 ** bits;
    this.half = 2 ** (bits - 1);
    this.highest = null;
  }

  unwrap(value) {
    if (this.highest === null) {
      this.highest = value;
      return value;
    }
    const last = this.highest % this.modulus;
    let delta = (value - last + this.modulus) % this.modulus;
    if (delta >= this.half) delta -= this.modulus;
    const extended = this.highest + delta;
    if (extended > this.highest) this.highest = extended;
    return extended;
  }
}

/**
 * Reception statistics of one RTP stream (RFC 3550 §6.4.1 and appendix A.3): expected packets
 * from the extended sequence range, lost = expected − received (duplicates can make it negative
 * for a while; it is shown clamped at 0).
 */
export class ReceptionStats {
  constructor() {
    this.sequences = new Unwrapper(16);
    this.first = null;
    this.received = 0;
    this.bytes = 0;
  }

  /** Records one packet; returns how many sequence numbers were skipped just before it. */
  record(sequence, size) {
    const previous = this.sequences.highest;
    const extended = this.sequences.unwrap(sequence);
    if (this.first === null) this.first = extended;
    this.received += 1;
    this.bytes += size;
    return previous !== null && extended > previous + 1 ? extended - previous - 1 : 0;
  }

  get highest() {
    return this.sequences.highest;
  }

  get lost() {
    if (this.first === null) return 0;
    return Math.max(0, this.highest - this.first + 1 - this.received);
  }
}

// ---------------------------------------------------------------------------------------------
// VP8 (RFC 7741).
//
//      0 1 2 3 4 5 6 7
//     +-+-+-+-+-+-+-+-+
//     |X|R|N|S|R| PID | (REQUIRED)
//     +-+-+-+-+-+-+-+-+
// X:  |I|L|T|K| RSV   | (OPTIONAL)
//     +-+-+-+-+-+-+-+-+
// I:  |M| PictureID   | (OPTIONAL)
//     +-+-+-+-+-+-+-+-+
//     |   PictureID   |
//     +-+-+-+-+-+-+-+-+
// L:  |   TL0PICIDX   | (OPTIONAL)
//     +-+-+-+-+-+-+-+-+
// T/K:|TID|Y| KEYIDX  | (OPTIONAL)
//     +-+-+-+-+-+-+-+-+

/** Bytes of the descriptor this packetizer writes: X, I with a 15-bit PictureID. */
export const VP8_DESCRIPTOR = 4;

/**
 * Cuts one encoded VP8 frame into RTP payloads of at most `maxPayload` bytes each (descriptor
 * included). "S: Start of VP8 partition. SHOULD be set to 1 when the first payload octet of the RTP
 * packet is the beginning of a new VP8 partition" — the first packet of a frame carries S=1 and
 * PID=0; the frame is not split at partition boundaries (which RFC 7741 allows).
 */
export function packetizeVp8(frame, pictureId, maxPayload) {
  const room = maxPayload - VP8_DESCRIPTOR;
  if (room < 1) throw new RangeError(`no room for VP8 data in ${maxPayload}-byte payloads`);
  const payloads = [];
  for (let at = 0; at < frame.length || at === 0; at += room) {
    const chunk = frame.subarray(at, Math.min(frame.length, at + room));
    const payload = new Uint8Array(VP8_DESCRIPTOR + chunk.length);
    payload[0] = 0x80 | (at === 0 ? 0x10 : 0); // X, S on the first packet, PID 0
    payload[1] = 0x80; // I: PictureID present
    payload[2] = 0x80 | ((pictureId >> 8) & 0x7f); // M: 15-bit PictureID
    payload[3] = pictureId & 0xff;
    payload.set(chunk, VP8_DESCRIPTOR);
    payloads.push(payload);
    if (frame.length === 0) break;
  }
  return payloads;
}

/**
 * Reads a VP8 payload descriptor: `{start, partition, pictureId, data}` where `data` is the VP8
 * payload after the descriptor; null when the descriptor is truncated.
 */
export function parseVp8Payload(payload) {
  if (payload.length < 1) return null;
  const b0 = payload[0];
  let at = 1;
  let pictureId = null;
  if (b0 & 0x80) {
    if (payload.length < 2) return null;
    const ext = payload[1];
    at = 2;
    if (ext & 0x80) {
      if (payload.length < at + 1) return null;
      if (payload[at] & 0x80) {
        if (payload.length < at + 2) return null;
        pictureId = ((payload[at] & 0x7f) << 8) | payload[at + 1];
        at += 2;
      } else {
        pictureId = payload[at] & 0x7f;
        at += 1;
      }
    }
    if (ext & 0x40) at += 1;
    if (ext & 0x30) at += 1;
  }
  if (at > payload.length) return null;
  return {
    start: (b0 & 0x10) !== 0,
    partition: b0 & 0x07,
    pictureId,
    data: payload.subarray(at),
  };
}

/**
 * Whether a VP8 frame is a keyframe: "P: Inverse key frame flag. When set to 0, the current frame
 * is a key frame" (RFC 7741 §4.3), bit 0 of the first byte of the VP8 payload header.
 */
export function isVp8Keyframe(frame) {
  return frame.length > 0 && (frame[0] & 0x01) === 0;
}

/**
 * Reassembles VP8 frames from RTP packets that may arrive out of order or not at all.
 *
 * A frame is complete when its first packet (S=1, PID=0), its last packet (RTP marker bit, set on
 * "the last packet of each encoded frame") and every sequence number between them are present;
 * packets of a frame share one RTP timestamp. Complete frames come out in sequence order;
 * `afterGap` says a frame does not follow the previous one directly (something in between was
 * lost), so a decoder must wait for a keyframe. Incomplete frames older than a completed one are
 * dropped. At most `maxPending` frames are buffered; the oldest goes first.
 */
export class Vp8Assembler {
  constructor(maxPending = 8) {
    this.maxPending = maxPending;
    this.sequences = new Unwrapper(16);
    this.pending = new Map(); // RTP timestamp → {packets: Map<ext seq, data>, start, end}
    this.lastEnd = null;
    this.dropped = 0;
  }

  /**
   * Adds one RTP packet (as parseRtp returns it); returns the frames it completed:
   * `[{timestamp, data, key, afterGap}]`.
   */
  push(rtp) {
    const descriptor = parseVp8Payload(rtp.payload);
    if (descriptor === null) return [];
    const seq = this.sequences.unwrap(rtp.sequence);
    if (this.lastEnd !== null && seq <= this.lastEnd) return []; // late or duplicate
    let frame = this.pending.get(rtp.timestamp);
    if (!frame) {
      frame = { packets: new Map(), start: null, end: null };
      this.pending.set(rtp.timestamp, frame);
      this.evict();
    }
    frame.packets.set(seq, descriptor.data);
    if (descriptor.start && descriptor.partition === 0) frame.start = seq;
    if (rtp.marker) frame.end = seq;

    const done = [];
    if (frame.start !== null && frame.end !== null && frame.packets.size === frame.end - frame.start + 1) {
      const parts = [];
      let size = 0;
      for (let s = frame.start; s <= frame.end; s++) {
        const part = frame.packets.get(s);
        if (part === undefined) return done; // a duplicate filled the count; wait for the rest
        parts.push(part);
        size += part.length;
      }
      const data = new Uint8Array(size);
      let at = 0;
      for (const part of parts) {
        data.set(part, at);
        at += part.length;
      }
      const afterGap = this.lastEnd !== null && frame.start !== this.lastEnd + 1;
      this.pending.delete(rtp.timestamp);
      // Frames that started before this one can no longer be shown in order.
      for (const [ts, other] of this.pending) {
        const first = Math.min(...other.packets.keys());
        if (first < frame.start) {
          this.pending.delete(ts);
          this.dropped += 1;
        }
      }
      this.lastEnd = frame.end;
      done.push({ timestamp: rtp.timestamp, data, key: isVp8Keyframe(data), afterGap });
    }
    return done;
  }

  evict() {
    while (this.pending.size > this.maxPending) {
      const oldest = this.pending.keys().next().value;
      this.pending.delete(oldest);
      this.dropped += 1;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Opus (RFC 7587): "The RTP payload consists of exactly one Opus packet", timestamps at 48 kHz
// whatever the audio's sample rate, and the marker bit may stay 0.

/** RTP clock rate of Opus, whatever the sample rate of the audio. */
export const OPUS_CLOCK_RATE = 48000;

/** RTP clock rate of video. */
export const VIDEO_CLOCK_RATE = 90000;

/** An RTP timestamp at `clockRate` for a WebCodecs timestamp in microseconds. */
export function rtpTimestamp(base, microseconds, clockRate) {
  return (base + Math.round((microseconds * clockRate) / 1e6)) >>> 0;
}
