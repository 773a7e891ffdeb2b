// The Strait web demo page: join a room over WebTransport, publish the camera and microphone,
// show and play everyone else. Where WebTransport (or WebCodecs) is missing, or WebTransport does
// not connect within RACE_MS, the page joins the same room over WebRTC instead (fallback.js).
// In a cluster, the node the page came from may redirect the session to the node that serves the
// room: the page follows (session.js `openSession`), and retries a cluster that cannot take the
// room now (`UNAVAILABLE`), saying so.
// A WebTransport session whose connection is lost (or that hears nothing from the gateway for
// LOSS_MS) reconnects by itself: it resumes where the gateway still keeps it (PROTOCOL.md §7.8),
// else starts afresh through the same node or another node of the cluster (`/v1/nodes`), joins
// the room and publishes again. A room moved to another node (`GoAway` REDIRECT) is joined there.
//
// URL: `/?room=<room>&name=<display name>[&transport=auto|webtransport|webrtc]`; without `room`
// the page shows a join form. `transport=webrtc` goes straight to the WebRTC fallback;
// `transport=webtransport` never falls back (a WebTransport failure is shown as an error).
//
// Test hook: `window.strait` holds the live state (`state`, with `transport`: 'webtransport' or
// 'webrtc', `url`: the WebTransport URL of the session, `redirects`: the URLs the cluster
// redirected it to, `retries`: attempts made again after `UNAVAILABLE`, `nodes`: the other nodes
// it may reconnect through, `recoveries`: each reconnection, `{resumed, url, ms}`), media statistics
// (`stats`) and every error shown to the user (`errors`); `state.paused` maps each subscription
// the gateway paused (`TrackPaused`) to its reason's name (`BANDWIDTH`, `LOAD`, or a number). The
// browser test (test/browser.mjs) reads it.
//
// When the gateway pauses a subscription's video (the page's link cannot carry it, or the node
// sheds load), its tile keeps the last picture under a "paused — …" badge until `TrackResumed`;
// the page does not unsubscribe. Screen shares are subscribed at a higher priority than cameras
// (`SCREEN_PRIORITY`), so that they are paused last.

import { WebRtcFallback, signalingUrl } from './fallback.js';
import { AudioPlayer, AudioReceiver, Publisher, VideoReceiver, emptyRemoteStats, missingMediaApis } from './media.js';
import { ErrorCode, PauseReason, SCREEN_PRIORITY, errorCodeName, pauseReasonName } from './protocol.js';
import { ConnectError, hashesFromHex, openSession, redirectTarget, retryDelayMs } from './session.js';

/** How long WebTransport may take to connect before the page falls back to WebRTC. */
const RACE_MS = 4000;
/** Nothing heard from the gateway (frames, media, pongs of the pings sent every second) for this long: the connection counts as lost. */
const LOSS_MS = 5000;
/** Connection attempts of one reconnection before the page gives up. */
const RECONNECT_ATTEMPTS = 8;
/** Bound on each of those attempts' connect. */
const RECONNECT_CONNECT_MS = 3000;
const TRANSPORTS = ['auto', 'webtransport', 'webrtc'];

const $ = (id) => document.getElementById(id);
const el = {
  roomLabel: $('room-label'),
  status: $('status'),
  rtt: $('rtt'),
  transport: $('transport'),
  sound: $('sound'),
  muteAudio: $('mute-audio'),
  muteVideo: $('mute-video'),
  leave: $('leave'),
  error: $('error'),
  notice: $('notice'),
  form: $('join-form'),
  grid: $('grid'),
  list: $('participants'),
};

const hook = {
  state: {
    phase: 'starting',
    transport: null,
    fallbackReason: null,
    room: null,
    url: null,
    redirects: [],
    retries: 0,
    nodes: [],
    recoveries: [],
    me: null,
    name: null,
    participants: {},
    paused: {},
    error: null,
    notice: null,
  },
  stats: { rttMs: null, sent: null, remote: {} },
  errors: [],
};
window.strait = hook;

/** Everyone in the room but us: participant id → {info, tile, canvas, stats, tracks: Set}. */
const participants = new Map();
/** Tracks of others: track id → {info, media, receiver, paused: reason or null}. */
const tracks = new Map();
/** Subscriptions by the media id the gateway chose: media id → receiver. */
const receivers = new Map();
const player = new AudioPlayer();

