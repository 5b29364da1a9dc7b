"""Per-row feature contributions of a fitted tree ensemble, fast enough to score millions.

Two methods, both in log-odds of the classifier's raw score:

``path`` (the default for scoring): Saabas path attributions. Walking a row down a tree,
each split moves the tree's expected output from the node's value to the child's; the
change is credited to the split's feature. Summed over the trees, a row's contributions
plus the trees' root values equal its raw score exactly. XGBoost ships this method
(``pred_contribs=True, approx_contribs=True``); here it is implemented once for all three
families from each library's own tree dump and leaf indices, which costs O(trees x depth)
per row instead of TreeSHAP's O(trees x leaves x depth^2).

``shap``: exact TreeSHAP from each library (``pred_contribs`` / ``ShapValues``): the
consistent attribution, about 20x slower on depth-4 ensembles (see docs/data-engineers.md).

The path table of a model (for every tree and leaf: which features its path splits on and
by how much each split moved the expected value) is built once and kept.
"""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import sparse

log = logging.getLogger(__name__)

METHODS = ("path", "shap")


@dataclass(frozen=True)
class PathTable:
    """Every leaf of an ensemble as a sparse row of per-feature deltas.

    ``deltas`` has one row per leaf of every tree (tree ``t``'s leaves start at
    ``offsets[t]``) and one column per feature; ``roots`` is each tree's expected value.
    """

    deltas: sparse.csr_matrix
    offsets: np.ndarray
    roots: np.ndarray

    def contributions(self, leaves: np.ndarray) -> np.ndarray:
        """Contributions per (row, feature) from the leaf index each row reached per tree."""
        rows, trees = leaves.shape
        if rows == 0:
            return np.zeros((0, self.deltas.shape[1]))
        index = (np.asarray(leaves, dtype=np.int64) + self.offsets[None, :]).ravel()
        reached = sparse.csr_matrix(
            (
                np.ones(index.size, dtype=np.float64),
                index.astype(np.int32, copy=False),
                np.arange(0, index.size + 1, trees, dtype=np.int64),
            ),
            shape=(rows, self.deltas.shape[0]),
        )
        return (reached @ self.deltas).toarray()


def _table(paths: list[list[tuple[int, int, float]]], n_leaves: list[int], roots, n_features):
    """Assemble per-tree ``(leaf, feature, delta)`` triples into a :class:`PathTable`."""
    offsets = np.concatenate([[0], np.cumsum(n_leaves)[:-1]]).astype(np.int64)
    rows, cols, vals = [], [], []
    for t, triples in enumerate(paths):
        for leaf, feature, delta in triples:
            rows.append(offsets[t] + leaf)
            cols.append(feature)
            vals.append(delta)
    deltas = sparse.coo_matrix(
        (np.asarray(vals, dtype=np.float64), (np.asarray(rows), np.asarray(cols))),
        shape=(int(sum(n_leaves)), n_features),
    ).tocsr()  # duplicate (leaf, feature) pairs (a feature split twice on a path) add up
    return PathTable(deltas, offsets, np.asarray(roots, dtype=np.float64))


# --------------------------------------------------------------------------- per family


def _lightgbm_table(booster, n_features: int) -> PathTable:
    """From ``dump_model``: nodes carry ``internal_value``, leaves ``leaf_value``."""
    paths, n_leaves, roots = [], [], []
    for info in booster.dump_model()["tree_info"]:
        node = info["tree_structure"]
        triples: list[tuple[int, int, float]] = []
        if "leaf_value" in node and "split_feature" not in node:  # a one-leaf tree
            roots.append(float(node["leaf_value"]))
            paths.append([])
            n_leaves.append(int(info.get("num_leaves", 1)))
            continue
        roots.append(float(node["internal_value"]))
        stack = [(node, [])]
        while stack:
            current, path = stack.pop()
            if "leaf_index" in current:
                triples.extend((int(current["leaf_index"]), f, d) for f, d in path)
                continue
            value = float(current["internal_value"])
            feature = int(current["split_feature"])
            for side in ("left_child", "right_child"):
                child = current[side]
                child_value = float(child.get("internal_value", child.get("leaf_value")))
                stack.append((child, [*path, (feature, child_value - value)]))
        paths.append(triples)
        n_leaves.append(int(info["num_leaves"]))
    return _table(paths, n_leaves, roots, n_features)


def _xgboost_table(booster, feature_names: list[str]) -> PathTable:
    """From ``trees_to_dataframe``: a node's expected value is the cover-weighted mean of
    its children's (as XGBoost's own ``approx_contribs`` computes it); leaves are indexed
    by node id, which is what ``pred_leaf`` returns."""
    frame = booster.trees_to_dataframe()
    position = {name: j for j, name in enumerate(feature_names)}
    paths, n_leaves, roots = [], [], []
    for _, tree in frame.groupby("Tree", sort=True):
        root, triples, size = _xgboost_tree(tree, position)
        roots.append(root)
        paths.append(triples)
        n_leaves.append(size)
    return _table(paths, n_leaves, roots, len(feature_names))


