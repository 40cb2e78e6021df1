"""Workflows with exposed parameters: save/list/get/delete/run over the wire, import/export with the CLI, node
version checks, through a real engine with the tiny demo SD1.5 model."""

from __future__ import annotations

import copy
import json
import sqlite3

import pytest

from protocol.errors import ProtocolError

from .helpers import GRAPH, PARAMS, RESIZE, app_client, cli_run, errcode, fetch, new_user, pattern, run, upload_rgba


def wf_cli(engine, *args, check=True):
    res = cli_run("workflows", "--data-dir", str(engine.data_dir), *args)
    if check:
        assert res.returncode == 0, res.stderr
    return res

@pytest.fixture(scope="module")
def client(engine_server):
    c = app_client(engine_server, "krita")
    yield c
    c.close()


def test_save_list_get_schema(client):
    saved = client.call("workflows.save", {"name": "Fox", "description": "txt2img", "graph": GRAPH,
                                           "params": PARAMS})
    assert saved["replaced"] is False
    wf = saved["workflow"]
    by = {p["name"]: p for p in wf["params"]}
    # defaults come from the graph's literals, else the node's own default; Literal fields get their choices
    assert by["prompt"] == {"name": "prompt", "type": "str", "node": "p", "field": "text", "label": "Prompt",
                            "description": "", "default": "a red fox", "choices": None, "multiline": True,
                            "required": False}
    assert by["seed"]["default"] == 1 and by["seed"]["min"] == 0 and by["seed"]["max"] is None
    assert by["scheduler"]["choices"][:3] == ["euler", "euler_a", "heun"]   # every sampler id (engine/samplers.py)
    assert "dpmpp_2m_karras" in by["scheduler"]["choices"] and len(by["scheduler"]["choices"]) == 13
    assert by["cfg"]["default"] == 7.0 and by["cfg"]["label"] == "Guidance"
    assert "Fox" in [w["name"] for w in client.call("workflows.list", {})["workflows"]]
    got = client.call("workflows.get", {"name": "Fox"})
    # every node records its type's version
    nodes = client.call("nodes.list", {})["nodes"]
    assert all(spec["version"] == nodes[spec["type"]]["version"] for spec in got["workflow"]["graph"]["nodes"].values())
    assert got["file"]["paintbridge_workflow"] == 1 and got["file"]["params"] == wf["params"]
    # saving again under the same name replaces
    assert client.call("workflows.save", {"name": "Fox", "graph": GRAPH, "params": PARAMS})["replaced"] is True
    assert errcode(client.call, "workflows.save", {"name": "Fox", "graph": GRAPH, "replace": False}).code == \
        "bad_request"


def test_run_substitutes_validated_values(client):
    client.call("workflows.save", {"name": "Fox", "graph": GRAPH, "params": PARAMS})
    job, a = run(client, "workflows.run", {"name": "Fox", "values": {"seed": 5, "prompt": "a cat"}})
    info = client.call("job.get", {"job": job})
    values = {"seed": 5, "prompt": "a cat"}
    assert info["kind"] == "workflow" and info["request"] == {"workflow": "Fox", "values": values}
    _, b = run(client, "workflows.run", {"name": "Fox", "values": {"seed": 5, "prompt": "a cat"}})
    _, c = run(client, "workflows.run", {"name": "Fox", "values": {"seed": 6, "prompt": "a cat", "cfg": 3}})
    assert a[0]["sha256"] == b[0]["sha256"] != c[0]["sha256"]
    # the same graph through graph.submit gives the same pixels
    g = copy.deepcopy(GRAPH)
    g["nodes"]["n"]["seed"], g["nodes"]["p"]["text"] = 5, "a cat"
    _, d = run(client, "graph.submit", {"graph": g})
    assert d[0]["sha256"] == a[0]["sha256"]
    # recorded in the gallery with the workflow's values
    img = client.call("images.get", {"image": a[0]["image_id"]})
    assert img["mode"] == "workflow" and img["meta"]["workflow"] == {"name": "Fox", "values": values}
    assert (img["prompt"], img["seed"], img["steps"]) == ("a cat", 5, 2)
    # values are checked against the schema before anything is queued
    before = len(client.call("job.list", {"limit": 500})["jobs"])
    for values, words in [({"steps": 9}, "maximum"), ({"steps": "3"}, "integer"), ({"seed": -1}, "minimum"),
                          ({"scheduler": "fast"}, "not one of"), ({"cfg": True}, "number"),
                          ({"bogus": 1}, "unknown parameter"), ({"prompt": 3}, "string")]:
        e = errcode(client.call, "workflows.run", {"name": "Fox", "values": values})
        assert e.code == "bad_request" and words in e.message, (values, e.message)
    assert len(client.call("job.list", {"limit": 500})["jobs"]) == before
    assert errcode(client.call, "workflows.run", {"name": "Nope"}).code == "not_found"


