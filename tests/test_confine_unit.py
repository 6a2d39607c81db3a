"""Unit tests of the OS confinement pieces: rlimits table, seccomp program,
Landlock ruleset, uid map, doctor, and apply() in a fresh child process.

Children are fresh interpreters (tests/security/_os_harness.py), never forks
of the (threaded) pytest process.
"""

from __future__ import annotations

import json
import os
import resource
import sys
from pathlib import Path

import pytest

from scriptvisor.engine import doctor
from scriptvisor.engine.config import EngineConfig
from scriptvisor.engine.uids import UidMap, UidRangeExhausted, tenant_ids
from scriptvisor.sandbox import confine, landlock, rlimits, seccomp
from scriptvisor.sandbox.wire import WorkerLimits

sys.path.insert(0, str(Path(__file__).parent / "security"))
import _os_harness as harness  # noqa: E402


def test_rlimits_table_cpu_hard_is_soft_plus_one_and_nproc_only_per_uid():
    lim = WorkerLimits(memory_mb=100, cpu_seconds=7, open_files=9, processes=5, file_size_mb=2)
    table = {name: (soft, hard) for name, _, soft, hard in rlimits.limits_for(lim, per_uid=False)}
    assert table == {
        "RLIMIT_AS": (100 * rlimits.MiB, 100 * rlimits.MiB),
        "RLIMIT_CPU": (7, 8),
        "RLIMIT_NOFILE": (9, 9),
        "RLIMIT_FSIZE": (2 * rlimits.MiB, 2 * rlimits.MiB),
        "RLIMIT_CORE": (0, 0),
        "RLIMIT_MEMLOCK": (0, 0),
    }
    per_uid = {n: (s, h) for n, _, s, h in rlimits.limits_for(lim, per_uid=True)}
    assert per_uid["RLIMIT_NPROC"] == (5, 5)


def test_seccomp_program_is_raw_bpf_and_udp_variant_differs():
    tcp_only = seccomp.build(allow_udp=False)
    with_udp = seccomp.build(allow_udp=True)
    assert len(tcp_only) % 8 == 0 and len(with_udp) % 8 == 0
    assert tcp_only != with_udp
    assert len(tcp_only) // 8 < 256  # JIT cost is on the fork path: keep it short


def test_landlock_ruleset_refuses_a_port_outside_tcp_range():
    abi = landlock.abi_version()
    assert abi >= 4, "this host's kernel has Landlock ABI 7"
    rs = landlock.Ruleset.create(abi)
    try:
        with pytest.raises(ValueError):
            rs.allow_port(70000)
        assert rs.allow_path("/nonexistent/path", landlock.READ_ONLY) is False
    finally:
        rs.close()
    assert rs.fd == -1


def test_read_only_paths_never_include_root_home_or_cwd():
    paths = confine._read_only_paths()
    assert "/" not in paths and "/root" not in paths and "/etc" not in paths
    assert os.path.realpath(os.getcwd()) not in paths or os.getcwd().startswith(sys.prefix)
    assert "/etc/passwd" not in paths


@pytest.fixture(autouse=True)
def _private_uid_registry(tmp_path, monkeypatch):
    """Each test its own host-wide uid registry (the real one holds other instances' claims)."""
    from scriptvisor.engine import uids

    monkeypatch.setattr(uids, "REGISTRY_DIR", str(tmp_path / "registry" / "uids"))


def test_cant_share_a_uid_with_another_engine_instance_on_the_host(tmp_path):
    """Layer: host-wide uid registry. Two state dirs (two engine instances) never hand out one uid,
    so one instance's per-uid egress rules or signals never reach the other's tenants."""
    first = UidMap(str(tmp_path / "one"), 300_000, 10)
    second = UidMap(str(tmp_path / "two"), 300_000, 10)
    assert first.uid_for("a") == 300_000
    assert second.uid_for("x") == 300_001
    assert first.uid_for("b") == 300_002
    # a state dir that is gone no longer holds its claims
    import shutil
    shutil.rmtree(tmp_path / "two")
    assert UidMap(str(tmp_path / "three"), 300_000, 10).uid_for("y") == 300_001


