// Unmixer live deck: a Streamlit custom component (components v2, no build step).
//
// Python sends, in `data`: the tempo grid (bpm, meter, barSeconds), every loop of every song
// (its clip, a short mono WAV already time-stretched to that tempo, comes separately, see
// clipStore), the gain of each loop,
// the loops currently in the mix (`selection`) and `seq`, the number of the last selection
// Python has applied. The deck plays the selected loops with the Web Audio API, all locked to
// one bar grid; a click on a tile brings the loop in or out on the next bar line without
// stopping playback, and sends the new selection back with setTriggerValue("selection",
// {ids, seq}) so the mix Python renders for download is the one being heard.
//
// A song's loops may first be rough (a quick first result, `refining: true`) and then be
// replaced by the refined ones: the same loop ids with new clipKeys. Each playing loop then
// moves to its new clip on the next bar line, without stopping (swapClips).
//
// Keys: each loop carries its song's key (`songKey`, "A minor · 8A"), how that key goes with
// the deck's (`songRelation`: "same key", "relative key", "a fifth apart", "clash" or ""),
// the song's transposition (`songShift`) and its own (`shift`: 0 for drums and noise,
// `pitched: false`). A transposed clip has its own clipKey, so a new key is a new clip.
// Each tile shows a picture of its loop (a mel spectrogram PNG, from the clip store under
// `picKey`).
//
// Streamlit calls this function again with new `data` after every rerun, on the same
// parentElement; the deck (audio graph, buffers, DOM) lives in a WeakMap keyed by it.

const decks = new WeakMap();

// The clips arrive through a second component with this same code and no HTML, the clip
// store (data.kind === "clips"). Its data does not change when the selection or a gain
// does, so Streamlit sends those megabytes once and afterwards only a reference to the
// browser's cached copy. The two components are two modules: they share the store through
// one global object.
const shared = (globalThis.__unmixerDeckClips ||= { store: new Map(), waiters: new Map() });
const clipStore = shared.store; // clipKey -> base64 WAV
const clipWaiters = shared.waiters; // clipKey -> [resolve]

function clipData(key) {
  if (clipStore.has(key)) return Promise.resolve(clipStore.get(key));
  return new Promise((resolve) => {
    if (!clipWaiters.has(key)) clipWaiters.set(key, []);
    clipWaiters.get(key).push(resolve);
  });
}

function storeClips(clips) {
  for (const key of [...clipStore.keys()]) if (!(key in clips)) clipStore.delete(key);
  for (const [key, b64] of Object.entries(clips)) {
    clipStore.set(key, b64);
    const waiting = clipWaiters.get(key);
    if (waiting) {
      clipWaiters.delete(key);
      for (const resolve of waiting) resolve(b64);
    }
  }
}
const LOOKAHEAD_S = 0.06; // schedule this far ahead at least, so nothing starts late

function b64ToArrayBuffer(b64) {
  const bin = atob(b64);
  const bytes = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
  return bytes.buffer;
}

function dbToGain(db) {
  return Math.pow(10, db / 20);
}

class Deck {
  constructor(root) {
    this.root = root;
    this.ctx = null;
    this.master = null;
    this.buffers = new Map(); // clipKey -> AudioBuffer
    this.decoding = new Map(); // clipKey -> Promise<AudioBuffer>
    this.failed = new Set(); // clipKeys the browser could not decode
    this.voices = new Map(); // loop id -> {src, gain, clipKey}
    this.gains = new Map(); // loop id -> GainNode (persistent)
    this.selected = new Set();
    this.pending = new Map(); // loop id -> {on, at (ctx time)}
    this.seq = 0;
    this.playing = false;
    this.t0 = 0;
    this.data = null;
    this.signature = "";
    this.raf = 0;
    this.send = () => {};
    this.els = {
      play: root.querySelector(".deck-play"),
      status: root.querySelector(".deck-status"),
      tempo: root.querySelector(".deck-tempo"),
      key: root.querySelector(".deck-key"),
      beats: root.querySelector(".deck-beats"),
      songs: root.querySelector(".deck-songs"),
      count: root.querySelector(".deck-count"),
    };
    this.els.play.addEventListener("click", () => this.togglePlay());
  }

