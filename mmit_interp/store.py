"""Results store: one SQLite database per run dir (`run/results.sqlite`), schema in docs/store.md.

Analyses and dissection write here, the dashboard reads here. Every write is one transaction that
first deletes the rows of the scope it replaces (e.g. one layer's ablation curve), then inserts:
re-running an analysis replaces its rows, never duplicates them. Rows are keyed by `run_id`, one
per checkpoint content hash (`sha256`), so results of a retrained checkpoint never mix with older
ones; read helpers default to the most recently registered run. The module needs only the standard
library (no torch import) so the web layer starts fast.
"""
from __future__ import annotations

import json
import math
import sqlite3
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

from mmit_interp.unit_labels import UnitLabel

SCHEMA_VERSION = 2
DB_NAME = "results.sqlite"

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
  run_id INTEGER PRIMARY KEY AUTOINCREMENT, sha256 TEXT NOT NULL UNIQUE, checkpoint TEXT NOT NULL,
  model TEXT NOT NULL, model_kwargs TEXT NOT NULL, num_classes INTEGER NOT NULL,
  transforms TEXT NOT NULL, config TEXT NOT NULL, metrics TEXT NOT NULL, registered_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS classes (
  run_id INTEGER NOT NULL REFERENCES runs ON DELETE CASCADE, class_idx INTEGER NOT NULL, name TEXT NOT NULL,
  PRIMARY KEY (run_id, class_idx));
CREATE TABLE IF NOT EXISTS metrics (
  run_id INTEGER NOT NULL REFERENCES runs ON DELETE CASCADE, split TEXT NOT NULL, name TEXT NOT NULL,
  value REAL, PRIMARY KEY (run_id, split, name));
CREATE TABLE IF NOT EXISTS class_ap (
  run_id INTEGER NOT NULL REFERENCES runs ON DELETE CASCADE, split TEXT NOT NULL, class_idx INTEGER NOT NULL,
  ap REAL, PRIMARY KEY (run_id, split, class_idx));
CREATE TABLE IF NOT EXISTS units (
  run_id INTEGER NOT NULL REFERENCES runs ON DELETE CASCADE, layer TEXT NOT NULL, concept_set TEXT NOT NULL,
  unit INTEGER NOT NULL, category TEXT, label TEXT, iou REAL, interpretable INTEGER NOT NULL,
  runner_ups TEXT NOT NULL, extra TEXT NOT NULL, per_category TEXT NOT NULL DEFAULT '[]',
  PRIMARY KEY (run_id, layer, concept_set, unit));
CREATE TABLE IF NOT EXISTS ablation (
  run_id INTEGER NOT NULL REFERENCES runs ON DELETE CASCADE, layer TEXT NOT NULL, split TEXT NOT NULL,
  metric TEXT NOT NULL, p REAL NOT NULL, seed INTEGER NOT NULL, value REAL, rel REAL,
  PRIMARY KEY (run_id, layer, split, metric, p, seed));
CREATE TABLE IF NOT EXISTS selectivity (
  run_id INTEGER NOT NULL REFERENCES runs ON DELETE CASCADE, block TEXT NOT NULL, prob TEXT NOT NULL,
  unit INTEGER NOT NULL, value REAL, PRIMARY KEY (run_id, block, prob, unit));
CREATE TABLE IF NOT EXISTS relations (
  run_id INTEGER NOT NULL REFERENCES runs ON DELETE CASCADE, block TEXT NOT NULL, prob TEXT NOT NULL,
  direction TEXT NOT NULL CHECK (direction IN ('unit_to_class', 'class_to_unit')),
  source INTEGER NOT NULL, rank INTEGER NOT NULL, target INTEGER NOT NULL, score REAL,
  PRIMARY KEY (run_id, block, prob, direction, source, rank));
CREATE TABLE IF NOT EXISTS clips (
  run_id INTEGER NOT NULL REFERENCES runs ON DELETE CASCADE, clip_key TEXT NOT NULL, path TEXT NOT NULL,
  n_frames INTEGER NOT NULL, has_audio INTEGER NOT NULL, out_dir TEXT NOT NULL, overlay_video TEXT,
  params TEXT NOT NULL, analysed_at REAL NOT NULL, PRIMARY KEY (run_id, clip_key));
CREATE TABLE IF NOT EXISTS clip_predictions (
  run_id INTEGER NOT NULL, clip_key TEXT NOT NULL, rank INTEGER NOT NULL, class_idx INTEGER NOT NULL,
  score REAL NOT NULL, PRIMARY KEY (run_id, clip_key, rank),
  FOREIGN KEY (run_id, clip_key) REFERENCES clips ON DELETE CASCADE);
CREATE TABLE IF NOT EXISTS clip_files (
  run_id INTEGER NOT NULL, clip_key TEXT NOT NULL, kind TEXT NOT NULL, class_idx INTEGER NOT NULL,
  frame INTEGER NOT NULL, path TEXT NOT NULL, PRIMARY KEY (run_id, clip_key, kind, class_idx, frame),
  FOREIGN KEY (run_id, clip_key) REFERENCES clips ON DELETE CASCADE);
CREATE TABLE IF NOT EXISTS concept_paths (
  run_id INTEGER NOT NULL, clip_key TEXT NOT NULL, class_idx INTEGER NOT NULL, step INTEGER NOT NULL,
  rank INTEGER NOT NULL, layer TEXT NOT NULL, unit INTEGER NOT NULL, parent INTEGER NOT NULL,
  contribution REAL NOT NULL, label_layers TEXT NOT NULL, PRIMARY KEY (run_id, clip_key, class_idx, step, parent, rank),
  FOREIGN KEY (run_id, clip_key) REFERENCES clips ON DELETE CASCADE);