def test_image_parameter_and_required(client):
    params = [{"name": "image", "type": "image", "node": "i", "field": "layer", "label": "Layer"},
              {"name": "width", "type": "int", "node": "r", "field": "width", "choices": [16, 32]}]
    wf = client.call("workflows.save", {"name": "Shrink", "graph": RESIZE, "params": params})["workflow"]
    assert wf["params"][0]["required"] is True and wf["params"][0]["default"] is None
    e = errcode(client.call, "workflows.run", {"name": "Shrink"})
    assert e.code == "bad_request" and "'image' is required" in e.message
    img = pattern(64, 32)
    layer = upload_rgba(client, img, 3, 4)
    _, out = run(client, "workflows.run", {"name": "Shrink", "values": {"image": layer, "width": 16}})
    assert (out[0]["w"], out[0]["h"], out[0]["x"], out[0]["y"]) == (16, 16, 3, 4)
    assert fetch(client, out[0]).shape == (16, 16, 4)
    assert client.call("images.get", {"image": out[0]["image_id"]})["parent"] is None
    e = errcode(client.call, "workflows.run", {"name": "Shrink", "values": {"image": {**layer, "format": "gray8"}}})
    assert e.code == "bad_request" and "rgba8" in e.message
    e = errcode(client.call, "workflows.run", {"name": "Shrink", "values": {"image": {**layer, "sha256": "ab" * 32}}})
    assert e.code == "bad_request" and "not a blob you uploaded" in e.message


@pytest.mark.parametrize("params, words", [
    ([{"name": "x", "type": "int", "node": "zz", "field": "seed"}], "no node 'zz'"),
    ([{"name": "x", "type": "str", "node": "n", "field": "seed"}], "takes int, not str"),
    ([{"name": "x", "type": "int", "node": "d", "field": "model"}], "fed by an edge"),
    ([{"name": "x", "type": "int", "node": "n", "field": "nope"}], "has no input 'nope'"),
    ([{"name": "x", "type": "int", "node": "d", "field": "steps", "default": 5000}], "less than or equal to 1000"),
    ([{"name": "x", "type": "int", "node": "n", "field": "seed", "min": 5, "max": 1}], "more than max"),
    ([{"name": "x", "type": "bool", "node": "n", "field": "seed", "choices": [1]}], "choices only apply"),
    ([{"name": "x", "type": "int", "node": "n", "field": "seed"}, {"name": "x", "type": "int", "node": "n",
                                                                  "field": "width"}], "two parameters"),
    ([{"name": "x", "type": "image", "node": "n", "field": "seed"}], "image_input"),
    ([{"name": "bad name", "type": "int", "node": "n", "field": "seed"}], "params.0.name"),
])
def test_bad_parameter_schemas_are_refused(client, params, words):
    e = errcode(client.call, "workflows.save", {"name": "Bad", "graph": GRAPH, "params": params})
    assert e.code == "bad_request" and words in e.message, e.message
    assert "Bad" not in [w["name"] for w in client.call("workflows.list", {})["workflows"]]