  // ---- data from Python -------------------------------------------------------------
  update(data) {
    const prev = this.data;
    this.data = data;
    const loops = data.loops || [];
    this.loopById = new Map(loops.map((l) => [l.id, l]));
    const signature = loops
      .map((l) => `${l.id}|${l.clipKey}|${l.picKey}|${l.songKey}|${l.songRelation}|${l.songShift}`)
      .join(",");
    const prevBar = prev ? prev.barSeconds : data.barSeconds;
    if (signature !== this.signature) {
      this.signature = signature;
      const keep = new Set(loops.map((l) => l.clipKey)); // a playing voice holds its own buffer
      for (const key of [...this.buffers.keys()]) if (!keep.has(key)) this.buffers.delete(key);
      this.render();
      for (const l of loops) this.decode(l);
    }
    this.els.tempo.textContent = `${(+data.bpm).toFixed(1)} BPM · ${data.meter}/4`;
    this.els.key.textContent = data.key ? (data.matchKeys ? `in ${data.key}` : `key ${data.key}`) : "";
    this.els.key.title = data.matchKeys
      ? "Match keys is on: pitched loops are transposed to this key or its relative key."
      : "The deck's key (Match keys is off: every song plays in its own key).";
    // Python's selection wins unless the user clicked since Python last caught up.
    if ((data.seq || 0) >= this.seq) {
      this.seq = data.seq || 0;
      const wanted = new Set((data.selection || []).filter((id) => this.loopById.has(id)));
      for (const id of [...this.selected]) if (!wanted.has(id)) this.setLoop(id, false);
      for (const id of wanted) if (!this.selected.has(id)) this.setLoop(id, true);
    }
    for (const id of [...this.selected]) if (!this.loopById.has(id)) this.setLoop(id, false);
    for (const l of loops) this.applyGain(l);
    if (prevBar !== data.barSeconds && this.playing) this.retime(prevBar);
    else if (this.playing) this.swapClips();
    this.paint();
  }

  // Same loops, new sounds (the refined loops replace the rough ones): each playing voice
  // switches to its new clip on the next bar line once that clip is decoded.
  swapClips() {
    for (const [id, voice] of this.voices) {
      const loop = this.loopById.get(id);
      if (!loop || loop.clipKey === voice.clipKey) continue;
      this.decode(loop).then((buf) => {
        const now = this.voices.get(id);
        const current = this.loopById.get(id);
        if (!buf || !this.playing || !this.selected.has(id) || !now || !current) return;
        if (current.clipKey !== loop.clipKey || now.clipKey === loop.clipKey) return;
        this.startVoice(id, this.nextBar(this.ctx.currentTime));
        this.paint();
      });
    }
  }

  decode(loop) {
    if (this.buffers.has(loop.clipKey) || this.decoding.has(loop.clipKey)) {
      return this.decoding.get(loop.clipKey) || Promise.resolve(this.buffers.get(loop.clipKey));
    }
    if (!this.ctx || this.failed.has(loop.clipKey)) return Promise.resolve(null);
    const p = clipData(loop.clipKey)
      .then((b64) => this.ctx.decodeAudioData(b64ToArrayBuffer(b64)))
      .then((buf) => {
        this.buffers.set(loop.clipKey, buf);
        this.decoding.delete(loop.clipKey);
        this.paint();
        return buf;
      })
      .catch(() => {
        this.decoding.delete(loop.clipKey);
        this.failed.add(loop.clipKey);
        return null;
      });
    this.decoding.set(loop.clipKey, p);
    return p;
  }

  decodeAll() {
    const keep = new Set((this.data.loops || []).map((l) => l.clipKey));
    for (const key of [...this.buffers.keys()]) if (!keep.has(key)) this.buffers.delete(key);
    return Promise.all((this.data.loops || []).map((l) => this.decode(l)));
  }

