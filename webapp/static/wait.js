// Follow a clip's analysis job and open the permalink when it is done.
"use strict";
(() => {
  const box = document.getElementById("job");
  if (!box) return;
  const permalink = box.dataset.permalink;
  const bar = document.getElementById("job-progress");
  const msg = document.getElementById("job-message");
  async function poll() {
    try {
      const r = await fetch("/api" + permalink, { headers: { Accept: "application/json" } });
      const d = await r.json();
      if (d.state === "done") { location.replace(permalink); return; }
      if (d.state === "failed" || d.state === "not_analysed") { location.reload(); return; }
      bar.value = d.progress || 0;
      const pos = d.job && d.job.queue_position ? ` (position ${d.job.queue_position} in the queue)` : "";
      msg.textContent = (d.message || d.state) + pos;
    } catch (e) {
      msg.textContent = "lost contact with the server; retrying";
    }
    setTimeout(poll, 250);
  }
  poll();
})();