def test_uid_map_is_deterministic_persistent_and_never_shared(tmp_path):
    m = UidMap(str(tmp_path), 300_000, 10)
    a, b = m.uid_for("a"), m.uid_for("b")
    assert (a, b) == (300_000, 300_001)
    again = UidMap(str(tmp_path), 300_000, 10)  # a fresh process reads the file
    assert again.uid_for("b") == b and again.uid_for("a") == a
    assert again.uid_for("c") == 300_002
    data = json.loads((tmp_path / "uids.json").read_text())
    assert data == {"a": a, "b": b, "c": 300_002}
    assert len(set(data.values())) == len(data)


def test_uid_map_skips_existing_accounts(tmp_path):
    m = UidMap(str(tmp_path), 65534, 2)  # 65534 is nobody/nogroup
    assert m.uid_for("t") == 65535


def test_uid_map_exhaustion_is_a_typed_error(tmp_path):
    m = UidMap(str(tmp_path), 300_000, 1)
    m.uid_for("a")
    with pytest.raises(UidRangeExhausted):
        m.uid_for("b")


def test_uid_map_rejects_a_map_where_tenants_share_a_uid(tmp_path):
    (tmp_path / "uids.json").write_text(json.dumps({"a": 300_000, "b": 300_000}))
    with pytest.raises(ValueError, match="share"):
        UidMap(str(tmp_path), 300_000, 10).uid_for("c")


def test_uid_map_refuses_a_low_range(tmp_path):
    with pytest.raises(ValueError):
        UidMap(str(tmp_path), 0, 10)


def test_tenant_ids_without_confinement_keep_the_supervisor_uid(tmp_path):
    cfg = EngineConfig(state_dir=str(tmp_path), confine=False)
    assert tenant_ids(cfg, "x") == (None, None)


def test_doctor_lists_every_layer_with_a_reason():
    cfg = EngineConfig()
    text, all_active = doctor.run_doctor(cfg)
    rows = doctor.layers(cfg)
    assert [r["name"] for r in rows] == list(confine.LAYERS) + ["egress_nft"]  # supervisor-side layer last
    for r in rows:
        assert r["name"] in text and r["detail"]
    assert all_active == all(r["active"] for r in rows)
    assert all_active == (doctor.missing(cfg) == [])


def test_available_reports_root_only_layers_by_privilege():
    avail = confine.available(EngineConfig())
    root = os.geteuid() == 0
    assert avail["uid"][0] is root
    assert avail["scratch_quota"][0] is root
    if not root:
        assert avail["uid"][1] == "supervisor is not root"
    assert avail["landlock"][0] and avail["landlock_net"][0] and avail["seccomp"][0]


def test_apply_without_confine_only_scrubs_env_and_starts_a_session(tmp_path):
    code = ("import os, resource, ctypes\n"
            "result = [os.getsid(0) == os.getpid(), sorted(os.environ),"
            " resource.getrlimit(resource.RLIMIT_CPU)[0] == resource.RLIM_INFINITY,"
            " ctypes.CDLL(None).prctl(39, 0, 0, 0, 0)]")
    rep = harness.run(code, harness.policy(tmp_path, confine=False))
    assert rep["error"] is None
    assert rep["result"] == [True, ["HOME", "LANG", "LC_ALL", "PATH", "TMPDIR"], True, 0]