let session = null;
let publisher = null;
/** The WebRTC fallback, when the page uses it instead of `session`. */
let rtc = null;
/** Our own tile (camera preview). */
let leaving = false;
let goingAway = null;
/** The room and the name the page joined with, and the access token it was given. */
let joinedAs = null;
/** Ticks (seconds) between two reads of `/v1/nodes` while the session is live. */
const NODES_EVERY = 15;
let ticks = 0;
/** Where the live WebTransport session is: `{url, certificateHashes}`. */
let current = null;
/** Other nodes of the cluster (`/v1/nodes`), to reconnect through: `[{url, certificateHashes}]`. */
let fallbacks = [];
/** Between a resumed `ServerHello` and the `Ack` that ends its snapshot (PROTOCOL.md §7.8). */
let resyncing = false;

// ---------------------------------------------------------------------------------------------
// What the user sees.

function setStatus(text, live = false) {
  el.status.textContent = text;
  el.status.classList.toggle('live', live);
}

function showTransport(transport, detail) {
  hook.state.transport = transport;
  el.transport.hidden = false;
  el.transport.textContent = transport === 'webrtc' ? 'WebRTC fallback' : 'WebTransport';
  el.transport.dataset.transport = transport;
  el.transport.title = detail;
}

function showError(text) {
  hook.state.error = text;
  hook.errors.push(text);
  el.error.textContent = text;
  el.error.hidden = false;
  setStatus('not connected');
  console.error(`strait: ${text}`);
}

/** An error that does not end the session (a refused request, a decoder problem). */
function reportProblem(text) {
  hook.errors.push(text);
  console.warn(`strait: ${text}`);
}

function showNotice(text) {
  hook.state.notice = text;
  el.notice.textContent = text;
  el.notice.hidden = false;
}

function makeTile(label, media) {
  const tile = document.createElement('div');
  tile.className = 'tile';
  const head = document.createElement('div');
  head.className = 'label';
  const name = document.createElement('span');
  name.textContent = label;
  const badge = document.createElement('span');
  badge.className = 'badge';
  head.append(name, badge);
  const stats = document.createElement('div');
  stats.className = 'stats';
  // Over the picture, which stays frozen on its last frame while the gateway pauses the video.
  const paused = document.createElement('div');
  paused.className = 'paused-badge';
  paused.hidden = true;
  tile.append(media, paused, head, stats);
  el.grid.append(tile);
  return { tile, badge, paused, statsLine: stats };
}

function displayName(info) {
  return info.name || info.identity || `participant ${info.participant}`;
}

function renderList() {
  el.list.replaceChildren();
  if (hook.state.me !== null) {
    const li = document.createElement('li');
    li.className = 'me';
    li.textContent = hook.state.name || 'me';
    el.list.append(li);
  }
  for (const p of participants.values()) {
    const li = document.createElement('li');
    li.textContent = displayName(p.info);
    li.dataset.participant = String(p.info.participant);
    el.list.append(li);
  }
}

// ---------------------------------------------------------------------------------------------
// The room.

function addParticipant(info) {
  if (info.participant === hook.state.me || participants.has(info.participant)) return;
  // WebTransport: frames decoded by the page, drawn on a canvas. WebRTC: the browser's own
  // decoding, in a video element (and the sound in an audio element, once it arrives).
  let canvas = null;
  let video = null;
  if (rtc) {
    video = document.createElement('video');
    video.muted = true;
    video.autoplay = true;
    video.playsInline = true;
  } else {
    canvas = document.createElement('canvas');
    canvas.width = 640;
    canvas.height = 480;
  }
  const media = canvas ?? video;
  media.dataset.participant = String(info.participant);
  const view = makeTile(displayName(info), media);
  view.tile.dataset.participant = String(info.participant);
  const stats = emptyRemoteStats(displayName(info));
  hook.stats.remote[String(info.participant)] = stats;
  hook.state.participants[String(info.participant)] = { name: info.name, identity: info.identity };
  participants.set(info.participant, { info, canvas, video, audio: null, stats, view, tracks: new Set(), lastBytes: 0 });
  renderList();
}

function removeParticipant(id) {
  const p = participants.get(id);
  if (!p) return;
  for (const track of p.tracks) dropTrack(track);
  p.view.tile.remove();
  participants.delete(id);
  delete hook.state.participants[String(id)];
  delete hook.stats.remote[String(id)];
  renderList();
}

function dropTrack(trackId) {
  const t = tracks.get(trackId);
  if (!t) return;
  tracks.delete(trackId);
  delete hook.state.paused[String(trackId)];
  if (t.media !== null) receivers.delete(t.media);
  t.receiver?.close();
  const p = participants.get(t.info.participant);
  p?.tracks.delete(trackId);
  if (p) updatePaused(p);
}

function updateBadges(p) {
  const muted = [...p.tracks].map((id) => tracks.get(id)).filter((t) => t?.info.muted);
  p.view.badge.textContent = muted.map((t) => (t.info.kind === 'Audio' ? 'mic off' : 'camera off')).join(' · ');
}

