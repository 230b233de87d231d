"""Config errors name the key; the model store survives interrupted writes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edged.config import ConfigError, load_config, parse_config
from edged.store import ModelStore, StoreError, StoreWriteError

ROOT = Path(__file__).resolve().parents[2]


def test_example_config_loads():
    cfg = load_config(ROOT / "systemd" / "edged.toml")
    assert cfg.server.bind == "tcp://127.0.0.1:5555" and cfg.store.state_dir == "/var/lib/edged"


def test_defaults_are_loopback():
    cfg = load_config(None)
    assert cfg.server.bind.startswith("tcp://127.0.0.1:") and cfg.metrics.listen.startswith("127.0.0.1:")


@pytest.mark.parametrize(
    ("data", "key", "words"),
    [
        ({"server": {"max_bach": 4}}, "server.max_bach", "unknown key"),
        ({"serve": {}}, "serve", "unknown section"),
        ({"server": {"max_batch": 0}}, "server.max_batch", "between 1 and 4096, got 0"),
        ({"server": {"workers": "two"}}, "server.workers", "must be an integer, got str 'two'"),
        ({"server": {"workers": True}}, "server.workers", "must be an integer"),
        ({"server": {"bind": "127.0.0.1:5555"}}, "server.bind", "tcp://HOST:PORT"),
        ({"metrics": {"listen": "localhost"}}, "metrics.listen", "HOST:PORT"),
        ({"model": {"engine": "tflite"}}, "model.engine", "one of native, litert"),
        ({"security": {"curve": True}}, "security.server_secret_key", "required"),
        ({"log": {"level": "loud"}}, "log.level", "one of"),
    ],
)
def test_bad_values_name_the_key(data, key, words):
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    assert info.value.key == key and words in str(info.value) and key in str(info.value)


def test_flags_override_file(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('[model]\npath = "m.tflite"\n[server]\nbind = "tcp://127.0.0.1:7000"\nmax_batch = 4\n')
    cfg = load_config(path, {"server.bind": "tcp://127.0.0.1:7001", "model.path": None})
    assert cfg.server.bind == "tcp://127.0.0.1:7001" and cfg.server.max_batch == 4
    with pytest.raises(ConfigError, match=r"server\.bind"):
        load_config(path, {"server.bind": "nope"})


@pytest.mark.parametrize("text", ["", "# all commented out\n", "[server]\nworkers = 2\n", "[model]\n"])
def test_empty_or_partial_file_is_an_error_not_the_defaults(tmp_path, text):
    path = tmp_path / "c.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(path) in str(info.value) and "[model] path" in str(info.value)
    if text.strip() and not text.startswith("#"):
        assert info.value.key == "model.path"
        assert load_config(path, {"model.path": "m.tflite"}).model.path == "m.tflite"  # --model stands in
    path.write_text('[model]\npath = ""\n')  # explicitly the bundled model
    assert load_config(path).model.path == ""


def test_unreadable_config(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.toml")
    (tmp_path / "bad.toml").write_text("[server\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(tmp_path / "bad.toml")


def test_store_versions_and_pointer(tmp_path):
    store = ModelStore(tmp_path)
    v1 = store.add("m", b"one", parent=None, made_by={"kind": "import"})
    store.set_current("m", v1.version, source_sha256="s1")
    v2 = store.add("m", b"two", parent=v1.version, made_by={"kind": "prune", "sparsity": 0.5})
    assert (v1.version, v2.version) == ("1", "2")
    assert store.add("m", b"one", parent=None, made_by={}).version == "1"  # same bytes, same version
    store.set_current("m", "2")
    assert store.current("m") == "2" and store.get("m", "2").meta["parent"] == "1"
    assert store.candidates("m") == ["2", "1"]
    with pytest.raises(StoreError, match="is current"):
        store.remove("m", "2")
    assert not [p for p in (tmp_path / "models" / "m").iterdir() if p.name.startswith(".tmp-")]


def test_store_detects_corruption_and_ignores_partial_writes(tmp_path):
    store = ModelStore(tmp_path)
    v1 = store.add("m", b"one", parent=None, made_by={})
    v2 = store.add("m", b"two", parent=v1.version, made_by={})
    store.set_current("m", v2.version)
    v2.path.write_bytes(b"tw0")
    with pytest.raises(StoreError, match="does not match"):
        store.get("m", "2")
    d = tmp_path / "models" / "m"
    # what a crash mid-write leaves: a half-written version and a temp pointer
    (d / ".tmp-123-456").mkdir()
    (d / ".tmp-123-456" / "model.tflite").write_bytes(b"half")
    (d / ".tmp-current-1-2").write_text("{")
    assert store.versions("m") == ["1", "2"] and store.current("m") == "2"
    assert store.clean_temporary("m") == 2
    (d / "current").write_text("garbage")
    assert store.current("m") is None
    assert store.candidates("m") == ["2", "1"]
    json.loads((d / "1" / "meta.json").read_text())


def test_store_prunes_to_keep_but_never_the_served_version_or_its_last_good_predecessor(tmp_path):
    store = ModelStore(tmp_path)
    parent = None
    for i in range(6):
        parent = store.add("m", f"v{i}".encode(), parent=parent, made_by={}).version
    store.set_current("m", "3")  # e.g. rolled back: newer versions exist
    (tmp_path / "models" / "m" / "2" / "model.tflite").write_bytes(b"rot")  # 3's parent is corrupt
    assert store.last_good_predecessor("m", "3") == "1"
    assert store.prune("m", keep=2, serving="6") == ["4"]
    assert store.versions("m") == ["1", "2", "3", "5", "6"]  # 5, 6 newest; 3 current, 1 its last good parent
    assert store.prune("m", keep=2, serving="6") == []
    assert not [p for p in (tmp_path / "models" / "m").iterdir() if p.name.startswith(".tmp-")]


def test_store_stores_rotten_bytes_again_as_a_new_version(tmp_path):
    store = ModelStore(tmp_path)
    v1 = store.add("m", b"one", parent=None, made_by={})
    v1.path.write_bytes(b"0ne")
    v2 = store.add("m", b"one", parent=None, made_by={})
    assert v2.version == "2" and store.get("m", "2").path.read_bytes() == b"one"


def test_store_write_errors_are_store_write_errors(tmp_path):
    (tmp_path / "models").write_text("not a directory")  # every write under it fails
    store = ModelStore(tmp_path)
    with pytest.raises(StoreWriteError, match="cannot write a new version of m"):
        store.add("m", b"one", parent=None, made_by={})
