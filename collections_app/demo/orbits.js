// Orbits: a 2-second loop of bodies circling a centre, with fading tails. Orbit radii, phases
// and sizes come from the hash; every body turns a whole number of times in 2 s and each frame
// is drawn from the time alone, so the video loops seamlessly. The `glow` variable (pick)
// chooses the colours. Time is millis(), which the renderer steps frame by frame, so the same
// hash gives the same video.
const GLOWS = {
  Aurora: { ground: '#080c1c', bodies: ['#7fffd4', '#00e5ff', '#b388ff', '#69f0ae'] },
  Sunrise: { ground: '#1e0a16', bodies: ['#ffd166', '#ef476f', '#f78c6b', '#fff1e6'] },
};
const LOOP_MS = 2000;
const TAIL = 14;
const bodies = [];
let glow;

function setup() {
  createCanvas(256, 256);
  glow = GLOWS[getVariable('glow')] || GLOWS.Aurora;
  const count = pseudorandomInteger(7, 12);
  for (let i = 0; i < count; i++) {
    bodies.push({
      radius: pseudorandom(18, 112),
      squash: pseudorandom(0.55, 1),
      phase: pseudorandom(0, TWO_PI),
      turns: pseudorandomPick([1, 1, 2]) * (pseudorandomBoolean() ? 1 : -1),
      size: pseudorandom(5, 13),
      colour: color(pseudorandomPick(glow.bodies)),
    });
  }
}

function draw() {
  background(glow.ground);
  const t = (millis() % LOOP_MS) / LOOP_MS;
  translate(width / 2, height / 2);
  noFill();
  stroke(255, 22);
  for (const body of bodies) ellipse(0, 0, body.radius * 2, body.radius * 2 * body.squash);
  noStroke();
  for (const body of bodies) {
    for (let k = TAIL; k >= 0; k--) {
      const angle = body.phase + TWO_PI * body.turns * (t - k * 0.006);
      const fade = 1 - k / (TAIL + 1);
      const c = color(body.colour);
      c.setAlpha(255 * fade * fade);
      fill(c);
      circle(cos(angle) * body.radius, sin(angle) * body.radius * body.squash,
        body.size * (0.35 + 0.65 * fade));
    }
  }
  fill('#fff0c8');
  circle(0, 0, 16);
}