CREATE TABLE IF NOT EXISTS localisation (
  run_id INTEGER NOT NULL REFERENCES runs ON DELETE CASCADE, dataset TEXT NOT NULL, method TEXT NOT NULL,
  score TEXT NOT NULL, class_idx INTEGER NOT NULL, frame INTEGER NOT NULL, value REAL, n INTEGER NOT NULL,
  PRIMARY KEY (run_id, dataset, method, score, class_idx, frame));
CREATE TABLE IF NOT EXISTS bias (
  run_id INTEGER NOT NULL REFERENCES runs ON DELETE CASCADE, dataset TEXT NOT NULL, action TEXT NOT NULL,
  texture TEXT NOT NULL, summary TEXT NOT NULL, analysed_at REAL NOT NULL,
  PRIMARY KEY (run_id, dataset, action, texture));
CREATE TABLE IF NOT EXISTS explanations (
  run_id INTEGER NOT NULL REFERENCES runs ON DELETE CASCADE, dataset TEXT NOT NULL, method TEXT NOT NULL,
  metric TEXT NOT NULL, mean REAL, lo REAL, hi REAL, n INTEGER NOT NULL,
  PRIMARY KEY (run_id, dataset, method, metric));
CREATE TABLE IF NOT EXISTS unit_motion (
  run_id INTEGER NOT NULL REFERENCES runs ON DELETE CASCADE, dataset TEXT NOT NULL, layer TEXT NOT NULL,
  unit INTEGER NOT NULL, score REAL, d_frozen REAL, d_shuffled REAL, d_appearance REAL, n INTEGER NOT NULL,
  analysed_at REAL NOT NULL, PRIMARY KEY (run_id, dataset, layer, unit));
CREATE TABLE IF NOT EXISTS unit_formulas (
  run_id INTEGER NOT NULL REFERENCES runs ON DELETE CASCADE, layer TEXT NOT NULL, concept_set TEXT NOT NULL,
  unit INTEGER NOT NULL, formula TEXT NOT NULL, length INTEGER NOT NULL, iou REAL, label TEXT NOT NULL,
  label_iou REAL, gain REAL, terms TEXT NOT NULL, PRIMARY KEY (run_id, layer, concept_set, unit));