  // ---- audio -----------------------------------------------------------------------
  ensureContext() {
    if (this.ctx) return;
    const Ctx = window.AudioContext || window.webkitAudioContext;
    this.ctx = new Ctx();
    // A gentle peak limiter on the sum, as Python scales the rendered mix below -1 dBFS.
    this.master = this.ctx.createDynamicsCompressor();
    this.master.threshold.value = -1;
    this.master.knee.value = 0;
    this.master.ratio.value = 20;
    this.master.attack.value = 0.003;
    this.master.release.value = 0.2;
    this.master.connect(this.ctx.destination);
  }

  gainNode(id) {
    let g = this.gains.get(id);
    if (!g) {
      g = this.ctx.createGain();
      g.connect(this.master);
      this.gains.set(id, g);
    }
    return g;
  }

  applyGain(loop) {
    if (!this.ctx) return;
    this.gainNode(loop.id).gain.setTargetAtTime(dbToGain(loop.gainDb), this.ctx.currentTime, 0.02);
  }

  nextBar(after) {
    const bar = this.data.barSeconds;
    const k = Math.ceil((after + LOOKAHEAD_S - this.t0) / bar - 1e-9);
    return this.t0 + Math.max(k, 0) * bar;
  }

  startVoice(id, when) {
    const loop = this.loopById.get(id);
    if (!loop) return;
    const buf = this.buffers.get(loop.clipKey);
    if (!buf && !this.failed.has(loop.clipKey)) {
      // Not decoded yet (a song just added, a new tempo): start on the bar after decoding.
      this.decode(loop).then(() => {
        if (this.playing && this.selected.has(id) && !this.voices.has(id)) {
          this.startVoice(id, this.nextBar(this.ctx.currentTime));
        }
      });
      return;
    }
    if (!buf) return;
    this.stopVoice(id, when);
    const src = this.ctx.createBufferSource();
    src.buffer = buf;
    src.loop = true;
    const dur = Math.min(loop.seconds, buf.duration);
    src.loopStart = 0;
    src.loopEnd = dur;
    src.connect(this.gainNode(id));
    const offset = (((when - this.t0) % dur) + dur) % dur; // phase on the shared grid
    src.start(when, offset);
    this.voices.set(id, { src, clipKey: loop.clipKey });
  }

  stopVoice(id, when) {
    const v = this.voices.get(id);
    if (!v) return;
    try {
      v.src.stop(when);
    } catch (e) {
      /* already stopped */
    }
    this.voices.delete(id);
  }

  // Bring a loop in (on = true) or out; while playing, on the next bar line.
  setLoop(id, on) {
    if (on) this.selected.add(id);
    else this.selected.delete(id);
    if (!this.playing || !this.ctx) {
      this.pending.delete(id);
      return;
    }
    const when = this.nextBar(this.ctx.currentTime);
    if (on) this.startVoice(id, when);
    else this.stopVoice(id, when);
    this.pending.set(id, { on, at: when });
  }

  async togglePlay() {
    if (this.playing) {
      this.playing = false;
      for (const id of [...this.voices.keys()]) this.stopVoice(id, 0);
      this.pending.clear();
      cancelAnimationFrame(this.raf);
      this.paint();
      return;
    }
    this.ensureContext();
    await this.ctx.resume();
    this.els.status.textContent = "Loading loops…";
    for (const l of this.data.loops || []) this.applyGain(l);
    await this.decodeAll();
    this.playing = true;
    this.t0 = this.ctx.currentTime + 0.12;
    this.gridBar = this.data.barSeconds;
    for (const id of this.selected) this.startVoice(id, this.t0);
    this.tick();
    this.paint();
  }

  // New tempo: once the new clips are decoded, switch every voice on the next bar line.
  async retime(prevBar) {
    const oldT0 = this.t0;
    await this.decodeAll();
    if (!this.playing || this.t0 !== oldT0) return;
    const k = Math.ceil((this.ctx.currentTime + LOOKAHEAD_S - this.t0) / prevBar);
    const when = this.t0 + k * prevBar;
    this.t0 = when;
    this.gridBar = this.data.barSeconds;
    for (const id of [...this.voices.keys()]) this.stopVoice(id, when);
    for (const id of this.selected) this.startVoice(id, when);
  }