/** Words for why the gateway paused a video (an open set: an unknown reason shows as a number). */
function pausedText(reason) {
  if (reason === PauseReason.BANDWIDTH) return 'paused — low bandwidth';
  if (reason === PauseReason.LOAD) return 'paused — server load';
  return `paused — reason ${reason}`;
}

/** Shows the "paused" badge over `p`'s picture while the gateway pauses one of its videos. */
function updatePaused(p) {
  const paused = [...p.tracks].map((id) => tracks.get(id)).filter((t) => t && t.paused !== null);
  const video = paused.find((t) => t.info.kind === 'Video') ?? paused[0];
  p.view.paused.hidden = !video;
  p.view.paused.textContent = video ? pausedText(video.paused) : '';
  p.view.tile.classList.toggle('paused', Boolean(video));
}

/** `TrackPaused` (`reason`) or `TrackResumed` (`null`) for one of our subscriptions. */
function setPaused(trackId, reason) {
  const t = tracks.get(trackId);
  if (!t) return;
  t.paused = reason;
  if (reason === null) delete hook.state.paused[String(trackId)];
  else hook.state.paused[String(trackId)] = pauseReasonName(reason);
  const p = participants.get(t.info.participant);
  if (p) updatePaused(p);
}

async function subscribe(info) {
  const p = participants.get(info.participant);
  if (!p) return;
  const codec = info.codec.name.toLowerCase();
  const supported = (info.kind === 'Video' && codec === 'vp8') || (info.kind === 'Audio' && codec === 'opus');
  tracks.set(info.track, { info, media: null, receiver: null, paused: null });
  p.tracks.add(info.track);
  updateBadges(p);
  if (!supported) {
    reportProblem(`not subscribing to ${displayName(p.info)}'s ${info.codec.name} track: this demo decodes VP8 and Opus`);
    return;
  }
  let subscribed;
  try {
    // A shared screen is paused after the cameras; others take the gateway's default (no field).
    const priority = info.source === 'screen' ? SCREEN_PRIORITY : null;
    subscribed = await session.request('Subscribe', { track: info.track, max_layer: null, priority });
  } catch (e) {
    reportProblem(`subscribing to ${displayName(p.info)}'s ${info.source}: ${e.message}`);
    return;
  }
  attachSubscription(subscribed);
}

/** A subscription's media now arrives on `subscribed.media`: decode and show or play it. */
function attachSubscription(subscribed) {
  const t = tracks.get(subscribed.track);
  if (!t || t.media !== null) return; // unpublished while we waited, or attached already
  const p = participants.get(t.info.participant);
  if (!p) return;
  t.media = subscribed.media;
  t.receiver =
    t.info.kind === 'Video'
      ? new VideoReceiver({ session, media: subscribed.media, canvas: p.canvas, stats: p.stats })
      : new AudioReceiver({ media: subscribed.media, player, key: t.info.participant, stats: p.stats });
  receivers.set(subscribed.media, t.receiver);
}

/** Forgets everyone else (the room is announced again after a reconnection). */
function clearRoom() {
  for (const id of [...participants.keys()]) removeParticipant(id);
  for (const receiver of receivers.values()) receiver.close();
  receivers.clear();
  tracks.clear();
  hook.state.paused = {};
}

/** WebRTC: a track of another participant, received once the connection has a section for it. */
function noteTrack(info) {
  const p = participants.get(info.participant);
  if (!p) return;
  tracks.set(info.track, { info, media: null, receiver: null, paused: null });
  p.tracks.add(info.track);
  updateBadges(p);
}

/** WebRTC: the track `info` now arrives as `track`; shows or plays it on its participant's tile. */
function attachTrack(info, track) {
  const p = participants.get(info.participant);
  const t = tracks.get(info.track);
  if (!p || !t) return;
  const stream = new MediaStream([track]);
  if (info.kind === 'Video') {
    p.video.srcObject = stream;
    p.video.play().catch(() => {});
    t.receiver = { close: () => p.video.srcObject === stream && (p.video.srcObject = null) };
  } else {
    if (!p.audio) {
      p.audio = document.createElement('audio');
      p.audio.autoplay = true;
      p.view.tile.append(p.audio);
    }
    const audio = p.audio;
    audio.srcObject = stream;
    // Without a click on the page first, a browser may refuse to play sound: "Enable sound".
    audio.play().catch(() => (el.sound.hidden = false));
    t.receiver = { close: () => audio.srcObject === stream && (audio.srcObject = null) };
  }
}

