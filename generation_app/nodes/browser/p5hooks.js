// Loaded right after p5.min.js on p5 and p52vid pages: records every p5 instance (global or
// instance mode) so the renderer can step and capture it, and seeds p5's random() and noise()
// from the generation seed before preload() and setup() run.
(() => {
  'use strict';
  const runtime = window.__emprops;
  const P5 = window.p5;
  P5.prototype.registerMethod('init', function init() {
    // p5 calls global-mode hooks with `this` = window; the instance is then p5.instance.
    const inst = this instanceof P5 ? this : P5.instance;
    if (!inst) return;
    runtime.sketches.push(inst);
    if (runtime.seed !== undefined && runtime.seed !== null) {
      inst.randomSeed(runtime.seed);
      inst.noiseSeed(runtime.seed);
    }
  });
})();
