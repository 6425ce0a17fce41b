"""Ctrl-C: the build stops promptly, leaves no temporary file and no manifest, and says so."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from conftest import write_image


def test_ctrl_c_stops_cleanly(tmp_path):
    src, out = tmp_path / "src", tmp_path / "out"
    for number in range(600):
        write_image(str(src / f"c{number % 2}" / f"{number:03d}.jpg"), size=(96, 96), seed=number)
    process = subprocess.Popen(
        [sys.executable, "-m", "imgshard", "build", str(src), str(out), "--size", "224",
         "--dtype", "float32", "--shard-size", "8", "--workers", "2"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and process.poll() is None:
        if out.exists() and any(name.endswith(".npy") for name in os.listdir(out)):
            break
        time.sleep(0.005)
    assert process.poll() is None, "the build finished before it could be interrupted"
    process.send_signal(signal.SIGINT)
    output, _ = process.communicate(timeout=30)
    assert process.returncode == 130, output
    assert "run the same command with --resume" in output
    assert "Traceback" not in output
    names = os.listdir(out)
    assert "manifest.json" not in names
    resume_files = {".imgshard-progress.jsonl", ".imgshard-sources.jsonl.gz", ".samples.csv.partial"}
    assert not [n for n in names if n.startswith(".") and n not in resume_files], names
