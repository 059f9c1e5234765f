"""CPU allocator tuning (``inrv.codec.device.tune_cpu_allocator``): on for CPU fits on glibc, never
for CUDA, and the ``INRV_MALLOC_TUNING=0`` opt-out is honoured (fresh interpreters: the setting is
process-wide and applied once)."""

import subprocess
import sys

import pytest

CODE = ("from inrv.codec.device import tune_cpu_allocator as t, release_cpu_memory as r; "
        "a = t('cuda'); b = t('cpu'); r(); print(a, b)")


def _run(env_extra):
    import os

    env = dict(os.environ, **env_extra)
    out = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout.split()


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt")
def test_allocator_tuning_applies_to_cpu_only_and_can_be_turned_off():
    import platform

    on = _run({})
    assert on[0] == "False"                      # a CUDA device never touches the CPU allocator
    if platform.libc_ver()[0] == "glibc":
        assert on[1] == "True"
    assert _run({"INRV_MALLOC_TUNING": "0"}) == ["False", "False"]