  // ---- user input ------------------------------------------------------------------
  clickTile(id) {
    this.setLoop(id, !this.selected.has(id));
    this.seq += 1;
    this.send([...this.selected], this.seq);
    this.paint();
  }

  // ---- drawing ---------------------------------------------------------------------
  render() {
    const songs = new Map();
    for (const l of this.data.loops || []) {
      if (!songs.has(l.song)) {
        songs.set(l.song, {
          title: l.songTitle, bpm: l.songBpm, key: l.songKey, relation: l.songRelation,
          shift: l.songShift, loops: [],
        });
      }
      songs.get(l.song).loops.push(l);
    }
    this.els.songs.textContent = "";
    this.tiles = new Map();
    for (const [, song] of songs) {
      const row = document.createElement("div");
      row.className = "deck-song";
      const head = document.createElement("div");
      head.className = "deck-song-title";
      head.textContent = song.title;
      const sub = document.createElement("span");
      sub.className = "deck-song-bpm";
      sub.textContent = `${(+song.bpm).toFixed(1)} BPM` + (song.key ? ` · ${song.key}` : "");
      head.appendChild(sub);
      if (song.relation) {
        const rel = document.createElement("span");
        const clash = song.relation === "clash";
        rel.className = "deck-song-relation" + (clash ? " clash" : "");
        rel.textContent = clash ? "clashes with the deck's key" : song.relation;
        rel.title = clash
          ? "Not the same key, the relative key or a fifth away: turn on Match keys to transpose it."
          : "Goes with the deck's key without transposing.";
        head.appendChild(rel);
      }
      if (song.shift) {
        const moved = document.createElement("span");
        moved.className = "deck-song-shift";
        moved.textContent = `transposed ${song.shift > 0 ? "+" : "−"}${Math.abs(song.shift)} st`;
        moved.title = "Its pitched loops play this many semitones higher or lower; drums stay as they are.";
        head.appendChild(moved);
      }
      head.dataset.shift = String(song.shift || 0);
      if (song.loops.some((l) => l.refining)) {
        const badge = document.createElement("span");
        badge.className = "deck-song-refining";
        badge.textContent = "rough loops, refining…";
        badge.title = "A quick first result: the refined loops replace these when ready, without stopping the deck.";
        head.appendChild(badge);
      }
      row.appendChild(head);
      const grid = document.createElement("div");
      grid.className = "deck-tiles";
      for (const l of song.loops) {
        const tile = document.createElement("button");
        tile.type = "button";
        tile.className = "deck-tile";
        tile.dataset.id = l.id;
        tile.style.setProperty("--c", l.color);
        tile.title = `Loop ${l.index} of ${song.title}${l.label ? ` (${l.label})` : ""}: click to bring it in or out of the mix`;
        tile.dataset.pitched = l.pitched ? "true" : "false";
        tile.dataset.shift = String(l.shift || 0);
        tile.innerHTML =
          '<img class="deck-tile-pic" alt="" aria-hidden="true">' +
          '<span class="deck-tile-num"></span><span class="deck-tile-label"></span>' +
          '<span class="deck-tile-state"></span><span class="deck-tile-shift"></span>' +
          '<span class="deck-tile-progress"></span>';
        tile.querySelector(".deck-tile-num").textContent = l.index;
        tile.querySelector(".deck-tile-label").textContent = l.label;
        const shiftEl = tile.querySelector(".deck-tile-shift");
        if (l.shift) shiftEl.textContent = `${l.shift > 0 ? "+" : "−"}${Math.abs(l.shift)} st`;
        else if (song.shift && !l.pitched) shiftEl.textContent = "not transposed";
        const pic = tile.querySelector(".deck-tile-pic");
        if (l.picKey) {
          clipData(l.picKey).then((uri) => {
            pic.src = uri;
            tile.classList.add("has-pic");
          });
        }
        tile.addEventListener("click", () => this.clickTile(l.id));
        grid.appendChild(tile);
        this.tiles.set(l.id, tile);
      }
      row.appendChild(grid);
      this.els.songs.appendChild(row);
    }
    const meter = this.data.meter || 4;
    this.els.beats.textContent = "";
    for (let b = 0; b < meter; b++) {
      const dot = document.createElement("span");
      dot.className = "deck-beat";
      this.els.beats.appendChild(dot);
    }
  }

