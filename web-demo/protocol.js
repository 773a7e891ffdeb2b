// Strait wire protocol, version 1, in JavaScript: QUIC varints, the bincode 2 "standard" body
// encoding, every control message, control datagrams, media datagrams and the frame reader.
//
// Written from docs/PROTOCOL.md; tested against protocol/tests/vectors/vectors.json by
// test/codec.test.mjs (every vector, both directions).
//
// A message is a plain object with one key, its name, whose value holds its fields by name:
// `{Ping: {nonce: 7}}` — the same shape as the golden vectors. Options are `null` when absent,
// `TrackKind` and `SdpType` are strings ("Audio", "Video", "Offer", "Answer"). A field appended
// to a version-1 message later (`priority` of `Subscribe` and `SetLayerPreference`, PROTOCOL.md §5)
// is left out of the object when absent: the encoder writes nothing for it (the bytes an older
// client sends) and the decoder leaves it out when the body ends before it or its tag is 00.
//
// u64 values (ids, nonces, timestamps) decode to a Number when it is exact (below 2^53, which is
// everything the gateway issues) and to a BigInt above; the encoder takes either.
//
// Decoding separates "need more bytes" (FrameReader.next() returns null) from "malformed" (a
// ProtocolError carrying the error code that closes the session). Every length read from the wire
// is checked against its limit before anything is allocated.

export const PROTOCOL_VERSION = 1;

/** Default and hard maximum of a control frame body (PROTOCOL.md §2). */
export const DEFAULT_MAX_FRAME_SIZE = 65536;
export const HARD_MAX_FRAME_SIZE = 1048576;

/** Why the server paused a subscription's video (PROTOCOL.md §6.3, `TrackPaused`). An open set. */
export const PauseReason = Object.freeze({
  BANDWIDTH: 0,
  LOAD: 1,
});

const PAUSE_REASON_NAMES = new Map(Object.entries(PauseReason).map(([name, code]) => [code, name]));

/** `BANDWIDTH`, or the number itself for a reason this version does not name. */
export function pauseReasonName(reason) {
  return PAUSE_REASON_NAMES.get(Number(reason)) ?? String(reason);
}

/** The priority the gateway gives a subscription that names none (PROTOCOL.md §6.3, `Subscribe`). */
export const DEFAULT_PRIORITY = 100;
/** The same for a track whose source is `screen`. */
export const SCREEN_PRIORITY = 200;

/** Error codes (PROTOCOL.md §9). The set is open: unknown values are valid. */
export const ErrorCode = Object.freeze({
  NONE: 0x00,
  INTERNAL: 0x01,
  PROTOCOL_VIOLATION: 0x02,
  UNSUPPORTED_VERSION: 0x03,
  UNAUTHORIZED: 0x04,
  TOKEN_EXPIRED: 0x05,
  FORBIDDEN: 0x06,
  NOT_FOUND: 0x07,
  LIMIT_EXCEEDED: 0x08,
  RATE_LIMITED: 0x09,
  INVALID_REQUEST: 0x0a,
  RESUME_FAILED: 0x0b,
  GOING_AWAY: 0x0c,
  FRAME_TOO_LARGE: 0x0d,
  TIMEOUT: 0x0e,
  REPLACED: 0x0f,
  UNSUPPORTED_MEDIA: 0x10,
  REDIRECT: 0x11,
  UNAVAILABLE: 0x12,
});

const ERROR_NAMES = new Map(Object.entries(ErrorCode).map(([name, code]) => [code, name]));

/** `NOT_FOUND (0x07)`, or `0x10000` for a code this version does not name. */
export function errorCodeName(code) {
  const hex = `0x${Number(code).toString(16).padStart(2, '0')}`;
  const name = ERROR_NAMES.get(Number(code));
  return name ? `${name} (${hex})` : hex;
}

/** A malformed frame, message or datagram; `code` is what the session closes with. */
export class ProtocolError extends Error {
  constructor(message, code = ErrorCode.PROTOCOL_VIOLATION) {
    super(message);
    this.name = 'ProtocolError';
    this.code = code;
  }
}

// ---------------------------------------------------------------------------------------------
// QUIC variable-length integers (RFC 9000 §16), big-endian. PROTOCOL.md §3.

export const VARINT_MAX = (1n << 62n) - 1n;

