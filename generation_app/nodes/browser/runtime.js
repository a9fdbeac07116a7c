// The page contract of the js, p5 and p52vid nodes (SPEC section 4), injected before any page
// script runs. The renderer prepends `window.__EMPROPS_ENV__ = {hash, seed, variables,
// components, aliases, live};` to this file.
//
// A pre-warmed p5 page (renderer.py) is opened before its generation is known: it gets
// `{deferred: true}`, loads p5, and the renderer then answers the page's env script with
// `__emprops.configure(env)` just before the sketch. Everything that depends on the generation
// (hash PRNG, Math.random, variables, components, the seed p5hooks.js reads) is set up in
// `configure`; the clock and the stepping below do not depend on it, so a page configured late
// runs a sketch exactly as one configured at its start.
//
// Besides the documented globals it installs a virtual clock: `performance.now()`, `Date.now()`,
// `new Date()` and the timestamps of `requestAnimationFrame` callbacks only move when the renderer
// steps a frame, and animation-frame callbacks run only then. That is what makes the same hash give
// the same pixels: a sketch sees the same times and the same number of frames on every run,
// however fast the machine is. Timers (`setTimeout`) keep real time.
(() => {
  'use strict';
  const initialEnv = window.__EMPROPS_ENV__ || {};
  delete window.__EMPROPS_ENV__;

  // ---- Hash PRNG (SPEC section 3), bit-exact with the platform --------------------------------
  const ALPHABET = '123456789abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ';

  function hashSeeds(h) {
    const rest = String(h).slice(2);
    const n = Math.floor(rest.length / 4);
    const seeds = [];
    for (let i = 0; i < 4; i++) {
      let acc = 0;
      for (const ch of rest.slice(i * n, (i + 1) * n)) {
        // acc is an int32, so acc * 58 stays exact in a double before `| 0` wraps it.
        acc = (acc * 58 + ALPHABET.indexOf(ch)) | 0;
      }
      seeds.push(acc);
    }
    return seeds;
  }

  function sfc32(a, b, c, d) {
    return function next() {
      a |= 0; b |= 0; c |= 0; d |= 0;
      const t = (((a + b) | 0) + d) | 0;
      d = (d + 1) | 0;
      a = b ^ (b >>> 9);
      b = (c + (c << 3)) | 0;
      c = (c << 21) | (c >>> 11);
      c = (c + t) | 0;
      return (t >>> 0) / 4294967296;
    };
  }

  let pageHash = '';
  let rand = sfc32(...hashSeeds(pageHash));

  function pseudorandomSeed(h = pageHash) {
    rand = sfc32(...hashSeeds(h));
  }
  function pseudorandom(min = 0, max = 1) {
    return min + (max - min) * rand();
  }
  function pseudorandoms(n, min = 0, max = 1) {
    const out = [];
    for (let i = 0; i < n; i++) out.push(pseudorandom(min, max));
    return out;
  }
  function pseudorandomInteger(min, max) {
    return Math.floor(pseudorandom(min, max + 1));
  }
  function pseudorandomIntegers(n, min, max) {
    const out = [];
    for (let i = 0; i < n; i++) out.push(pseudorandomInteger(min, max));
    return out;
  }
  function pseudorandomBoolean() {
    return pseudorandom() < 0.5;
  }
  function pseudorandomPick(list) {
    return list[pseudorandomInteger(0, list.length - 1)];
  }
  function pseudorandomWeightedPick(list, weights) {
    const total = weights.reduce((sum, w) => sum + w, 0);
    const r = pseudorandom(0, total);
    let running = 0;
    let i = 0;
    while (i < weights.length && running + weights[i] < r) {
      running += weights[i];
      i++;
    }
    return list[Math.min(list.length - 1, i)];
  }
  function pseudorandomPickButNot(list, excluded) {
    const banned = Array.isArray(excluded) ? excluded : [excluded];
    for (let tries = 0; tries < 10 * list.length; tries++) {
      const pick = pseudorandomPick(list);
      if (!banned.includes(pick)) return pick;
    }
    return list[0];
  }

  // Math.random: a second sfc32 stream of the same hash, so sketches that use it stay
  // reproducible without disturbing the pseudorandom* sequence. Its state is the hash's four
  // seeds XOR the first 32 bits of the fractional parts of sqrt(2), sqrt(3), sqrt(5), sqrt(7)
  // (the SHA-256 initial words), warmed up by 16 draws.
  const MIX = [0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a];
  function mathRandomOf(h) {
    const next = sfc32(...hashSeeds(h).map((s, i) => s ^ MIX[i]));
    for (let i = 0; i < 16; i++) next();
    return next;
  }
  // Until a deferred page is configured, Math.random is a fixed stream that counts its draws
  // (p5 draws two while it loads); `configure` skips as many draws of the hash's stream, so the
  // sketch sees the values it would have seen on a page configured from the start.
  let drawsBeforeConfigure = 0;
  const unconfiguredRandom = mathRandomOf('');
  Math.random = () => {
    drawsBeforeConfigure += 1;
    return unconfiguredRandom();
  };

  // ---- Inputs of this generation ----------------------------------------------------------------
  let variables = {};
  let components = {};
  let aliases = {};
  let seed;

  function getVariable(name) {
    return variables[name];
  }
  function getComponentOutput(aliasOrId) {
    const id = Object.prototype.hasOwnProperty.call(aliases, aliasOrId) ? aliases[aliasOrId] : aliasOrId;
    const output = components[id];
    return output ? output.src ?? null : null;
  }

  // ---- Virtual clock and stepped animation frames ------------------------------------------------
  // A stored js page (`live`) keeps the real clock.
  const EPOCH_MS = 1704067200000; // 2024-01-01T00:00:00Z: what Date.now() reads at frame 0
  const clock = { now: 0 };
  const RealDate = Date;
  let frameCallbacks = new Map();
  let nextFrameId = 1;
  if (!initialEnv.live) {
    performance.now = () => clock.now;
    window.Date = class FrozenDate extends RealDate {
      constructor(...args) {
        if (args.length === 0) super(EPOCH_MS + clock.now);
        else super(...args);
      }
      static now() {
        return EPOCH_MS + clock.now;
      }
    };
    window.requestAnimationFrame = (callback) => {
      const id = nextFrameId++;
      frameCallbacks.set(id, callback);
      return id;
    };
    window.cancelAnimationFrame = (id) => {
      frameCallbacks.delete(id);
    };
  }

  const state = {
    errors: [],
    frames: 0, // animation frames stepped so far
    captureRequested: false,
    captureDeferred: false,
  };

  function errorOf(err) {
    if (err && typeof err === 'object' && 'message' in err) {
      return { name: String(err.name || 'Error'), message: String(err.message) };
    }
    return { name: 'Error', message: String(err) };
  }
  window.addEventListener('error', (event) => {
    state.errors.push(event.error !== undefined && event.error !== null
      ? errorOf(event.error)
      : { name: 'Error', message: String(event.message) });
  });
  window.addEventListener('unhandledrejection', (event) => {
    state.errors.push(errorOf(event.reason));
  });

  // Run one animation frame `dt` ms after the previous one; an exception in a callback is recorded
  // (the renderer fails the step with it) instead of escaping into the renderer's call.
  function stepFrame(dt) {
    clock.now += dt;
    state.frames += 1;
    const due = frameCallbacks;
    frameCallbacks = new Map();
    for (const callback of due.values()) {
      try {
        callback(clock.now);
      } catch (err) {
        state.errors.push(errorOf(err));
        return;
      }
    }
  }

  // Let queued tasks run (image decodes, fetch callbacks) between frames. A MessageChannel task is
  // not clamped to 4 ms the way nested setTimeout(0) is.
  const channel = new MessageChannel();
  const waiting = [];
  channel.port1.onmessage = () => {
    const resolve = waiting.shift();
    if (resolve) resolve();
  };
  function yieldTask() {
    return new Promise((resolve) => {
      waiting.push(resolve);
      channel.port2.postMessage(null);
    });
  }
  function sleep(ms) {
    return new Promise((resolve) => setTimeout(resolve, ms));
  }

  // ---- p5 integration (installed by p5hooks.js once p5 is loaded) ------------------------------
  const sketches = [];

  function sketch() {
    return sketches.length ? sketches[0] : null;
  }
  function sketchCanvas(inst) {
    return (inst._renderer && inst._renderer.elt) || inst.canvas || document.querySelector('canvas');
  }
  function hasDraw(inst) {
    const context = inst._isGlobal ? window : inst;
    return typeof context.draw === 'function';
  }
  // True once the sketch will not draw again by itself: noLoop() took effect and no frame is
  // pending, or there is no draw() at all.
  function sketchStopped(inst) {
    return !hasDraw(inst) || (!inst._loop && frameCallbacks.size === 0);
  }

  // Wait (in real time: preload() may be fetching) until the sketch has run setup().
  async function waitForSetup(options) {
    const started = RealDate.now();
    for (;;) {
      if (state.errors.length) return null;
      const inst = sketch();
      if (inst && inst._setupDone) return inst;
      if (!inst && RealDate.now() - started > options.noSketchMs) {
        state.errors.push({
          name: 'Error',
          message: 'No p5 sketch started: define setup() or draw() at the top level, or call new p5(...)',
        });
        return null;
      }
      await sleep(options.pollMs);
    }
  }

  function canvasPng(inst) {
    const canvas = sketchCanvas(inst);
    if (!canvas) throw new Error('The sketch has no canvas');
    return { png: canvas.toDataURL('image/png'), width: canvas.width, height: canvas.height };
  }

  // A still: step frames until capture(), noLoop() or the frame budget decides which one is saved.
  async function p5Still(options) {
    const inst = await waitForSetup(options);
    if (!inst) return { errors: state.errors };
    let reason = 'budget';
    for (;;) {
      if (state.errors.length) return { errors: state.errors };
      if (state.captureRequested) { reason = 'capture'; break; }
      if (sketchStopped(inst)) { reason = 'noLoop'; break; }
      if (inst.frameCount >= options.frameBudget || state.frames >= options.frameBudget * 20) break;
      stepFrame(options.dt);
      await yieldTask();
    }
    return { errors: state.errors, reason, frameCount: inst.frameCount, ...canvasPng(inst) };
  }

  // A batch of video frames: step `count` frames and return each one's canvas as a PNG data URL.
  async function p5Frames(options) {
    const inst = await waitForSetup(options);
    if (!inst) return { errors: state.errors };
    const frames = [];
    for (let i = 0; i < options.count; i++) {
      stepFrame(options.dt);
      if (state.errors.length) return { errors: state.errors };
      frames.push(canvasPng(inst));
      await yieldTask();
    }
    return { errors: state.errors, frames, frameCount: inst.frameCount };
  }

  // A js page: settle (fonts, two frames), or, if the script called deferCapture(), keep stepping
  // frames at about 60 per second until it calls capture().
  async function settlePage(options) {
    await document.fonts.ready;
    for (let i = 0; i < 2; i++) {
      stepFrame(options.dt);
      await yieldTask();
    }
    while (state.captureDeferred && !state.captureRequested && !state.errors.length) {
      await sleep(options.dt);
      stepFrame(options.dt);
    }
    return { errors: state.errors, frames: state.frames };
  }

  // ---- Globals of the page contract -------------------------------------------------------------
  let configured = false;
  function configure(env) {
    if (configured) throw new Error('The page is already configured');
    configured = true;
    pageHash = String(env.hash ?? '');
    rand = sfc32(...hashSeeds(pageHash));
    const mathRandom = mathRandomOf(pageHash);
    for (let i = 0; i < drawsBeforeConfigure; i++) mathRandom();
    Math.random = mathRandom;
    variables = env.variables || {};
    components = env.components || {};
    aliases = env.aliases || {};
    seed = env.seed;
    Object.assign(window, {
      hash: pageHash,
      variables,
      getVariable,
      components,
      getComponentOutput,
      pseudorandomSeed,
      pseudorandom,
      pseudorandoms,
      pseudorandomInteger,
      pseudorandomIntegers,
      pseudorandomBoolean,
      pseudorandomPick,
      pseudorandomWeightedPick,
      pseudorandomPickButNot,
      capture() {
        state.captureRequested = true;
      },
      deferCapture() {
        state.captureDeferred = true;
      },
    });
  }

  Object.defineProperty(window, '__emprops', {
    value: Object.freeze({
      state,
      sketches,
      get seed() {
        return seed;
      },
      configure,
      p5Still,
      p5Frames,
      settlePage,
    }),
    enumerable: false,
  });
  if (!initialEnv.deferred) configure(initialEnv);
})();
