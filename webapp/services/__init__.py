"""View data of the dashboard's pages, one module per page; no analysis happens here.

Each page function returns a JSON-able dict that the `/api/...` route returns through its
response model and the HTML route renders; a piece not computed yet is listed under `missing`
with the command that produces it (`commands`). Shared pieces: `readers` (run-dir files and the
results store), `charts` (inline SVG geometry), `commands` (missing piece -> shell command).
"""
