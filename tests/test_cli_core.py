import json
import subprocess
import sys

from typer.testing import CliRunner

from neurodecode.cli import app

runner = CliRunner()


def test_info_json_is_valid():
    res = runner.invoke(app, ["info", "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    for key in ("neurodecode", "packages", "device", "backends", "offline", "folders"):
        assert key in data
    assert data["offline"] is True  # tests run offline
    assert data["packages"]["torch"]
    assert set(data["backends"]) >= {"cuda_available", "bf16_supported", "sdpa_flash"}


def test_info_human():
    res = runner.invoke(app, ["info"])
    assert res.exit_code == 0
    assert "packages:" in res.stdout and "offline: True" in res.stdout


def test_bad_usage_exits_2():
    res = runner.invoke(app, ["info", "--nope"])
    assert res.exit_code == 2


def test_console_script_runs_as_module():
    out = subprocess.run([sys.executable, "-c", "from neurodecode.cli import main; main()", "info", "--json"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    json.loads(out.stdout)


def test_os_errors_get_one_teaching_line():
    import errno

    from neurodecode.cli._common import os_error_message

    msg = os_error_message(PermissionError(errno.EACCES, "Permission denied", "/data/out/x.json"))
    assert "/data/out/x.json" in msg and "EACCES" in msg and "writable folder" in msg
    # h5py puts the number and the path in its message only
    msg = os_error_message(OSError("Unable to create file (unable to open file: name = '/ro/x.h5', errno = 30)"))
    assert "/ro/x.h5" in msg and "EROFS" in msg and "read-only" in msg
    msg = os_error_message(OSError(errno.ENOSPC, "No space left on device", "/d/f"))
    assert "disk is full" in msg and "resumes" in msg
    assert os_error_message(ConnectionError("refused")).startswith("network:")
    assert "NEURODECODE_OFFLINE=1" in os_error_message(TimeoutError("slow"))
