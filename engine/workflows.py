"""Saved workflows: a node graph plus the parameters it exposes to plug-ins (SPEC.md §11).

A parameter maps one (node id, input field) of the graph to a typed value a host app shows as a native
widget. Saving checks everything once: the graph (node types known, versions compatible, every input valid),
each parameter (its node and field exist, the field takes a literal of the parameter's type and is not fed by
an edge, the default passes min/max/choices and the node's own constraints). Every node of the stored graph
carries the version of its type at save time; running re-checks those versions against this engine, so a
workflow saved for an older or newer node gives a clear bad_request instead of a strange failure.

Used by engine/ops/workflows.py (wire ops) and engine/cli/workflows.py (import/export JSON files).
"""

from __future__ import annotations

import copy
import json
import re
import secrets
import time
import typing
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .errors import BadRequest, NotFound
from .graph import graph as graphs
from .graph.node import NODES
from .layers import Layer

FILE_FORMAT = 1                      # "paintbridge_workflow" in exported files
NAME_RE = re.compile(r"^[^\x00-\x1f\x7f]{1,128}$")
PARAM_TYPES = ("int", "float", "str", "bool", "image", "mask")
# which node-field types a parameter type may drive
FIELD_TYPES = {"int": ("int", "float"), "float": ("float",), "str": ("str",), "bool": ("bool",)}
LAYER_NODES = {"image": "image_input", "mask": "mask_input"}
PLACEHOLDER_LAYER = {"image": {"sha256": "0" * 64, "w": 8, "h": 8, "format": "rgba8", "x": 0, "y": 0},
                     "mask": {"sha256": "0" * 64, "w": 8, "h": 8, "format": "gray8", "x": 0, "y": 0}}


class Param(BaseModel):
    """One exposed parameter (the exact wire/file shape; see SPEC.md)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
    type: Literal["int", "float", "str", "bool", "image", "mask"]
    node: str = Field(min_length=1, max_length=64)
    field: str = Field(min_length=1, max_length=64)
    label: str = Field(default="", max_length=128)
    description: str = Field(default="", max_length=2000)
    default: Any = None
    min: int | float | None = None
    max: int | float | None = None
    step: int | float | None = None
    choices: list[int | float | str] | None = Field(default=None, min_length=1, max_length=1000)
    multiline: bool = False
    required: bool | None = None      # output only (default is None); accepted and recomputed on import

    @model_validator(mode="after")
    def shape(self):
        numeric = self.type in ("int", "float")
        if not numeric and (self.min is not None or self.max is not None or self.step is not None):
            raise ValueError(f"min/max/step only apply to int and float parameters, not {self.type}")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min {self.min} is more than max {self.max}")
        if self.choices is not None and self.type not in ("int", "float", "str"):
            raise ValueError(f"choices only apply to int, float and str parameters, not {self.type}")
        if self.multiline and self.type != "str":
            raise ValueError("multiline only applies to str parameters")
        return self


class WorkflowIn(BaseModel):
    """workflows.save arguments and the exported file's content (plus `paintbridge_workflow` in files)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    name: str = Field(min_length=1, max_length=128)
    description: str = Field(default="", max_length=10000)
    graph: dict
    params: list[Param] = Field(default_factory=list, max_length=200)


# ---- versions -----------------------------------------------------------------------------------------------------
def _version_tuple(v: str) -> tuple[int, ...]:
    parts = v.split(".")
    if not 1 <= len(parts) <= 3 or not all(p.isdigit() for p in parts):
        raise ValueError(v)
    return tuple(int(p) for p in parts) + (0,) * (3 - len(parts))