/** Bytes the shortest QUIC varint of `value` takes: 1, 2, 4 or 8. */
export function varintLength(value) {
  const v = BigInt(value);
  if (v < 0n || v > VARINT_MAX) throw new RangeError(`varint out of range: ${value}`);
  if (v < 64n) return 1;
  if (v < 16384n) return 2;
  if (v < 1073741824n) return 4;
  return 8;
}

/** The shortest QUIC varint of `value` (a Number or BigInt). */
export function encodeVarint(value) {
  const length = varintLength(value);
  let v = BigInt(value);
  const out = new Uint8Array(length);
  for (let i = length - 1; i >= 0; i--) {
    out[i] = Number(v & 0xffn);
    v >>= 8n;
  }
  out[0] |= [0, 0x40, 0, 0x80, 0, 0, 0, 0xc0][length - 1];
  return out;
}

/**
 * Reads a QUIC varint at `offset`: `{value, length}`, or `null` when `bytes` ends before it does.
 * Any valid form is accepted (`40 25` is 37).
 */
export function decodeVarint(bytes, offset = 0) {
  if (offset >= bytes.length) return null;
  const first = bytes[offset];
  const length = 1 << (first >> 6);
  if (offset + length > bytes.length) return null;
  if (length <= 4) {
    let v = first & 0x3f;
    for (let i = 1; i < length; i++) v = v * 256 + bytes[offset + i];
    return { value: v, length };
  }
  let v = BigInt(first & 0x3f);
  for (let i = 1; i < 8; i++) v = (v << 8n) | BigInt(bytes[offset + i]);
  return { value: exact(v), length };
}

/** A BigInt as a Number when that is exact, else the BigInt. */
function exact(big) {
  return big <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(big) : big;
}

// ---------------------------------------------------------------------------------------------
// bincode 2, standard configuration: little endian, variable-length integers. PROTOCOL.md §4.

const utf8Encoder = new TextEncoder();
const utf8Decoder = new TextDecoder('utf-8', { fatal: true });

const U16_MAX = 0xffff;
const U32_MAX = 0xffffffff;
const U64_MAX = (1n << 64n) - 1n;

/** Appends bytes to a growing buffer. */
export class Writer {
  constructor(capacity = 64) {
    this.bytes = new Uint8Array(capacity);
    this.length = 0;
  }

  reserve(n) {
    if (this.length + n <= this.bytes.length) return;
    let size = this.bytes.length * 2;
    while (size < this.length + n) size *= 2;
    const grown = new Uint8Array(size);
    grown.set(this.bytes.subarray(0, this.length));
    this.bytes = grown;
  }

  u8(v) {
    this.reserve(1);
    this.bytes[this.length++] = v;
  }

  raw(bytes) {
    this.reserve(bytes.length);
    this.bytes.set(bytes, this.length);
    this.length += bytes.length;
  }

  /** Little-endian unsigned integer of `n` bytes; `v` is a Number or BigInt. */
  le(v, n) {
    let big = BigInt(v);
    this.reserve(n);
    for (let i = 0; i < n; i++) {
      this.bytes[this.length++] = Number(big & 0xffn);
      big >>= 8n;
    }
  }

  /** bincode varint, shortest form. `max` is the field type's largest value. */
  varint(value, max) {
    const v = BigInt(value);
    if (typeof value === 'number' && !Number.isSafeInteger(value)) {
      throw new RangeError(`not an exact integer: ${value}`);
    }
    if (v < 0n || v > BigInt(max)) throw new RangeError(`integer out of range: ${value}`);
    if (v <= 250n) this.u8(Number(v));
    else if (v <= 0xffffn) {
      this.u8(251);
      this.le(v, 2);
    } else if (v <= 0xffffffffn) {
      this.u8(252);
      this.le(v, 4);
    } else {
      this.u8(253);
      this.le(v, 8);
    }
  }

  finish() {
    return this.bytes.slice(0, this.length);
  }
}

/** Reads bincode values from a complete body; running out of bytes is malformed. */
export class Reader {
  constructor(bytes, offset = 0) {
    this.bytes = bytes;
    this.offset = offset;
  }

  get remaining() {
    return this.bytes.length - this.offset;
  }

  take(n) {
    if (n > this.remaining) throw new ProtocolError('truncated: the body ends inside a field');
    const out = this.bytes.subarray(this.offset, this.offset + n);
    this.offset += n;
    return out;
  }

  u8() {
    return this.take(1)[0];
  }

