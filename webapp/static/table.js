// Sortable tables: click a header of a `table.sortable` to sort by that column (again to reverse).
// A cell's `data-value` is the sort key when present; `data-type="num"` headers sort numerically.
"use strict";
function sortTable(table, col, dir) {
  const th = table.tHead.rows[0].cells[col];
  const num = th.dataset.type === "num";
  const body = table.tBodies[0];
  const key = (row) => {
    const cell = row.cells[col];
    const v = cell.dataset.value !== undefined ? cell.dataset.value : cell.textContent.trim();
    return num ? parseFloat(v) : v.toLowerCase();
  };
  const rows = Array.from(body.rows).map((r) => [key(r), r]);
  rows.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0) * dir);
  const frag = document.createDocumentFragment();
  for (const [, r] of rows) frag.appendChild(r);
  body.appendChild(frag);
  for (const h of table.tHead.rows[0].cells) h.removeAttribute("aria-sort");
  th.setAttribute("aria-sort", dir > 0 ? "ascending" : "descending");
}
document.querySelectorAll("table.sortable").forEach((table) => {
  Array.from(table.tHead.rows[0].cells).forEach((th, col) => {
    th.tabIndex = 0;
    th.classList.add("sort");
    const go = () => sortTable(table, col, th.getAttribute("aria-sort") === "descending" ? 1 :
      th.getAttribute("aria-sort") === "ascending" ? -1 : (th.dataset.type === "num" ? -1 : 1));
    th.addEventListener("click", go);
    th.addEventListener("keydown", (e) => { if (e.key === "Enter") go(); });
  });
});