def check_nodes(graph: Any, where: str) -> None:
    """Every node's type exists here and its recorded version is one this engine runs."""
    if not isinstance(graph, dict) or not isinstance(graph.get("nodes"), dict):
        raise BadRequest(f"{where}: a graph is a map {{nodes: {{id: node}}, edges: [...]}}", details={"field": "graph"})
    for nid, spec in graph["nodes"].items():
        if not isinstance(spec, dict) or not isinstance(spec.get("type"), str):
            raise BadRequest(f"{where}: node {nid!r} needs a 'type'", details={"node": nid, "field": "type"})
        cls = NODES.get(spec["type"])
        if cls is None:
            raise BadRequest(f"{where}: node {nid!r} has the unknown node type {spec['type']!r}: this engine has "
                             "no such node (it may come from an extension or a newer Paintbridge)",
                             details={"node": nid, "field": "type", "type": spec["type"]})
        saved = spec.get("version")
        if saved is None:
            continue
        try:
            have, want = _version_tuple(cls.version), _version_tuple(saved)
        except (ValueError, AttributeError):
            raise BadRequest(f"{where}: node {nid!r}: version {saved!r} is not a version like 1.0.0",
                             details={"node": nid, "field": "version"}) from None
        if want[0] != have[0] or want[:2] > have[:2]:
            why = ("the workflow is outdated: rebuild this node in a graph editor and save the workflow again"
                   if want < have else "the workflow needs a newer Paintbridge engine")
            raise BadRequest(f"{where}: node {nid!r} ({spec['type']}) was saved with version {saved}, this engine "
                             f"has {cls.version}: {why}",
                             details={"node": nid, "field": "version", "saved": saved, "engine": cls.version})


def stamp_versions(graph: dict) -> dict:
    """A copy of the graph where every node records its type's version (keeping recorded ones)."""
    out = copy.deepcopy(graph)
    for spec in out["nodes"].values():
        spec.setdefault("version", NODES[spec["type"]].version)
    return out


# ---- parameters -----------------------------------------------------------------------------------------------------
def _field_type(cls, field: str) -> tuple[str, list | None]:
    """(type name, Literal choices or None) of a node input."""
    f = cls.model_fields[field]
    ann = f.annotation
    for a in (ann, *typing.get_args(ann)):
        if typing.get_origin(a) is Literal:
            return "str", list(typing.get_args(a))
    return cls.inputs()[field][0], None


def check_value(p: Param, value: Any) -> Any:
    """A parameter value, checked against its type, min/max and choices (BadRequest naming the parameter)."""
    def bad(problem: str):
        return BadRequest(f"parameter {p.name!r}: {problem}", details={"param": p.name, "node": p.node,
                                                                        "field": p.field})
    if p.type == "int":
        if not isinstance(value, int) or isinstance(value, bool):
            raise bad(f"expected an integer, got {type(value).__name__}")
    elif p.type == "float":
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise bad(f"expected a number, got {type(value).__name__}")
        value = float(value)
    elif p.type == "str":
        if not isinstance(value, str):
            raise bad(f"expected a string, got {type(value).__name__}")
        if len(value) > 10000:
            raise bad("longer than 10000 characters")
    elif p.type == "bool":
        if not isinstance(value, bool):
            raise bad(f"expected true or false, got {type(value).__name__}")
    else:   # image / mask: a layer
        try:
            value = Layer.model_validate(value).model_dump(exclude_none=True)
        except ValidationError as exc:
            e = exc.errors(include_url=False, include_input=False)[0]
            raise bad(f"not a layer: {'.'.join(map(str, e['loc'])) or 'value'}: {e['msg']}") from None
        want = "rgba8" if p.type == "image" else "gray8"
        if value["format"] != want:
            raise bad(f"an {p.type} parameter takes a {want} layer")
        return value
    if p.min is not None and value < p.min:
        raise bad(f"{value} is less than the minimum {p.min}")
    if p.max is not None and value > p.max:
        raise bad(f"{value} is more than the maximum {p.max}")
    if p.choices is not None and value not in p.choices:
        raise bad(f"{value!r} is not one of {p.choices}")
    return value