  le(n) {
    const b = this.take(n);
    let v = 0n;
    for (let i = n - 1; i >= 0; i--) v = (v << 8n) | BigInt(b[i]);
    return v;
  }

  /**
   * bincode varint. `widest` is the widest marker the field's type allows: 251 for u16, 252 for
   * u32 (and enum indices), 253 for u64 (and lengths and counts). Longer forms than needed are
   * accepted; a marker wider than the type is malformed.
   */
  varint(widest) {
    const first = this.u8();
    if (first <= 250) return first;
    if (first > 253) throw new ProtocolError(`invalid varint marker ${first}`);
    if (first > widest) throw new ProtocolError(`varint marker ${first} is too wide for its field`);
    if (first === 251) return Number(this.le(2));
    if (first === 252) return Number(this.le(4));
    return exact(this.le(8));
  }
}

// Field types. Each has `enc(writer, value)` and `dec(reader)`.

const u8 = {
  enc(w, v) {
    if (!Number.isInteger(v) || v < 0 || v > 255) throw new RangeError(`not a u8: ${v}`);
    w.u8(v);
  },
  dec: (r) => r.u8(),
};
const u16 = { enc: (w, v) => w.varint(v, U16_MAX), dec: (r) => r.varint(251) };
const u32 = { enc: (w, v) => w.varint(v, U32_MAX), dec: (r) => r.varint(252) };
const u64 = { enc: (w, v) => w.varint(v, U64_MAX), dec: (r) => r.varint(253) };
const bool = {
  enc(w, v) {
    if (typeof v !== 'boolean') throw new TypeError(`not a bool: ${v}`);
    w.u8(v ? 1 : 0);
  },
  dec(r) {
    const b = r.u8();
    if (b > 1) throw new ProtocolError(`invalid bool byte ${b}`);
    return b === 1;
  },
};

/** A UTF-8 string of at most `max` bytes. */
function str(max) {
  return {
    enc(w, v) {
      if (typeof v !== 'string') throw new TypeError(`not a string: ${v}`);
      const bytes = utf8Encoder.encode(v);
      if (bytes.length > max) throw new RangeError(`string of ${bytes.length} bytes exceeds ${max}`);
      w.varint(bytes.length, U64_MAX);
      w.raw(bytes);
    },
    dec(r) {
      const length = r.varint(253);
      if (typeof length !== 'number' || length > max) {
        throw new ProtocolError(`string of ${length} bytes exceeds its limit of ${max}`);
      }
      try {
        return utf8Decoder.decode(r.take(length));
      } catch (e) {
        if (e instanceof ProtocolError) throw e;
        throw new ProtocolError('invalid UTF-8 in a string');
      }
    },
  };
}

/** `option<T>`: tag 00 (absent, `null`) or 01 then T. */
function opt(type) {
  return {
    enc(w, v) {
      if (v === null || v === undefined) w.u8(0);
      else {
        w.u8(1);
        type.enc(w, v);
      }
    },
    dec(r) {
      const tag = r.u8();
      if (tag === 0) return null;
      if (tag === 1) return type.dec(r);
      throw new ProtocolError(`invalid option tag ${tag}`);
    },
  };
}

/**
 * An `option<T>` appended to a version-1 message after it was published (PROTOCOL.md §5); only
 * ever the last field. Absent (`null` or `undefined`) is written as nothing at all; the body ending
 * before it reads as absent, tag 00 too; tag 01 and T is the value. Absent is `undefined`, which
 * `struct` leaves out of the decoded object.
 */
function appended(type) {
  return {
    appended: true,
    enc(w, v) {
      if (v === null || v === undefined) return;
      w.u8(1);
      type.enc(w, v);
    },
    dec(r) {
      if (r.remaining === 0) return undefined;
      const tag = r.u8();
      if (tag === 0) return undefined;
      if (tag === 1) return type.dec(r);
      throw new ProtocolError(`invalid option tag ${tag}`);
    },
  };
}

/** `list<T>` of at most `max` items. */
function list(type, max) {
  return {
    enc(w, v) {
      if (!Array.isArray(v)) throw new TypeError(`not a list: ${v}`);
      if (v.length > max) throw new RangeError(`list of ${v.length} items exceeds ${max}`);
      w.varint(v.length, U64_MAX);
      for (const item of v) type.enc(w, item);
    },
    dec(r) {
      const count = r.varint(253);
      if (typeof count !== 'number' || count > max) {
        throw new ProtocolError(`list of ${count} items exceeds its limit of ${max}`);
      }
      const out = [];
      for (let i = 0; i < count; i++) out.push(type.dec(r));
      return out;
    },
  };
}

