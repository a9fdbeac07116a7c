// Truchet Tiles: a page that draws square tiles, each turned at random, whose motifs join into
// long paths. The `motif` variable (pick) chooses arcs, diagonals or triangles; the colours,
// grid and turns come from the hash (the pseudorandom* helpers), so each hash is its own page.
const SCHEMES = [
  { ground: '#fdf0d5', ink: '#003049', accent: '#c1121f' },
  { ground: '#0d1b2a', ink: '#e0e1dd', accent: '#f4a261' },
  { ground: '#f1faee', ink: '#1d3557', accent: '#e63946' },
  { ground: '#22223b', ink: '#f2e9e4', accent: '#9a8c98' },
];
const motif = getVariable('motif') || 'arcs';
const scheme = pseudorandomPick(SCHEMES);
const canvas = document.getElementById('tiles');
const size = 1024;
canvas.width = size;
canvas.height = size;
const g = canvas.getContext('2d');
g.fillStyle = scheme.ground;
g.fillRect(0, 0, size, size);
const n = pseudorandomPick([8, 12, 16]);
const cell = size / n;
g.lineCap = 'round';
for (let row = 0; row < n; row++) {
  for (let col = 0; col < n; col++) {
    g.save();
    g.translate((col + 0.5) * cell, (row + 0.5) * cell);
    g.rotate((Math.PI / 2) * pseudorandomInteger(0, 3));
    g.translate(-cell / 2, -cell / 2);
    const accent = pseudorandom() < 0.12;
    g.strokeStyle = accent ? scheme.accent : scheme.ink;
    g.fillStyle = accent ? scheme.accent : scheme.ink;
    g.lineWidth = cell * 0.16;
    if (motif === 'triangles') {
      g.beginPath();
      g.moveTo(0, 0);
      g.lineTo(cell, 0);
      g.lineTo(0, cell);
      g.closePath();
      g.fill();
    } else if (motif === 'diagonals') {
      g.beginPath();
      g.moveTo(0, 0);
      g.lineTo(cell, cell);
      g.stroke();
    } else {
      g.beginPath();
      g.arc(0, 0, cell / 2, 0, Math.PI / 2);
      g.stroke();
      g.beginPath();
      g.arc(cell, cell, cell / 2, Math.PI, (3 * Math.PI) / 2);
      g.stroke();
    }
    g.restore();
  }
}
document.getElementById('caption').textContent = `${motif} · ${n}×${n} · ${hash.slice(0, 10)}…`;
