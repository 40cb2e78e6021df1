"""`paintbridge plugin build`: each zip has the layout its host installs, bundles only pure Python, and the
Krita plug-in (with everything it bundles) runs on Krita's Python 3.10."""

from __future__ import annotations

import stat
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from .helpers import cli


@pytest.fixture(scope="module")
def zips(tmp_path_factory):
    out = tmp_path_factory.mktemp("zips")
    printed = cli("plugin", "build", "all", "-o", str(out)).split()
    return {name: out / f"paintbridge-{name}.zip" for name in ("krita", "blender", "gimp")} | {"printed": printed}


def names(path):
    with zipfile.ZipFile(path) as zf:
        return {i.filename: i for i in zf.infolist()}


def test_layouts(zips):
    assert len(zips["printed"]) == 3
    krita = names(zips["krita"])
    assert "paintbridge.desktop" in krita and "paintbridge/__init__.py" in krita
    blender = names(zips["blender"])
    assert "paintbridge/blender_manifest.toml" in blender and "paintbridge/__init__.py" in blender
    gimp = names(zips["gimp"])
    main = gimp["paintbridge/paintbridge.py"]
    assert (main.external_attr >> 16) & stat.S_IXUSR, "GIMP needs the plug-in file executable"
    for z in (krita, blender, gimp):
        for mod in ("protocol/session.py", "protocol/client.py", "msgpack/fallback.py", "websockets/__init__.py"):
            assert f"paintbridge/_vendor/{mod}" in z, mod
        compiled = [n for n in z if n.endswith((".so", ".pyd", ".dylib", ".pyc"))]
        assert not compiled, compiled


def test_bundle_imports_from_the_zip_alone(zips, tmp_path):
    """The vendored client imports with nothing from our venv: only the zip's _vendor and the stdlib."""
    with zipfile.ZipFile(zips["gimp"]) as zf:
        zf.extractall(tmp_path)
    vendor = tmp_path / "paintbridge" / "_vendor"
    code = ("import sys; sys.path[:] = [p for p in sys.path if 'site-packages' not in p]; "
            f"sys.path.insert(0, {str(vendor)!r}); "
            "import msgpack, websockets, protocol.session, protocol.client; "
            "assert msgpack.__file__.startswith(sys.path[0]); "
            "from msgpack import fallback; assert msgpack.Packer is fallback.Packer, 'pure-Python msgpack'")
    subprocess.run([sys.executable, "-S", "-c", code], check=True)


def test_krita_bundle_runs_on_python_3_10(zips, tmp_path):
    """Our code is checked by vermin; bundled packages by the Python versions they declare they support."""
    from importlib.metadata import PackageNotFoundError, metadata

    from packaging.specifiers import SpecifierSet

    from engine.plugin_build import OPTIONAL_VENDORED, VENDORED

    with zipfile.ZipFile(zips["krita"]) as zf:
        zf.extractall(tmp_path)
    root = tmp_path / "paintbridge"
    ours = [str(p) for p in root.iterdir() if p.suffix == ".py"] + [str(root / "_vendor" / "protocol")]
    vermin = str(Path(sys.executable).with_name("vermin"))
    res = subprocess.run([vermin, "-t=3.10-", "--no-tips", "--violations", "--eval-annotations", *ours],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
    dists = {"msgpack": "msgpack", "websockets": "websockets", "keyring": "keyring", "jaraco": "jaraco.classes",
             "more_itertools": "more-itertools", "importlib_metadata": "importlib-metadata", "zipp": "zipp",
             "jeepney": "jeepney"}
    for pkg in VENDORED + OPTIONAL_VENDORED:
        if not (root / "_vendor" / pkg).exists() and not (root / "_vendor" / "site" / pkg).exists():
            continue
        try:
            requires = metadata(dists[pkg]).get("Requires-Python") or ""
        except PackageNotFoundError:
            continue
        assert "3.10" in SpecifierSet(requires), f"{pkg} needs Python {requires}"


def test_krita_and_blender_bundles_take_no_top_level_names(zips, tmp_path, spine_server):
    """Krita and Blender run every add-on in one interpreter. Our bundled client must neither use nor register
    the top-level protocol / msgpack / websockets another add-on may have loaded (here: broken stand-ins that
    fail on use), and still talk to a real engine."""
    for host in ("krita", "blender"):
        root = tmp_path / host
        with zipfile.ZipFile(zips[host]) as zf:
            zf.extractall(root)
        assert (root / "paintbridge" / "_vendor" / "__init__.py").exists()
        other = tmp_path / f"{host}-other-addon"
        for name in ("protocol", "msgpack", "websockets"):
            (other / name).mkdir(parents=True)
            (other / name / "__init__.py").write_text(f"raise ImportError('the other add-on\\'s {name}')\n")
        code = (
            "import sys, types; sys.path[:] = [p for p in sys.path if 'site-packages' not in p]; "
            f"sys.path.insert(0, {str(other)!r}); "
            # the add-on package without running its __init__ (which needs the host's krita / bpy module)
            f"pkg = types.ModuleType('paintbridge'); pkg.__path__ = [{str(root / 'paintbridge')!r}]; "
            "sys.modules['paintbridge'] = pkg; "
            "from paintbridge._vendor.protocol.client import Client; "
            f"c = Client({spine_server.url!r}, token={spine_server.token!r}, app='{host}'); c.connect(); "
            "assert c.call('ping', {}) is not None; c.close(); "
            "taken = sorted(set(sys.modules) & {'protocol', 'msgpack', 'websockets'}); "
            "assert not taken, taken")
        res = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True, timeout=60)
        assert res.returncode == 0, host + ": " + res.stderr[-2000:]