def test_apply_sets_every_rlimit_and_no_new_privs(tmp_path):
    code = ("import resource, ctypes, os\n"
            "g = resource.getrlimit\n"
            "result = [g(resource.RLIMIT_AS), g(resource.RLIMIT_CPU), g(resource.RLIMIT_NOFILE),"
            " g(resource.RLIMIT_FSIZE), g(resource.RLIMIT_CORE), g(resource.RLIMIT_MEMLOCK),"
            " ctypes.CDLL(None).prctl(39, 0, 0, 0, 0), os.getsid(0) == os.getpid(), os.getcwd()]")
    pol = harness.policy(tmp_path, limits={"memory_mb": 300, "cpu_seconds": 5, "open_files": 40,
                                           "file_size_mb": 3})
    rep = harness.run(code, pol)
    assert rep["error"] is None
    mib = 1024 * 1024
    assert rep["result"] == [[300 * mib] * 2, [5, 6], [40, 40], [3 * mib] * 2, [0, 0], [0, 0], 1,
                             True, pol["scratch_dir"]]


def test_apply_without_prepare_fails_naming_the_layer():
    pol = {"tenant": "never-prepared", "worker_id": 99, "uid": None, "gid": None,
           "scratch_dir": None, "data_dir": None, "allowed_ports": [], "limits": {},
           "confine": True}
    rep = harness.run_raw_apply(pol)  # a fresh process that never ran prepare()
    assert rep == {"layer": "landlock", "reason": "prepare() did not build a ruleset"}


def test_cleanup_removes_the_scratch_dir_and_what_the_worker_left(tmp_path):
    code = "import os\nfor i in range(50): open(f'f{i}', 'w').write('x')\nresult = len(os.listdir('.'))"
    rep = harness.run(code, harness.policy(tmp_path))
    assert rep["result"] == 50
    # cleanup_scratch ran in the driver after reaping: the dir is gone from its view.
    assert not os.path.exists(os.path.join(rep["scratch_dir"], "f0"))


_DEBIAN_SECCOMP = Path("/usr/lib/python3/dist-packages") / f"seccomp.cpython-{sys.version_info.major}{sys.version_info.minor}-x86_64-linux-gnu.so"

_BINDING_PROBE = r"""
import importlib.util, json, sys
sys.modules["pyseccomp"] = None          # as if the pinned pyseccomp were not installed
spec = importlib.util.spec_from_file_location("seccomp", sys.argv[1])
mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)
sys.modules["seccomp"] = mod             # what a venv with system site-packages would import
from scriptvisor.sandbox import seccomp
fallback = (seccomp.available(), seccomp.build(allow_udp=False).hex())
del sys.modules["pyseccomp"], sys.modules["seccomp"]
primary = (seccomp.available(), seccomp.build(allow_udp=False).hex())
print(json.dumps({"fallback": fallback, "primary": primary}))
"""


def test_seccomp_falls_back_to_debian_python3_seccomp_with_the_same_program():
    """pyseccomp missing -> Debian's python3-seccomp (scripts/test.sh installs it)
    builds the identical BPF program."""
    assert _DEBIAN_SECCOMP.exists(), "apt-get install python3-seccomp (scripts/test.sh does)"
    import subprocess
    out = subprocess.run([sys.executable, "-c", _BINDING_PROBE, str(_DEBIAN_SECCOMP)],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    assert got["fallback"][0] == [True, "libseccomp via seccomp (python3-seccomp)"]
    assert got["primary"][0] == [True, "libseccomp via pyseccomp"]
    assert got["fallback"][1] == got["primary"][1] and len(got["primary"][1]) > 16


def test_uid_map_reclaims_uids_of_removed_tenant_folders_only_when_full(tmp_path):
    gone, kept = tmp_path / "gone" / "data", tmp_path / "kept" / "data"
    kept.mkdir(parents=True)
    gone.mkdir(parents=True)
    m = UidMap(str(tmp_path / "state"), 300_000, 2)
    a, b = m.uid_for(str(gone)), m.uid_for(str(kept))
    gone.rmdir()
    gone.parent.rmdir()
    # the range is full: the removed folder's uid is the one given out again
    assert UidMap(str(tmp_path / "state"), 300_000, 2).uid_for(str(tmp_path / "new" / "data")) == a
    assert UidMap(str(tmp_path / "state"), 300_000, 2).uid_for(str(kept)) == b
