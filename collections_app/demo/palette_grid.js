// Palette Grid: a grid of shapes. The `palette` variable (weighted_pick) names the colours, the
// `shape` variable (pick) the motif; grid size, layers, sizes and turns come from the hash
// (the pseudorandom* helpers), so every hash is its own image and the same hash the same bytes.
const PALETTES = {
  Sunset: ['#264653', '#2a9d8f', '#e9c46a', '#f4a261', '#e76f51'],
  Citrus: ['#3a86ff', '#8338ec', '#ff006e', '#fb5607', '#ffbe0b'],
  Nordic: ['#2e3440', '#4c566a', '#5e81ac', '#88c0d0', '#eceff4'],
  Candy: ['#ff99c8', '#fcf6bd', '#d0f4de', '#a9def9', '#e4c1f9'],
  Forest: ['#1b4332', '#2d6a4f', '#52b788', '#b7e4c7', '#f1faee'],
};

// A value may also list its own colours ("#112233 #445566 ..."), so a palette can be added to
// the variable without editing the sketch.
function paletteOf(value) {
  const hexes = String(value || '').match(/#[0-9a-fA-F]{6}\b/g);
  if (hexes && hexes.length >= 2) return hexes;
  return PALETTES[value] || PALETTES.Sunset;
}

function motif(shape, s) {
  if (shape === 'square') {
    rect(0, 0, s, s, s * 0.12);
  } else if (shape === 'triangle') {
    triangle(-s / 2, s / 2, s / 2, s / 2, -s / 2, -s / 2);
  } else {
    circle(0, 0, s);
  }
}

function setup() {
  createCanvas(512, 512);
  noLoop();
}

function draw() {
  const colours = paletteOf(getVariable('palette'));
  const shape = getVariable('shape') || 'circle';
  const ground = pseudorandomPick(colours);
  background(ground);
  const n = pseudorandomInteger(4, 8);
  const margin = 28;
  const cell = (width - 2 * margin) / n;
  noStroke();
  rectMode(CENTER);
  for (let row = 0; row < n; row++) {
    for (let col = 0; col < n; col++) {
      push();
      translate(margin + (col + 0.5) * cell, margin + (row + 0.5) * cell);
      rotate(HALF_PI * pseudorandomInteger(0, 3));
      let size = cell * pseudorandom(0.7, 0.94);
      let previous = ground;
      const layers = pseudorandomInteger(1, 3);
      for (let i = 0; i < layers; i++) {
        const colour = pseudorandomPickButNot(colours, previous);
        fill(colour);
        motif(shape, size);
        previous = colour;
        size *= pseudorandom(0.35, 0.6);
      }
      pop();
    }
  }
}