function onMessage(name, m) {
  switch (name) {
    case 'Joined':
      hook.state.me = m.me.participant;
      hook.state.room = m.room;
      renderList();
      break;
    case 'ParticipantJoined':
      addParticipant(m);
      break;
    case 'ParticipantLeft':
      removeParticipant(m.participant);
      break;
    case 'TrackPublished':
      if (m.participant !== hook.state.me) {
        // In the snapshot of a resumed session, the subscriptions follow as `Subscribed`.
        if (rtc || resyncing) noteTrack(m);
        else subscribe(m);
      }
      break;
    case 'Subscribed':
      // A subscription restored by a resume (request 0).
      attachSubscription(m);
      break;
    case 'Ack':
      if (m.request === 0 && resyncing) {
        // The end of the snapshot: subscribe to what the resumed session did not receive yet.
        resyncing = false;
        for (const t of [...tracks.values()]) {
          if (t.media === null && t.info.participant !== hook.state.me) subscribe(t.info);
        }
      }
      break;
    case 'TrackUnpublished': {
      const p = participants.get(m.participant);
      dropTrack(m.track);
      if (p) updateBadges(p);
      break;
    }
    case 'TrackMuted': {
      const t = tracks.get(m.track);
      if (t) {
        t.info.muted = m.muted;
        const p = participants.get(t.info.participant);
        if (p) updateBadges(p);
      }
      break;
    }
    case 'TrackPaused':
      // Nothing arrives until `TrackResumed`: the picture stays on its last frame, the
      // subscription stays, and nothing is answered (PROTOCOL.md §6.3).
      setPaused(m.track, m.reason);
      break;
    case 'TrackResumed':
      setPaused(m.track, null);
      break;
    case 'KeyframeRequest':
      publisher?.keyframeRequested({ track: m.track });
      break;
    case 'GoAway':
      goingAway = m;
      showNotice(
        `The gateway is going away (${errorCodeName(m.code)})` +
          (m.redirect ? `; it points to ${m.redirect}` : '') +
          (rtc ? '. Reload the page to join again.' : '; the page follows.'),
      );
      break;
    case 'Error':
      // A refused resume does not end the session: it goes on afresh (PROTOCOL.md §7.8).
      if (m.request === null && m.code === ErrorCode.RESUME_FAILED) break;
      if (m.request === null && m.code === ErrorCode.REDIRECT && goingAway) break;
      if (m.request === null) showError(`The gateway ended the session: ${errorCodeName(m.code)}${m.reason ? ` — ${m.reason}` : ''}`);
      else reportProblem(`request ${m.request} failed: ${errorCodeName(m.code)} ${m.reason}`);
      break;
    default:
      break;
  }
}

/** Whether a session that ended with `code` is taken back or followed (PROTOCOL.md §7.9). */
function recoverable(code) {
  return (
    code === null ||
    code === ErrorCode.INTERNAL ||
    code === ErrorCode.GOING_AWAY ||
    (code === ErrorCode.REDIRECT && goingAway?.redirect != null) ||
    // Chromium may report the close of a moved room as a lost connection, or with no code.
    (goingAway !== null && [ErrorCode.REDIRECT, ErrorCode.GOING_AWAY].includes(goingAway.code))
  );
}

/** The end of the WebTransport session `ended`; a live one is taken back or followed. */
function onSessionClosed(ended, info) {
  // While reconnecting, the session is an attempt, whose failure the reconnection hears of (its
  // hello or requests are rejected): only the end of a live session counts here.
  if (ended !== session || hook.state.phase === 'reconnecting') return;
  const live = ['joined', 'publishing'].includes(hook.state.phase);
  if (!rtc && !leaving && live && recoverable(info.code)) {
    reconnect(info).catch((e) => showError(`Reconnecting failed: ${e.message}`));
    return;
  }
  onClosed(info);
}

/**
 * Takes the session back after its connection was lost (§7.8), through its node, then the
 * cluster's other nodes; where the gateway no longer keeps it (its node died), a fresh session
 * joins the room again and publishes again. A room that moved (`GoAway` REDIRECT) is joined at
 * its new node.
 */