def normalize_params(graph: dict, params: list[Param]) -> list[dict]:
    """Check each parameter against the (version-checked) graph and return the stored shape."""
    nodes = graph["nodes"]
    fed = {(e["to"][0], e["to"][1]) for e in graph.get("edges") or []
           if isinstance(e, dict) and isinstance(e.get("to"), list) and len(e["to"]) == 2}
    seen_names, seen_targets, out = set(), set(), []
    for i, p in enumerate(params):
        def bad(problem: str, field: str = "node"):
            return BadRequest(f"parameter {p.name!r}: {problem}",
                              details={"param": p.name, "field": f"params.{i}.{field}"})
        if p.name in seen_names:
            raise bad("two parameters have this name", "name")
        seen_names.add(p.name)
        if (p.node, p.field) in seen_targets:
            raise bad(f"another parameter already sets {p.node}.{p.field}", "field")
        seen_targets.add((p.node, p.field))
        if p.node not in nodes:
            raise bad(f"the graph has no node {p.node!r}")
        spec = nodes[p.node]
        cls = NODES[spec["type"]]
        if p.field not in cls.model_fields or p.field in ("type", "version"):
            raise bad(f"node {p.node!r} ({cls.type}) has no input {p.field!r}", "field")
        if (p.node, p.field) in fed:
            raise bad(f"{p.node}.{p.field} is fed by an edge; a parameter sets a literal input", "field")
        if p.type in LAYER_NODES:
            if cls.type != LAYER_NODES[p.type] or p.field != "layer":
                raise bad(f"an {p.type} parameter drives the 'layer' input of a node of type "
                          f"{LAYER_NODES[p.type]}", "type")
        else:
            if cls.link_only(p.field):
                raise bad(f"{p.node}.{p.field} takes a {cls.inputs()[p.field][0]} from an edge, not a value", "field")
            ftype, literal_choices = _field_type(cls, p.field)
            if ftype not in FIELD_TYPES[p.type]:
                raise bad(f"{p.node}.{p.field} takes {ftype}, not {p.type}", "type")
            if literal_choices is not None:
                if p.choices is None:
                    p = p.model_copy(update={"choices": literal_choices})
                elif not set(p.choices) <= set(literal_choices):
                    raise bad(f"choices must be among {literal_choices}", "choices")
        default = p.default
        if default is None:
            if p.field in spec:
                default = spec[p.field]
            else:
                f = cls.model_fields[p.field]
                if not f.is_required() and f.default is not None:
                    default = f.default
        if default is not None:
            try:
                default = check_value(p, default)
            except BadRequest as exc:
                raise bad(f"default: {exc.message.split(': ', 1)[1]}", "default") from None
        d = p.model_dump()
        d.update(default=default, required=default is None, label=p.label or p.name.replace("_", " ").capitalize())
        if p.type not in ("int", "float"):
            for k in ("min", "max", "step"):
                d.pop(k)
        if p.type not in ("int", "float", "str"):
            d.pop("choices")
        if p.type != "str":
            d.pop("multiline")
        out.append(d)
    return out


def substitute(graph: dict, params: list[dict], values: dict, *, placeholders: bool = False) -> dict:
    """The graph with parameter values (given, else defaults) written into their node fields."""
    known = {p["name"] for p in params}
    unknown = sorted(set(values) - known)
    if unknown:
        raise BadRequest(f"unknown parameter(s) {unknown}: this workflow takes {sorted(known) or 'none'}",
                         details={"params": unknown})
    out = copy.deepcopy(graph)
    for pd in params:
        p = Param.model_validate({k: v for k, v in pd.items() if k != "required"})
        if pd["name"] in values:
            value = check_value(p, values[pd["name"]])
        elif pd.get("default") is not None:
            value = pd["default"]
        elif placeholders:
            value = (PLACEHOLDER_LAYER[p.type] if p.type in LAYER_NODES
                     else p.choices[0] if p.choices else p.min if p.min is not None
                     else {"int": 0, "float": 0.0, "str": "", "bool": False}[p.type])
        else:
            raise BadRequest(f"parameter {p.name!r} is required: give it in values", details={"param": p.name})
        out["nodes"][p.node][p.field] = value
    return out