"""

NOT_DISSECTED = "not dissected"


def _j(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, default=_plain)


def _plain(o: Any) -> Any:
    if hasattr(o, "tolist"):
        return o.tolist()
    if hasattr(o, "names"):  # Vocabulary
        return list(o.names)
    return str(o)


def _num(v: Any) -> float | None:
    """A finite float or None (SQLite has no NaN: NaN is stored as NULL)."""
    if v is None:
        return None
    f = float(v)
    return None if math.isnan(f) else f


def run_root(run: str | Path) -> Path:
    """The run dir of a run dir or a checkpoint path (`run/checkpoints/x.pt` -> `run`)."""
    p = Path(run)
    if p.is_dir():
        return p
    return p.parent.parent if p.parent.name == "checkpoints" else p.parent


def open_run_store(run: str | Path, meta: Mapping[str, Any]) -> tuple["ResultsStore", int]:
    """The store of a run dir (or checkpoint path) with this checkpoint registered and the run's
    evaluation files ingested: `(store, run_id)`; close the store when done."""
    root = run_root(run)
    store = ResultsStore(root)
    rid = store.register_run(meta)
    store.ingest_evaluations(root, run_id=rid)
    return store, rid


class StoreError(RuntimeError):
    """A read or write that the store cannot satisfy (unknown run, bad record)."""


class ResultsStore:
    """The SQLite results store of one run dir; `ResultsStore(run_dir)` or a `.sqlite` path."""

    def __init__(self, path: str | Path):
        p = Path(path)
        self.path = p / DB_NAME if p.is_dir() or p.suffix != ".sqlite" else p
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None, check_same_thread=False)
        self.conn.row_factory = sqlite3.Row
        self.conn.execute("PRAGMA foreign_keys = ON")
        self.conn.execute("PRAGMA busy_timeout = 30000")
        self.conn.execute("PRAGMA journal_mode = WAL")
        with self.transaction() as c:
            for stmt in filter(str.strip, SCHEMA.split(";")):
                c.execute(stmt)
            _migrate_units(c)
            c.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))

    def close(self) -> None:
        """Close the connection."""
        self.conn.close()

    def __enter__(self) -> "ResultsStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """`BEGIN IMMEDIATE` ... `COMMIT`, rolled back on any exception (which is re-raised)."""
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self.conn
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    # ---------------------------------------------------------------- runs
    def register_run(self, meta: Mapping[str, Any]) -> int:
        """Insert or refresh the run of a checkpoint (`load_model`'s meta) with its classes; returns run_id."""
        vocab = meta["vocab"]
        names = list(vocab.names) if hasattr(vocab, "names") else list(vocab)
        model = meta.get("model", {})
        with self.transaction() as c:
            row = c.execute("SELECT run_id FROM runs WHERE sha256 = ?", (meta["sha256"],)).fetchone()
            vals = (str(meta.get("path", "")), model.get("name", ""), _j(model.get("kwargs", {})), len(names),
                    _j(meta.get("transforms", {})), _j(meta.get("config", {})), _j(meta.get("metrics", {})),
                    time.time())
            if row:
                run_id = int(row["run_id"])
                c.execute("UPDATE runs SET checkpoint=?, model=?, model_kwargs=?, num_classes=?, transforms=?, "
                          "config=?, metrics=?, registered_at=? WHERE run_id=?", (*vals, run_id))
            else:
                run_id = int(c.execute("INSERT INTO runs (sha256, checkpoint, model, model_kwargs, num_classes, "
                                       "transforms, config, metrics, registered_at) VALUES (?,?,?,?,?,?,?,?,?)",
                                       (meta["sha256"], *vals)).lastrowid)
            c.execute("DELETE FROM classes WHERE run_id = ?", (run_id,))
            c.executemany("INSERT INTO classes VALUES (?,?,?)", [(run_id, i, n) for i, n in enumerate(names)])
        return run_id

    def ingest_evaluations(self, run_dir: str | Path, run_id: int | None = None) -> list[str]:
        """Store the run dir's `eval.json` then `eval_<split>.json` files (training's evaluations); returns the splits."""
        rid = self.run_id(run_id)
        root = Path(run_dir)
        splits = []
        for f in [root / "eval.json", *sorted(root.glob("eval_*.json"))]:
            if f.is_file():
                d = json.loads(f.read_text())
                self.write_eval(d, split=str(d.get("split", "val")), run_id=rid)
                splits.append(str(d.get("split", "val")))
        return splits

    def run_id(self, run_id: int | None = None) -> int:
        """`run_id` checked, or the most recently registered run's id."""
        if run_id is not None:
            if self.conn.execute("SELECT 1 FROM runs WHERE run_id = ?", (run_id,)).fetchone() is None:
                raise StoreError(f"{self.path}: no run {run_id}")
            return int(run_id)
        row = self.conn.execute("SELECT run_id FROM runs ORDER BY registered_at DESC, run_id DESC LIMIT 1").fetchone()
        if row is None:
            raise StoreError(f"{self.path}: no run registered yet (analyse or dissect the run first)")
        return int(row["run_id"])

    def runs(self) -> list[dict]:
        """Every registered run (JSON columns decoded), newest first."""
        rows = self.conn.execute("SELECT * FROM runs ORDER BY registered_at DESC, run_id DESC").fetchall()
        out = []
        for r in rows:
            d = dict(r)
            for k in ("model_kwargs", "transforms", "config", "metrics"):
                d[k] = json.loads(d[k])
            out.append(d)
        return out

    def classes(self, run_id: int | None = None) -> list[str]:
        """Class names in index order."""
        rid = self.run_id(run_id)
        return [r["name"] for r in self.conn.execute(
            "SELECT name FROM classes WHERE run_id = ? ORDER BY class_idx", (rid,))]

    # ---------------------------------------------------------------- evaluation
    def write_eval(self, metrics: Mapping[str, Any], *, split: str = "val", run_id: int | None = None) -> None:
        """Store `metrics.evaluate(...)`'s scalars and its per-class AP for one split (replaces that split)."""
        rid = self.run_id(run_id)
        scalars = [(rid, split, k, _num(v)) for k, v in metrics.items()
                   if k != "per_class_ap" and isinstance(v, (int, float)) and not isinstance(v, bool)]
        aps = [(rid, split, i, _num(v)) for i, v in enumerate(metrics.get("per_class_ap", []))]
        with self.transaction() as c:
            c.execute("DELETE FROM metrics WHERE run_id = ? AND split = ?", (rid, split))
            c.execute("DELETE FROM class_ap WHERE run_id = ? AND split = ?", (rid, split))
            c.executemany("INSERT INTO metrics VALUES (?,?,?,?)", scalars)
            c.executemany("INSERT INTO class_ap VALUES (?,?,?,?)", aps)

    def metrics(self, split: str = "val", run_id: int | None = None) -> dict[str, float | None]:
        """Scalar metrics of one split (NaN read back as None)."""
        rid = self.run_id(run_id)
        return {r["name"]: r["value"] for r in self.conn.execute(
            "SELECT name, value FROM metrics WHERE run_id = ? AND split = ? ORDER BY name", (rid, split))}

    def class_ap(self, split: str = "val", run_id: int | None = None) -> list[dict]:
        """Per-class AP rows `{class_idx, name, ap}` (ap None for a class without positives)."""
        rid = self.run_id(run_id)
        return [dict(r) for r in self.conn.execute(
            "SELECT a.class_idx, c.name, a.ap FROM class_ap a JOIN classes c USING (run_id, class_idx) "
            "WHERE a.run_id = ? AND a.split = ? ORDER BY a.class_idx", (rid, split))]

    # ---------------------------------------------------------------- units (dissection)
    def write_units(self, layer: str, concept_set: str, labels: Iterable[UnitLabel], *,
                    run_id: int | None = None) -> int:
        """Replace one (layer, concept set)'s unit labels with dissection's records; returns the count.

        Each `UnitLabel` is stored as it is: its own `interpretable` flag, `runner_ups` and `per_category`
        (its `bests`) as JSON lists of `{label, category, iou}`, `label_number` and `threshold` in `extra`."""
        rid = self.run_id(run_id)
        rows = [(rid, layer, concept_set, rec.unit, rec.category, rec.label, _num(rec.iou), int(rec.interpretable),
                 _j([c.as_dict() for c in rec.runner_ups]),
                 _j({"label_number": rec.label_number, "threshold": rec.threshold}),
                 _j([c.as_dict() for c in rec.bests])) for rec in labels]
        with self.transaction() as c:
            c.execute("DELETE FROM units WHERE run_id = ? AND layer = ? AND concept_set = ?", (rid, layer, concept_set))
            c.executemany("INSERT INTO units VALUES (?,?,?,?,?,?,?,?,?,?,?)", rows)
        return len(rows)

    def layers(self, run_id: int | None = None) -> list[dict]:
        """Dissected (layer, concept_set) pairs with unit and interpretable-unit counts."""
        rid = self.run_id(run_id)
        return [dict(r) for r in self.conn.execute(
            "SELECT layer, concept_set, COUNT(*) AS n_units, SUM(interpretable) AS n_interpretable FROM units "
            "WHERE run_id = ? GROUP BY layer, concept_set ORDER BY layer, concept_set", (rid,))]

    def units(self, layer: str, concept_set: str | None = None, *, category: str | None = None,
              search: str | None = None, interpretable_only: bool = False, order_by: str = "iou",
              run_id: int | None = None) -> list[dict]:
        """Unit rows of a layer, filterable by concept set, category, label substring; sorted by a column."""
        rid = self.run_id(run_id)
        if order_by not in ("iou", "unit", "label", "category"):
            raise StoreError(f"cannot order units by {order_by!r}")
        sql = "SELECT * FROM units WHERE run_id = ? AND layer = ?"
        args: list[Any] = [rid, layer]
        for col, val in (("concept_set", concept_set), ("category", category)):
            if val is not None:
                sql += f" AND {col} = ?"
                args.append(val)
        if search:
            sql += " AND label LIKE ?"
            args.append(f"%{search}%")
        if interpretable_only:
            sql += " AND interpretable = 1"
        sql += f" ORDER BY {order_by} {'DESC' if order_by == 'iou' else 'ASC'}, unit"
        return [_unit_row(r) for r in self.conn.execute(sql, args)]

    def unit(self, layer: str, unit: int, concept_set: str | None = None, run_id: int | None = None) -> dict | None:
        """One unit's best label row (highest IoU over concept sets unless one is named), or None."""
        rid = self.run_id(run_id)
        sql = "SELECT * FROM units WHERE run_id = ? AND layer = ? AND unit = ?"
        args: list[Any] = [rid, layer, int(unit)]
        if concept_set is not None:
            sql += " AND concept_set = ?"
            args.append(concept_set)
        r = self.conn.execute(sql + " ORDER BY iou DESC LIMIT 1", args).fetchone()
        return _unit_row(r) if r else None

    def unit_labels(self, layers: Sequence[str], concept_set: str | None = None,
                    run_id: int | None = None) -> dict[int, dict]:
        """unit -> best label row, taken from the first of `layers` (aliases of one tensor) that was dissected."""
        rid = self.run_id(run_id)
        for layer in layers:
            sql = "SELECT * FROM units WHERE run_id = ? AND layer = ?"
            args: list[Any] = [rid, layer]
            if concept_set is not None:
                sql += " AND concept_set = ?"
                args.append(concept_set)
            best: dict[int, dict] = {}
            for r in self.conn.execute(sql + " ORDER BY iou ASC", args):  # later (higher IoU) rows win
                best[r["unit"]] = _unit_row(r)
            if best:
                return best
        return {}

    def unit_labels_by_set(self, layers: Sequence[str], run_id: int | None = None) -> dict[str, dict[int, dict]]:
        """concept set -> unit -> label row (each set's own best label), from the first of `layers` dissected.

        Network Dissection labels a unit per probe dataset: IoUs of different sets are taken at
        different activation thresholds on different images, so a unit may rightly carry one label
        per set (e.g. a texture on still images, an action on action tubes)."""
        rid = self.run_id(run_id)
        for layer in layers:
            out: dict[str, dict[int, dict]] = {}
            for r in self.conn.execute("SELECT * FROM units WHERE run_id = ? AND layer = ? ORDER BY concept_set, unit",
                                       (rid, layer)):
                out.setdefault(r["concept_set"], {})[r["unit"]] = _unit_row(r)
            if out:
                return out
        return {}

    def path_labels(self, layers: Sequence[str], run_id: int | None = None) -> dict[int, dict]:
        """unit -> the fields a concept path shows: `label`, `category`, `iou` (best over concept sets, as
        `unit_labels`) and `also`, the interpretable labels other concept sets give it (`{concept_set,
        label, category, iou}`), so a unit that is `dotted` on stills but `falling` on tubes says both."""
        best = self.unit_labels(layers, run_id=run_id)
        by_set = self.unit_labels_by_set(layers, run_id=run_id)
        out = {}
        for u, b in best.items():
            also = [{"concept_set": cs, "label": t[u]["label"], "category": t[u]["category"], "iou": t[u]["iou"]}
                    for cs, t in by_set.items()
                    if u in t and t[u]["interpretable"] and t[u]["label"] != b["label"]]
            out[u] = {"label": b["label"], "category": b["category"], "iou": b["iou"], "also": also}
        return out

    def label_path_rows(self, rows: list[dict], run_id: int | None = None) -> list[dict]:
        """Add to concept path rows (each with `unit` and `label_layers`) the `path_labels` fields of their
        unit, looked up once per `label_layers`; a unit no dissection covers is "not dissected"."""
        tables: dict[tuple, dict[int, dict]] = {}
        for r in rows:
            key = tuple(r["label_layers"])
            if key not in tables:
                tables[key] = self.path_labels(list(key), run_id=run_id)
            r.update(tables[key].get(r["unit"]) or {"label": NOT_DISSECTED, "category": None, "iou": None, "also": []})
        return rows

    def category_counts(self, layer: str, concept_set: str | None = None, run_id: int | None = None) -> dict[str, int]:
        """Number of interpretable units per category (the block-wise concept-count plot)."""
        rid = self.run_id(run_id)
        sql = "SELECT category, COUNT(*) AS n FROM units WHERE run_id = ? AND layer = ? AND interpretable = 1"
        args: list[Any] = [rid, layer]
        if concept_set is not None:
            sql += " AND concept_set = ?"
            args.append(concept_set)
        return {r["category"]: r["n"] for r in self.conn.execute(sql + " GROUP BY category ORDER BY n DESC", args)}

    # ---------------------------------------------------------------- ablation
    def write_ablation(self, layer: str, rows: Iterable[Mapping[str, Any]], *, split: str = "val",
                       run_id: int | None = None) -> None:
        """Replace one layer's ablation sweep: rows `{metric, p, seed, value, rel}`."""
        rid = self.run_id(run_id)
        vals = [(rid, layer, split, r["metric"], float(r["p"]), int(r["seed"]), _num(r["value"]), _num(r["rel"]))
                for r in rows]
        with self.transaction() as c:
            c.execute("DELETE FROM ablation WHERE run_id = ? AND layer = ? AND split = ?", (rid, layer, split))
            c.executemany("INSERT INTO ablation VALUES (?,?,?,?,?,?,?,?)", vals)

    def ablation_curves(self, layer: str | None = None, *, split: str = "val",
                        run_id: int | None = None) -> dict[str, dict[str, dict[str, list[float]]]]:
        """`{layer: {metric: {p, mean, std, min, max, n}}}`: relative value over seeds per p (std: population)."""
        rid = self.run_id(run_id)
        sql = "SELECT layer, metric, p, rel FROM ablation WHERE run_id = ? AND split = ?"
        args: list[Any] = [rid, split]
        if layer is not None:
            sql += " AND layer = ?"
            args.append(layer)
        groups: dict[tuple[str, str, float], list[float]] = {}
        for r in self.conn.execute(sql + " ORDER BY layer, metric, p, seed", args):
            groups.setdefault((r["layer"], r["metric"], r["p"]), []).append(
                float("nan") if r["rel"] is None else r["rel"])
        out: dict[str, dict[str, dict[str, list[float]]]] = {}
        for (lay, met, p), v in groups.items():
            d = out.setdefault(lay, {}).setdefault(met, {"p": [], "mean": [], "std": [], "min": [], "max": [], "n": []})
            m = sum(v) / len(v)
            d["p"].append(p)
            d["mean"].append(m)
            d["std"].append(math.sqrt(sum((x - m) ** 2 for x in v) / len(v)))
            d["min"].append(min(v))
            d["max"].append(max(v))
            d["n"].append(len(v))
        return out

    # ---------------------------------------------------------------- selectivity and relations
    def write_selectivity(self, block: str, values: Sequence[float], *, prob: str = "softmax",
                          run_id: int | None = None) -> None:
        """Replace one block's per-unit selectivity (index = unit) for a probability kind."""
        rid = self.run_id(run_id)
        with self.transaction() as c:
            c.execute("DELETE FROM selectivity WHERE run_id = ? AND block = ? AND prob = ?", (rid, block, prob))
            c.executemany("INSERT INTO selectivity VALUES (?,?,?,?,?)",
                          [(rid, block, prob, i, _num(v)) for i, v in enumerate(values)])

    def selectivity(self, block: str, *, prob: str = "softmax", run_id: int | None = None) -> list[float | None]:
        """Per-unit selectivity of one block (index = unit)."""
        rid = self.run_id(run_id)
        return [r["value"] for r in self.conn.execute(
            "SELECT value FROM selectivity WHERE run_id = ? AND block = ? AND prob = ? ORDER BY unit", (rid, block, prob))]

    def selectivity_blocks(self, *, prob: str = "softmax", run_id: int | None = None) -> list[dict]:
        """Per block: mean and std (population) of unit selectivity and unit count, in network order."""
        rid = self.run_id(run_id)
        rows = self.conn.execute(
            "SELECT block, AVG(value) AS mean, AVG(value * value) AS sq, COUNT(*) AS n FROM selectivity "
            "WHERE run_id = ? AND prob = ? GROUP BY block", (rid, prob)).fetchall()
        out = [{"block": r["block"], "mean": r["mean"], "n": r["n"],
                "std": math.sqrt(max(r["sq"] - r["mean"] ** 2, 0.0)) if r["mean"] is not None else None} for r in rows]
        return sorted(out, key=lambda d: _block_order(d["block"]))

    def write_relations(self, block: str, direction: str, table: Mapping[int, Sequence[tuple[int, float]]], *,
                        prob: str = "softmax", run_id: int | None = None) -> None:
        """Replace one block's relation table: `{source: [(target, score), ...] best first}`.

        direction `unit_to_class` (source unit, target class) or `class_to_unit` (source class, target unit).
        """
        rid = self.run_id(run_id)
        rows = [(rid, block, prob, direction, int(s), k, int(t), _num(v))
                for s, lst in table.items() for k, (t, v) in enumerate(lst)]
        with self.transaction() as c:
            c.execute("DELETE FROM relations WHERE run_id = ? AND block = ? AND prob = ? AND direction = ?",
                      (rid, block, prob, direction))
            c.executemany("INSERT INTO relations VALUES (?,?,?,?,?,?,?,?)", rows)

    def relations(self, block: str, direction: str, source: int | None = None, *, prob: str = "softmax",
                  run_id: int | None = None) -> dict[int, list[tuple[int, float]]]:
        """`{source: [(target, score), ...]}` best first, for all sources or one."""
        rid = self.run_id(run_id)
        sql = "SELECT source, target, score FROM relations WHERE run_id = ? AND block = ? AND prob = ? AND direction = ?"
        args: list[Any] = [rid, block, prob, direction]
        if source is not None:
            sql += " AND source = ?"
            args.append(int(source))
        out: dict[int, list[tuple[int, float]]] = {}
        for r in self.conn.execute(sql + " ORDER BY source, rank", args):
            out.setdefault(r["source"], []).append((r["target"], r["score"]))
        return out

    # ---------------------------------------------------------------- analysed clips
    def write_clip(self, clip_key: str, *, path: str, n_frames: int, has_audio: bool, out_dir: str,
                   predictions: Sequence[tuple[int, float]], files: Iterable[tuple[str, int, int, str]],
                   overlay_video: str | None = None, params: Mapping[str, Any] | None = None,
                   run_id: int | None = None) -> None:
        """Replace one analysed clip: predictions `[(class_idx, score)]` best first, files
        `[(kind, class_idx, frame, path)]` (class_idx -1 / frame -1 where not applicable)."""
        rid = self.run_id(run_id)
        with self.transaction() as c:
            c.execute("DELETE FROM clips WHERE run_id = ? AND clip_key = ?", (rid, clip_key))  # cascades
            c.execute("INSERT INTO clips VALUES (?,?,?,?,?,?,?,?,?)",
                      (rid, clip_key, str(path), int(n_frames), int(bool(has_audio)), str(out_dir),
                       None if overlay_video is None else str(overlay_video), _j(dict(params or {})), time.time()))
            c.executemany("INSERT INTO clip_predictions VALUES (?,?,?,?,?)",
                          [(rid, clip_key, k, int(ci), float(s)) for k, (ci, s) in enumerate(predictions)])
            c.executemany("INSERT INTO clip_files VALUES (?,?,?,?,?,?)",
                          [(rid, clip_key, kind, int(ci), int(fr), str(p)) for kind, ci, fr, p in files])

    def clips(self, run_id: int | None = None) -> list[dict]:
        """Analysed clips (newest first) with their top prediction."""
        rid = self.run_id(run_id)
        return [dict(r) for r in self.conn.execute(
            "SELECT k.clip_key, k.path, k.n_frames, k.has_audio, k.analysed_at, p.class_idx AS top_class, "
            "c.name AS top_name, p.score AS top_score FROM clips k LEFT JOIN clip_predictions p "
            "ON p.run_id = k.run_id AND p.clip_key = k.clip_key AND p.rank = 0 LEFT JOIN classes c "
            "ON c.run_id = k.run_id AND c.class_idx = p.class_idx WHERE k.run_id = ? ORDER BY k.analysed_at DESC",
            (rid,))]

    def n_clips(self, run_id: int | None = None) -> int:
        """Number of analysed clips (what a runs list shows, without reading the clips)."""
        rid = self.run_id(run_id)
        return int(self.conn.execute("SELECT COUNT(*) FROM clips WHERE run_id = ?", (rid,)).fetchone()[0])

    def clip(self, clip_key: str, run_id: int | None = None) -> dict | None:
        """One analysed clip: row, predictions `[{class_idx, name, score}]` and files `{kind: {class: [paths by frame]}}`."""
        rid = self.run_id(run_id)
        r = self.conn.execute("SELECT * FROM clips WHERE run_id = ? AND clip_key = ?", (rid, clip_key)).fetchone()
        if r is None:
            return None
        d = dict(r)
        d["params"] = json.loads(d["params"])
        d["has_audio"] = bool(d["has_audio"])
        d["predictions"] = [dict(p) for p in self.conn.execute(
            "SELECT p.class_idx, c.name, p.score FROM clip_predictions p JOIN classes c USING (run_id, class_idx) "
            "WHERE p.run_id = ? AND p.clip_key = ? ORDER BY p.rank", (rid, clip_key))]
        files: dict[str, dict[int, list[str]]] = {}
        for f in self.conn.execute("SELECT kind, class_idx, frame, path FROM clip_files WHERE run_id = ? AND "
                                   "clip_key = ? ORDER BY kind, class_idx, frame", (rid, clip_key)):
            files.setdefault(f["kind"], {}).setdefault(f["class_idx"], []).append(f["path"])
        d["files"] = files
        return d

    # ---------------------------------------------------------------- concept paths
    def write_concept_path(self, clip_key: str, class_idx: int, steps: Iterable[Mapping[str, Any]], *,
                           run_id: int | None = None) -> None:
        """Replace the concept path of (clip, class): rows `{step, rank, layer, unit, parent, contribution}`
        (step 0: units driving the class, parent -1; step 1: units driving step-0 unit `parent`) and
        optionally `label_layers`, the dissected layer names that are the same tensor as `layer`
        (default `[layer]`). The clip must have been written with `write_clip` first."""
        rid = self.run_id(run_id)
        rows = [(rid, clip_key, int(class_idx), int(s["step"]), int(s["rank"]), s["layer"], int(s["unit"]),
                 int(s["parent"]), float(s["contribution"]), _j(list(s.get("label_layers") or [s["layer"]])))
                for s in steps]
        with self.transaction() as c:
            c.execute("DELETE FROM concept_paths WHERE run_id = ? AND clip_key = ? AND class_idx = ?",
                      (rid, clip_key, int(class_idx)))
            c.executemany("INSERT INTO concept_paths VALUES (?,?,?,?,?,?,?,?,?,?)", rows)

    def concept_path(self, clip_key: str, class_idx: int, run_id: int | None = None) -> list[dict]:
        """Concept path rows with each unit's current dissection label (or "not dissected"), looked up
        under the row's `label_layers` (first one dissected wins; `path_labels`)."""
        rid = self.run_id(run_id)
        rows = [dict(r) for r in self.conn.execute(
            "SELECT step, rank, layer, unit, parent, contribution, label_layers FROM concept_paths WHERE run_id = ? "
            "AND clip_key = ? AND class_idx = ? ORDER BY step, parent, rank", (rid, clip_key, int(class_idx)))]
        for r in rows:
            r["label_layers"] = json.loads(r["label_layers"])
        return self.label_path_rows(rows, run_id=rid)

    # ---------------------------------------------------------------- localisation
    def write_localisation(self, dataset: str, rows: Iterable[Mapping[str, Any]], *, run_id: int | None = None) -> None:
        """Replace a dataset's localisation scores: rows `{method, score, class_idx, frame, value, n}`
        (class_idx -1: all classes; frame -1: all frames)."""
        rid = self.run_id(run_id)
        vals = [(rid, dataset, r["method"], r["score"], int(r["class_idx"]), int(r["frame"]), _num(r["value"]),
                 int(r["n"])) for r in rows]
        with self.transaction() as c:
            c.execute("DELETE FROM localisation WHERE run_id = ? AND dataset = ?", (rid, dataset))
            c.executemany("INSERT INTO localisation VALUES (?,?,?,?,?,?,?,?)", vals)

    def localisation(self, dataset: str | None = None, run_id: int | None = None) -> list[dict]:
        """Localisation rows (all datasets unless one is named)."""
        return self._select("localisation", self.run_id(run_id), "dataset, method, score, class_idx, frame",
                            dataset=dataset)

    def _select(self, table: str, rid: int, order: str, **equal: Any) -> list[dict]:
        """A run's rows of `table` where each column given a value (not None) equals it, in `order`."""
        given = {k: v for k, v in equal.items() if v is not None}
        sql = " AND ".join([f"SELECT * FROM {table} WHERE run_id = ?", *(f"{k} = ?" for k in given)])
        return [dict(r) for r in self.conn.execute(f"{sql} ORDER BY {order}", [rid, *given.values()])]

    # ---------------------------------------------------------------- planted-bias test
    def write_bias(self, dataset: str, action: str, texture: str, summary: Mapping[str, Any], *,
                   run_id: int | None = None) -> None:
        """Replace the bias test of (dataset, action, texture): its JSON summary (`mmit_interp.analysis.bias.run_bias`)."""
        rid = self.run_id(run_id)
        with self.transaction() as c:
            c.execute("INSERT OR REPLACE INTO bias VALUES (?,?,?,?,?,?)",
                      (rid, dataset, action, texture, _j(summary), time.time()))

    def bias(self, action: str | None = None, run_id: int | None = None) -> list[dict]:
        """Stored bias tests (of one biased action unless None), newest first, with `summary` decoded."""
        rows = self._select("bias", self.run_id(run_id), "analysed_at DESC, rowid DESC", action=action)
        for r in rows:
            r["summary"] = json.loads(r["summary"])
        return rows

    # ---------------------------------------------------------------- explanation methods x metrics
    def write_explanations(self, dataset: str, rows: Iterable[Mapping[str, Any]], *, run_id: int | None = None) -> None:
        """Replace a dataset's explanation table: rows `{method, metric, mean, lo, hi, n}` (`mmit_interp.explain.table`)."""
        rid = self.run_id(run_id)
        vals = [(rid, dataset, r["method"], r["metric"], _num(r["mean"]), _num(r["lo"]), _num(r["hi"]), int(r["n"]))
                for r in rows]
        with self.transaction() as c:
            c.execute("DELETE FROM explanations WHERE run_id = ? AND dataset = ?", (rid, dataset))
            c.executemany("INSERT INTO explanations VALUES (?,?,?,?,?,?,?,?)", vals)

    def explanations(self, dataset: str | None = None, run_id: int | None = None) -> list[dict]:
        """Explanation table rows (all datasets unless one is named)."""
        return self._select("explanations", self.run_id(run_id), "dataset, method, metric", dataset=dataset)

    # ---------------------------------------------------------------- motion vs appearance per unit
    def write_unit_motion(self, dataset: str, layer: str, rows: Iterable[Mapping[str, Any]], *,
                          run_id: int | None = None) -> None:
        """Replace one (dataset, layer)'s motion scores: rows `{unit, score, d_frozen, d_shuffled, d_appearance, n}`
        (`mmit_interp.analysis.motion`; score None for a unit no probe moved)."""
        rid = self.run_id(run_id)
        now = time.time()
        vals = [(rid, dataset, layer, int(r["unit"]), _num(r["score"]), _num(r["d_frozen"]), _num(r["d_shuffled"]),
                 _num(r["d_appearance"]), int(r["n"]), now) for r in rows]
        with self.transaction() as c:
            c.execute("DELETE FROM unit_motion WHERE run_id = ? AND dataset = ? AND layer = ?", (rid, dataset, layer))
            c.executemany("INSERT INTO unit_motion VALUES (?,?,?,?,?,?,?,?,?,?)", vals)

    def unit_motion(self, layer: str, dataset: str | None = None, run_id: int | None = None) -> dict[int, float | None]:
        """`{unit: motion score in [0, 1]}` of a layer (its dissected module name, e.g. `layer4`), from the
        named dataset or else the one analysed last; `{}` when the layer has no motion scores."""
        rid = self.run_id(run_id)
        if dataset is None:
            row = self.conn.execute("SELECT dataset FROM unit_motion WHERE run_id = ? AND layer = ? "
                                    "ORDER BY analysed_at DESC, rowid DESC LIMIT 1", (rid, layer)).fetchone()
            if row is None:
                return {}
            dataset = row["dataset"]
        return {r["unit"]: r["score"] for r in self.conn.execute(
            "SELECT unit, score FROM unit_motion WHERE run_id = ? AND dataset = ? AND layer = ? ORDER BY unit",
            (rid, dataset, layer))}

    def motion_layers(self, dataset: str | None = None, run_id: int | None = None) -> list[dict]:
        """Per (dataset, layer), in network order: units, units scored, mean score and the share of
        scored units above 0.5 (motion-dominated)."""
        rid = self.run_id(run_id)
        sql = ("SELECT dataset, layer, COUNT(*) AS n_units, COUNT(score) AS n_scored, AVG(score) AS mean, "
               "AVG(CASE WHEN score > 0.5 THEN 1.0 WHEN score IS NOT NULL THEN 0.0 END) AS share_motion "
               "FROM unit_motion WHERE run_id = ?")
        args: list[Any] = [rid]
        if dataset is not None:
            sql += " AND dataset = ?"
            args.append(dataset)
        rows = [dict(r) for r in self.conn.execute(sql + " GROUP BY dataset, layer", args)]
        return sorted(rows, key=lambda d: (d["dataset"], _block_order(d["layer"][max(d["layer"].find("layer"), 0):])))

    # ---------------------------------------------------------------- compositional unit labels
    def write_unit_formulas(self, layer: str, concept_set: str, rows: Iterable[Mapping[str, Any]], *,
                            run_id: int | None = None) -> int:
        """Replace one (layer, concept set)'s compositional labels: rows as `FormulaLabel.as_dict()`
        (`dissect.compose`: formula, length, plain IoU, best single label and its IoU, gain, terms);
        returns the count."""
        rid = self.run_id(run_id)
        vals = [(rid, layer, concept_set, int(r["unit"]), r["formula"], int(r["length"]), _num(r["iou"]), r["label"],
                 _num(r["label_iou"]), _num(r["gain"]), _j(r["terms"])) for r in rows]
        with self.transaction() as c:
            c.execute("DELETE FROM unit_formulas WHERE run_id = ? AND layer = ? AND concept_set = ?",
                      (rid, layer, concept_set))
            c.executemany("INSERT INTO unit_formulas VALUES (?,?,?,?,?,?,?,?,?,?,?)", vals)
        return len(vals)

    def unit_formulas(self, layer: str, concept_set: str | None = None, run_id: int | None = None) -> list[dict]:
        """A layer's compositional labels by unit (all concept sets unless one is named), `terms` as
        `[[op, label number], ...]`."""
        rows = self._select("unit_formulas", self.run_id(run_id), "concept_set, unit", layer=layer,
                            concept_set=concept_set)
        return [{**r, "terms": json.loads(r["terms"])} for r in rows]


def _unit_row(r: sqlite3.Row) -> dict:
    d = dict(r)
    d["runner_ups"] = json.loads(d["runner_ups"])
    d["per_category"] = json.loads(d["per_category"])
    d["extra"] = json.loads(d["extra"])
    d["interpretable"] = bool(d["interpretable"])
    return d


def _block_order(name: str) -> tuple:
    """Sort key putting `stem` first and `layerS.B` in network order."""
    if name == "stem":
        return (0, 0, 0)
    parts = name.replace("layer", "").split(".")
    try:
        return (1, *(int(p) for p in parts), 0)[:3]
    except ValueError:
        return (2, 0, 0)


def _migrate_units(c: sqlite3.Connection) -> None:
    """Bring a schema-1 store's `units` rows to schema 2, once, on open: per-category bests move from
    `extra`'s `<cat>_label` / `<cat>_iou` keys to the `per_category` column, runner-ups stored as
    `[label, iou(, category)]` lists or with `name` become `{label, category, iou}`, and `extra` keeps
    only `label_number` and `threshold` (it also held the record's `layer`, a copy of the column)."""
    if any(r[1] == "per_category" for r in c.execute("PRAGMA table_info(units)")):
        return
    c.execute("ALTER TABLE units ADD COLUMN per_category TEXT NOT NULL DEFAULT '[]'")
    for key, ru, extra in c.execute("SELECT rowid, runner_ups, extra FROM units").fetchall():
        ex = json.loads(extra)
        cats = [k[: -len("_label")] for k in ex if k.endswith("_label") and k[: -len("_label")] + "_iou" in ex]
        per = [{"label": ex.pop(f"{k}_label"), "category": k, "iou": ex.pop(f"{k}_iou")} for k in cats]
        ex.pop("layer", None)
        ups = [{"label": r.get("label") or r.get("name"), "category": r.get("category"), "iou": r.get("iou")}
               if isinstance(r, dict) else {"label": r[0], "category": r[2] if len(r) > 2 else None, "iou": r[1]}
               for r in json.loads(ru) if isinstance(r, dict) or len(r) >= 2]
        c.execute("UPDATE units SET runner_ups = ?, extra = ?, per_category = ? WHERE rowid = ?",
                  (_j(ups), _j(ex), _j(per), key))
