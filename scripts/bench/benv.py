"""The environment a benchmark ran in, recorded with every result file.

Shared by scripts/bench/io.py and scripts/bench/criterion.py (and read back
by scripts/bench/report.py). Standard library only. Keys follow the replay
benchmark's `env` where they overlap: cpu_model, tsc_hz, dpdk_version,
git_rev, date.
"""
import os
import re
import subprocess
import time


def sh(cmd):
    """stdout of a shell command, stripped; '' when it fails."""
    try:
        return subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=20).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def cpuinfo_mhz():
    """The first 'cpu MHz' of /proc/cpuinfo (the TSC rate on a constant_tsc VM)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                m = re.match(r"cpu MHz\s*:\s*([\d.]+)", line)
                if m:
                    return float(m.group(1))
    except OSError:
        pass
    return None


def git_rev():
    rev = sh("git rev-parse --short HEAD")
    if rev and sh("git status --porcelain --untracked-files=no"):
        rev += "+dirty"
    return rev or "?"


def collect(**extra):
    """The common environment; `extra` keys are added (and win)."""
    mhz = cpuinfo_mhz()
    env = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "cpu_model": sh("lscpu | sed -n 's/^Model name:[[:space:]]*//p'") or "?",
        "cpus": os.cpu_count(),
        "hypervisor": sh("lscpu | sed -n 's/^Hypervisor vendor:[[:space:]]*//p'") or None,
        "kernel": sh("uname -r"),
        # Estimate; io.py replaces it with the rate DPDK measured (rte_get_tsc_hz).
        "tsc_hz": int(mhz * 1e6) if mhz else None,
        "tsc_hz_source": "/proc/cpuinfo cpu MHz" if mhz else None,
        "dpdk_version": sh("pkg-config --modversion libdpdk") or sh("dpkg-query -W -f '${Version}' dpdk") or None,
        "git_rev": git_rev(),
        "loadavg": sh("cat /proc/loadavg"),  # when collected (io, criterion: at the start)
    }
    env.update(extra)
    return env