def _xgboost_tree(tree: pd.DataFrame, position: dict[str, int]):
    """One tree's root value, ``(leaf node id, feature, delta)`` triples and id space."""
    nodes = {int(r.Node): r for r in tree.itertuples(index=False)}
    ids = {r.ID: int(r.Node) for r in tree.itertuples(index=False)}
    children = {n: (ids[r.Yes], ids[r.No]) for n, r in nodes.items() if r.Feature != "Leaf"}
    mean: dict[int, float] = {}
    for node_id in sorted(nodes, reverse=True):  # children have larger ids than parents
        r = nodes[node_id]
        if node_id not in children:
            mean[node_id] = float(r.Gain)
            continue
        yes, no = children[node_id]
        cy, cn = float(nodes[yes].Cover), float(nodes[no].Cover)
        mean[node_id] = (cy * mean[yes] + cn * mean[no]) / (cy + cn)
    triples = []
    stack: list[tuple[int, list[tuple[int, float]]]] = [(0, [])]
    while stack:
        node_id, path = stack.pop()
        if node_id not in children:
            triples.extend((node_id, f, d) for f, d in path)
            continue
        feature = position[nodes[node_id].Feature]
        for child in children[node_id]:
            stack.append((child, [*path, (feature, mean[child] - mean[node_id])]))
    return mean[0], triples, max(nodes) + 1


def _catboost_table(model, n_features: int) -> PathTable:
    """From the JSON export of oblivious trees: bit ``k`` of a leaf index is the outcome of
    ``splits[k]``, taken as the path from the root; a node's expected value is the
    weight-averaged value of the leaves below it. Values are scaled as CatBoost scales them."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.json"
        model.save_model(str(path), format="json")
        doc = json.loads(path.read_text())
    scale = float(doc.get("scale_and_bias", [1.0])[0])
    flat = {
        int(f["feature_index"]): int(f.get("flat_feature_index", f["feature_index"]))
        for f in doc["features_info"].get("float_features", [])
    }
    paths, n_leaves, roots = [], [], []
    for tree in doc["oblivious_trees"]:
        values = scale * np.asarray(tree["leaf_values"], dtype=np.float64)
        weights = np.asarray(tree.get("leaf_weights") or np.ones_like(values), dtype=np.float64)
        splits = tree["splits"]
        depth = len(splits)
        leaves = np.arange(values.size)

        def expected(prefix_bits: int, low: int, vals=values, w=weights, leaves=leaves) -> float:
            below = (leaves & ((1 << low) - 1)) == prefix_bits
            total = w[below].sum()
            return float(
                (vals[below] * w[below]).sum() / total if total > 0 else vals[below].mean()
            )

        roots.append(expected(0, 0))
        triples = []
        for leaf in range(values.size):
            for k in range(depth):
                split = splits[k]
                if split.get("split_type", "FloatFeature") != "FloatFeature":
                    raise ValueError(f"path attributions need float splits, got {split}")
                before = expected(leaf & ((1 << k) - 1), k)
                after = expected(leaf & ((1 << (k + 1)) - 1), k + 1)
                feature = flat.get(int(split["float_feature_index"]), split["float_feature_index"])
                triples.append((leaf, int(feature), after - before))
        paths.append(triples)
        n_leaves.append(values.size)
    return _table(paths, n_leaves, roots, n_features)


def path_table(family: str, estimator, feature_names: list[str]) -> PathTable:
    """The :class:`PathTable` of one fitted classifier of ``family``."""
    if family == "lightgbm":
        return _lightgbm_table(estimator.booster_, len(feature_names))
    if family == "xgboost":
        return _xgboost_table(estimator.get_booster(), feature_names)
    if family == "catboost":
        return _catboost_table(estimator, len(feature_names))
    raise ValueError(f"unknown model family {family!r}")


def leaf_indices(family: str, estimator, X: pd.DataFrame) -> np.ndarray:
    """The leaf each row reaches in each tree, as the family's path table addresses it."""
    if family == "lightgbm":
        return np.asarray(estimator.booster_.predict(X, pred_leaf=True), dtype=np.int64)
    if family == "xgboost":
        import xgboost as xgb

        leaves = estimator.get_booster().predict(xgb.DMatrix(X), pred_leaf=True)
        return np.asarray(leaves, dtype=np.int64).reshape(len(X), -1)
    if family == "catboost":
        from catboost import Pool

        return np.asarray(estimator.calc_leaf_indexes(Pool(X)), dtype=np.int64)
    raise ValueError(f"unknown model family {family!r}")


def shap_contributions(family: str, estimator, X: pd.DataFrame) -> np.ndarray:
    """Exact TreeSHAP contributions per (row, column), from the family's library."""
    if family == "xgboost":
        import xgboost as xgb

        booster = estimator.get_booster()
        return booster.predict(xgb.DMatrix(X), pred_contribs=True)[:, :-1]
    if family == "lightgbm":
        return np.asarray(estimator.predict_proba(X, pred_contrib=True))[:, :-1]
    if family == "catboost":
        from catboost import Pool

        return estimator.get_feature_importance(Pool(X), type="ShapValues")[:, :-1]
    raise ValueError(f"unknown model family {family!r}")
