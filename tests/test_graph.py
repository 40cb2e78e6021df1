"""Graph validation: every mistake is refused before queueing, naming the node and the field."""

from __future__ import annotations

import pytest

from engine.errors import BadRequest
from engine.graph import graph as graphs
from engine.graph.node import NODES
import engine.nodes  # noqa: F401
from protocol.errors import ProtocolError


def base_graph(model="tiny-sd15"):
    return {"nodes": {"m": {"type": "load_model", "model": model},
                      "p": {"type": "prompt", "text": "a fox"},
                      "n": {"type": "noise", "seed": 1, "width": 64, "height": 64},
                      "d": {"type": "denoise", "steps": 2},
                      "v": {"type": "vae_decode"},
                      "o": {"type": "output", "name": "fox"}},
            "edges": [{"from": ["m", "model"], "to": ["p", "model"]},
                      {"from": ["m", "model"], "to": ["d", "model"]},
                      {"from": ["p", "conditioning"], "to": ["d", "conditioning"]},
                      {"from": ["n", "noise"], "to": ["d", "noise"]},
                      {"from": ["m", "model"], "to": ["v", "model"]},
                      {"from": ["d", "latents"], "to": ["v", "latents"]},
                      {"from": ["v", "image"], "to": ["o", "image"]}]}


def refused(raw):
    with pytest.raises(BadRequest) as e:
        graphs.validate(raw)
    return e.value


def test_valid_graph_orders_dependencies_first():
    g = graphs.validate(base_graph())
    pos = {n: i for i, n in enumerate(g.order)}
    assert pos["m"] < pos["p"] < pos["d"] < pos["v"] < pos["o"] and pos["n"] < pos["d"]
    assert g.output_nodes() == ["o"]


def test_unknown_node_type():
    g = base_graph()
    g["nodes"]["x"] = {"type": "teleport"}
    err = refused(g)
    assert err.details == {"node": "x", "field": "type"} and "teleport" in err.message


def test_missing_input():
    g = base_graph()
    g["edges"] = [e for e in g["edges"] if e["to"] != ["d", "conditioning"]]
    err = refused(g)
    assert err.details == {"node": "d", "field": "conditioning"} and "missing input" in err.message


def test_type_mismatch():
    g = base_graph()
    g["edges"].append({"from": ["n", "noise"], "to": ["v", "latents"]})
    g["edges"] = [e for e in g["edges"] if e["to"] != ["v", "latents"] or e["from"][0] == "n"]
    err = refused(g)
    assert err.details == {"node": "v", "field": "latents"} and "takes latents" in err.message


def test_cycle():
    g = base_graph()
    g["nodes"]["c1"] = {"type": "resize", "width": 8, "height": 8}
    g["nodes"]["c2"] = {"type": "resize", "width": 8, "height": 8}
    g["edges"] += [{"from": ["c1", "image"], "to": ["c2", "image"]}, {"from": ["c2", "image"], "to": ["c1", "image"]}]
    err = refused(g)
    assert "cycle" in err.message and err.details["node"] in ("c1", "c2")


def test_bad_literals_and_links():
    g = base_graph()
    g["nodes"]["d"]["steps"] = "20"            # strings are not numbers
    assert refused(g).details == {"node": "d", "field": "steps"}
    g = base_graph()
    g["nodes"]["n"]["width"] = 100              # not a multiple of 8
    assert refused(g).details == {"node": "n", "field": "width"}
    g = base_graph()
    g["nodes"]["d"]["bogus"] = 1
    assert refused(g).details == {"node": "d", "field": "bogus"}
    g = base_graph()
    g["nodes"]["v"]["latents"] = [1, 2]        # link-only input given literally
    assert refused(g).details == {"node": "v", "field": "latents"}
    g = base_graph()
    g["edges"].append({"from": ["nope", "x"], "to": ["o", "image"]})
    assert refused(g).details["node"] == "o"
    g = base_graph()
    g["edges"].append({"from": ["m", "model"], "to": ["p", "model"]})
    assert "twice" in refused(g).message
    g = base_graph()
    g["nodes"]["d"]["version"] = "2.0.0"
    assert refused(g).details == {"node": "d", "field": "version"}


def test_no_output_and_shape_errors():
    g = base_graph()
    del g["nodes"]["o"]
    g["edges"] = [e for e in g["edges"] if e["to"][0] != "o"]
    assert "no output" in refused(g).message
    for bad in (None, [], {"nodes": []}, {"nodes": {}}, {"nodes": {"a b": {"type": "noise"}}},
                {"nodes": {"a": {"type": "noise"}}, "edges": "x"}, {"nodes": {"a": {}}}):
        refused(bad)


def test_registry_has_the_documented_nodes():
    for t in ("load_model", "prompt", "noise", "denoise", "vae_decode", "crop", "resize", "paste", "mask_grow",
              "mask_blur", "mask_from_alpha", "image_input", "mask_input", "output"):
        assert t in NODES, t
    assert all(cls.version for cls in NODES.values())


def test_graph_submit_refuses_before_queueing(spine_server):
    c = spine_server.client()
    g = base_graph()
    g["nodes"]["x"] = {"type": "teleport"}
    with pytest.raises(ProtocolError) as e:
        c.call("graph.submit", {"graph": g})
    assert e.value.code == "bad_request" and e.value.details == {"node": "x", "field": "type"}
    with pytest.raises(ProtocolError) as e:
        c.call("graph.submit", {"graph": base_graph("no-such-model")})
    assert e.value.code == "bad_request" and "unknown model" in e.value.message
    assert c.call("job.list")["jobs"] == []
    schema = c.call("nodes.list")["nodes"]
    assert schema["denoise"]["inputs"]["steps"] == {"type": "int", "required": False, "default": 20}
    assert schema["vae_decode"]["outputs"] == {"image": "image"}
    c.close()
