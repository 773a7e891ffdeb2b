// The JavaScript codec against the golden vectors (PROTOCOL.md §12), both directions, every entry;
// then the decoder rules that the vectors do not show (pieces, limits, unknown kinds).
//
//     node --test web-demo/test/

import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';

import {
  ErrorCode,
  FrameReader,
  MESSAGE_KINDS,
  ProtocolError,
  decodeMessage,
  decodeVarint,
  encodeControlDatagram,
  encodeFrame,
  encodeMediaDatagram,
  encodeMessage,
  encodePaddingDatagram,
  encodeVarint,
  errorCodeName,
  fromHex,
  maxRtpSize,
  parseDatagram,
  pauseReasonName,
  toHex,
} from '../protocol.js';

const vectors = JSON.parse(
  readFileSync(new URL('../../protocol/tests/vectors/vectors.json', import.meta.url), 'utf8'),
);

/** Decodes every frame of `bytes` fed to a FrameReader `step` bytes at a time. */
function readFrames(bytes, step = bytes.length) {
  const reader = new FrameReader();
  const out = [];
  for (let at = 0; at < bytes.length; at += step) {
    reader.push(bytes.subarray(at, at + step));
    for (let f; (f = reader.next()) !== null; ) out.push(f);
  }
  assert.equal(reader.buffer.length, 0, 'no bytes left over');
  return out;
}

test('the vector file covers every message kind and every control datagram kind', () => {
  const kinds = new Set(vectors.control.map((v) => v.kind));
  assert.equal(kinds.size, MESSAGE_KINDS);
  const datagrams = new Set(vectors.datagram_control.map((v) => Object.keys(v.message)[0]));
  assert.deepEqual([...datagrams].sort(), ['KeyframeRequest', 'Ping', 'Pong', 'ReceiverReport']);
  assert.ok(vectors.padding.length > 0, 'padding datagrams');
});

for (const v of vectors.control) {
  test(`control ${v.name}: decode`, () => {
    const frames = readFrames(fromHex(v.frame));
    assert.equal(frames.length, 1);
    assert.deepEqual(frames[0], { message: v.message });
  });
  test(`control ${v.name}: encode`, () => {
    assert.equal(toHex(encodeFrame(v.message)), v.frame);
  });
  test(`control ${v.name}: decode byte by byte`, () => {
    assert.deepEqual(readFrames(fromHex(v.frame), 1), [{ message: v.message }]);
  });
}

for (const v of vectors.datagram_control) {
  test(`datagram control ${v.name}: decode`, () => {
    assert.deepEqual(parseDatagram(fromHex(v.datagram)), { control: v.message });
  });
  test(`datagram control ${v.name}: encode`, () => {
    assert.equal(toHex(encodeControlDatagram(v.message)), v.datagram);
  });
}

for (const v of vectors.media) {
  test(`media ${v.name}: decode`, () => {
    const parsed = parseDatagram(fromHex(v.datagram));
    assert.equal(parsed.media, v.media);
    assert.equal(toHex(parsed.rtp), v.rtp);
  });
  test(`media ${v.name}: encode`, () => {
    assert.equal(toHex(encodeMediaDatagram(v.media, fromHex(v.rtp))), v.datagram);
  });
}

for (const v of vectors.padding) {
  test(`padding ${v.name}: both directions`, () => {
    assert.deepEqual(parseDatagram(fromHex(v.datagram)), { padding: v.len });
    assert.equal(toHex(encodePaddingDatagram(v.len)), v.datagram);
  });
}

for (const v of vectors.varint) {
  test(`varint ${v.value}: both directions`, () => {
    assert.equal(toHex(encodeVarint(v.value)), v.hex);
    assert.deepEqual(decodeVarint(fromHex(v.hex)), { value: v.value, length: v.hex.length / 2 });
  });
}

test('several frames in one read, then one split across reads', () => {
  const ping = vectors.control.find((v) => v.name === 'ping');
  const join = vectors.control.find((v) => v.name === 'join');
  const bytes = fromHex(ping.frame + join.frame + ping.frame);
  assert.deepEqual(readFrames(bytes, 5), [
    { message: ping.message },
    { message: join.message },
    { message: ping.message },
  ]);
});

test('a varint in a longer form than needed decodes (QUIC and bincode)', () => {
  assert.deepEqual(decodeVarint(fromHex('4025')), { value: 37, length: 2 });
  // Ping { nonce: 5 } with the nonce as fb 05 00.
  assert.deepEqual(decodeMessage(fromHex('14fb0500')), { message: { Ping: { nonce: 5 } } });
});

test('u64 values above 2^53 decode to BigInt and encode back', () => {
  const big = (1n << 63n) + 5n;
  const body = encodeMessage({ Ping: { nonce: big } });
  assert.deepEqual(decodeMessage(body), { message: { Ping: { nonce: big } } });
});

test('unknown message kinds are skipped, the next frame still decodes', () => {
  const reader = new FrameReader();
  // Kind 30 (unknown to version 1) with two bytes of body, kind 300 (multi-byte), then Ping 7.
  reader.push(fromHex('031e0102' + '03fb2c01' + '021407'));
  assert.deepEqual(reader.next(), { unknownKind: 30 });
  assert.deepEqual(reader.next(), { unknownKind: 300 });
  assert.deepEqual(reader.next(), { message: { Ping: { nonce: 7 } } });
  assert.equal(reader.next(), null);
});

test('trailing bytes after the known fields are ignored', () => {
  assert.deepEqual(decodeMessage(fromHex('1407ffff')), { message: { Ping: { nonce: 7 } } });
});