  paint() {
    if (!this.tiles) return;
    const now = this.ctx ? this.ctx.currentTime : 0;
    for (const [id, { at }] of [...this.pending]) if (at <= now) this.pending.delete(id);
    for (const [id, tile] of this.tiles) {
      const on = this.selected.has(id);
      const waiting = this.pending.has(id);
      tile.classList.toggle("on", on);
      tile.classList.toggle("waiting", waiting);
      tile.setAttribute("aria-pressed", on ? "true" : "false");
      tile.querySelector(".deck-tile-state").textContent = waiting
        ? on ? "next bar…" : "leaving…"
        : on ? "in the mix" : "";
    }
    // For tests and assistive tools: how many loops are sounding now, and which clips.
    this.root.dataset.voices = String(this.playing ? this.voices.size : 0);
    this.root.dataset.voiceClips = this.playing
      ? [...this.voices.values()].map((v) => v.clipKey).sort().join(" ")
      : "";
    const n = this.selected.size;
    this.els.count.textContent = n === 0 ? "No loop in the mix yet" : `${n} loop${n > 1 ? "s" : ""} in the mix`;
    this.els.play.textContent = this.playing ? "■  Stop" : "▶  Play";
    this.els.play.classList.toggle("playing", this.playing);
    if (!this.playing) {
      this.els.status.textContent = "Press Play, then click loops to bring them in and out.";
      for (const dot of this.els.beats.children) dot.classList.remove("now");
    }
  }

  tick() {
    if (!this.playing) return;
    const now = this.ctx.currentTime;
    const bar = this.data.barSeconds;
    const meter = this.data.meter || 4;
    const pos = Math.max(now - this.t0, 0) / bar;
    const barNo = Math.floor(pos) + 1;
    const beat = Math.floor((pos % 1) * meter);
    const dots = this.els.beats.children;
    for (let b = 0; b < dots.length; b++) dots[b].classList.toggle("now", b === beat);
    this.els.status.textContent = `Bar ${barNo} · changes land on the next bar line`;
    this.root.dataset.voices = String(this.voices.size);
    this.root.dataset.voiceClips = [...this.voices.values()].map((v) => v.clipKey).sort().join(" ");
    this.root.dataset.bar = String(barNo);
    this.root.dataset.gridBar = String(this.gridBar); // bar length (s) of the grid playing
    for (const [id, tile] of this.tiles || []) {
      const loop = this.loopById.get(id);
      const v = this.voices.get(id);
      const bar = tile.querySelector(".deck-tile-progress");
      if (v && loop && now >= this.t0) {
        const frac = (((now - this.t0) % loop.seconds) + loop.seconds) % loop.seconds / loop.seconds;
        bar.style.width = `${(frac * 100).toFixed(1)}%`;
      } else {
        bar.style.width = "0%";
      }
    }
    if (this.pending.size) this.paint();
    this.raf = requestAnimationFrame(() => this.tick());
  }

  destroy() {
    cancelAnimationFrame(this.raf);
    for (const id of [...this.voices.keys()]) this.stopVoice(id, 0);
    if (this.ctx) this.ctx.close();
  }
}

export default function (component) {
  const { parentElement, data, setTriggerValue } = component;
  if (data && data.kind === "clips") {
    storeClips(data.clips || {});
    return;
  }
  const root = parentElement.querySelector(".deck");
  if (!root || !data) return;
  let deck = decks.get(parentElement);
  if (!deck) {
    deck = new Deck(root);
    decks.set(parentElement, deck);
  }
  deck.send = (ids, seq) => setTriggerValue("selection", { ids, seq });
  deck.update(data);
  // Streamlit may call a superseded cleanup while the element stays on the page: only
  // tear the deck down once its DOM is really gone.
  return () => {
    setTimeout(() => {
      if (root.isConnected) return;
      deck.destroy();
      decks.delete(parentElement);
    }, 0);
  };
}
