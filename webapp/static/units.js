// Unit table: filter by category and concept, sort, all in the page (the form still works without JS).
"use strict";
(() => {
  const table = document.getElementById("units-table");
  if (!table) return;
  const form = document.getElementById("unit-filter");
  const cat = document.getElementById("f-category");
  const search = document.getElementById("f-search");
  const sort = document.getElementById("f-sort");
  const count = document.getElementById("shown-count");
  const rows = Array.from(table.tBodies[0].rows);
  const columns = { unit: [0, 1], label: [1, 1], category: [2, 1], iou: [3, -1] };

  function filter() {
    const c = cat.value;
    const q = search.value.trim().toLowerCase();
    let shown = 0;
    for (const r of rows) {
      const ok = (!c || r.dataset.category === c) && (!q || r.dataset.label.includes(q));
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
    for (const [k, el] of [["category", cat], ["q", search], ["sort", sort]]) {
      if (el.value) u.searchParams.set(k, el.value); else u.searchParams.delete(k);
    }
    history.replaceState(null, "", u);
  }
  cat.addEventListener("change", () => { filter(); syncUrl(); });
  search.addEventListener("input", () => { filter(); syncUrl(); });
  sort.addEventListener("change", () => { resort(); syncUrl(); });
  form.addEventListener("submit", (e) => { e.preventDefault(); filter(); resort(); syncUrl(); });
})();
