"""The platform's migrated-user store lives beside ``data/``, out of the workers' reach."""

from scriptvisor.engine import Engine, EngineConfig, TenantLimits
from scriptvisor.engine.userstore import open_store


def test_cant_tamper_with_the_platform_user_store(tmp_path):
    """Layer: Landlock (workers may write data/ and their scratch only)."""
    root = tmp_path / "acme"
    (root / "data").mkdir(parents=True)
    store = open_store("acme", str(root / "state"))
    store_file = root / "state" / "platform.db"
    assert store_file.exists()
    before = store_file.read_bytes()
    root.chmod(0o755)
    tmp_path.chmod(0o755)
    code = (
        "import errno\n"
        f"p = {str(store_file)!r}\n"
        "try:\n"
        "    open(p, 'r+b').write(b'x')\n"
        "    result = 'written'\n"
        "except OSError as e:\n"
        "    result = errno.errorcode[e.errno]\n"
    )
    cfg = EngineConfig(debug_exec=True, state_dir=str(tmp_path / "sv"), limits=TenantLimits(timeout=5))
    with Engine(cfg) as eng:
        eng.configure_tenant("acme", data_dir=str(root / "data"))
        res = eng.debug_exec("acme", code)
    assert res.ok, res.error
    assert res.result in ("EACCES", "EPERM")
    assert store_file.read_bytes() == before