async function reconnect(info) {
  const old = session;
  const phase = hook.state.phase;
  const started = performance.now();
  const away = goingAway;
  goingAway = null;
  const moved = away?.code === ErrorCode.REDIRECT && away.redirect ? away : null;
  hook.state.phase = 'reconnecting';
  setStatus('reconnecting…');
  showNotice(
    moved
      ? `The room moved to ${moved.redirect}; joining it there…`
      : `The connection to the gateway was lost (${info.message}); reconnecting…`,
  );
  clearRoom();
  const token = joinedAs.token;
  const here = { ...current, token };
  const targets = [];
  if (moved) {
    targets.push(redirectTarget(here, moved));
  } else {
    if (away?.redirect) {
      try {
        targets.push(redirectTarget(here, away));
      } catch {
        // not usable: the same node and the others
      }
    }
    // The node the page came from, then the others it learnt of.
    const others = [joinedAs.entry, ...fallbacks].filter(
      (n, i, all) => n.url !== current.url && all.findIndex((m) => m.url === n.url) === i,
    );
    targets.push(here, ...others.map((n) => ({ ...n, token })));
  }
  const resume = moved ? null : (old.serverHello?.resume_token ?? null);
  let last = null;
  for (let attempt = 0; attempt < RECONNECT_ATTEMPTS; attempt++) {
    if (leaving) return;
    // Each target once at once, then again after a growing wait.
    if (attempt >= targets.length) await new Promise((r) => setTimeout(r, retryDelayMs(attempt - targets.length + 1)));
    const target = targets[attempt % targets.length];
    // The snapshot of a resumed session may arrive with its ServerHello.
    resyncing = resume !== null;
    let opened;
    try {
      opened = await openSession(target, {
        resume,
        connectTimeoutMs: RECONNECT_CONNECT_MS,
        prepare: installSession,
        onRedirect: ({ url }) => hook.state.redirects.push(url),
      });
    } catch (e) {
      last = e;
      continue;
    }
    const resumed = opened.serverHello.resumed;
    try {
      if (resumed) {
        await publisher?.moveTo(session, { republish: false });
      } else {
        resyncing = false;
        await session.request('Join', { room: joinedAs.room, name: joinedAs.name });
        await publisher?.moveTo(session, { republish: true });
      }
    } catch (e) {
      last = e;
      session.abandon(e);
      continue;
    }
    current = { url: session.url, certificateHashes: session.certificateHashes };
    hook.state.url = session.url;
    hook.state.phase = phase;
    hook.state.recoveries.push({ resumed, url: session.url, ms: Math.round(performance.now() - started) });
    setStatus(`live · you are ${joinedAs.name}`, true);
    hook.state.notice = null;
    el.notice.hidden = true;
    session.startPings();
    refreshNodes();
    return;
  }
  resyncing = false;
  onClosed({
    code: null,
    message: `the connection was lost and could not be restored after ${RECONNECT_ATTEMPTS} attempts (${last?.message ?? info.message})`,
  });
}

/** Points the page's callbacks at `attempt`, a session being opened. */
function installSession(attempt) {
  // Events follow Joined at once, and subscribing to them needs the session.
  session = attempt;
  session.onMessage = onMessage;
  session.onMedia = (media, rtp) => receivers.get(media)?.push(rtp);
  session.onKeyframeRequest = (request) => publisher?.keyframeRequested(request);
  session.onClosed = (info) => onSessionClosed(attempt, info);
}

/**
 * The cluster's other nodes, from the page's own node (best effort: kept as they were if it
 * fails; the node the page came from is always tried after the session's own).
 */
async function refreshNodes() {
  try {
    const { nodes } = await fetchJson('the cluster nodes', '/v1/nodes');
    fallbacks = nodes
      .map((n) => ({ url: n.webtransport, certificateHashes: current.certificateHashes.length > 0 ? hashesFromHex(n.cert_hashes) : [] }))
      .filter((n) => n.certificateHashes !== null && n.url !== current.url);
    hook.state.nodes = fallbacks.map((n) => n.url);
  } catch (e) {
    reportProblem(`the cluster's nodes: ${e.message}`);
  }
}

function onClosed({ code, message }) {
  hook.state.phase = 'closed';
  publisher?.stop();
  rtc?.stop();
  for (const receiver of receivers.values()) receiver.close();
  receivers.clear();
  for (const b of [el.muteAudio, el.muteVideo, el.leave]) b.disabled = true;
  // After Leave, the gateway closes the connection; Chromium may report that as a lost
  // connection rather than a session closed with NONE.
  if (leaving && (code === ErrorCode.NONE || code === null)) {
    setStatus('left');
    showNotice('You left the room. Reload the page to join again.');
  } else if (goingAway || code === ErrorCode.GOING_AWAY) {
    setStatus('disconnected');
    showNotice('The gateway went away (it is draining). Reload the page to join again.');
  } else if (!hook.state.error) {
    showError(`The session ended: ${message}`);
  }
}

// ---------------------------------------------------------------------------------------------
// Controls and statistics.

