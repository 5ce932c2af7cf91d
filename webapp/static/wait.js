// Follow a background job at its JSON URL (`#job[data-api]`, built by the server): a clip's analysis
// (`data-permalink` too: open the permalink when done), a concept path or a clip's maps by another method
// (reload the page when its job has finished).
"use strict";
(() => {
  const box = document.getElementById("job");
  if (!box) return;
  const api = box.dataset.api;
  const clip = Boolean(box.dataset.permalink);
  const bar = box.querySelector("progress");
  const msg = document.getElementById("job-message");
  async function poll() {
    try {
      const d = await (await fetch(api, { headers: { Accept: "application/json" } })).json();
      const job = clip ? d : d.job;
      if (!job || !["queued", "running"].includes(job.state)) {
        if (clip && d.state === "done") location.replace(box.dataset.permalink);
        else location.reload();
        return;
      }
      bar.value = job.progress || 0;
      const pos = (d.job || job).queue_position ? ` (position ${(d.job || job).queue_position} in the queue)` : "";
      msg.textContent = (job.message || job.state) + pos;
    } catch (e) {
      msg.textContent = "lost contact with the server; retrying";
    }
    setTimeout(poll, 150);
  }
  poll();
})();