/** A closed enum without fields, written as its name: index as a varint u32. */
function names(...variants) {
  return {
    enc(w, v) {
      const index = variants.indexOf(v);
      if (index < 0) throw new RangeError(`unknown variant ${v}`);
      w.varint(index, U32_MAX);
    },
    dec(r) {
      const index = r.varint(252);
      if (index >= variants.length) throw new ProtocolError(`unknown variant index ${index}`);
      return variants[index];
    },
  };
}

/** A struct: its fields in order, nothing between them. `fields` is `[[name, type], …]`. */
function struct(fields) {
  return {
    fields,
    enc(w, v) {
      if (v === null || typeof v !== 'object') throw new TypeError(`not a struct: ${v}`);
      for (const [name, type] of fields) {
        if (!(name in v) && !type.appended) throw new TypeError(`missing field ${name}`);
        type.enc(w, v[name]);
      }
    },
    dec(r) {
      const out = {};
      for (const [name, type] of fields) {
        const value = type.dec(r);
        if (value !== undefined) out[name] = value;
      }
      return out;
    },
  };
}

// Named types (PROTOCOL.md §6.1).
const ParticipantId = u64;
const TrackId = u64;
const MediaId = u32;
const RequestId = u32;
const ErrorCodeT = u32;
const RoomId = str(128);
const ResumeToken = str(4096);
const TrackKind = names('Audio', 'Video');
const SdpType = names('Offer', 'Answer');
const PauseReasonT = u8;

// Structs (PROTOCOL.md §6.3).
const IceServer = struct([
  ['urls', list(str(1024), 8)],
  ['username', opt(str(256))],
  ['credential', opt(str(4096))],
]);
const SessionLimits = struct([
  ['max_frame_size', u32],
  ['max_tracks', u32],
  ['max_subscriptions', u32],
  ['max_messages_per_second', u32],
]);
const PARTICIPANT_INFO = [
  ['participant', ParticipantId],
  ['identity', str(128)],
  ['name', str(256)],
];
const ParticipantInfo = struct(PARTICIPANT_INFO);
const Codec = struct([
  ['name', str(32)],
  ['payload_type', u8],
  ['clock_rate', u32],
  ['channels', u8],
  ['fmtp', str(512)],
]);
const Layer = struct([
  ['media', MediaId],
  ['max_bitrate', u32],
  ['width', u16],
  ['height', u16],
]);
const LayerInfo = struct([
  ['max_bitrate', u32],
  ['width', u16],
  ['height', u16],
]);

/** RoomId rule (§6.4): 1 to 128 bytes, no control character. */
function checkRoom(room) {
  if (room.length === 0) return 'the room id is empty';
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u001f\u007f-\u009f]/u.test(room)) return 'the room id holds a control character';
  return null;
}

/** Publish.layers rule (§6.4): 1 to 3 layers with distinct media ids. */
function checkPublishLayers(layers) {
  if (layers.length < 1 || layers.length > 3) return `Publish has ${layers.length} layers (1 to 3)`;
  const media = new Set(layers.map((l) => String(l.media)));
  if (media.size !== layers.length) return 'two layers of Publish share a media id';
  return null;
}

/**
 * The 30 message kinds of version 1, in kind order: `[name, fields, check?]`. `check` returns a
 * string when a known message breaks a rule of §6.4.
 */