function wireControls() {
  const toggle = (button, kind, on, off) => {
    button.addEventListener('click', async () => {
      const muted = button.getAttribute('aria-pressed') !== 'true';
      button.disabled = true;
      try {
        await (rtc ?? publisher).setMuted(kind, muted);
        button.setAttribute('aria-pressed', String(muted));
        button.textContent = muted ? off : on;
      } catch (e) {
        reportProblem(`${kind} mute: ${e.message}`);
      } finally {
        button.disabled = false;
      }
    });
  };
  toggle(el.muteAudio, 'Audio', 'Mute microphone', 'Unmute microphone');
  toggle(el.muteVideo, 'Video', 'Stop camera', 'Start camera');
  el.leave.addEventListener('click', async () => {
    leaving = true;
    el.leave.disabled = true;
    if (rtc) {
      await rtc.leave();
      return;
    }
    try {
      await session.request('Leave', {});
    } catch {
      // The session closes either way.
    }
    session.close(ErrorCode.NONE, 'left');
  });
  el.sound.addEventListener('click', () => {
    if (rtc) {
      const playing = [...participants.values()].filter((p) => p.audio).map((p) => p.audio.play());
      Promise.all(playing).then(() => (el.sound.hidden = true), () => {});
      return;
    }
    player.resume().then(() => (el.sound.hidden = true));
  });
}

function formatStats(s) {
  return (
    `${s.bitrateKbps} kbit/s · ${s.videoFrames} video frames · ${s.audioFrames} audio frames · ` +
    `${s.packetsLost} lost · ${s.keyframeRequests} keyframe requests` +
    (s.width ? ` · ${s.width}×${s.height}` : '')
  );
}

function tick() {
  if (session && !session.closed && ['joined', 'publishing'].includes(hook.state.phase)) {
    const silent = performance.now() - session.lastHeard;
    if (silent > LOSS_MS) session.lose(`nothing heard from the gateway for ${(silent / 1000).toFixed(1)} s`);
    // Nodes come and go: the list is read again now and then.
    ticks += 1;
    if (ticks % NODES_EVERY === 0) refreshNodes();
  }
  hook.stats.rttMs = session?.rttMs ?? null;
  el.rtt.textContent = hook.stats.rttMs === null ? '' : `RTT ${hook.stats.rttMs.toFixed(1)} ms`;
  if (publisher) {
    hook.stats.sent = { ...publisher.stats, bytes: publisher.bytesSent };
    if (local) {
      local.statsLine.textContent = `sending ${publisher.stats.videoFrames} frames · ${publisher.stats.keyframes} keyframes`;
    }
  }
  for (const p of participants.values()) {
    p.stats.bitrateKbps = Math.round(((p.stats.bytes - p.lastBytes) * 8) / 1000);
    p.lastBytes = p.stats.bytes;
    p.view.statsLine.textContent = formatStats(p.stats);
  }
  hook.stats.audio = { context: player.context?.state ?? null, buffersPlayed: player.buffersPlayed };
  el.sound.hidden = !player.suspended;
}

/** Statistics of the WebRTC fallback, from getStats, once a second. */
async function tickRtc() {
  const s = await rtc.stats();
  hook.stats.rttMs = s.rttMs;
  hook.stats.candidates = s.candidates;
  el.rtt.textContent = s.rttMs === null ? '' : `RTT ${s.rttMs.toFixed(1)} ms`;
  hook.stats.sent = s.sent;
  if (local && s.sent) local.statsLine.textContent = `sending ${s.sent.videoFrames} frames · ${s.sent.keyframes} keyframes`;
  for (const p of participants.values()) {
    const stats = p.stats;
    Object.assign(stats, { videoFrames: 0, audioFrames: 0, packets: 0, bytes: 0, packetsLost: 0 });
    for (const id of p.tracks) {
      const inbound = s.received.get(String(id));
      if (!inbound) continue;
      stats.packets += inbound.packetsReceived ?? 0;
      stats.bytes += inbound.bytesReceived ?? 0;
      stats.packetsLost += inbound.packetsLost ?? 0;
      if (inbound.kind === 'video') {
        stats.videoFrames += inbound.framesDecoded ?? 0;
        stats.keyframeRequests = (inbound.pliCount ?? 0) + (inbound.firCount ?? 0);
        stats.framesDropped = inbound.framesDropped ?? 0;
        stats.width = inbound.frameWidth ?? 0;
        stats.height = inbound.frameHeight ?? 0;
      } else {
        // One Opus frame per packet (20 ms), as the browser sends them.
        stats.audioFrames += inbound.packetsReceived ?? 0;
      }
    }
    stats.renderedFrames = p.video?.getVideoPlaybackQuality().totalVideoFrames ?? 0;
    stats.bitrateKbps = Math.max(0, Math.round(((stats.bytes - p.lastBytes) * 8) / 1000));
    p.lastBytes = stats.bytes;
    p.view.statsLine.textContent = formatStats(stats);
  }
}

let local = null;

/** Our camera in the grid. */
function showPreview(name, stream) {
  const preview = document.createElement('video');
  preview.muted = true;
  preview.autoplay = true;
  preview.playsInline = true;
  preview.srcObject = stream;
  local = makeTile(`${name} (you)`, preview);
  local.tile.classList.add('local');
  el.grid.prepend(local.tile);
}

