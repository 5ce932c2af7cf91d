// Clip viewer: frame scrubber and play, overlay opacity, class toggles (mCAM, or the stacked maps - CAM
// or the method switched to - of the toggled classes: each class's heat map is an RGBA PNG laid over the sampled frame).
// The download link follows what is shown: the mCAM frame, or the one toggled class's heat map.
"use strict";
(() => {
  const data = JSON.parse(document.getElementById("clip-data").textContent);
  const n = data.n_frames;
  if (!n) return;
  const $ = (id) => document.getElementById(id);
  const base = $("base"), layers = $("layers"), mcamImg = $("overlay"), scrub = $("scrub");
  const opacity = $("opacity"), play = $("play"), showing = $("showing"), dlFrame = $("dl-frame");
  const mcamBtn = $("show-mcam");
  const classBtns = Array.from(document.querySelectorAll("button.cls"));
  const heats = Array.from(document.querySelectorAll("img.heat"));
  const cams = Array.from(document.querySelectorAll("img.cam"));
  const on = new Set();
  let frame = 0;
  let timer = null;

  const pick = (list, i) => (list && list.length ? list[Math.min(i, list.length - 1)] : "");
  // The mCAM alone (RGBA) over the frame when the service wrote it, else the blended mCAM image.
  const mcamFrames = data.frames.mcam_layer.length ? data.frames.mcam_layer : data.frames.mcam;
  for (const list of [data.frames.base, mcamFrames, ...Object.values(data.frames.heat)]) {
    for (const src of list) { const im = new Image(); im.src = src; }
  }

  function show(i) {
    frame = Math.max(0, Math.min(n - 1, i));
    base.src = pick(data.frames.base, frame) || pick(data.frames.mcam, frame);
    mcamImg.src = pick(mcamFrames, frame);
    for (const h of heats) h.src = pick(data.frames.heat[h.dataset.class], frame);
    for (const c of cams) c.src = pick(data.frames.cam[c.dataset.class], frame);
    const first = [...on][0];
    dlFrame.href = on.size === 1 ? pick(data.frames.heat[first], frame) : pick(data.frames.mcam, frame);
    scrub.value = String(frame);
    $("frame-no").textContent = `${frame + 1} / ${n}`;
  }

  function render() {
    mcamImg.hidden = on.size > 0;
    for (const h of heats) h.hidden = !on.has(h.dataset.class);
    for (const b of classBtns) b.setAttribute("aria-pressed", String(on.has(b.dataset.class)));
    mcamBtn.setAttribute("aria-pressed", String(on.size === 0));
    const names = classBtns.filter((b) => on.has(b.dataset.class)).map((b) => b.textContent.trim());
    showing.textContent = on.size ? `${data.label} of ${names.join(" + ")}` : "mCAM (all predicted classes)";
    show(frame);
  }

  function setOpacity(v) {
    layers.style.opacity = String(v);
    $("opacity-val").textContent = Number(v).toFixed(2);
  }

  scrub.addEventListener("input", () => show(parseInt(scrub.value, 10)));
  opacity.addEventListener("input", () => setOpacity(opacity.value));
  play.addEventListener("click", () => {
    if (timer) { clearInterval(timer); timer = null; play.textContent = "▶ play"; return; }
    play.textContent = "❚❚ pause";
    timer = setInterval(() => show((frame + 1) % n), 125);
  });
  mcamBtn.addEventListener("click", () => { on.clear(); render(); });
  for (const b of classBtns) {
    b.addEventListener("click", () => {
      if (on.has(b.dataset.class)) on.delete(b.dataset.class); else on.add(b.dataset.class);
      render();
    });
  }
  setOpacity(opacity.value);
  render();
})();
