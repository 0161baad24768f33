"""One player for the Playground's four clips: a single play button and scrubber drive every video on the
same clock, step by step, so a 48-step imagined clip and a 200-step real one line up frame for frame (a
clip that has ended holds its last frame until the longest one ends; then all restart together)."""

from __future__ import annotations

from html import escape

FPS = 20  # sim.video.write_mp4's default, which the imagine job's clips use


def controls(steps: dict[str, int], fps: int = FPS) -> str:
    """The player's bar for clips of these step counts (label → steps); hidden until there are clips."""
    if not steps:
        return ""
    longest = max(steps.values())
    lengths = " · ".join(f"{escape(k)} {v}" for k, v in steps.items())
    return (f'<div class="vr-player" data-fps="{fps}" data-steps="{longest}">'
            '<button type="button" class="vr-play" id="player-play">▶ play all</button>'
            f'<input type="range" id="player-scrub" min="0" max="{longest}" step="1" value="0">'
            f'<span class="vr-step" id="player-step">step 0 / {longest}</span>'
            f'<span class="vr-msg">steps per clip: {lengths}</span></div>')


# Runs once per page (gr.HTML js_on_load). The listeners sit on the document (capturing; the bar's events
# are the player's alone, not the HTML component's) and look the bar up at each event, since its value is
# replaced with each new result; `root` holds the four gr.Video cells.
JS = """
const root = () => document.querySelector('#play-cells');
const videos = () => [...(root() ? root().querySelectorAll('video') : [])];
let playing = false, t = 0, origin = 0;
const host = () => document.querySelector('#play-player') || document;
const bar = () => host().querySelector('.vr-player');
const fps = () => Number((bar() || {dataset: {}}).dataset.fps || 20);
const longest = () => Number((bar() || {dataset: {}}).dataset.steps || 0) / fps();
function place(time) {
  t = Math.max(0, Math.min(time, longest()));
  for (const v of videos()) {
    if (!(v.duration > 0)) continue;
    const target = Math.min(t, v.duration - 0.02);
    if (playing && t < v.duration) {
      if (v.paused) { v.muted = true; v.play().catch(() => {}); }
      if (Math.abs(v.currentTime - target) > 0.12) v.currentTime = target;
    } else {
      if (!v.paused) v.pause();
      if (Math.abs(v.currentTime - target) > 0.02) v.currentTime = target;
    }
  }
  const scrub = host().querySelector('#player-scrub');
  const label = host().querySelector('#player-step');
  const step = Math.round(t * fps());
  if (scrub) scrub.value = String(step);
  if (label) label.textContent = 'step ' + step + ' / ' + Math.round(longest() * fps());
}
function tick() {
  if (!playing) return;
  let now = (performance.now() - origin) / 1000;
  if (now >= longest()) { origin = performance.now(); now = 0; }
  place(now);
  requestAnimationFrame(tick);
}
function setPlaying(on) {
  playing = on;
  const b = host().querySelector('#player-play');
  if (b) b.textContent = on ? '⏸ pause' : '▶ play all';
  if (on) { origin = performance.now() - t * 1000; requestAnimationFrame(tick); } else { place(t); }
}
document.addEventListener('click', (e) => {
  if (!e.target.closest('#player-play')) return;
  e.stopPropagation();
  setPlaying(!playing);
}, true);
document.addEventListener('input', (e) => {
  if (!e.target.closest('#player-scrub')) return;
  e.stopPropagation();
  const wanted = Number(e.target.value) / fps();  // read before setPlaying moves the scrubber
  setPlaying(false);
  place(wanted);
}, true);
window.vrPlayer = {place: (s) => { setPlaying(false); place(s); }, play: () => setPlaying(true),
                   pause: () => setPlaying(false), time: () => t};
"""