const MESSAGES = [
  ['ClientHello', [['version', u16], ['token', str(4096)], ['resume', opt(ResumeToken)], ['agent', str(256)]]],
  [
    'ServerHello',
    [
      ['version', u16],
      ['participant', ParticipantId],
      ['resume_token', ResumeToken],
      ['resumed', bool],
      ['ice_servers', list(IceServer, 8)],
      ['limits', SessionLimits],
      ['max_datagram_size', u32],
    ],
  ],
  ['Join', [['request', RequestId], ['room', RoomId], ['name', str(256)]], (m) => checkRoom(m.room)],
  ['Joined', [['request', RequestId], ['room', RoomId], ['me', ParticipantInfo]], (m) => checkRoom(m.room)],
  ['Leave', [['request', RequestId]]],
  ['ParticipantJoined', PARTICIPANT_INFO],
  ['ParticipantLeft', [['participant', ParticipantId], ['reason', ErrorCodeT]]],
  [
    'Publish',
    [
      ['request', RequestId],
      ['kind', TrackKind],
      ['codec', Codec],
      ['source', str(256)],
      ['layers', list(Layer, 3)],
      ['muted', bool],
    ],
    (m) => checkPublishLayers(m.layers),
  ],
  ['Published', [['request', RequestId], ['track', TrackId]]],
  ['Unpublish', [['request', RequestId], ['track', TrackId]]],
  [
    'TrackPublished',
    [
      ['track', TrackId],
      ['participant', ParticipantId],
      ['kind', TrackKind],
      ['codec', Codec],
      ['source', str(256)],
      ['layers', list(LayerInfo, 3)],
      ['muted', bool],
    ],
  ],
  ['TrackUnpublished', [['track', TrackId], ['participant', ParticipantId]]],
  ['Subscribe', [['request', RequestId], ['track', TrackId], ['max_layer', opt(u8)], ['priority', appended(u8)]]],
  ['Subscribed', [['request', RequestId], ['track', TrackId], ['media', MediaId], ['ssrc', u32], ['layer', u8]]],
  ['Unsubscribe', [['request', RequestId], ['track', TrackId]]],
  [
    'SetLayerPreference',
    [['request', RequestId], ['track', TrackId], ['max_layer', opt(u8)], ['priority', appended(u8)]],
  ],
  ['SetMute', [['request', RequestId], ['track', TrackId], ['muted', bool]]],
  ['TrackMuted', [['track', TrackId], ['muted', bool]]],
  ['KeyframeRequest', [['track', TrackId], ['layer', opt(u8)]]],
  ['LayerSwitched', [['track', TrackId], ['layer', u8]]],
  ['Ping', [['nonce', u64]]],
  ['Pong', [['nonce', u64]]],
  ['GoAway', [
    ['code', ErrorCodeT],
    ['redirect', opt(str(1024))],
    ['cert_hashes', list(str(64), 4)],
    ['token', opt(str(4096))],
  ]],
  ['Error', [['request', opt(RequestId)], ['code', ErrorCodeT], ['reason', str(1024)]]],
  ['Ack', [['request', RequestId]]],
  ['Sdp', [['kind', SdpType], ['sdp', str(61440)]]],
  [
    'IceCandidate',
    [['candidate', str(1024)], ['sdp_mid', opt(str(256))], ['sdp_mline_index', opt(u16)]],
  ],
  ['NewResumeToken', [['resume_token', ResumeToken]]],
  ['TrackPaused', [['track', TrackId], ['reason', PauseReasonT]]],
  ['TrackResumed', [['track', TrackId], ['reason', PauseReasonT]]],
].map(([name, fields, check], kind) => ({ name, kind, body: struct(fields), check }));

/** Number of message kinds this version knows; kinds at or above it are skipped. */
export const MESSAGE_KINDS = MESSAGES.length;

const MESSAGE_BY_NAME = new Map(MESSAGES.map((m) => [m.name, m]));

/** Message kind names in kind order (`MESSAGE_NAMES[20] === 'Ping'`). */
export const MESSAGE_NAMES = Object.freeze(MESSAGES.map((m) => m.name));

/** `['Ping', {nonce: 7}]` for `{Ping: {nonce: 7}}`. */
export function unwrap(message) {
  const keys = Object.keys(message ?? {});
  if (keys.length !== 1) throw new TypeError('a message is an object with exactly one key');
  return [keys[0], message[keys[0]]];
}

/** Encodes one message body (no length prefix). Throws on a value the protocol cannot carry. */
export function encodeMessage(message) {
  const [name, fields] = unwrap(message);
  const spec = MESSAGE_BY_NAME.get(name);
  if (!spec) throw new TypeError(`unknown message ${name}`);
  const broken = spec.check?.(fields);
  if (broken) throw new RangeError(broken);
  const w = new Writer();
  w.varint(spec.kind, U32_MAX);
  spec.body.enc(w, fields);
  return w.finish();
}

/**
 * Decodes one message body: `{message}` for a known kind, `{unknownKind}` for a kind from a newer
 * version (skip it). Throws ProtocolError when the body is malformed. Trailing bytes are ignored.
 */