def _validate_graph(graph: dict, params: list[dict], where: str) -> None:
    try:
        graphs.validate(graph)
    except BadRequest as exc:
        d = exc.details or {}
        hit = [p["name"] for p in params if p["node"] == d.get("node") and p["field"] == d.get("field")]
        msg = f"{where}: {exc.message}" + (f" (parameter {hit[0]!r})" if hit else "")
        raise BadRequest(msg, details={**d, **({"param": hit[0]} if hit else {})}) from None


def prepare(wf: WorkflowIn) -> tuple[str, dict, list[dict]]:
    """Check a workflow for saving: (name, graph with node versions, normalized params)."""
    name = wf.name.strip()
    if not NAME_RE.match(name):
        raise BadRequest("a workflow name is 1-128 printable characters", details={"field": "name"})
    where = f"workflow {name!r}"
    check_nodes(wf.graph, where)
    graph = stamp_versions(wf.graph)
    params = normalize_params(graph, wf.params)
    _validate_graph(substitute(graph, params, {}, placeholders=True), params, where)
    return name, graph, params


def build_run_graph(row: dict, values: dict) -> dict:
    """The graph to queue for a stored workflow with these parameter values (everything re-checked)."""
    graph, params = json.loads(row["graph"]), json.loads(row["params"])
    where = f"workflow {row['name']!r}"
    check_nodes(graph, where)
    out = substitute(graph, params, values)
    _validate_graph(out, params, where)
    return out


# ---- storage (database thread) -----------------------------------------------------------------------------------
def public(row: dict, full: bool = False) -> dict:
    out = {"id": row["id"], "name": row["name"], "description": row["description"],
           "params": json.loads(row["params"]), "created": row["created"], "updated": row["updated"]}
    if full:
        out["graph"] = json.loads(row["graph"])
    return out


def save(db, uid: int, name: str, description: str, graph: dict, params: list[dict], replace: bool = True) -> dict:
    now = time.time()
    rows = list(db.query("SELECT * FROM workflows WHERE user_id = ? AND name = ?", [uid, name]))
    if rows and not replace:
        raise BadRequest(f"you already have a workflow named {name!r}", details={"field": "name"})
    row = {"id": rows[0]["id"] if rows else secrets.token_hex(6), "user_id": uid, "name": name,
           "description": description, "graph": json.dumps(graph), "params": json.dumps(params),
           "created": rows[0]["created"] if rows else now, "updated": now}
    db["workflows"].upsert(row, pk="id")
    return {**public(row), "replaced": bool(rows)}


def get(db, uid: int, name: str) -> dict:
    rows = list(db.query("SELECT * FROM workflows WHERE user_id = ? AND name = ?", [uid, name]))
    if not rows:
        raise NotFound(f"no workflow named {name!r}")
    return rows[0]


def list_(db, uid: int) -> list[dict]:
    return [public(r) for r in db.query("SELECT * FROM workflows WHERE user_id = ? ORDER BY name COLLATE NOCASE",
                                        [uid])]


def delete(db, uid: int, name: str) -> None:
    get(db, uid, name)
    db.execute("DELETE FROM workflows WHERE user_id = ? AND name = ?", [uid, name])


def to_file(row: dict) -> dict:
    return {"paintbridge_workflow": FILE_FORMAT, "name": row["name"], "description": row["description"],
            "graph": json.loads(row["graph"]), "params": json.loads(row["params"])}


def from_file(data: Any, name: str | None = None) -> WorkflowIn:
    """Parse an exported workflow file's JSON (BadRequest on anything else)."""
    if not isinstance(data, dict) or "paintbridge_workflow" not in data:
        raise BadRequest("not a Paintbridge workflow file (no 'paintbridge_workflow' key)")
    fmt = data.pop("paintbridge_workflow")
    if fmt != FILE_FORMAT:
        raise BadRequest(f"workflow file format {fmt!r} is not supported (this engine reads {FILE_FORMAT})")
    if name:
        data["name"] = name
    try:
        return WorkflowIn.model_validate(data)
    except ValidationError as exc:
        e = exc.errors(include_url=False, include_input=False)[0]
        raise BadRequest(f"workflow file: {'.'.join(map(str, e['loc'])) or 'file'}: {e['msg']}") from None