test('an appended priority is absent when the body ends before it, and never sent when absent', () => {
  for (const [kind, name] of [['0c', 'Subscribe'], ['0f', 'SetLayerPreference']]) {
    const decode = (tail) => decodeMessage(fromHex(kind + '050a' + tail));
    // As a client that predates the field sends it; and an explicit absent tag.
    assert.deepEqual(decode('00'), { message: { [name]: { request: 5, track: 10, max_layer: null } } });
    assert.deepEqual(decode('0000'), { message: { [name]: { request: 5, track: 10, max_layer: null } } });
    assert.deepEqual(decode('010201c8ffff'), {
      message: { [name]: { request: 5, track: 10, max_layer: 2, priority: 200 } },
    });
    for (const broken of ['', '01', '0001', '0002c8']) {
      assert.throws(() => decode(broken), ProtocolError, `${name} ${broken}`);
    }
    for (const priority of [undefined, null]) {
      const message = { [name]: { request: 5, track: 10, max_layer: null, priority } };
      assert.equal(toHex(encodeMessage(message)), kind + '050a00');
    }
    assert.equal(toHex(encodeMessage({ [name]: { request: 5, track: 10, max_layer: null } })), kind + '050a00');
    assert.equal(toHex(encodeMessage({ [name]: { request: 5, track: 10, max_layer: null, priority: 0 } })), kind + '050a000100');
    assert.throws(() => encodeMessage({ [name]: { request: 5, track: 10, max_layer: null, priority: 256 } }), RangeError);
  }
});

test('pause reasons print by name, unknown ones as numbers', () => {
  assert.equal(pauseReasonName(0), 'BANDWIDTH');
  assert.equal(pauseReasonName(1), 'LOAD');
  assert.equal(pauseReasonName(254), '254');
  // TrackPaused without its reason is malformed.
  assert.throws(() => decodeMessage(fromHex('1c0a')), ProtocolError);
});

test('a frame longer than the maximum is refused as soon as its prefix is read', () => {
  const reader = new FrameReader();
  reader.push(encodeVarint(65537));
  assert.throws(() => reader.next(), (e) => e instanceof ProtocolError && e.code === ErrorCode.FRAME_TOO_LARGE);
});

test('malformed bodies are protocol violations', () => {
  const malformed = {
    empty: '',
    'kind marker ff': 'ff',
    'truncated ping': '14fb05',
    'bool byte 02': '110a02', // TrackMuted { track: 10, muted: 2 } (kind 17)
    'option tag 02': '170200', // Error { request: tag 2 }
    'u16 with a u32 marker': '00fc01000000', // ClientHello.version
    'string longer than its limit': '020181ff', // Join whose room claims 129 bytes
    'invalid utf-8': '020101ff00',
    'empty room': '02010000',
    'control character in room': '0201010a00',
    'publish with two layers sharing a media id':
      '070300' + '0356503860fc905f0100' + '00' + '00' + '00' + '02' + '01000000' + '01000000' + '00',
    'track kind 2': '0a0a0202',
  };
  for (const [what, hex] of Object.entries(malformed)) {
    assert.throws(
      () => decodeMessage(fromHex(hex)),
      (e) => e instanceof ProtocolError && e.code === ErrorCode.PROTOCOL_VIOLATION,
      what,
    );
  }
  // The room limit is checked from the length alone, before reading the bytes.
  assert.throws(() => decodeMessage(fromHex('0201fb8100')), ProtocolError);
});

test('the encoder refuses what the protocol cannot carry', () => {
  assert.throws(() => encodeMessage({ Join: { request: 1, room: '', name: '' } }), RangeError);
  assert.throws(() => encodeMessage({ Join: { request: 1, room: 'r'.repeat(129), name: '' } }), RangeError);
  assert.throws(() => encodeMessage({ Ack: { request: 2 ** 32 } }), RangeError);
  assert.throws(() => encodeMessage({ Subscribe: { request: 1, track: 1, max_layer: 256 } }), RangeError);
  assert.throws(() => encodeMessage({ Nope: {} }), TypeError);
  assert.throws(() => encodeFrame({ Sdp: { kind: 'Offer', sdp: 'x'.repeat(61440) } }, 100), ProtocolError);
});

test('datagrams: unknown control kinds are reported, padding is padding, unusable ones throw', () => {
  assert.deepEqual(parseDatagram(fromHex('0104')), { unknownControl: 4 });
  assert.deepEqual(parseDatagram(fromHex('02')), { padding: 1 });
  assert.deepEqual(parseDatagram(fromHex('02ff0001')), { padding: 4 });
  assert.equal(toHex(encodePaddingDatagram(0)), '02');
  for (const hex of ['', '03', '7f01', '00', '0001', '000180', '00014000000000000000000000']) {
    assert.throws(() => parseDatagram(fromHex(hex)), ProtocolError, hex);
  }
  // A media id above 2^32 - 1 (8-byte varint).
  assert.throws(() => parseDatagram(fromHex('00c0000001000000008000000000000000000000')), ProtocolError);
});

test('the largest RTP packet that fits (PROTOCOL.md §8.3)', () => {
  assert.equal(maxRtpSize(1160, 3), 1158);
  assert.equal(maxRtpSize(1160, 64), 1157);
});

test('error codes print by name, unknown ones as numbers', () => {
  assert.equal(errorCodeName(6), 'FORBIDDEN (0x06)');
  assert.equal(errorCodeName(65536), '0x10000');
});