export function decodeMessage(body) {
  if (body.length === 0) throw new ProtocolError('empty frame body');
  const r = new Reader(body);
  const first = body[0];
  if (first > 253) throw new ProtocolError(`invalid message kind marker ${first}`);
  const kind = r.varint(253);
  if (typeof kind !== 'number' || kind >= MESSAGE_KINDS) {
    return { unknownKind: kind };
  }
  const spec = MESSAGES[kind];
  const fields = spec.body.dec(r);
  const broken = spec.check?.(fields);
  if (broken) throw new ProtocolError(broken);
  return { message: { [spec.name]: fields } };
}

/** A whole frame: the QUIC varint length of the body, then the body. */
export function encodeFrame(message, maxFrameSize = DEFAULT_MAX_FRAME_SIZE) {
  const body = encodeMessage(message);
  if (body.length > maxFrameSize) {
    throw new ProtocolError(`a ${body.length}-byte body exceeds the peer's ${maxFrameSize}`, ErrorCode.FRAME_TOO_LARGE);
  }
  const prefix = encodeVarint(body.length);
  const out = new Uint8Array(prefix.length + body.length);
  out.set(prefix);
  out.set(body, prefix.length);
  return out;
}

/**
 * Accumulates control-stream bytes and hands out whole frames. Frames may arrive in pieces and
 * several may arrive at once.
 *
 *     reader.push(chunk);
 *     for (let f; (f = reader.next()) !== null; ) { if (f.message) handle(f.message); }
 *
 * `next()` returns `null` when it needs more bytes, `{message}` or `{unknownKind}` (to skip)
 * for a frame, and throws ProtocolError (with `code` FRAME_TOO_LARGE or PROTOCOL_VIOLATION) when
 * the stream is malformed; the session should then close with that code.
 */
export class FrameReader {
  constructor(maxFrameSize = DEFAULT_MAX_FRAME_SIZE) {
    if (maxFrameSize > HARD_MAX_FRAME_SIZE) throw new RangeError('maximum frame size above 1 MiB');
    this.maxFrameSize = maxFrameSize;
    this.buffer = new Uint8Array(0);
  }

  push(chunk) {
    if (chunk.length === 0) return;
    if (this.buffer.length === 0) {
      this.buffer = chunk.slice();
      return;
    }
    const joined = new Uint8Array(this.buffer.length + chunk.length);
    joined.set(this.buffer);
    joined.set(chunk, this.buffer.length);
    this.buffer = joined;
  }

  next() {
    const prefix = decodeVarint(this.buffer, 0);
    if (prefix === null) return null;
    const length = prefix.value;
    // Checked as soon as the prefix is complete, before waiting for (or buffering) the body.
    if (typeof length !== 'number' || length > this.maxFrameSize) {
      throw new ProtocolError(`a frame of ${length} bytes exceeds the maximum of ${this.maxFrameSize}`, ErrorCode.FRAME_TOO_LARGE);
    }
    if (this.buffer.length < prefix.length + length) return null;
    const body = this.buffer.subarray(prefix.length, prefix.length + length);
    this.buffer = this.buffer.subarray(prefix.length + length);
    return decodeMessage(body);
  }
}

// ---------------------------------------------------------------------------------------------
// Datagrams (PROTOCOL.md §8).

export const DATAGRAM_MEDIA = 0x00;
export const DATAGRAM_CONTROL = 0x01;
/** Padding: `02 | any bytes`, the gateway probing the link (§8.6). Dropped, and not unusable. */
export const DATAGRAM_PADDING = 0x02;

const DATAGRAM_CONTROLS = [
  ['Ping', [['seq', u32], ['timestamp_us', u64]]],
  ['Pong', [['seq', u32], ['timestamp_us', u64]]],
  ['ReceiverReport', [['media', MediaId], ['highest_seq', u32], ['lost', u32], ['jitter', u32]]],
  ['KeyframeRequest', [['media', MediaId]]],
].map(([name, fields], kind) => ({ name, kind, body: struct(fields) }));

const DATAGRAM_CONTROL_BY_NAME = new Map(DATAGRAM_CONTROLS.map((d) => [d.name, d]));

