// RTP, VP8 packetization and frame reassembly, loss counting: pure functions, run under node.

import assert from 'node:assert/strict';
import { test } from 'node:test';

import { maxRtpSize, parseDatagram, encodeMediaDatagram } from '../protocol.js';
import {
  RTP_HEADER,
  ReceptionStats,
  Unwrapper,
  VP8_DESCRIPTOR,
  Vp8Assembler,
  buildRtp,
  isVp8Keyframe,
  packetizeVp8,
  parseRtp,
  parseVp8Payload,
  rtpTimestamp,
} from '../rtp.js';

/** A fake VP8 frame of `size` bytes; byte 0 bit 0 is P (0 = keyframe). */
function frame(size, key, fill) {
  const data = new Uint8Array(size).fill(fill);
  data[0] = key ? 0x10 : 0x11;
  return data;
}

/** RTP packets of one frame, as a publisher sends them. */
function packets(data, { seq, ts, pictureId = 1, maxPayload = 100 }) {
  return packetizeVp8(data, pictureId, maxPayload).map((payload, i, all) =>
    parseRtp(
      buildRtp({
        payloadType: 96,
        marker: i === all.length - 1,
        sequence: (seq + i) & 0xffff,
        timestamp: ts,
        ssrc: 0x1234,
        payload,
      }),
    ),
  );
}

test('an RTP packet survives build and parse, and passes the datagram checks', () => {
  const payload = new Uint8Array([1, 2, 3]);
  const rtp = buildRtp({ payloadType: 111, marker: true, sequence: 65535, timestamp: 2 ** 32 - 1, ssrc: 7, payload });
  const parsed = parseRtp(rtp);
  assert.deepEqual(
    { ...parsed, payload: [...parsed.payload] },
    { marker: true, payloadType: 111, sequence: 65535, timestamp: 2 ** 32 - 1, ssrc: 7, payload: [1, 2, 3] },
  );
  const datagram = parseDatagram(encodeMediaDatagram(3, rtp));
  assert.equal(datagram.media, 3);
  assert.deepEqual([...datagram.rtp], [...rtp]);
});

test('parseRtp skips CSRCs and the extension and removes padding', () => {
  // CC=1, X=1 with one word of extension, P=1 with 2 bytes of padding.
  const packet = new Uint8Array([
    0xb1, 0x60, 0, 1, 0, 0, 0, 9, 0, 0, 0, 5, /* csrc */ 0, 0, 0, 1, /* ext */ 0xbe, 0xde, 0, 1, 1, 2, 3, 4,
    /* payload */ 0xaa, 0xbb, /* padding */ 0, 2,
  ]);
  assert.deepEqual([...parseRtp(packet).payload], [0xaa, 0xbb]);
  assert.equal(parseRtp(packet.subarray(0, 11)), null);
});

test('VP8 packets fit the payload size and reassemble into the frame', () => {
  const data = frame(1000, true, 7);
  const payloads = packetizeVp8(data, 300, 128);
  assert.ok(payloads.every((p) => p.length <= 128));
  assert.equal(payloads.length, Math.ceil(1000 / (128 - VP8_DESCRIPTOR)));
  const first = parseVp8Payload(payloads[0]);
  assert.equal(first.start, true);
  assert.equal(first.pictureId, 300);
  assert.equal(parseVp8Payload(payloads[1]).start, false);

  const assembler = new Vp8Assembler();
  const out = packets(data, { seq: 65530, ts: 9000 }).flatMap((p) => assembler.push(p));
  assert.equal(out.length, 1);
  assert.deepEqual(out[0].data, data);
  assert.equal(out[0].key, true);
  assert.equal(out[0].afterGap, false);
});

test('reordered packets still make the frame; a missing one holds it back', () => {
  const assembler = new Vp8Assembler();
  const data = frame(450, false, 3);
  const ps = packets(data, { seq: 10, ts: 3000 });
  const [a, b, ...rest] = ps;
  const out = [...rest.reverse(), b, a].flatMap((p) => assembler.push(p));
  assert.equal(out.length, 1);
  assert.deepEqual(out[0].data, data);
  assert.equal(isVp8Keyframe(out[0].data), false);

  const lossy = new Vp8Assembler();
  const ps2 = packets(frame(450, false, 4), { seq: 100, ts: 6000 });
  ps2.splice(2, 1);
  assert.deepEqual(ps2.flatMap((p) => lossy.push(p)), []);
});

test('after a lost frame the next one is marked as following a gap', () => {
  const assembler = new Vp8Assembler();
  const one = packets(frame(300, true, 1), { seq: 0, ts: 0 });
  const two = packets(frame(300, false, 2), { seq: one.length, ts: 3000 });
  const three = packets(frame(300, false, 3), { seq: one.length + two.length, ts: 6000 });
  const out = [...one, ...two.slice(1), ...three].flatMap((p) => assembler.push(p));
  assert.deepEqual(
    out.map((f) => [f.timestamp, f.afterGap]),
    [
      [0, false],
      [6000, true],
    ],
  );
  assert.equal(assembler.dropped, 1, 'the incomplete frame was dropped');
});

test('reception statistics count gaps and losses across the sequence wrap', () => {
  const stats = new ReceptionStats();
  assert.equal(stats.record(65534, 10), 0);
  assert.equal(stats.record(65535, 10), 0);
  assert.equal(stats.record(2, 10), 2); // 0 and 1 are missing
  assert.equal(stats.lost, 2);
  stats.record(0, 10); // late
  assert.equal(stats.lost, 1);
  assert.equal(stats.highest, 65538);
});

test('unwrapping 32-bit timestamps and converting WebCodecs time to RTP time', () => {
  const ts = new Unwrapper(32);
  assert.equal(ts.unwrap(2 ** 32 - 10), 2 ** 32 - 10);
  assert.equal(ts.unwrap(5), 2 ** 32 + 5);
  assert.equal(rtpTimestamp(2 ** 32 - 1, 1000, 90000), 89);
  assert.equal(rtpTimestamp(0, 20000, 48000), 960);
});

test('the packet size follows the datagram size (PROTOCOL.md §8.3)', () => {
  const payload = maxRtpSize(1200, 2) - RTP_HEADER;
  const rtps = packetizeVp8(frame(5000, true, 9), 1, payload);
  for (const p of rtps) {
    const d = encodeMediaDatagram(2, buildRtp({ payloadType: 96, marker: false, sequence: 0, timestamp: 0, ssrc: 1, payload: p }));
    assert.ok(d.length <= 1200, `${d.length} bytes`);
  }
});