// ---------------------------------------------------------------------------------------------
// Start.

async function fetchJson(what, url, init) {
  let response;
  try {
    response = await fetch(url, init);
  } catch (e) {
    throw new Error(`Could not reach the gateway for ${what} (${e.message}).`);
  }
  if (response.status === 404 && url.includes('/dev/token')) {
    throw new Error(
      'This gateway does not mint development tokens (/v1/dev/token is off: it runs with ' +
        'configured API keys, or without them on an address beyond loopback). Get a token from ' +
        'your backend or with `strait token create`.',
    );
  }
  if (!response.ok) {
    const body = (await response.text()).trim();
    throw new Error(`The gateway refused ${what}: HTTP ${response.status}${body ? ` — ${body}` : ''}.`);
  }
  return response.json();
}

/** `text` cut to at most `max` bytes of UTF-8, at a character boundary. */
function truncateUtf8(text, max) {
  const encoder = new TextEncoder();
  let out = '';
  let size = 0;
  for (const ch of text) {
    size += encoder.encode(ch).length;
    if (size > max) break;
    out += ch;
  }
  return out;
}

function randomSuffix() {
  return Array.from(crypto.getRandomValues(new Uint8Array(3)), (b) => b.toString(16).padStart(2, '0')).join('');
}

async function start() {
  const params = new URLSearchParams(location.search);
  const room = params.get('room');
  if (!room) {
    el.form.hidden = false;
    el.form.elements.name.value = `guest-${randomSuffix().slice(0, 4)}`;
    setStatus('choose a room');
    hook.state.phase = 'form';
    return;
  }
  const name = truncateUtf8(params.get('name') || `guest-${randomSuffix().slice(0, 4)}`, 256);
  hook.state.name = name;
  el.roomLabel.textContent = `room “${room}” as ${name}`;
  const transport = params.get('transport') || 'auto';
  if (!TRANSPORTS.includes(transport)) {
    hook.state.phase = 'error';
    showError(`Unknown transport “${transport}” in the URL: use ${TRANSPORTS.join(', ')}.`);
    return;
  }

  // Why WebTransport cannot be used in this browser, if it cannot.
  let unavailable = null;
  if (typeof WebTransport !== 'function') {
    unavailable = 'This browser has no WebTransport.';
  } else {
    unavailable = missingMediaApis();
  }
  if (transport === 'webtransport' && unavailable) {
    hook.state.phase = 'error';
    showError(
      `${unavailable} The WebTransport client needs a recent Chromium, Chrome or Edge; without ` +
        '`transport=webtransport` in the URL, the page joins over WebRTC instead.',
    );
    return;
  }

  hook.state.phase = 'connecting';
  setStatus('connecting…');
  const identity = `${truncateUtf8(name, 100)}-${randomSuffix()}`;
  const grant = await fetchJson('a development token', '/v1/dev/token', {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ room, identity, name }),
  });

  if (transport === 'webrtc') return startWebRtc(room, name, grant, null);
  if (unavailable) return startWebRtc(room, name, grant, unavailable);
  try {
    await openWebTransport(grant, room, name, transport === 'auto' ? RACE_MS : null);
  } catch (e) {
    // Only WebTransport failing at the page's own gateway falls back: a refused token, a
    // redirect that cannot be followed or a node a redirect led to being out of reach is an error
    // (the fallback would join at the wrong node).
    if (transport === 'webtransport' || !(e instanceof ConnectError) || e.hop > 0) throw e;
    return startWebRtc(room, name, grant, e.message);
  }
  return startWebTransport(name);
}

/**
 * Opens the WebTransport session (`session`), says hello and joins `room`, following the
 * cluster's redirects and retrying `UNAVAILABLE` (session.js `openSession`); with `raceMs`, each
 * connection that is not ready by then is given up.
 */
async function openWebTransport(grant, room, name, raceMs) {
  const { hashes } = await fetchJson('the certificate hashes', '/v1/cert-hashes');
  const opened = await openSession(
    { url: grant.url, certificateHashes: hashes, token: grant.token },
    {
      join: { room, name },
      connectTimeoutMs: raceMs,
      prepare: installSession,
      onRedirect: ({ url }) => {
        hook.state.redirects.push(url);
        setStatus(`connecting to ${new URL(url).host}, which serves the room…`);
      },
      onRetry: ({ error, attempt, retries, delayMs }) => {
        hook.state.retries = attempt;
        setStatus('waiting to try again…');
        const why =
          error.code === null
            ? 'The gateway closed the connection before the session started'
            : `No node of the cluster can take room “${room}” now (${errorCodeName(error.code)}` +
              `${error.reason ? ` — ${error.reason}` : ''})`;
        showNotice(`${why}: trying again in ${(delayMs / 1000).toFixed(1)} s (retry ${attempt} of ${retries}).`);
      },
    },
  );
  hook.state.url = opened.session.url;
  joinedAs = { room, name, token: grant.token, entry: { url: grant.url, certificateHashes: hashes } };
  current = { url: opened.session.url, certificateHashes: opened.session.certificateHashes };
  if (hook.state.retries > 0) {
    hook.state.notice = null;
    el.notice.hidden = true;
  }
}

