import pytest

from rlmtl.atomic import atomic_path, write_text_atomic
from rlmtl.registry import Registry


def test_registry_register_get_and_errors():
    registry: Registry[type] = Registry("thing")

    @registry.register("a")
    class A:
        pass

    assert registry.get("a") is A
    assert "a" in registry and registry.names() == ["a"]
    with pytest.raises(KeyError, match="unknown thing 'b'.*registered: a"):
        registry.get("b")
    with pytest.raises(ValueError, match="twice"):
        registry.register("a")(A)


def test_atomic_write_replaces_and_failure_keeps_old(tmp_path):
    target = tmp_path / "out.txt"
    write_text_atomic(target, "one")
    assert target.read_text() == "one"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half written")
            raise RuntimeError("crash during write")
    assert target.read_text() == "one"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]  # no temp file left


def test_atomic_write_creates_parent_folders(tmp_path):
    target = tmp_path / "a" / "b" / "c.txt"
    write_text_atomic(target, "x")
    assert target.read_text() == "x"


def test_registry_unregister():
    registry: Registry[int] = Registry("number")
    registry.register("one")(1)
    registry.unregister("one")
    assert "one" not in registry and registry.names() == []


def test_atomic_files_get_the_umask_permissions_not_owner_only(tmp_path):
    import os
    import stat

    from rlmtl.atomic import write_text_atomic

    previous = os.umask(0o022)
    try:
        write_text_atomic(tmp_path / "shared.json", "{}\n")
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "shared.json").stat().st_mode) == 0o644