def test_unknown_and_outdated_nodes_on_save_and_run(client, engine_server):
    g = copy.deepcopy(GRAPH)
    g["nodes"]["d"]["type"] = "super_denoise"
    e = errcode(client.call, "workflows.save", {"name": "Old", "graph": g})
    assert e.code == "bad_request" and "unknown node type 'super_denoise'" in e.message
    assert e.details["node"] == "d"
    g = copy.deepcopy(GRAPH)
    g["nodes"]["d"]["version"] = "0.3.0"
    e = errcode(client.call, "workflows.save", {"name": "Old", "graph": g})
    assert e.code == "bad_request" and "outdated" in e.message and e.details["saved"] == "0.3.0"
    g["nodes"]["d"]["version"] = "1.9.0"
    e = errcode(client.call, "workflows.save", {"name": "Old", "graph": g})
    assert e.code == "bad_request" and "newer" in e.message
    # a workflow saved fine, then the engine's node moved on (simulated by editing the stored version)
    client.call("workflows.save", {"name": "Old", "graph": GRAPH, "params": PARAMS})
    db = sqlite3.connect(engine_server.data_dir / "paintbridge.db", timeout=30)
    uid = client.user["id"]
    (stored,) = db.execute("SELECT graph FROM workflows WHERE user_id = ? AND name = 'Old'", [uid]).fetchone()
    stored = json.loads(stored)
    stored["nodes"]["n"]["version"] = "0.1.0"
    db.execute("UPDATE workflows SET graph = ? WHERE user_id = ? AND name = 'Old'", [json.dumps(stored), uid])
    db.commit()
    db.close()
    e = errcode(client.call, "workflows.run", {"name": "Old", "values": {"seed": 1}})
    assert e.code == "bad_request" and "node 'n' (noise) was saved with version 0.1.0" in e.message
    client.call("workflows.delete", {"name": "Old"})
    assert errcode(client.call, "workflows.get", {"name": "Old"}).code == "not_found"


def test_other_users_workflows_are_not_found(client, engine_server):
    client.call("workflows.save", {"name": "Private", "graph": GRAPH, "params": PARAMS})
    bob = new_user(engine_server)
    for op in ("workflows.get", "workflows.run", "workflows.delete"):
        assert errcode(bob.call, op, {"name": "Private"}).code == "not_found"
    assert bob.call("workflows.list", {})["workflows"] == []
    bob.close()


def test_cli_export_import_list(client, engine_server, tmp_path):
    client.call("workflows.save", {"name": "Fox", "description": "d", "graph": GRAPH, "params": PARAMS})
    out = tmp_path / "fox.json"
    wf_cli(engine_server, "export", "Fox", "-o", str(out))
    data = json.loads(out.read_text())
    assert data["paintbridge_workflow"] == 1 and data["name"] == "Fox" and len(data["params"]) == 5
    assert all("version" in spec for spec in data["graph"]["nodes"].values())
    res = wf_cli(engine_server, "import", str(out), "--name", "Fox copy")
    assert "imported workflow 'Fox copy' (5 parameters)" in res.stdout
    assert "Fox copy\tprompt:str, seed:int" in wf_cli(engine_server, "list").stdout
    # the running engine sees it at once; the copy runs like the original
    copy_ = client.call("workflows.get", {"name": "Fox copy"})
    assert copy_["workflow"]["params"] == client.call("workflows.get", {"name": "Fox"})["workflow"]["params"]
    _, a = run(client, "workflows.run", {"name": "Fox copy", "values": {"seed": 9}})
    _, b = run(client, "workflows.run", {"name": "Fox", "values": {"seed": 9}})
    assert a[0]["sha256"] == b[0]["sha256"]
    # a file with an outdated or unknown node is refused with a clear message, nothing saved
    data["graph"]["nodes"]["d"]["version"] = "0.1.0"
    bad = tmp_path / "old.json"
    bad.write_text(json.dumps({**data, "name": "Broken"}))
    res = wf_cli(engine_server, "import", str(bad), check=False)
    assert res.returncode == 1 and "outdated" in res.stderr
    bad.write_text(json.dumps({"name": "x", "graph": GRAPH}))
    res = wf_cli(engine_server, "import", str(bad), check=False)
    assert res.returncode == 1 and "not a Paintbridge workflow file" in res.stderr
    assert "Broken" not in wf_cli(engine_server, "list").stdout
    # delete from the command line
    wf_cli(engine_server, "delete", "Fox copy")
    with pytest.raises(ProtocolError):
        client.call("workflows.get", {"name": "Fox copy"})
