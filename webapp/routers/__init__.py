"""Routers: HTML pages (runs, clips, units, analysis), run files, and the JSON API; none imports another."""