/** The session has joined (`openWebTransport`): go live and publish. */
async function startWebTransport(name) {
  showTransport(
    'webtransport',
    'media over QUIC datagrams (WebTransport), coded with WebCodecs' +
      (hook.state.redirects.length > 0 ? `, at ${new URL(hook.state.url).host}, where the cluster serves the room` : ''),
  );
  hook.state.phase = 'joined';
  setStatus(`live · you are ${name}`, true);
  session.startPings();
  setInterval(tick, 1000);
  refreshNodes();
  wireControls();
  el.leave.disabled = false;

  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia({
      audio: { echoCancellation: true, noiseSuppression: true },
      video: { width: 640, height: 480, frameRate: 30 },
    });
  } catch (e) {
    showNotice(`Camera or microphone unavailable (${e.name}: ${e.message}); you can still see and hear the others.`);
    return;
  }
  showPreview(name, stream);

  publisher = new Publisher(session, stream, { onError: reportProblem });
  try {
    await publisher.start();
  } catch (e) {
    // A token without the publish grant, say: the others can still be seen and heard.
    reportProblem(`publishing: ${e.message}`);
    showNotice(`Your camera and microphone are not published (${e.message}); you can still see and hear the others.`);
    return;
  }
  hook.state.phase = 'publishing';
  el.muteAudio.disabled = !publisher.audio;
  el.muteVideo.disabled = !publisher.video;
}

/**
 * Joins over the WebRTC bridge: WebSocket signaling on this origin, an RTCPeerConnection for the
 * media. `reason`: why WebTransport is not used (null when the URL asked for WebRTC).
 */
async function startWebRtc(room, name, grant, reason) {
  hook.state.fallbackReason = reason;
  showTransport(
    'webrtc',
    `media over WebRTC through the gateway's bridge (RTCPeerConnection, signaling on /ws/rtc)` +
      (reason ? `, because WebTransport is not available: ${reason}` : ', as the URL asks'),
  );
  if (reason) {
    showNotice(`WebTransport is not available (${reason.replace(/\.$/, '')}): this page joins over WebRTC instead.`);
  }
  if (typeof RTCPeerConnection !== 'function') {
    hook.state.phase = 'error';
    showError('This browser has neither WebTransport nor WebRTC (RTCPeerConnection): it cannot join a room.');
    return;
  }
  setStatus('connecting over WebRTC…');
  rtc = new WebRtcFallback({
    onMessage,
    onTrack: attachTrack,
    onClosed,
    onProblem: reportProblem,
    onFailed: (text) => {
      if (!leaving && !hook.state.error) showError(text);
    },
  });
  // In a cluster, a node that does not serve the room redirects /ws/rtc too: the signaling
  // follows it to the node that does (signaling.js, `SignalingPeer.connect`).
  await rtc.join(signalingUrl(grant.token), room, name);
  hook.stats.iceServers = rtc.iceServers.map((s) => s.urls).flat();
  hook.state.phase = 'joined';
  setStatus(`live · you are ${name}`, true);
  setInterval(() => tickRtc().catch((e) => reportProblem(`statistics: ${e.message}`)), 1000);
  wireControls();
  el.leave.disabled = false;

  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia({
      audio: { echoCancellation: true, noiseSuppression: true },
      video: { width: 640, height: 480, frameRate: 30 },
    });
  } catch (e) {
    showNotice(`Camera or microphone unavailable (${e.name}: ${e.message}); you can still see and hear the others.`);
    await rtc.follow();
    return;
  }
  showPreview(name, stream);
  await rtc.publish(stream);
  hook.state.phase = 'publishing';
  el.muteAudio.disabled = !rtc.audio;
  el.muteVideo.disabled = !rtc.video;
}

document.addEventListener('click', () => {
  if (player.suspended) player.resume();
});

start().catch((e) => {
  hook.state.phase = 'error';
  session?.close(ErrorCode.NONE, 'page error');
  rtc?.stop();
  // A session-level Error from the gateway has been shown already, in better words.
  if (!hook.state.error) showError(e?.message ?? String(e));
});
