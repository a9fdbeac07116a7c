// Flow Field: strands that follow a Perlin noise field. The `mood` variable (pick) chooses the
// paper and inks; noise() is seeded from the generation's seed and the strands' starts, scale
// and curl come from the hash, so each hash draws its own field.
const MOODS = {
  Paper: { ground: '#f3eee3', inks: ['#1d3557', '#457b9d', '#e63946'], alpha: 70 },
  Night: { ground: '#0b0c1a', inks: ['#7df9ff', '#b388ff', '#ff80ab'], alpha: 80 },
  Ember: { ground: '#1c100b', inks: ['#ffb703', '#fb8500', '#e85d04', '#fff3b0'], alpha: 80 },
};

function setup() {
  createCanvas(512, 512);
  noLoop();
}

function draw() {
  const mood = MOODS[getVariable('mood')] || MOODS.Paper;
  background(mood.ground);
  const scale = pseudorandom(0.0025, 0.006);
  const curl = pseudorandom(1.5, 4);
  noFill();
  for (let i = 0; i < 1100; i++) {
    let x = pseudorandom(-16, width + 16);
    let y = pseudorandom(-16, height + 16);
    const ink = color(pseudorandomPick(mood.inks));
    ink.setAlpha(mood.alpha);
    stroke(ink);
    strokeWeight(pseudorandom(0.6, 2.2));
    beginShape();
    for (let step = 0; step < 90; step++) {
      vertex(x, y);
      const angle = noise(x * scale, y * scale) * TWO_PI * curl;
      x += cos(angle) * 2.5;
      y += sin(angle) * 2.5;
      if (x < -20 || x > width + 20 || y < -20 || y > height + 20) break;
    }
    endShape();
  }
}
