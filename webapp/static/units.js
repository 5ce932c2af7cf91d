// Unit table: filter by category, concept, motion score and having a formula; sort; all in the page (the form
// still works without JS).
"use strict";
(() => {
  const table = document.getElementById("units-table");
  if (!table) return;
  const form = document.getElementById("unit-filter");
  const cat = document.getElementById("f-category");
  const search = document.getElementById("f-search");
  const sort = document.getElementById("f-sort");
  const motion = document.getElementById("f-motion");
  const formula = document.getElementById("f-formula");
  const count = document.getElementById("shown-count");
  const rows = Array.from(table.tBodies[0].rows);
  const columns = { unit: [0, 1], label: [1, 1], category: [2, 1], iou: [3, -1], formula: [4, -1], motion: [5, -1] };

  function filter() {
    const c = cat.value;
    const q = search.value.trim().toLowerCase();
    const m = motion.value === "" ? null : +motion.value;
    let shown = 0;
    for (const r of rows) {
      const ok = (!c || r.dataset.category === c) && (!q || r.dataset.label.includes(q))
        && (m === null || (r.dataset.motion !== "" && +r.dataset.motion >= m))
        && (!formula.checked || r.dataset.formula === "1");
      r.hidden = !ok;
      if (ok) shown += 1;
    }
    count.textContent = `${shown} shown`;
  }
  function resort() {
    const [col, dir] = columns[sort.value];
    sortTable(table, col, dir);
  }
  function syncUrl() {
    const u = new URL(location.href);
    for (const [k, el] of [["category", cat], ["q", search], ["sort", sort], ["motion_min", motion]]) {
      if (el.value) u.searchParams.set(k, el.value); else u.searchParams.delete(k);
    }
    if (formula.checked) u.searchParams.set("has_formula", "true"); else u.searchParams.delete("has_formula");
    history.replaceState(null, "", u);
  }
  cat.addEventListener("change", () => { filter(); syncUrl(); });
  search.addEventListener("input", () => { filter(); syncUrl(); });
  motion.addEventListener("input", () => { filter(); syncUrl(); });
  formula.addEventListener("change", () => { filter(); syncUrl(); });
  sort.addEventListener("change", () => { resort(); syncUrl(); });
  form.addEventListener("submit", (e) => { e.preventDefault(); filter(); resort(); syncUrl(); });
})();