/** A control datagram, kind byte 01 included: `{Ping: {seq, timestamp_us}}` → bytes. */
export function encodeControlDatagram(message) {
  const [name, fields] = unwrap(message);
  const spec = DATAGRAM_CONTROL_BY_NAME.get(name);
  if (!spec) throw new TypeError(`unknown control datagram ${name}`);
  const w = new Writer(16);
  w.u8(DATAGRAM_CONTROL);
  w.varint(spec.kind, U32_MAX);
  spec.body.enc(w, fields);
  return w.finish();
}

/** A padding datagram of `length` bytes in all (at least its kind byte): 02 then zeros. */
export function encodePaddingDatagram(length) {
  if (!Number.isSafeInteger(length) || length < 0) throw new RangeError(`invalid padding length ${length}`);
  const out = new Uint8Array(Math.max(1, length));
  out[0] = DATAGRAM_PADDING;
  return out;
}

/** Bytes a media datagram's header takes for `media`: the kind byte and the QUIC varint. */
export function mediaHeaderLength(media) {
  return 1 + varintLength(media);
}

/** The largest RTP packet a datagram of `maxDatagramSize` carries for `media` (§8.3). */
export function maxRtpSize(maxDatagramSize, media) {
  return maxDatagramSize - mediaHeaderLength(media);
}

/** A media datagram: 00, the media id as a QUIC varint, the RTP packet. */
export function encodeMediaDatagram(media, rtp) {
  if (!Number.isInteger(media) || media < 0 || media > U32_MAX) throw new RangeError(`invalid media id ${media}`);
  const id = encodeVarint(media);
  const out = new Uint8Array(1 + id.length + rtp.length);
  out[0] = DATAGRAM_MEDIA;
  out.set(id, 1);
  out.set(rtp, 1 + id.length);
  return out;
}

/** Checks an RTP packet as the datagram layer does (§8.1); returns a reason or null. */
export function rtpProblem(rtp) {
  if (rtp.length < 12) return 'RTP packet shorter than 12 bytes';
  if (rtp[0] >> 6 !== 2) return 'RTP version is not 2';
  let header = 12 + 4 * (rtp[0] & 0x0f);
  if (rtp[0] & 0x10) {
    if (header + 4 > rtp.length) return 'RTP extension header missing';
    header += 4 + 4 * ((rtp[header + 2] << 8) | rtp[header + 3]);
  }
  if (header > rtp.length) return 'RTP header longer than the packet';
  return null;
}

/**
 * Parses a datagram: `{media, rtp}` (rtp is a view into `bytes`), `{control}` for a control
 * datagram this version knows, `{unknownControl}` for one from a newer version, `{padding}` (its
 * length) for a padding datagram, which the caller drops without counting it. Throws
 * ProtocolError for anything unusable; the caller drops and counts it (datagrams never close a
 * session).
 */
export function parseDatagram(bytes) {
  if (bytes.length === 0) throw new ProtocolError('empty datagram');
  if (bytes[0] === DATAGRAM_MEDIA) {
    const id = decodeVarint(bytes, 1);
    if (id === null) throw new ProtocolError('media datagram ends inside its media id');
    if (typeof id.value !== 'number' || id.value > U32_MAX) throw new ProtocolError('media id above 2^32 - 1');
    const rtp = bytes.subarray(1 + id.length);
    const problem = rtpProblem(rtp);
    if (problem) throw new ProtocolError(problem);
    return { media: id.value, rtp };
  }
  if (bytes[0] === DATAGRAM_CONTROL) {
    const r = new Reader(bytes, 1);
    const kind = r.varint(253);
    if (typeof kind !== 'number' || kind >= DATAGRAM_CONTROLS.length) return { unknownControl: kind };
    const spec = DATAGRAM_CONTROLS[kind];
    return { control: { [spec.name]: spec.body.dec(r) } };
  }
  if (bytes[0] === DATAGRAM_PADDING) return { padding: bytes.length };
  throw new ProtocolError(`unknown datagram kind ${bytes[0]}`);
}

// ---------------------------------------------------------------------------------------------
// Hex helpers (tests and logs).

export function toHex(bytes) {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
}

export function fromHex(hex) {
  if (hex.length % 2 !== 0) throw new RangeError('odd hex length');
  const out = new Uint8Array(hex.length / 2);
  for (let i = 0; i < out.length; i++) {
    const byte = Number.parseInt(hex.slice(2 * i, 2 * i + 2), 16);
    if (Number.isNaN(byte)) throw new RangeError('invalid hex');
    out[i] = byte;
  }
  return out;
}
